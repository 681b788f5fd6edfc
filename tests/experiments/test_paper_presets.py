"""Every study's ``paper`` preset trains: one real step of the paper-sized model on a tiny crop.

For each study (both tasks of the anatomical-vs-diagnostic study) the train step is built as the
study's runner builds it (:func:`benchmarks.accelerator.build`: the preset's model at its real
channel widths, the study's loss configurations through ``runner.sweep_loss``, its optimiser and
schedule, ``Comparison.trainer``), a batch comes from synthetic cases through the study's own
``volumes()`` and Grain loader (every key its loss reads), and ``Trainer.init`` + one
``Trainer.step`` run on one device (a batch of 4 rows). Checks: the loss and gradient norm are finite, the
step changed (almost) every parameter, and the parameter count is the paper architecture's
(built independently from ``jaxseg.models``, in closed form for the U-Nets) and far above the
``cpu`` preset's.

The crop is twice the model's ``size_multiple`` per axis, the smallest at which every weight gets
a gradient: at ``size_multiple`` itself the coarsest level is 1 voxel, where the off-centre taps
of a 3x3 kernel see only padding, an InstanceNorm output is identically 0 (so the convolution
before it gets no gradient) and a 1-token attention gives its query/key weights none.
"""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from benchmarks import accelerator
from jaxseg.data.pipeline import data_mesh
from jaxseg import models

STUDIES = accelerator.STUDIES


def unet2d_params(config: models.UNet2DConfig, in_channels: int = 1) -> int:
  """Parameters of :class:`jaxseg.models.UNet2D` in closed form (conv kernels and biases,
  BatchNorm scale and bias, transposed-convolution kernels and biases, the 1x1 head)."""
  c = config.channels

  def block(cin, cout):
    return (9 * cin * cout + 9 * cout * cout + (4 * cout if config.batch_norm else 0)
            + (2 * cout if config.conv_bias else 0))

  total, width = 0, in_channels
  for f in config.features:
    total += block(width, c(f))
    width = c(f)
  total += block(width, c(config.bottleneck))
  width = c(config.bottleneck)
  for f in reversed(config.features):
    if config.upsample == "transpose":
      total += 4 * width * c(f) + c(f)
      width = c(f)
    total += block(width + c(f), c(f))
    width = c(f)
  return total + width * config.num_classes + config.num_classes


def paper_architecture(name: str) -> tuple[object, tuple[int, ...], int | None]:
  """``(model, input shape, closed-form count or None)`` of the paper's architecture, built
  from ``jaxseg.models`` directly (not through the runner's preset resolution)."""
  if name == "hierarchical":
    config = models.UNet2DConfig.hierarchical(num_classes=9, width=1.0)
    return models.UNet2D(config), (1, 16, 16, 1), unet2d_params(config)
  if name == "tversky":
    config = models.UNet2DConfig.tversky(width=1.0)
    assert config.features == (64, 128, 256, 512) and config.bottleneck == 1024
    return models.UNet2D(config), (1, 32, 32, 1), unet2d_params(config)
  if name == "adaptive_focal":
    config = models.TransUNetConfig.paper(image_size=224)
    assert (config.hidden_size, config.num_layers, config.mlp_dim) == (768, 12, 3072)
    return models.TransUNet(config), (1, 32, 32, 1), None
  task = name.split("/")[1]
  config = (models.ProbUNet3DConfig.paper(3, 1) if task == "anatomical"
            else models.ProbUNet3DConfig.paper(2, 3))
  assert config.filters == (32, 64, 128, 256, 512)
  return models.ProbAttentionUNet3D(config), (1, 32, 32, 8, config.in_channels), None


def abstract_count(model, shape) -> int:
  """Parameters of ``model.init`` on an input of ``shape``, from shapes alone."""
  variables = jax.eval_shape(lambda k, x: model.init({"params": k, "dropout": k}, x, train=False),
                             jax.random.key(0), jax.ShapeDtypeStruct(shape, np.float32))
  return accelerator.count_params(variables["params"])


#: Parameter counts (millions) of the published architectures, as a sanity range: the seed-000
#: U-Net 1.88 M (64/128/256, 9 classes); the seed-002 U-Net 31.0 M (milesial's UNet with one
#: input channel and one class); TransUNet R50-ViT-B/16 ~105 M (Chen et al., without the
#: ImageNet classifier); the seed-001 probabilistic attention U-Net (32..512, prior and posterior
#: nets): tens of millions.
PAPER_MILLIONS = {"hierarchical": (1.8, 2.0), "tversky": (30.9, 31.1),
                  "adaptive_focal": (90.0, 120.0),
                  "anatomical_vs_diagnostic/anatomical": (10.0, 200.0),
                  "anatomical_vs_diagnostic/diagnostic": (10.0, 200.0)}


#: Crop of each study's step, in multiples of its model's ``size_multiple`` (module docstring).
CROP_MULTIPLE = {"hierarchical": 2, "tversky": 2, "adaptive_focal": 2,
                 "anatomical_vs_diagnostic/anatomical": (2, 2, 1),
                 "anatomical_vs_diagnostic/diagnostic": (2, 2, 1)}


def _setup(name, tmp_path):
  """The study's paper-preset step at the test crop, one batch row per device, with the checks
  of its batch and of its parameter count (from shapes: nothing is initialised here)."""
  n_dev = jax.device_count()
  # One device: replicating a paper-sized state (up to 105M parameters and Adam's moments) on
  # the 4 test devices took ~9 GB, next to the other tests of a parallel CI run.
  setup = accelerator.build(name, batch_size=n_dev, patch_multiple=CROP_MULTIPLE[name],
                            workdir=str(tmp_path), mesh=data_mesh(jax.devices()[:1]))
  crop = setup.patch
  multiple = CROP_MULTIPLE[name]
  factors = (multiple,) * len(crop) if isinstance(multiple, int) else multiple
  assert crop == tuple(f * m for f, m in zip(factors, setup.size_multiple))
  assert setup.cfg.model.preset in ("paper", "hierarchical", "tversky")
  assert setup.trainer.num_configs is None and len(setup.configs) >= 2
  batch = setup.batch
  assert next(iter(batch.values())).shape[0] == n_dev
  assert batch["image"].shape[1:len(crop) + 1] == crop
  if name == "adaptive_focal":  # the second annotation AG-BCE and the adaptive focal loss read
    assert batch["non_expert"].shape == batch["label"].shape
  if name.startswith("anatomical_vs_diagnostic"):  # foreground distance maps, bpMRI channels
    task = setup.cmp.study.task
    assert batch["sdm"].shape[1:] == crop + (task.num_classes - 1,)
    assert batch["image"].shape[-1] == len(task.channels)

  count = accelerator.count_params(setup.abstract_state().params)
  # The paper's architecture, built directly; the U-Nets also in closed form.
  model, shape, closed_form = paper_architecture(name)
  assert count == abstract_count(model, shape)
  if closed_form is not None:
    assert count == closed_form
  low, high = PAPER_MILLIONS[name]
  assert low * 1e6 <= count <= high * 1e6, count
  cpu = accelerator.build(name, preset="cpu", batch_size=n_dev, workdir=str(tmp_path / "cpu"))
  cpu_count = accelerator.count_params(cpu.abstract_state().params)
  assert count >= 10 * cpu_count, (count, cpu_count)
  return setup, count


@pytest.mark.parametrize("name", [n for n in STUDIES if not n.endswith("/anatomical")])
def test_paper_preset_trains_one_step_at_paper_width(name, tmp_path):
  setup, count = _setup(name, tmp_path)
  state = setup.init()
  before = jax.device_get(state.params)
  assert accelerator.count_params(before) == count

  state, metrics = setup.trainer.step(state, setup.batch, setup.loss_params, jax.random.key(1))
  loss, grad_norm = float(metrics["loss"]), float(metrics["grad_norm"])
  assert math.isfinite(loss) and math.isfinite(grad_norm) and grad_norm > 0, (loss, grad_norm)
  assert int(state.step) == 1
  after = jax.device_get(state.params)
  changed = jax.tree.map(lambda a, b: int(np.sum(np.asarray(a) != np.asarray(b))), before, after)
  unchanged = [jax.tree_util.keystr(path) for path, n in
               jax.tree_util.tree_leaves_with_path(changed) if n == 0]
  assert not unchanged, unchanged[:20]  # every parameter array is trained by the loss
  # Most single weights too (the rest: ReLU channels dead on this crop, taps seeing padding).
  assert sum(jax.tree.leaves(changed)) >= 0.5 * count


def test_anatomical_task_paper_step_traces(tmp_path):
  """The anatomical task (one T2W channel, three zones) differs from the diagnostic one only in
  its channels and classes: its paper-preset step is traced (loss, gradients, optimiser) at the
  test crop from shapes alone, which a compile and a run would repeat at twice the time."""
  setup, count = _setup("anatomical_vs_diagnostic/anatomical", tmp_path)
  state, batch, params, key = setup.abstract_inputs(jax.device_count())
  step = setup.trainer._step  # pylint: disable=protected-access
  new_state, metrics = jax.eval_shape(step, state, batch, params, key)
  assert accelerator.count_params(new_state.params) == count
  assert metrics["loss"].shape == () and metrics["loss"].dtype == np.float32
