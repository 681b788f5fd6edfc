"""Hierarchical (anatomically cost-sensitive) cross-entropy losses (REFERENCE §1).

Both forms take a cost matrix ``D`` with ``D[true, predicted]`` (see :mod:`jaxseg.hierarchy`, which
builds it from training labels or provides the paper's Table 1). bf16 / fp16 logits are computed
in float32 (:func:`jaxseg.losses._checks.compute_dtype`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxseg.losses import _checks
from jaxseg.losses.cross_entropy import _spatial_mean, pixelwise_softmax_cross_entropy


def _check_cost(cost: jax.Array, num_classes: int, name: str) -> None:
  if cost.shape != (num_classes, num_classes):
    raise ValueError(f"{name} must be ({num_classes}, {num_classes}), got {cost.shape}")


def hierarchical_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    penalty: ArrayLike,
    alpha: float | ArrayLike,
) -> jax.Array:
  r"""Cross-entropy weighted by the penalty of the predicted class (seed-000 paper, Eq. 1).

  .. math:: L = \frac{1}{N} \sum_n \mathrm{CE}(y_n, p_n) \,
            \bigl(1 + \alpha \, D[y_n, \hat y_n]\bigr), \qquad \hat y_n = \arg\max_j p_{n,j}

  The penalty is looked up at the arg-max prediction, so it acts as a per-position weight with no
  gradient of its own: a confident anatomically distant mistake costs ``1 + alpha * D`` times its
  cross-entropy. ``alpha = 0`` is plain cross-entropy (the paper's flat baseline).

  Labels outside ``[0, classes)`` raise a ``ValueError`` when concrete; under ``jit`` they make the
  example's loss NaN (through the cross-entropy).

  Args:
    logits: ``(batch, *spatial, classes)`` unnormalised scores.
    labels: ``(batch, *spatial)`` integer class indices in ``[0, classes)``.
    penalty: ``(classes, classes)`` penalty matrix ``D[true, predicted]``.
    alpha: penalty strength (a scalar; may be a traced array, e.g. in a sweep).

  Returns:
    ``(batch,)`` losses.

  References:
    Agarwal et al., "Improving Prostate Segmentation through Hierarchical Loss Penalisation".
  """
  logits = _checks.compute_dtype(logits)
  ce = pixelwise_softmax_cross_entropy(logits, labels)
  penalty = jnp.asarray(penalty, dtype=ce.dtype)
  _check_cost(penalty, logits.shape[-1], "penalty")
  predicted = jnp.argmax(logits, axis=-1)
  weight = 1.0 + jnp.asarray(alpha, dtype=ce.dtype) * penalty[jnp.asarray(labels).astype(jnp.int32),
                                                               predicted]
  return _spatial_mean(ce * jax.lax.stop_gradient(weight))


def expected_cost(logits: ArrayLike, labels: ArrayLike, *, cost: ArrayLike) -> jax.Array:
  r"""Per-example expected misclassification cost under the softmax distribution.

  .. math:: C = \frac{1}{N} \sum_n \sum_j M[y_n, j] \, \operatorname{softmax}(z_n)_j

  Differentiable in the logits (Galdran et al., 2020).

  Labels outside ``[0, classes)`` raise a ``ValueError`` when concrete; under ``jit`` they read a
  NaN cost row (negative ones too), so the example's value is NaN.

  Args:
    logits: ``(batch, *spatial, classes)`` unnormalised scores.
    labels: ``(batch, *spatial)`` integer class indices in ``[0, classes)``.
    cost: ``(classes, classes)`` cost matrix ``M[true, predicted]``.

  Returns:
    ``(batch,)`` expected costs.
  """
  logits = _checks.compute_dtype(logits)
  cost = jnp.asarray(cost, dtype=logits.dtype)
  _check_cost(cost, logits.shape[-1], "cost")
  labels = jnp.asarray(labels)
  if labels.shape != logits.shape[:-1]:
    raise ValueError(f"labels {labels.shape} must be logits {logits.shape} without the class axis")
  num_classes = logits.shape[-1]
  _checks.check_class_indices(labels, num_classes)
  # Out-of-range rows are NaN; negative indices are moved past the end so they do not wrap.
  index = labels.astype(jnp.int32)
  index = jnp.where(index < 0, num_classes, index)
  rows = jnp.take(cost, index, axis=0, mode="fill", fill_value=jnp.nan)  # (batch, *spatial, C)
  return _spatial_mean(jnp.sum(rows * jax.nn.softmax(logits, axis=-1), axis=-1))


def expected_cost_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    cost: ArrayLike,
    lam: float | ArrayLike = 10.0,
) -> jax.Array:
  r"""Cross-entropy plus a cost-sensitive regulariser (Galdran et al., 2020).

  .. math:: L = \mathrm{CE} + \lambda \, \frac{1}{N} \sum_n \sum_j M[y_n, j]\, p_{n,j}

  Galdran's defaults are ``M[i, j] = |i - j|^2 / max`` (:func:`jaxseg.hierarchy.ordinal_cost_matrix`)
  and ``lambda = 10``; with an anatomical ``M`` (the penalty matrix) it is the differentiable
  counterpart of :func:`hierarchical_cross_entropy`.

  Labels outside ``[0, classes)`` raise a ``ValueError`` when concrete; under ``jit`` the
  example's loss is NaN.

  Args:
    logits: ``(batch, *spatial, classes)`` unnormalised scores.
    labels: ``(batch, *spatial)`` integer class indices in ``[0, classes)``.
    cost: ``(classes, classes)`` cost matrix.
    lam: weight of the expected-cost term.

  Returns:
    ``(batch,)`` losses.

  References:
    Galdran et al., "Cost-Sensitive Regularization for Diabetic Retinopathy Grading from Eye Fundus
    Images", MICCAI 2020.
  """
  ce = _spatial_mean(pixelwise_softmax_cross_entropy(logits, labels))
  return ce + jnp.asarray(lam, dtype=ce.dtype) * expected_cost(logits, labels, cost=cost)
