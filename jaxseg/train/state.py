"""Explicit training state: a pytree of arrays only (model and optimiser live outside)."""

from __future__ import annotations

from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """Everything that changes during training.

  Attributes:
    step: number of optimiser updates applied.
    params: model parameters.
    batch_stats: BatchNorm running statistics (an empty dict for models without BatchNorm).
    opt_state: optimiser state.
    ema_params: exponential moving average of ``params`` (Polyak averaging; ``None``: not
      kept). The optimiser updates ``params``; evaluation, model selection and exports use the
      average (:attr:`variables`).
  """

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any = None

  @property
  def variables(self) -> dict[str, Any]:
    """Variables for ``model.apply`` in evaluation mode: the averaged parameters when the state
    keeps an average (``ema_params``), otherwise ``params``."""
    variables = {"params": self.params if self.ema_params is None else self.ema_params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables


def create_train_state(
    model: nn.Module,
    tx: optax.GradientTransformation,
    sample_inputs: tuple[Any, ...],
    key: jax.Array,
    *,
    ema: bool = False,
) -> TrainState:
  """Initialises parameters from ``key`` (randomness comes only from it) and the optimiser;
  with ``ema`` the state also keeps a moving average of the parameters, starting at them."""
  params_key, dropout_key = jax.random.split(key)
  variables = model.init({"params": params_key, "dropout": dropout_key}, *sample_inputs,
                         train=False)
  params = variables["params"]
  return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                    batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params),
                    ema_params=jax.tree.map(jnp.copy, params) if ema else None)
