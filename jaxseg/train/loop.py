"""The one training loop of jaxseg: jit-compiled, data-parallel, checkpointed, resumable.

A :class:`Trainer` binds a model, an optax optimiser and a loss; it compiles its train step once and
fits any number of runs (different seeds, or different loss hyperparameters passed as
``loss_params`` arrays, which do not trigger recompilation). Batches are sharded along the batch
axis over a 1D device mesh (all local devices by default); parameters are replicated, so XLA
inserts the gradient all-reduce and the result does not depend on the number of devices.

Loss contract: ``loss_fn(outputs, batch, loss_params) -> (batch,)`` per-example losses, where
``outputs = model.apply(variables, *model_inputs(batch), train=True)``.
"""

from __future__ import annotations

import dataclasses
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
from tqdm.auto import tqdm

from jaxseg.data.pipeline import data_mesh, replicate, shard_batch
from jaxseg.train.checkpoint import Checkpointer
from jaxseg.train.state import TrainState, create_train_state

LossFn = Callable[[Any, Mapping[str, jax.Array], Any], jax.Array]
Batch = Mapping[str, np.ndarray]


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
  """

  num_epochs: int
  seed: int = 0
  select_metric: str = "dice"
  select_mode: str = "max"
  patience: int | None = None
  progress: bool = True
  name: str = "train"


@dataclasses.dataclass
class FitResult:
  """Outcome of :meth:`Trainer.fit`: last and best states, and the per-epoch history."""

  state: TrainState
  best_state: TrainState
  best_epoch: int
  best_metric: float
  history: list[dict[str, Any]]


class NonFiniteLossError(FloatingPointError):
  """Training produced a NaN or infinite loss."""


class Trainer:
  """Compiled train/eval functions of one (model, optimiser, loss) triple."""

  def __init__(
      self,
      model: nn.Module,
      tx: optax.GradientTransformation,
      loss_fn: LossFn,
      *,
      mesh: jax.sharding.Mesh | None = None,
      model_inputs: Callable[[Mapping[str, Any]], tuple[Any, ...]] = _default_inputs,
  ):
    self.model = model
    self.tx = tx
    self.loss_fn = loss_fn
    self.mesh = data_mesh() if mesh is None else mesh
    self.model_inputs = model_inputs
    self._step = jax.jit(self._train_step, donate_argnums=0)
    self._loss = jax.jit(self._eval_loss)
    self._logits = jax.jit(self._apply)

  # -- pure functions (compiled in __init__) ---------------------------------------------------
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
    state = state.replace(step=state.step + 1,
                          params=optax.apply_updates(state.params, param_updates),
                          batch_stats=updates.get("batch_stats", state.batch_stats),
                          opt_state=opt_state)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  def _eval_loss(self, variables, batch, loss_params):
    outputs = self.model.apply(variables, *self.model_inputs(batch), train=False)
    return self.loss_fn(outputs, batch, loss_params)

  def _apply(self, variables, *inputs):
    return self.model.apply(variables, *inputs, train=False)

  # -- public API ------------------------------------------------------------------------------
  def init(self, key: jax.Array, sample_batch: Batch) -> TrainState:
    """A fresh state from ``key`` (same key, same parameters), replicated over the mesh."""
    inputs = self.model_inputs({k: jnp.asarray(v[:1]) for k, v in sample_batch.items()})
    return replicate(create_train_state(self.model, self.tx, inputs, key), self.mesh)

  def step(self, state: TrainState, batch: Batch, loss_params: Any, key: jax.Array):
    """One optimiser update on a host batch (sharded here). Donates ``state``."""
    return self._step(state, shard_batch(batch, self.mesh), loss_params, key)

  def logits_fn(self, state: TrainState) -> Callable[..., jax.Array]:
    """``inputs -> model outputs`` in evaluation mode, bound to ``state``'s variables."""
    variables = state.variables
    return lambda *inputs: self._logits(variables, *inputs)

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
  ) -> FitResult:
    """Trains ``state`` for ``config.num_epochs`` epochs, evaluating after each one.

    Args:
      state: initial state (from :meth:`init`).
      batches: ``epoch -> iterable of host batches``; must be a pure function of the epoch so
        that a resumed run sees the same data.
      evaluate: ``state -> metrics`` on validation data; must contain ``config.select_metric``.
      config: epochs, selection and early stopping.
      loss_params: pytree of arrays passed to the loss (e.g. ``{"alpha": 1.0}``).
      workdir: where ``metrics.jsonl`` and ``checkpoints/{latest,best}`` go (``None``: in memory).
      resume: continue from the latest checkpoint in ``workdir`` if there is one.
      log: where to print one line per epoch.

    Raises:
      NonFiniteLossError: naming the step, when the loss becomes NaN or infinite; the checkpoint
        of the last completed epoch stays on disk.
    """
    if config.select_mode not in ("max", "min"):
      raise ValueError(f"select_mode must be 'max' or 'min', got {config.select_mode!r}")
    loss_params = jax.tree.map(jnp.asarray, {} if loss_params is None else loss_params)
    key = jax.random.key(config.seed)
    sign = 1.0 if config.select_mode == "max" else -1.0
    best_metric, best_epoch, stale = -math.inf, -1, 0
    history: list[dict[str, Any]] = []
    best_state = jax.device_get(state)
    start_epoch = 0

    latest = best = None
    if workdir is not None:
      workdir = os.fspath(workdir)
      if not resume and os.path.exists(os.path.join(workdir, "checkpoints")):
        shutil.rmtree(os.path.join(workdir, "checkpoints"))
      os.makedirs(workdir, exist_ok=True)
      latest = Checkpointer(os.path.join(workdir, "checkpoints", "latest"))
      best = Checkpointer(os.path.join(workdir, "checkpoints", "best"))
      metrics_path = os.path.join(workdir, "metrics.jsonl")
      if resume and latest.latest_epoch() is not None:
        state, meta = latest.restore(state)
        start_epoch = meta["epoch"] + 1
        best_metric, best_epoch, stale = meta["best_metric"], meta["best_epoch"], meta["stale"]
        if best.latest_epoch() is not None:
          best_state, _ = best.restore(jax.device_get(state))
        history = [h for h in _read_jsonl(metrics_path) if h["epoch"] < start_epoch]
        log(f"[{config.name}] resumed after epoch {start_epoch} from {latest.directory}")
      _write_jsonl(metrics_path, history)

    for epoch in range(start_epoch, config.num_epochs):
      tic = time.perf_counter()
      losses = []
      bar = tqdm(batches(epoch), desc=f"{config.name} {epoch + 1}/{config.num_epochs}",
                 disable=not config.progress, leave=False, mininterval=1.0)
      for batch in bar:
        state, step_metrics = self.step(state, batch, loss_params, key)
        loss = float(step_metrics["loss"])
        if not math.isfinite(loss):
          raise NonFiniteLossError(
              f"[{config.name}] non-finite loss {loss} at step {int(state.step)} (epoch "
              f"{epoch + 1}); the last good checkpoint is "
              f"{latest.directory if latest else 'not saved (no workdir)'}")
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
      metrics = {k: float(v) for k, v in evaluate(state).items()}
      if config.select_metric not in metrics:
        raise KeyError(f"evaluate() returned {sorted(metrics)}, without the selection metric "
                       f"{config.select_metric!r}")
      record = {"epoch": epoch, "step": int(state.step), "train_loss": float(np.mean(losses)),
                **{f"val_{k}": v for k, v in metrics.items()},
                "seconds": time.perf_counter() - tic}
      history.append(record)
      value = sign * metrics[config.select_metric]
      improved = value > best_metric
      if improved:
        best_metric, best_epoch, stale = value, epoch, 0
        best_state = jax.device_get(state)
      else:
        stale += 1
      log(f"[{config.name}] epoch {epoch + 1}/{config.num_epochs} loss {record['train_loss']:.4f} "
          f"val {config.select_metric} {metrics[config.select_metric]:.4f}"
          f"{' *' if improved else ''} ({record['seconds']:.1f}s)")
      if workdir is not None:
        if improved:
          best.save(epoch, state, {"epoch": epoch, "metrics": metrics})
        latest.save(epoch, state, {"epoch": epoch, "best_metric": best_metric,
                                   "best_epoch": best_epoch, "stale": stale})
        _write_jsonl(metrics_path, history)
      if config.patience is not None and stale >= config.patience:
        log(f"[{config.name}] early stop: no improvement for {stale} epochs")
        break

    if latest is not None:
      latest.close()
      best.close()
    return FitResult(state=state, best_state=replicate(best_state, self.mesh),
                     best_epoch=best_epoch, best_metric=sign * best_metric, history=history)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def _write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
  os.replace(tmp, path)
