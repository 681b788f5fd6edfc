"""The one training loop of jaxseg: jit-compiled, data-parallel, checkpointed, resumable.

A :class:`Trainer` binds a model, an optax optimiser and a loss; it compiles its train step once and
fits any number of runs (different seeds, or different loss hyperparameters passed as
``loss_params`` arrays, which do not trigger recompilation). Batches are sharded along the batch
axis over a 1D device mesh (all local devices by default); parameters are replicated, so XLA
inserts the gradient all-reduce and the result does not depend on the number of devices. A sweep
of ``K`` configurations runs on a 2D ``(config, data)`` mesh
(:func:`jaxseg.data.pipeline.sweep_mesh`): the stacked states are sharded over the config axis
and the batch over the data axis, so ``K`` configurations spread over the devices.

Loss contract: ``loss_fn(outputs, batch, loss_params) -> (batch,)`` per-example losses, where
``outputs = model.apply(variables, *model_inputs(batch), train=True)``.

The host never waits on the device inside an epoch: a background thread builds the next batches
and places them on the mesh while a step runs (``TrainConfig.prefetch``), and the step losses
stay on the device until a fetch every ``TrainConfig.log_every`` steps (and at the end of each
epoch, before validation).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import PartitionSpec
from tqdm.auto import tqdm

from jaxseg.data.pipeline import (CONFIG_AXIS, data_mesh, place_configs, prefetch_to_mesh,
                                  replicate, shard_batch, sweep_mesh)
from jaxseg.train import writers as metric_writers
from jaxseg.train.checkpoint import Checkpointer
from jaxseg.train.state import TrainState, create_train_state

LossFn = Callable[[Any, Mapping[str, jax.Array], Any], jax.Array]
Batch = Mapping[str, np.ndarray]


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """Decay of the parameter average at optimiser update ``step`` (0-based).

  ``min(decay, (1 + step) / (10 + step))``: the average follows the parameters closely while
  there are few updates to average (0.1 at the first update) and settles at ``decay``, so an
  average of a short run is not dominated by the initialisation (the ``num_updates`` rule of
  TensorFlow's ``ExponentialMovingAverage``). The average after the update is
  ``d * average + (1 - d) * params`` (:func:`optax.incremental_update`).
  """
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + step) / (10.0 + step))


def _default_inputs(batch: Mapping[str, Any]) -> tuple[Any, ...]:
  return (batch["image"],)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
  """How long and how to select the model.

  Attributes:
    num_epochs: number of epochs.
    seed: seed of the dropout stream (the data order and the initialisation get their own keys
      from the caller).
    select_metric: validation metric that picks the best epoch.
    select_mode: ``"max"`` or ``"min"``.
    patience: stop after this many epochs without improvement (``None``: never).
    progress: show a progress bar.
    name: label of the run in the progress bar and logs.
    log_every: steps between fetches of the step losses from the device (they stay there in
      between, so the host never waits for a step to finish; a non-finite loss is still reported
      with the step where it first appeared, at most this many steps later). Every epoch ends
      with a fetch.
    prefetch: batches built and placed on the devices ahead of the running step by a
      background thread (:func:`jaxseg.data.pipeline.prefetch_to_mesh`; 0: none).
    checkpoint_every: epochs between the ``latest`` / ``best`` checkpoints of a run with a
      workdir (1: every epoch). The last epoch and an early stop are always saved; a run killed
      in between resumes from the last saved epoch and redoes the later ones. Metrics are
      written every epoch either way. A checkpoint costs about 0.3 s on a 2-core CPU, which
      is 3% of an 11-second epoch.
  """

  num_epochs: int
  seed: int = 0
  select_metric: str = "dice"
  select_mode: str = "max"
  patience: int | None = None
  progress: bool = True
  name: str = "train"
  log_every: int = 50
  prefetch: int = 2
  checkpoint_every: int = 1


@dataclasses.dataclass
class FitResult:
  """Outcome of :meth:`Trainer.fit`: last and best states, and the per-epoch history."""

  state: TrainState
  best_state: TrainState
  best_epoch: int
  best_metric: float
  history: list[dict[str, Any]]


SWEEP_IMPLS = ("vmap", "unroll")
"""How :class:`Trainer` runs a sweep's configurations inside its one compiled step."""


def count_primitive(closed_jaxpr: Any, name: str) -> int:
  """How many equations of primitive ``name`` a (closed) jaxpr holds, nested jaxprs included
  (``jit`` calls, custom derivatives, control flow), e.g. ``count_primitive(jax.make_jaxpr(f)(x),
  "conv_general_dilated")``."""
  def walk(jaxpr) -> int:
    n = 0
    for eqn in jaxpr.eqns:
      n += eqn.primitive.name == name
      for value in eqn.params.values():
        for sub in value if isinstance(value, (tuple, list)) else (value,):
          if isinstance(sub, jax.extend.core.ClosedJaxpr):
            n += walk(sub.jaxpr)
          elif isinstance(sub, jax.extend.core.Jaxpr):
            n += walk(sub)
    return n
  return walk(getattr(closed_jaxpr, "jaxpr", closed_jaxpr))


def choose_sweep_impl(devices: Iterable[jax.Device], convolutions: int) -> str:
  """The sweep program that :class:`Trainer` runs when ``sweep_impl`` is None: a cost model per
  backend and model.

  On accelerators ``"vmap"``: one copy of the step, whose vmapped convolutions (grouped ones)
  run well there. On CPUs it depends on the model. ``vmap`` turns each of its ``convolutions``
  (``lax.conv_general_dilated`` equations in the model's forward pass) into a grouped
  convolution, which XLA:CPU runs several times slower than the plain ones, so a model with any
  convolution gets ``"unroll"`` (one copy per configuration, plain convolutions, ``K`` times
  the compilation); a model without any (every convolution a patch-matrix product,
  ``conv_impl="im2col"``, or no convolutions at all) gets ``"vmap"``: batched matrix products
  run as fast as ``K`` separate ones, and compile once. Measured on 2-core CPUs (BENCHMARKS.md,
  "Sweep vs one after another"): the seed-002 U-Net (19 convolutions) ran 1.84x faster unrolled,
  its patch-matrix variant (one convolution, the 1x1 head) 1.65x, the TransUNet of
  ``adaptive_focal`` 1.32x per epoch, the seed-000 U-Net of ``hierarchical`` (11) 1.57x; the
  patch-matrix 3D probabilistic U-Net of ``anatomical_vs_diagnostic`` (none) trained its epochs
  as fast vmapped, and compiled 2.6x faster (``python -m benchmarks.sweep_choice`` prints the
  choice for every study).
  """
  if any(d.platform != "cpu" for d in devices):
    return "vmap"
  return "unroll" if convolutions else "vmap"


def _unrolled(step: Callable[..., Any]) -> Callable[..., Any]:
  """``step`` over the leading config axis of ``state`` and ``loss_params`` as one copy per
  configuration in one program (a Python loop under ``jit``), the results stacked again.

  The same function as ``vmap(step, in_axes=(0, None, 0, None))``. On XLA:CPU it ran 2D models
  1.3-1.8x faster: ``vmap`` turns every convolution into a grouped one, which XLA:CPU runs slowly,
  while the copies keep plain convolutions and the thunk executor runs independent copies
  concurrently (BENCHMARKS.md, "Sweep vs one after another"). It costs one step's compilation
  per configuration.
  """
  def unrolled(state, batch, loss_params, key):
    k = jax.tree.leaves(state)[0].shape[0]  # the configurations on this device
    outs = [step(jax.tree.map(lambda x, i=i: x[i], state), batch,
                 jax.tree.map(lambda x, i=i: x[i], loss_params), key) for i in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outs)
  return unrolled


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


class Trainer:
  """Compiled train/eval functions of one (model, optimiser, loss) triple.

  With ``num_configs=K`` the trainer runs a *sweep*: ``K`` configurations that differ only in
  their loss hyperparameters are trained as one compiled program. States are stacked on a leading
  config axis, ``loss_params`` leaves have a leading axis of size ``K`` and every configuration
  sees the same (sharded) batch. ``sweep_impl`` says how the program runs the configurations:
  ``"vmap"`` (the train step vmapped over the config axis) or ``"unroll"`` (one copy of the step
  per configuration: plain convolutions instead of grouped ones); ``None`` lets
  :func:`choose_sweep_impl` pick from the backend and the model (on CPUs: ``"unroll"`` for a model
  with convolutions, ``"vmap"`` for one without), at the first :meth:`init` or :meth:`step`, when
  the model's inputs are known; :attr:`sweep_impl` is None until then. A configuration trained
  inside a sweep follows the same trajectory as the same configuration trained alone.

  With ``ema_decay`` the state keeps an exponential moving average of the parameters, updated
  after every step (:func:`ema_decay_at`); validation, the best state and exports use it
  (:attr:`TrainState.variables`), training continues from the raw parameters.
  """

  def __init__(
      self,
      model: nn.Module,
      tx: optax.GradientTransformation,
      loss_fn: LossFn,
      *,
      mesh: jax.sharding.Mesh | None = None,
      model_inputs: Callable[[Mapping[str, Any]], tuple[Any, ...]] = _default_inputs,
      num_configs: int | None = None,
      ema_decay: float | None = None,
      sweep_impl: str | None = None,
  ):
    if num_configs is not None and num_configs < 1:
      raise ValueError(f"num_configs must be >= 1, got {num_configs}")
    if sweep_impl not in (None, *SWEEP_IMPLS):
      raise ValueError(f"sweep_impl must be one of {', '.join(SWEEP_IMPLS)} (or None: the "
                       f"Trainer chooses); got {sweep_impl!r}")
    if ema_decay is not None and not 0.0 < ema_decay < 1.0:
      raise ValueError(f"ema_decay must lie in (0, 1) (e.g. 0.99), or be None for no parameter "
                       f"average; got {ema_decay}")
    self.ema_decay = ema_decay
    self.model = model
    self.tx = tx
    self.loss_fn = loss_fn
    if mesh is None:  # a (config, data) mesh for a sweep on one process
      mesh = (sweep_mesh(num_configs) if num_configs is not None and jax.process_count() == 1
              else data_mesh())
    if CONFIG_AXIS in mesh.axis_names and (num_configs is None
                                           or num_configs % mesh.shape[CONFIG_AXIS]):
      raise ValueError(f"a mesh with a {CONFIG_AXIS!r} axis of {mesh.shape[CONFIG_AXIS]} needs a "
                       f"sweep of a multiple of that many configurations, got num_configs="
                       f"{num_configs}")
    self.mesh = mesh
    self.model_inputs = model_inputs
    self.num_configs = num_configs
    # "vmap" or "unroll" for a sweep; None (a sweep on CPUs) until the first init or step shows
    # the model to choose_sweep_impl; a single configuration needs neither
    self.sweep_impl = sweep_impl
    if (sweep_impl is None and num_configs is not None
        and any(d.platform != "cpu" for d in mesh.devices.flat)):
      self.sweep_impl = choose_sweep_impl(mesh.devices.flat, 0)  # the model does not matter
    self._step = (None if num_configs is not None and self.sweep_impl is None
                  else self._compile_step())
    # Initialisation as one compiled program: run eagerly, every layer's initialiser is its own
    # small compilation (hundreds for a U-Net; seconds to tens of seconds per run on a CPU).
    self._init = jax.jit(functools.partial(create_train_state, model, tx,
                                           ema=ema_decay is not None))

  def _compile_step(self) -> Callable[..., Any]:
    """The jitted (sweep) train step for :attr:`sweep_impl`."""
    step = self._train_step
    if self.num_configs is not None:
      step = (jax.vmap(step, in_axes=(0, None, 0, None)) if self.sweep_impl == "vmap"
              else _unrolled(step))
      if CONFIG_AXIS in self.mesh.axis_names:
        # The config axis is manual: each row of devices runs the sweep step of its own
        # configurations, while XLA still shards the batch over the (automatic) data axis.
        # (Left to XLA's partitioner, vmapped convolutions sharded over the config axis fail:
        # their feature groups are the configurations.)
        configs = PartitionSpec(CONFIG_AXIS)
        step = jax.shard_map(step, mesh=self.mesh, in_specs=(configs, PartitionSpec(), configs,
                                                             PartitionSpec()),
                             out_specs=(configs, configs), axis_names=frozenset({CONFIG_AXIS}),
                             check_vma=False)
    return jax.jit(step, donate_argnums=0)

  def _choose(self, batch: Batch, key: jax.Array) -> None:
    """Chooses :attr:`sweep_impl` from the convolutions of the model's traced initialisation on
    ``batch``'s inputs and compiles the step (called while the step is still None)."""
    convolutions = count_primitive(self.init_jaxpr(batch, key), "conv_general_dilated")
    self.sweep_impl = choose_sweep_impl(self.mesh.devices.flat, convolutions)
    self._step = self._compile_step()

  def init_jaxpr(self, sample_batch: Batch, key: jax.Array | None = None) -> Any:
    """The closed jaxpr of :meth:`init`'s program on ``sample_batch``'s inputs: traced, not
    compiled. It holds the model's forward pass, whose convolutions :func:`choose_sweep_impl`
    counts (``benchmarks/sweep_choice.py`` prints them per study)."""
    key = jax.random.key(0) if key is None else key
    return jax.make_jaxpr(self._init)(self._sample_inputs(sample_batch), key)

  # -- pure functions (compiled in __init__; a CPU sweep's step at its first init or step) -----
  def _train_step(self, state: TrainState, batch, loss_params, key):
    dropout_key = jax.random.fold_in(key, state.step)

    def objective(params):
      variables = {"params": params}
      mutable = []
      if state.batch_stats:
        variables["batch_stats"] = state.batch_stats
        mutable = ["batch_stats"]
      outputs, updates = self.model.apply(variables, *self.model_inputs(batch), train=True,
                                          mutable=mutable, rngs={"dropout": dropout_key})
      per_example = self.loss_fn(outputs, batch, loss_params)
      return jnp.mean(per_example), updates

    (loss, updates), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    param_updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, param_updates)
    ema_params = state.ema_params
    if self.ema_decay is not None:
      if ema_params is None:
        raise ValueError("this Trainer averages parameters (ema_decay) but the state keeps no "
                         "average: create the state with Trainer.init")
      ema_params = optax.incremental_update(
          params, ema_params, step_size=1.0 - ema_decay_at(self.ema_decay, state.step))
    state = state.replace(step=state.step + 1, params=params,
                          batch_stats=updates.get("batch_stats", state.batch_stats),
                          opt_state=opt_state, ema_params=ema_params)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  # -- config axis -----------------------------------------------------------------------------
  @property
  def _k(self) -> int:
    return 1 if self.num_configs is None else self.num_configs

  def unstack(self, tree: Any) -> list[Any]:
    """Per-configuration views of a (possibly stacked) pytree: a list of ``num_configs`` trees.

    Host arrays give host slices. Device arrays give trees replicated on the mesh; on CPU devices
    they are sliced on the host (one copy of the stacked tree, then ``device_put``): an eager
    ``x[k]`` of a config-sharded array is a small program with a cross-device all-reduce, and
    many of them in flight on XLA:CPU's devices, which share one thread pool, can leave a
    collective waiting for a participant that never gets a thread (XLA aborts the process after
    a 40 s rendezvous timeout; seen under load with 4 simulated devices).
    """
    if self.num_configs is None:
      return [tree]
    leaves = jax.tree.leaves(tree)
    on_device = any(isinstance(x, jax.Array) for x in leaves)
    if on_device and all(d.platform != "cpu" for d in self.mesh.devices.flat):
      return [jax.tree.map(lambda x, k=k: x[k], tree) for k in range(self.num_configs)]
    host = jax.device_get(tree) if on_device else tree
    views = [jax.tree.map(lambda x, k=k: x[k], host) for k in range(self.num_configs)]
    return [replicate(v, self.mesh) for v in views] if on_device else views

  def stack(self, trees: list[Any]) -> Any:
    """Inverse of :meth:`unstack`."""
    if self.num_configs is None:
      return trees[0]
    return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)

  # -- public API ------------------------------------------------------------------------------
  def init(self, key: jax.Array, sample_batch: Batch) -> TrainState:
    """A fresh state from ``key`` (same key, same parameters), replicated over the mesh.

    In a sweep every configuration starts from this same initialisation.
    """
    if self._step is None:
      self._choose(sample_batch, key)
    inputs = self._sample_inputs(sample_batch)
    state = self._init(inputs, key)
    if self.num_configs is not None:
      state = jax.tree.map(lambda x: jnp.stack([x] * self.num_configs), state)
    return self.place(state)

  def place(self, state: Any) -> Any:
    """``state`` on the mesh: a sweep's stacked state sharded over the ``config`` axis (each
    device holds its configurations only), otherwise replicated."""
    if self.num_configs is None:
      return replicate(state, self.mesh)
    return place_configs(state, self.mesh)

  def _sample_inputs(self, batch: Batch) -> tuple[Any, ...]:
    """The model's inputs for the first example of ``batch``."""
    return self.model_inputs({k: jnp.asarray(v[:1]) for k, v in batch.items()})

  def step(self, state: TrainState, batch: Batch, loss_params: Any, key: jax.Array):
    """One optimiser update on a host batch (sharded here). Donates ``state``."""
    if self._step is None:
      self._choose(batch, key)
    return self._step(state, shard_batch(batch, self.mesh), loss_params, key)

  def fit(
      self,
      state: TrainState,
      *,
      batches: Callable[[int], Iterable[Batch]],
      evaluate: Callable[[TrainState], Mapping[str, float]],
      config: TrainConfig,
      loss_params: Any = None,
      workdir: str | os.PathLike | None = None,
      resume: bool = False,
      log: Callable[[str], None] = print,
  ) -> FitResult | list[FitResult]:
    """Trains ``state`` for ``config.num_epochs`` epochs, evaluating after each one.

    Args:
      state: initial state (from :meth:`init`).
      batches: ``epoch -> iterable of host batches``; must be a pure function of the epoch so
        that a resumed run sees the same data. If it has ``get_state()`` / ``set_state(state)``
        (a :class:`jaxseg.data.pipeline.PatchLoader`: Grain's iterator position, as JSON), the
        state is saved with every ``latest`` checkpoint and restored on resume.
      evaluate: ``state -> metrics`` on validation data for one configuration's state; must
        contain ``config.select_metric``.
      config: epochs, selection and early stopping (a sweep stops when every configuration has
        gone ``patience`` epochs without improving).
      loss_params: pytree of arrays passed to the loss (e.g. ``{"alpha": 1.0}``); in a sweep each
        leaf has a leading axis of size ``num_configs``.
      workdir: where ``metrics.jsonl``, TensorBoard event files (``tensorboard/``, one run per
        configuration in a sweep: `jaxseg.train.writers`) and ``checkpoints/{latest,best}`` go
        (``None``: in memory).
      resume: continue from the latest checkpoint in ``workdir`` if there is one.
      log: where to print one line per epoch.

    Returns:
      A :class:`FitResult`, or in a sweep a list of them, one per configuration.

    Raises:
      NonFiniteLossError: naming the step, when the loss becomes NaN or infinite; the checkpoint
        of the last completed epoch stays on disk.
    """
    if config.select_mode not in ("max", "min"):
      raise ValueError(f"select_mode must be 'max' or 'min', got {config.select_mode!r}")
    k_configs = self._k
    loss_params = jax.tree.map(jnp.asarray, {} if loss_params is None else loss_params)
    if self.num_configs is not None:
      for leaf in jax.tree.leaves(loss_params):
        if leaf.shape[:1] != (k_configs,):
          raise ValueError(f"sweep loss_params leaves need a leading axis of {k_configs}, got "
                           f"shape {leaf.shape}")
      loss_params = place_configs(loss_params, self.mesh)
      state = self.place(state)
    key = jax.random.key(config.seed)
    sign = 1.0 if config.select_mode == "max" else -1.0
    best_metric = [-math.inf] * k_configs
    best_epoch = [-1] * k_configs
    stale = [0] * k_configs
    history: list[list[dict[str, Any]]] = [[] for _ in range(k_configs)]
    best_states = self.unstack(jax.device_get(state))
    start_epoch = 0

    latest = best = None
    tensorboard: list[metric_writers.MetricWriter] = []
    if workdir is not None:
      workdir = os.fspath(workdir)
      # Several processes (jax.distributed) share one workdir: process 0 alone removes old
      # checkpoints and writes metrics.jsonl; orbax writes checkpoints from every process.
      if (not resume and jax.process_index() == 0
          and os.path.exists(os.path.join(workdir, "checkpoints"))):
        shutil.rmtree(os.path.join(workdir, "checkpoints"))
      events_dir = os.path.join(workdir, metric_writers.TENSORBOARD_DIR)
      if not resume and jax.process_index() == 0 and os.path.exists(events_dir):
        shutil.rmtree(events_dir)
      os.makedirs(workdir, exist_ok=True)
      _sync_processes("jaxseg_fit_workdir_ready")
      latest = Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
      best = Checkpointer(os.path.join(workdir, "checkpoints", "best"))
      metrics_path = os.path.join(workdir, "metrics.jsonl")
      if resume and latest.latest_epoch() is not None:
        state, meta = latest.restore(state)
        start_epoch = meta["epoch"] + 1
        best_metric, best_epoch, stale = meta["best_metric"], meta["best_epoch"], meta["stale"]
        if meta.get("data") is not None and hasattr(batches, "set_state"):
          batches.set_state(meta["data"])
        if best.latest_epoch() is not None:
          best_states = self.unstack(best.restore(jax.device_get(state))[0])
        records = [h for h in _read_jsonl(metrics_path) if h["epoch"] < start_epoch]
        history = [[h for h in records if h.get("config", 0) == k] for k in range(k_configs)]
        log(f"[{config.name}] resumed after epoch {start_epoch} from {latest.directory}")
      _write_jsonl(metrics_path, [h for hs in history for h in hs])
      # Process 0 only, as metrics.jsonl; a resumed run hides the events of the epochs it redoes.
      tensorboard = [
          metric_writers.MetricWriter(logdir, purge_step=start_epoch if resume else None,
                                      enabled=jax.process_index() == 0)
          for logdir in metric_writers.run_logdirs(workdir, self.num_configs)]

    for field in ("log_every", "checkpoint_every"):
      value = getattr(config, field)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be an integer >= 1, got {value!r}")
    step_number = int(np.max(np.asarray(state.step)))  # the host's count; no fetch per step
    best_unsaved = False  # an improvement since the last checkpoint (checkpoint_every > 1)
    for epoch in range(start_epoch, config.num_epochs):
      tic = time.perf_counter()
      losses: list[np.ndarray] = []
      pending: list[tuple[int, jax.Array]] = []  # (step, loss still on the device)
      bar = tqdm(batches(epoch), desc=f"{config.name} {epoch + 1}/{config.num_epochs}",
                 disable=not config.progress, leave=False, mininterval=1.0)

      def fetch_losses():
        """One transfer of the pending step losses; the first non-finite one stops the run."""
        if not pending:
          return
        values = _fetch([loss for _, loss in pending])
        for (n, _), value in zip(pending, values):
          loss = np.atleast_1d(np.asarray(value, np.float64))
          if not np.all(np.isfinite(loss)):
            bad = [k for k in range(k_configs) if not np.isfinite(loss[k])]
            which = f" in configuration(s) {bad}" if self.num_configs is not None else ""
            raise NonFiniteLossError(
                f"[{config.name}] non-finite loss{which} at step {n} (epoch {epoch + 1}); the "
                f"last good checkpoint is "
                f"{latest.directory if latest else 'not saved (no workdir)'}")
          losses.append(loss)
        pending.clear()
        if losses:
          bar.set_postfix(loss=f"{losses[-1].mean():.4f}", refresh=False)

      for batch in prefetch_to_mesh(bar, self.mesh, size=config.prefetch):
        if self._step is None:  # a CPU sweep whose state no init of this trainer made
          self._choose(batch, key)
        state, step_metrics = self._step(state, batch, loss_params, key)
        step_number += 1
        pending.append((step_number, step_metrics["loss"]))
        if len(pending) >= config.log_every:
          fetch_losses()
      fetch_losses()
      views = self.unstack(state)
      seconds = time.perf_counter() - tic
      improved = []
      for k in range(k_configs):
        metrics = {name: float(v) for name, v in evaluate(views[k]).items()}
        if config.select_metric not in metrics:
          raise KeyError(f"evaluate() returned {sorted(metrics)}, without the selection metric "
                         f"{config.select_metric!r}")
        record = {"epoch": epoch, "step": int(np.asarray(views[k].step)),
                  "train_loss": float(np.mean([l[k] for l in losses])),
                  **{f"val_{name}": v for name, v in metrics.items()}, "seconds": seconds}
        if self.num_configs is not None:
          record["config"] = k
        history[k].append(record)
        value = sign * metrics[config.select_metric]
        improved.append(value > best_metric[k])
        if improved[k]:
          best_metric[k], best_epoch[k], stale[k] = value, epoch, 0
          best_states[k] = jax.device_get(views[k])
        else:
          stale[k] += 1
        tag = f" config {k}" if self.num_configs is not None else ""
        log(f"[{config.name}{tag}] epoch {epoch + 1}/{config.num_epochs} loss "
            f"{record['train_loss']:.4f} val {config.select_metric} "
            f"{metrics[config.select_metric]:.4f}{' *' if improved[k] else ''} ({seconds:.1f}s)")
      stopping = config.patience is not None and min(stale) >= config.patience
      best_unsaved = best_unsaved or any(improved)
      if workdir is not None:
        # Metrics first, then best, then latest: a run killed in between resumes from the older
        # latest checkpoint and drops (then recomputes) the records of later epochs, so no
        # record of an epoch that a checkpoint covers is ever lost.
        _write_jsonl(metrics_path, [h for hs in history for h in hs])
        for k, writer in enumerate(tensorboard):
          writer.write_scalars(epoch, metric_writers.epoch_scalars(history[k][-1]))
        if ((epoch + 1) % config.checkpoint_every == 0 or epoch + 1 == config.num_epochs
            or stopping):
          if best_unsaved:
            best.save(epoch, self.stack(best_states), {"epoch": epoch, "best_epoch": best_epoch})
            best_unsaved = False
          data_state = batches.get_state() if hasattr(batches, "get_state") else None
          latest.save(epoch, state, {"epoch": epoch, "best_metric": best_metric,
                                     "best_epoch": best_epoch, "stale": stale,
                                     "data": data_state})
      if stopping:
        log(f"[{config.name}] early stop: no improvement for {min(stale)} epochs")
        break

    if latest is not None:
      latest.close()
      best.close()
    for writer in tensorboard:
      writer.close()
    results = [FitResult(state=view, best_state=replicate(best_states[k], self.mesh),
                         best_epoch=best_epoch[k], best_metric=sign * best_metric[k],
                         history=history[k])
               for k, view in enumerate(self.unstack(state))]
    return results if self.num_configs is not None else results[0]


def _fetch(arrays: list[jax.Array]) -> list[np.ndarray]:
  """Device -> host, one transfer for a list of arrays (the loop's only per-interval fetch)."""
  return jax.device_get(arrays)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _sync_processes(name: str) -> None:
  """Barrier across the processes of a ``jax.distributed`` job (nothing on one process)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    multihost_utils.sync_global_devices(name)


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
  """Atomically replaces ``path`` (written by process 0 only when there are several)."""
  if jax.process_index() != 0:
    return
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  os.replace(tmp, path)
