"""Paper-preset train steps on an accelerator: memory, FLOPs, parameters and step time per study.

For the ``paper`` preset of every study (``experiments/configs/<study>.py``; the
anatomical-vs-diagnostic study as its two tasks) this builds the train step exactly as the
study's runner does -- the preset's model at its real width, the study's loss configurations
combined by :func:`experiments.runner.sweep_loss`, its optimiser and schedule, through
``Comparison.trainer`` -- and:

1. lowers ``Trainer._step`` (the jitted step of :class:`jaxseg.train.loop.Trainer`) at the
   paper's batch and patch with ``jax.ShapeDtypeStruct`` inputs (no data), compiles it and reads
   XLA's memory analysis per device (arguments, outputs, aliased = donated state, temporaries;
   peak) and its FLOP count per step;
2. runs ``--steps`` real steps of that compiled program on random data on whatever backend is
   present and times them (the first step is a warm-up; s/step is the median of the others).

On a CPU the real steps use a reduced batch (default: the device count) because a paper batch
takes minutes per step there; the table says so ("batch run / paper"), and the FLOPs and memory
columns stay those of the paper batch (a second compile at the run batch times the steps).
``--spatial-scale`` shrinks every patch (to multiples of the model's ``size_multiple``) when even
compiling the paper shapes is too slow; the table header says so.

The step compiled is one loss configuration's (what one training run of the paper costs; the
preset's ``train.mode = "sweep"`` trains its K configurations as one vmapped program, K times
the work and the state): ``--sweep`` compiles that program instead.

Batches come from the study's own input code: a few synthetic volumes (blobs and noise, with
every annotation the study's loss reads: the second annotation of ``adaptive_focal``, the zone
or lesion labels and signed distance maps of ``anatomical_vs_diagnostic``) go through the
study's ``volumes()`` and the comparison's Grain loader, so every key, dtype and shape is the one
training sees.

Usage::

  python -m benchmarks.accelerator                                  # every study, 2 steps
  python -m benchmarks.accelerator --studies tversky,adaptive_focal --steps 3
  python -m benchmarks.accelerator --spatial-scale 0.5              # smaller patches (slow CPU)
  python -m benchmarks.accelerator --dtype bfloat16 --peak-tflops 989 --json out.json   # GPU
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from jaxseg import cpu_flags

cpu_flags.apply()  # before JAX starts its backend (XLA reads its flags then)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from benchmarks import _machine  # noqa: E402
from experiments import adaptive_focal, hierarchical, runner, tversky  # noqa: E402
from experiments import anatomical_vs_diagnostic as avd  # noqa: E402
from experiments.configs import adaptive_focal as af_config  # noqa: E402
from experiments.configs import anatomical_vs_diagnostic as avd_config  # noqa: E402
from experiments.configs import hierarchical as hierarchical_config  # noqa: E402
from experiments.configs import tversky as tversky_config  # noqa: E402
from jaxseg.data.pipeline import CONFIG_AXIS, DATA_AXIS, shard_batch  # noqa: E402
from jaxseg.train.loop import Trainer  # noqa: E402
from jaxseg.train.state import create_train_state  # noqa: E402

#: Every study (the anatomical-vs-diagnostic study is two comparisons, one per task).
STUDIES = ("hierarchical", "tversky", "adaptive_focal", "anatomical_vs_diagnostic/anatomical",
           "anatomical_vs_diagnostic/diagnostic")
ALIASES = {"avd": "anatomical_vs_diagnostic", "af": "adaptive_focal"}
GIB = 1024 ** 3
#: Card sizes (GiB) of the "fits" column.
CARDS_GIB = (16, 40, 80)
#: JAX preallocates this share of a GPU's memory by default (XLA_PYTHON_CLIENT_MEM_FRACTION).
DEFAULT_MEM_FRACTION = 0.75


def select(names: str | Sequence[str] | None) -> list[str]:
  """Study names from ``--studies``: full names, ``anatomical_vs_diagnostic`` (both tasks),
  a task (``anatomical_vs_diagnostic/diagnostic``) or the aliases ``avd`` / ``af``."""
  if names is None:
    return list(STUDIES)
  if isinstance(names, str):
    names = [n for n in names.replace(" ", ",").split(",") if n]
  out = []
  for name in names:
    head, _, task = name.partition("/")
    head = ALIASES.get(head, head)
    full = f"{head}/{task}" if task else head
    matches = [s for s in STUDIES if s == full or s.startswith(full + "/")]
    if not matches:
      raise SystemExit(f"unknown study {name!r}: one of {', '.join(STUDIES)} "
                       f"(or anatomical_vs_diagnostic / avd for both tasks)")
    out += [m for m in matches if m not in out]
  return out


# ------------------------------------------------------------------------------------------------
# Resolving a preset as the study's command line does.
# ------------------------------------------------------------------------------------------------


def resolve(name: str, preset: str = "paper") -> tuple[ml_collections.ConfigDict, runner.Study]:
  """``(config, study)`` of a study's preset after the study's own ``check`` (which for
  ``adaptive_focal`` sets the model's image size and the patch from ``image_size``)."""
  head, _, task = name.partition("/")
  if head == "anatomical_vs_diagnostic":
    cfg = avd_config.get_config(preset)
    avd.STUDY.check(cfg)
    return avd.task_config(cfg, task), avd.TaskStudy(avd.TASKS[task])
  if head == "hierarchical":
    cfg, study = hierarchical_config.get_config(preset), hierarchical.Hierarchical()
    # No alpha search (it trains): alpha given, the paper's Table 1 (same shapes as 'data').
    cfg.penalty = "paper"
    cfg.alpha = float(max(cfg.alphas))
  elif head == "tversky":
    cfg, study = tversky_config.get_config(preset), tversky.Tversky()
  elif head == "adaptive_focal":
    cfg, study = af_config.get_config(preset), adaptive_focal.AdaptiveFocal()
  else:
    raise ValueError(f"unknown study {name!r}")
  study.check(cfg)
  return cfg, study


# ------------------------------------------------------------------------------------------------
# Synthetic cases through the study's own input code.
# ------------------------------------------------------------------------------------------------


def _radius(shape: Sequence[int], centre: Sequence[float]) -> np.ndarray:
  """In-plane normalised distance from ``centre`` (fractions of the sides), per voxel."""
  grids = np.meshgrid(*[(np.arange(n) + 0.5) / n for n in shape[:2]], indexing="ij")
  r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre))) * 2.0
  return np.broadcast_to(r[..., None], tuple(shape[:2]) + tuple(shape[2:])).copy()


def synthetic_examples(name: str, shape: Sequence[int], count: int = 2,
                       seed: int = 0) -> list[dict[str, Any]]:
  """``count`` example dicts as the study's dataset builder gives them (uint8 masks, float32
  images, spacing, case id), of spatial ``shape`` ``(x, y, z)``: blobs on N(0, 1) noise."""
  rng = np.random.default_rng(seed)
  head, _, task = name.partition("/")
  out = []
  for i in range(count):
    centre = (0.5 + 0.05 * i, 0.5 - 0.05 * i)
    r = _radius(shape, centre)
    e: dict[str, Any] = {"case_id": f"synthetic{i}", "spacing": (0.5, 0.5, 3.0)}
    if head == "hierarchical":  # nine classes as rings, the outermost the background
      label = (8 - np.clip((r * 9).astype(np.int64), 0, 8)).astype(np.uint8)
    elif head == "anatomical_vs_diagnostic":
      label = np.where(r < 0.3, 1, np.where(r < 0.55, 2, 0)).astype(np.uint8)  # TZ, PZ
      lesion = (_radius(shape, (centre[0] + 0.1, centre[1])) < 0.15).astype(np.uint8)
      e.update(zones=label, lesions=lesion, patient_label=np.int64(1))
    else:
      label = (r < 0.5).astype(np.uint8)
    if head == "adaptive_focal":
      e["non_expert"] = (_radius(shape, (centre[0] + 0.04, centre[1])) < 0.5).astype(np.uint8)
    channels = 3 if head == "anatomical_vs_diagnostic" else 0
    noise = rng.normal(size=tuple(shape) + ((channels,) if channels else ())).astype(np.float32)
    mean = (label.astype(np.float32) / max(1, int(label.max())))
    e["image"] = noise + (mean[..., None] if channels else mean)
    if head != "anatomical_vs_diagnostic":
      e["label"] = label
    out.append(e)
  return out


# ------------------------------------------------------------------------------------------------
# The study's train step.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Setup:
  """One study's train step as its runner builds it, with a host batch of the run's shapes."""

  name: str
  cfg: ml_collections.ConfigDict
  cmp: runner.Comparison
  configs: list[runner.LossConfig]
  trainer: Trainer
  loss_params: Any           # one configuration's, or stacked over the sweep's configurations
  batch: dict[str, np.ndarray]
  paper_batch: int           # the preset's train.batch_size
  paper_patch: tuple[int, ...]
  num_configs: int | None
  workdir: str

  @property
  def patch(self) -> tuple[int, ...]:
    return tuple(int(p) for p in self.cfg.train.patch)

  @property
  def size_multiple(self) -> tuple[int, ...]:
    return size_multiple(self.cmp.model, len(self.patch))

  def model_label(self) -> str:
    cfg = self.cfg.model
    parts = [cfg.preset] if cfg.preset else []
    overrides = {k: v for k, v in cfg.overrides.items()
                 if k in ("width", "in_channels", "num_classes", "dtype")}
    parts += [f"{k} {v}" for k, v in overrides.items()]
    return f"{cfg.name} ({', '.join(parts)})" if parts else cfg.name

  def abstract_state(self) -> Any:
    """The train state's ``ShapeDtypeStruct`` tree (nothing allocated), placed as
    :meth:`Trainer.init` places it."""
    trainer = self.trainer
    one = {k: jax.ShapeDtypeStruct((1,) + v.shape[1:], v.dtype) for k, v in self.batch.items()}
    state = jax.eval_shape(
        lambda key, b: create_train_state(trainer.model, trainer.tx, trainer.model_inputs(b),
                                          key), jax.eval_shape(lambda: jax.random.key(0)), one)
    if self.num_configs is not None:
      state = jax.tree.map(lambda s: jax.ShapeDtypeStruct((self.num_configs,) + s.shape,
                                                          s.dtype), state)
    return _with_sharding(state, self._state_sharding())

  def _state_sharding(self) -> NamedSharding:
    mesh = self.trainer.mesh
    spec = (PartitionSpec(CONFIG_AXIS) if self.num_configs is not None
            and CONFIG_AXIS in mesh.axis_names else PartitionSpec())
    return NamedSharding(mesh, spec)

  def abstract_inputs(self, batch_size: int) -> tuple[Any, ...]:
    """``(state, batch, loss_params, key)`` of ``Trainer._step`` as placed ``ShapeDtypeStruct``s,
    the batch at ``batch_size``."""
    mesh = self.trainer.mesh
    data = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype, sharding=data)
             for k, v in self.batch.items()}
    params = _with_sharding(jax.eval_shape(lambda p: jax.tree.map(jnp.asarray, p),
                                           self.loss_params), self._state_sharding())
    key = jax.ShapeDtypeStruct((), jax.eval_shape(lambda: jax.random.key(0)).dtype,
                               sharding=NamedSharding(mesh, PartitionSpec()))
    return self.abstract_state(), batch, params, key

  def placed_loss_params(self) -> Any:
    return jax.device_put(jax.tree.map(jnp.asarray, self.loss_params), self._state_sharding())

  def placed_key(self, seed: int = 0) -> jax.Array:
    return jax.device_put(jax.random.key(seed), NamedSharding(self.trainer.mesh, PartitionSpec()))

  def init(self, seed: int = 0) -> Any:
    """A real train state (:meth:`Trainer.init`)."""
    return self.trainer.init(jax.random.key(seed), self.batch)

  def host_batch(self, batch_size: int) -> dict[str, np.ndarray]:
    """The batch at ``batch_size`` rows (the loader's rows repeated or cut)."""
    n = next(iter(self.batch.values())).shape[0]
    rows = np.arange(batch_size) % n
    return {k: np.ascontiguousarray(v[rows]) for k, v in self.batch.items()}


def _with_sharding(tree: Any, sharding: NamedSharding) -> Any:
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding), tree)


def size_multiple(model: Any, ndim: int) -> tuple[int, ...]:
  """The model's ``size_multiple`` per spatial axis (an int means every axis)."""
  m = model.size_multiple if hasattr(model, "size_multiple") else 1
  return tuple(int(x) for x in m) if isinstance(m, (tuple, list)) else (int(m),) * ndim


def scaled_patch(patch: Sequence[int], multiple: Sequence[int], scale: float) -> tuple[int, ...]:
  """``patch * scale`` per axis, rounded to a multiple of ``multiple`` (at least one)."""
  return tuple(max(m, int(round(p * scale / m)) * m) for p, m in zip(patch, multiple))


def build(name: str, *, preset: str = "paper", batch_size: int | None = None,
          patch: Sequence[int] | None = None, patch_multiple: int | Sequence[int] | None = None,
          spatial_scale: float | None = None,
          dtype: str | None = None, sweep: bool = False, workdir: str | None = None,
          seed: int = 0, mesh: jax.sharding.Mesh | None = None) -> Setup:
  """A study's train step as ``Comparison`` builds it, and a host batch of the run's shapes.

  Args:
    name: one of :data:`STUDIES`.
    preset: ``"paper"`` (default) or ``"cpu"``.
    batch_size: rows of the host batch (default: the preset's ``train.batch_size``).
    patch: training patch (default: the preset's); ``patch_multiple`` makes it that many times
      the model's ``size_multiple`` (per axis when a sequence) instead, ``spatial_scale`` scales
      the preset's.
    dtype: the model's computation dtype (``model.overrides.dtype``; None: the preset's).
    sweep: a trainer of the preset's whole sweep (``num_configs`` = configurations x seeds)
      instead of one configuration's, vmapped as on an accelerator (``sweep_impl="vmap"``).
    workdir: where a study may write (the hierarchical study's penalty matrix); a temporary
      directory by default.
    mesh: the trainer's device mesh (default: the runner's, over every device).
  """
  cfg, study = resolve(name, preset)
  paper_batch, paper_patch = int(cfg.train.batch_size), tuple(int(p) for p in cfg.train.patch)
  if dtype:
    cfg.model.overrides.dtype = dtype
  if patch is not None:
    cfg.train.patch = tuple(int(p) for p in patch)
  workdir = workdir or tempfile.mkdtemp(prefix="jaxseg-accelerator-")
  os.makedirs(workdir, exist_ok=True)
  cfg.workdir = workdir
  cfg.progress = False
  cfg.train.workers = 0
  # a sweep as accelerators run it (vmapped), also when this host's CPU compiles it
  cfg.train.sweep_impl = "vmap"
  cmp = runner.Comparison(cfg, study, log=lambda *_: None)
  multiple = size_multiple(cmp.model, len(cfg.train.patch))
  if patch_multiple is not None:
    factors = ((patch_multiple,) * len(multiple) if isinstance(patch_multiple, int)
               else tuple(patch_multiple))
    cfg.train.patch = tuple(int(f) * m for f, m in zip(factors, multiple))
  elif spatial_scale is not None and patch is None:
    cfg.train.patch = scaled_patch(cfg.train.patch, multiple, spatial_scale)
  rows = int(batch_size or paper_batch)
  cfg.train.batch_size = rows
  cfg.train.samples_per_epoch = rows
  p = tuple(int(x) for x in cfg.train.patch)
  shape = p if len(p) == 3 else p + (2,)  # 2D studies: two slices per volume
  volumes = study.volumes(cmp, synthetic_examples(name, shape, seed=seed))
  cmp.folds = [runner.Fold(volumes, [], [])]
  configs = study.configurations(cmp)
  params = runner.sweep_loss(configs)[1]
  num_configs = len(configs) * int(cfg.seeds) if sweep else None
  trainer = cmp.trainer(configs, 1, num_configs)
  if mesh is not None:  # the same step (optimiser, loss, inputs) on other devices
    trainer = Trainer(cmp.model, trainer.tx, trainer.loss_fn, mesh=mesh,
                      model_inputs=trainer.model_inputs, num_configs=num_configs,
                      sweep_impl=trainer.sweep_impl)
  if num_configs is None:
    loss_params = params[-1]  # the last configuration (a swept hyperparameter's, not the baseline)
  else:
    loss_params = jax.tree.map(lambda *xs: np.stack(xs),
                               *[params[i % len(configs)] for i in range(num_configs)])
  with cmp.loader(volumes, 1) as loader:
    batch = {k: np.asarray(v) for k, v in loader.sample().items()}
  return Setup(name=name, cfg=cfg, cmp=cmp, configs=configs, trainer=trainer,
               loss_params=loss_params, batch=batch, paper_batch=paper_batch,
               paper_patch=paper_patch, num_configs=num_configs, workdir=workdir)


def count_params(params: Any) -> int:
  """Number of parameters of a params tree (arrays or ``ShapeDtypeStruct``s)."""
  return int(sum(math.prod(x.shape) for x in jax.tree.leaves(params)))


# ------------------------------------------------------------------------------------------------
# Compile, analyse, run.
# ------------------------------------------------------------------------------------------------


def _cost(obj: Any) -> dict[str, float]:
  try:
    cost = obj.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (some backends do not implement it)
    return {}
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return dict(cost or {})


def memory(compiled: Any) -> dict[str, int]:
  """XLA's memory analysis of a compiled program, per device, with its peak estimate."""
  m = compiled.memory_analysis()
  if m is None:
    return {}
  out = {k: int(getattr(m, f"{k}_size_in_bytes", 0) or 0)
         for k in ("argument", "output", "alias", "temp", "generated_code")}
  reported = int(getattr(m, "peak_memory_in_bytes", 0) or 0)
  # Donated (aliased) buffers are counted in both the arguments and the outputs.
  estimate = out["argument"] + out["output"] - out["alias"] + out["temp"]
  # XLA:CPU's peak_memory_in_bytes leaves the temporaries out (27 MB against 3.1 GB of them for
  # the hierarchical step): the table shows the sum, the JSON both.
  out["peak_reported"] = reported
  out["peak"] = max(reported, estimate)
  return out


def compile_step(setup: Setup, batch_size: int, log: Callable[[str], None]) -> dict[str, Any]:
  """Lowers and compiles ``Trainer._step`` at ``batch_size`` from shapes alone."""
  tic = time.perf_counter()
  inputs = setup.abstract_inputs(batch_size)
  lowered = setup.trainer._step.lower(*inputs)  # pylint: disable=protected-access
  lower_s = time.perf_counter() - tic
  log(f"  lowered at batch {batch_size} in {lower_s:.1f}s; compiling ...")
  tic = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - tic
  flops = _cost(compiled).get("flops", 0.0)
  source = "compiled"
  if not flops or flops <= 0:  # e.g. a backend that leaves custom calls uncounted
    flops, source = _cost(lowered).get("flops", float("nan")), "lowered"
  mem = memory(compiled)
  log(f"  compiled in {compile_s:.1f}s: {flops / 1e9:,.1f} GFLOP/step ({source}), peak "
      f"{mem.get('peak', 0) / GIB:.2f} GiB/device")
  return {"compiled": compiled, "lower_s": lower_s, "compile_s": compile_s, "flops": float(flops),
          "flops_source": source, "memory": mem}


def run_steps(setup: Setup, compiled: Any, batch_size: int, steps: int,
              log: Callable[[str], None]) -> dict[str, Any]:
  """``steps`` real steps of ``compiled`` on the host batch at ``batch_size``; seconds each."""
  state = setup.init()  # placed as the trainer places it (a sweep's sharded over configs)
  batch = shard_batch(setup.host_batch(batch_size), setup.trainer.mesh)
  params, key = setup.placed_loss_params(), setup.placed_key()
  jax.block_until_ready((state, batch, params))
  times, losses = [], []
  for i in range(steps):
    tic = time.perf_counter()
    state, metrics = compiled(state, batch, params, key)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - tic)
    losses.append(np.asarray(metrics["loss"]).ravel().tolist())
    log(f"  step {i + 1}/{steps}: {times[-1]:.3f}s, loss {losses[-1]}")
  timed = times[1:] or times
  return {"step_s": times, "s_per_step": statistics.median(timed) if timed else float("nan"),
          "losses": losses,
          "finite": bool(all(np.all(np.isfinite(l)) for l in losses))}


def measure(name: str, *, batch: int | None, steps: int, spatial_scale: float | None,
            dtype: str | None, sweep: bool, peak_tflops: float | None,
            log: Callable[[str], None]) -> dict[str, Any]:
  """Everything one table row needs."""
  tic = time.perf_counter()
  log(f"[{name}] building the paper preset's train step ...")
  setup = build(name, spatial_scale=spatial_scale, dtype=dtype, sweep=sweep)
  paper_batch = setup.paper_batch
  run_batch = int(batch or (paper_batch if jax.default_backend() != "cpu"
                            else max(1, jax.device_count())))
  run_batch = max(run_batch, jax.device_count()) // jax.device_count() * jax.device_count()
  abstract_params = setup.abstract_state().params
  n_params = count_params(abstract_params)
  if setup.num_configs is not None:
    n_params //= setup.num_configs
  log(f"[{name}] {setup.model_label()}: {n_params:,} parameters; patch "
      f"{'x'.join(map(str, setup.patch))} (paper {'x'.join(map(str, setup.paper_patch))}), "
      f"batch {paper_batch}, {len(setup.configs)} loss configurations"
      + (f", sweep of {setup.num_configs}" if setup.num_configs else "")
      + f" (built in {time.perf_counter() - tic:.1f}s)")
  row: dict[str, Any] = {
      "study": name, "model": setup.model_label(), "params": n_params,
      "paper_batch": paper_batch, "run_batch": run_batch if steps else None,
      "patch": list(setup.patch), "paper_patch": list(setup.paper_patch),
      "configs_per_step": setup.num_configs or 1, "loss_configurations": len(setup.configs),
      "dtype": str(setup.cfg.model.overrides.get("dtype", "float32")),
      "batch_keys": {k: [list(v.shape[1:]), str(v.dtype)] for k, v in setup.batch.items()}}
  analysis = compile_step(setup, paper_batch, log)
  row.update(compile_s=analysis["compile_s"], lower_s=analysis["lower_s"],
             flops=analysis["flops"], flops_source=analysis["flops_source"],
             memory=analysis["memory"])
  if steps:
    timing = analysis
    if run_batch != paper_batch:
      log(f"[{name}] compiling again at the run batch {run_batch} (paper {paper_batch}) ...")
      timing = compile_step(setup, run_batch, log)
    row["run_flops"] = timing["flops"]
    row.update(run_steps(setup, timing["compiled"], run_batch, steps, log))
    if peak_tflops and row["s_per_step"] > 0:
      achieved = timing["flops"] / row["s_per_step"] / 1e12
      row["tflops"] = achieved
      row["percent_of_peak"] = 100.0 * achieved / peak_tflops
  row["wall_s"] = time.perf_counter() - tic
  log(f"[{name}] done in {row['wall_s']:.1f}s")
  return row


# ------------------------------------------------------------------------------------------------
# Report.
# ------------------------------------------------------------------------------------------------


def _fits(peak: int) -> str:
  """Per card size: ✓ within JAX's default 75% preallocation, ~ only with a larger
  XLA_PYTHON_CLIENT_MEM_FRACTION, ✗ not at all."""
  marks = []
  for gib in CARDS_GIB:
    capacity = gib * GIB
    marks.append("✓" if peak <= DEFAULT_MEM_FRACTION * capacity else "~" if peak <= capacity
                 else "✗")
  return " / ".join(marks)


def header(args: argparse.Namespace) -> list[str]:
  devices = jax.devices()
  import jaxlib  # pylint: disable=import-outside-toplevel
  lines = [f"backend {jax.default_backend()}: {len(devices)} x {devices[0].device_kind}; "
           f"jax {jax.__version__}, jaxlib {jaxlib.__version__}; host CPU {_machine.cpu_name()} "
           f"({os.cpu_count()} cores), load {_machine.load_average()}"]
  notes = []
  if args.spatial_scale is not None:
    notes.append(f"patches scaled by {args.spatial_scale:g} (--spatial-scale; multiples of each "
                 f"model's size_multiple): NOT the paper's shapes")
  if args.dtype:
    notes.append(f"model dtype {args.dtype} (parameters float32)")
  if args.sweep:
    notes.append("each step is the preset's whole sweep (all loss configurations x seeds, vmapped)")
  else:
    notes.append("each step is one loss configuration's (the preset's sweep trains K of them "
                 "as one program: K times the FLOPs and state; --sweep)")
  if os.environ.get("XLA_FLAGS"):
    notes.append(f"XLA_FLAGS={os.environ['XLA_FLAGS']}")
  return lines + notes


def table(rows: Sequence[dict[str, Any]], peak_tflops: float | None,
          backend: str | None = None) -> str:
  backend = backend or jax.default_backend()
  heads = ["study", "model", "params", "configs/step", "batch run / paper", "patch", "GFLOP/step",
           "peak bytes/device", "fits 16/40/80 GB", f"s/step ({backend})", "compile s"]
  if peak_tflops:
    heads.append(f"TFLOP/s (% of {peak_tflops:g})")
  lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
  for r in rows:
    if "error" in r:
      cells = [r["study"], f"failed: {r['error']}"] + [""] * (len(heads) - 2)
      lines.append("| " + " | ".join(cells) + " |")
      continue
    peak = r["memory"].get("peak", 0)
    patch = "x".join(map(str, r["patch"]))
    if r["patch"] != r["paper_patch"]:
      patch += f" (paper {'x'.join(map(str, r['paper_patch']))})"
    run = r.get("run_batch")
    step = (f"{r['s_per_step']:.3f}" + ("" if r.get("finite", True) else " (loss not finite!)")
            if run else "not run")
    cells = [r["study"], r["model"], f"{r['params'] / 1e6:.2f} M", str(r["configs_per_step"]),
             f"{run} / {r['paper_batch']}" if run else f"— / {r['paper_batch']}", patch,
             f"{r['flops'] / 1e9:,.1f}", f"{peak / GIB:.2f} GiB ({peak:,})", _fits(peak), step,
             f"{r['compile_s']:.1f}"]
    if peak_tflops:
      cells.append(f"{r['tflops']:.1f} ({r['percent_of_peak']:.1f}%)" if "tflops" in r else "—")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


FOOTNOTE = (
    "peak bytes/device: XLA's buffer assignment of the paper-batch step, arguments + outputs - "
    "donated + temporaries (or XLA's reported peak where larger); fits: ✓ within JAX's default "
    "75% preallocation of a 16 / 40 / 80 GB card, ~ only with XLA_PYTHON_CLIENT_MEM_FRACTION "
    "raised, ✗ no. GFLOP/step: XLA's cost analysis at the paper batch. s/step: median of the "
    "timed steps after the first (a warm-up), at the run batch; TFLOP/s from the run batch's FLOPs.")


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="python -m benchmarks.accelerator",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--studies", default=None,
                      help=f"comma-separated: {', '.join(STUDIES)}; anatomical_vs_diagnostic "
                      "(or avd) for both tasks (default: all)")
  parser.add_argument("--batch", type=int, default=None,
                      help="batch of the timed steps (default: the paper's on an accelerator, "
                      "the device count on a CPU); FLOPs and memory are always the paper batch's")
  parser.add_argument("--steps", type=int, default=2,
                      help="real steps to run and time (the first is a warm-up; 0: compile only)")
  parser.add_argument("--spatial-scale", type=float, default=None,
                      help="scale every patch by this factor (a slow CPU); not the paper's shapes")
  parser.add_argument("--dtype", default=None,
                      help="model computation dtype, e.g. bfloat16 (parameters stay float32)")
  parser.add_argument("--sweep", action="store_true",
                      help="compile the preset's whole sweep (K configurations) per step")
  parser.add_argument("--peak-tflops", type=float, default=None,
                      help="the device's peak TFLOP/s for the dtype: adds a %% of peak column")
  parser.add_argument("--json", default=None, help="also write the rows as JSON here")
  parser.add_argument("--keep-going", action="store_true",
                      help="report a study that fails and go on with the next")
  parser.add_argument("--report", default=None, metavar="JSON",
                      help="only print the table of a --json file (e.g. of a run cut short)")
  args = parser.parse_args(argv)
  if args.report:
    with open(args.report) as f:
      saved = json.load(f)
    print("\n".join(saved["header"]) + "\n")
    print(table(saved["rows"], saved.get("peak_tflops"), saved["backend"]))
    print("\n" + FOOTNOTE)
    return 0
  names = select(args.studies)

  def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

  head = header(args)
  for line in head:
    log(line)
  rows = []
  for name in names:
    try:
      rows.append(measure(name, batch=args.batch, steps=args.steps,
                          spatial_scale=args.spatial_scale, dtype=args.dtype, sweep=args.sweep,
                          peak_tflops=args.peak_tflops, log=log))
    except Exception as e:  # pylint: disable=broad-except
      if not args.keep_going:
        raise
      log(f"[{name}] FAILED: {type(e).__name__}: {e}")
      rows.append({"study": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"})
    if args.json:  # after every study, so a run cut short keeps what it measured
      _write_json(args.json, head, rows, args.peak_tflops)
  print("\n".join(head))
  print()
  print(table(rows, args.peak_tflops))
  print()
  print(FOOTNOTE)
  if any(not r.get("finite", True) for r in rows):
    return 1
  return 1 if any("error" in r for r in rows) else 0


def _write_json(path: str, head: Sequence[str], rows: Sequence[dict[str, Any]],
                peak_tflops: float | None) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    json.dump({"header": list(head), "backend": jax.default_backend(), "peak_tflops": peak_tflops,
               "device_kind": jax.devices()[0].device_kind, "device_count": jax.device_count(),
               "jax": jax.__version__, "rows": list(rows)}, f, indent=1, default=str)
  os.replace(tmp, path)


if __name__ == "__main__":
  sys.exit(main())
