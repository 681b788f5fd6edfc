"""A few training steps of each experiment's model on 1 and on 4 devices (device-count invariance).

Run in a fresh process with 4 host CPU devices (``_harness.worker_env(..., devices=4)``)::

  python tests/reliability/_invariance_worker.py --out result.npz [--models transunet,...]

For every model, the same :class:`~jaxseg.train.loop.Trainer` program is built twice -- over a
mesh of the first device only, and over all 4 devices (the batch split in 4, parameters
replicated, gradients all-reduced by XLA) -- and both run ``--steps`` SGD steps (momentum 0.9) from
the same parameters (:func:`numpy_state`) on the same batches with the same dropout key. The
per-step losses and the final parameters (and BatchNorm statistics) of both go to ``--out`` under
``{model}/{devices}/...``.

Models and losses (each experiment's own model and loss function, at test size):

* ``transunet``: seed 003, :class:`~jaxseg.models.transunet.TransUNet` (CPU preset at 32 x 32,
  one transformer layer, four deep-supervision heads, dropout on) with
  ``experiments.adaptive_focal.make_loss_fn`` -- sigmoid focal, AG-BCE and adaptive focal loss
  (batch-level stop-gradient gamma), each summed over the heads; all three, averaged, are trained.
* ``prob_unet3d``: seed 001, :class:`~jaxseg.models.prob_unet3d.ProbAttentionUNet3D` (CPU preset,
  16 x 16 x 4 patches, posterior latents sampled and dropout on) with
  ``experiments.anatomical_vs_diagnostic.make_loss_fn`` -- the ELBO of CE, balanced CE, focal and
  Dice + boundary losses over the deep-supervision heads (averaged) plus 10 x KL.
* ``unet2d_bn``: seed 002, :class:`~jaxseg.models.unet2d.UNet2D` (``tversky`` preset at width
  1/16, BatchNorm in training mode) with ``experiments.tversky.loss_fn`` -- half BCE, half Tversky
  (alpha 0.75) pooled over the whole batch. BatchNorm statistics and the batch-pooled Tversky
  counts span all 4 devices, so this is where a per-device reduction would show.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = ("transunet", "prob_unet3d", "unet2d_bn")
BATCH_SIZE = 4


def _binary_blobs(rng, shape):
  """``(BATCH_SIZE, *shape)`` int32 masks: one random box per example."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  masks = np.zeros((BATCH_SIZE, *shape), np.int32)
  for b in range(BATCH_SIZE):
    lo = [int(rng.integers(1, max(s // 2, 2))) for s in shape]
    hi = [int(l + rng.integers(2, max(s // 2, 3))) for l, s in zip(lo, shape)]
    masks[(b, *[slice(l, h) for l, h in zip(lo, hi)])] = 1
  return masks


def setup(name: str, rng) -> tuple[Any, Any, Callable, Any, Callable, list[dict]]:
  """``(model, tx, loss_fn, loss_params, model_inputs, batches)`` of one experiment."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  image_only = lambda batch: (batch["image"],)  # the Trainer's default model inputs
  batches = []
  if name == "transunet":
    from experiments import adaptive_focal, runner  # pylint: disable=import-outside-toplevel
    from jaxseg.models.transunet import TransUNet, TransUNetConfig  # pylint: disable=import-outside-toplevel
    model = TransUNet(TransUNetConfig.cpu(image_size=32, num_layers=1))
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.01, momentum=0.9))
    loss_fn, params = runner.sweep_loss([
        runner.LossConfig("focal", adaptive_focal.focal),
        runner.LossConfig("AG-BCE", adaptive_focal.ag_bce, {"hard_weight": 4.0}),
        runner.LossConfig("adaptive focal", adaptive_focal.adaptive_focal)])
    params = {**params[0], "select": np.full(3, 1 / 3, np.float32)}  # every loss contributes
    inputs = image_only
    for _ in range(3):
      expert = _binary_blobs(rng, (32, 32))
      non_expert = np.roll(expert, 1, axis=1)
      image = (expert + rng.normal(size=expert.shape) * 0.3).astype(np.float32)[..., None]
      batches.append({"image": image, "label": expert, "non_expert": non_expert})
  elif name == "prob_unet3d":
    import jax  # pylint: disable=import-outside-toplevel
    from experiments import anatomical_vs_diagnostic as avd, runner  # pylint: disable=import-outside-toplevel
    from jaxseg.data.distance import signed_distance_maps  # pylint: disable=import-outside-toplevel
    from jaxseg.models.prob_unet3d import ProbAttentionUNet3D, ProbUNet3DConfig  # pylint: disable=import-outside-toplevel
    task = avd.TASKS["anatomical"]
    num_classes = len(task.class_names)
    model = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(num_classes, 1))
    tx = optax.sgd(1e-3, momentum=0.9)
    loss_fn, params = runner.sweep_loss(avd.losses(task, 10.0))
    params = {**params[0], "select": np.full(4, 1 / 4, np.float32)}  # every loss contributes
    inputs = lambda batch: (batch["image"], jax.nn.one_hot(batch["label"], num_classes))
    for _ in range(3):
      label = _binary_blobs(rng, (16, 16, 4))
      label[:, :, 8:] *= 2  # TZ left, PZ right
      sdm = np.stack([signed_distance_maps(l, num_classes, spacing=(2.0, 2.0, 4.0))
                      for l in label]).astype(np.float32)
      image = (label + rng.normal(size=label.shape) * 0.3).astype(np.float32)[..., None]
      batches.append({"image": image, "label": label, "sdm": sdm})
  elif name == "unet2d_bn":
    from experiments import runner, tversky  # pylint: disable=import-outside-toplevel
    from jaxseg.models.unet2d import UNet2D, UNet2DConfig  # pylint: disable=import-outside-toplevel
    model = UNet2D(UNet2DConfig.tversky(width=0.0625))
    tx = optax.sgd(1e-2, momentum=0.9)
    loss_fn, params = runner.sweep_loss([
        runner.LossConfig("BCE", tversky.bce),
        runner.LossConfig("Tversky", tversky.make_tversky(1.0), {"alpha": 0.75, "beta": 0.25})])
    params = {**params[0], "select": np.full(2, 0.5, np.float32)}  # both losses contribute
    inputs = image_only
    for _ in range(3):
      label = _binary_blobs(rng, (32, 32))
      image = (label + rng.normal(size=label.shape) * 0.3).astype(np.float32)[..., None]
      batches.append({"image": image, "label": label})
  else:
    raise ValueError(f"unknown model {name!r}; known: {MODELS}")
  return model, tx, loss_fn, params, inputs, batches


def numpy_state(model, tx, sample_inputs):
  """A :class:`~jaxseg.train.state.TrainState` whose parameters are drawn with NumPy (seed 0).

  Kernels (``ndim >= 2``) ``N(0, 1 / fan_in)``, normalisation scales ``1 + N(0, 0.01^2)``, other
  vectors (biases, offsets) ``N(0, 0.01^2)``; BatchNorm statistics at their initial values.
  Unlike ``trainer.init``, nothing is compiled (jax's threefry random-number code is slow to
  compile on CPU), and no bias sits exactly at zero (see ``test_device_invariance.py``).
  """
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxseg.train.state import TrainState  # pylint: disable=import-outside-toplevel

  rng = np.random.default_rng(0)
  shapes = jax.eval_shape(lambda: model.init({"params": jax.random.key(0),
                                              "dropout": jax.random.key(1)},
                                             *sample_inputs, train=False))

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if len(leaf.shape) >= 2:
      value = rng.normal(size=leaf.shape) / np.sqrt(np.prod(leaf.shape[:-1]))
    elif name.endswith("['scale']"):
      value = 1.0 + 0.01 * rng.normal(size=leaf.shape)
    else:
      value = 0.01 * rng.normal(size=leaf.shape)
    return jnp.asarray(value, leaf.dtype)

  params = jax.tree_util.tree_map_with_path(draw, shapes["params"])
  stats = jax.tree_util.tree_map_with_path(
      lambda p, l: jnp.full(l.shape, 1.0 if jax.tree_util.keystr(p).endswith("['var']") else 0.0,
                            l.dtype), shapes.get("batch_stats", {}))
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=stats,
                    opt_state=tx.init(params))


def trajectory(name: str, devices: Sequence, steps: int) -> dict[str, Any]:
  """Losses of ``steps`` steps and the final parameters, on a mesh over ``devices``."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from jaxseg.data.pipeline import data_mesh, replicate  # pylint: disable=import-outside-toplevel
  from jaxseg.train.loop import Trainer  # pylint: disable=import-outside-toplevel

  model, tx, loss_fn, loss_params, inputs, batches = setup(name, np.random.default_rng(0))
  trainer = Trainer(model, tx, loss_fn, mesh=data_mesh(devices), model_inputs=inputs)
  sample = inputs({k: jnp.asarray(v[:1]) for k, v in batches[0].items()})
  state = replicate(numpy_state(model, tx, sample), trainer.mesh)
  losses = []
  for i in range(steps):
    state, metrics = trainer.step(state, batches[i % len(batches)], loss_params,
                                  jax.random.key(1))
    losses.append(float(metrics["loss"]))
  leaves = jax.tree_util.tree_flatten_with_path(jax.device_get(state.params))[0]
  out = {"loss": np.asarray(losses, np.float64)}
  out.update({f"param{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in leaves})
  if state.batch_stats:
    stats = jax.tree_util.tree_flatten_with_path(jax.device_get(state.batch_stats))[0]
    out.update({f"stat{jax.tree_util.keystr(p)}": np.asarray(v) for p, v in stats})
  return out


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--out", required=True)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--steps", type=int, default=3)
  args = parser.parse_args(argv)
  sys.path.insert(0, REPO_ROOT)
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  if jax.device_count() < 4:
    raise SystemExit(f"needs 4 devices, got {jax.device_count()} (set XLA_FLAGS)")
  arrays = {}
  for name in args.models.split(","):
    for n in (1, 4):
      result = trajectory(name, jax.devices()[:n], args.steps)
      arrays.update({f"{name}/{n}/{k}": v for k, v in result.items()})
      print(f"{name} on {n} device(s): losses {result['loss'].tolist()}", flush=True)
  tmp = args.out + ".tmp.npz"
  np.savez(tmp, **arrays)
  os.replace(tmp, args.out)


if __name__ == "__main__":
  main()
