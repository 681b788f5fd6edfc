"""Overlap metrics from confusion matrices: Dice, precision, recall, hierarchical costs.

Every overlap metric of jaxseg is derived here from one object, the confusion matrix
``cm[true, predicted]`` of a case (counts of voxels). Dice of class ``c`` is
``2 cm[c, c] / (sum_j cm[c, j] + sum_i cm[i, c])``; merging rows and columns gives superclass
metrics; weighting counts by a penalty matrix gives the hierarchical confusion matrix.

Empty-mask policy (REFERENCE "Conventions"): a class absent from both truth and prediction has an
undefined Dice, returned as NaN by default (``empty="nan"``) or as 1 (``empty="one"``); a class
present in only one of them scores 0. Means over classes or cases must then count the NaNs
(:func:`nan_mean_with_count`), never drop them silently.

The functions are written with ``jax.numpy`` so they run inside ``jit`` on device (the confusion
matrix of a batch is a cheap reduction) and equally on host NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

_EMPTY_POLICIES = ("nan", "one")


def confusion_matrix(
    predicted: ArrayLike,
    truth: ArrayLike,
    *,
    num_classes: int,
    axis: int | Sequence[int] | None = None,
) -> jax.Array:
  """Counts voxels by (true class, predicted class).

  Args:
    predicted: integer class map.
    truth: integer class map of the same shape.
    num_classes: number of classes ``C`` (static). Values outside ``[0, C)`` are not counted.
    axis: ``None`` pools every position into one matrix; otherwise the leading axes that are *not*
      pooled are kept, e.g. ``predicted`` of shape ``(cases, H, W)`` with ``axis=(1, 2)`` gives one
      matrix per case. Only trailing axes may be pooled.

  Returns:
    int32 ``(*kept, C, C)`` counts with rows = truth and columns = prediction.
  """
  predicted = jnp.asarray(predicted).astype(jnp.int32)
  truth = jnp.asarray(truth).astype(jnp.int32)
  if predicted.shape != truth.shape:
    raise ValueError(f"predicted {predicted.shape} and truth {truth.shape} differ in shape")
  if axis is None:
    kept = 0
  else:
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    axes = tuple(a % predicted.ndim for a in axes)
    kept = predicted.ndim - len(axes)
    if sorted(axes) != list(range(kept, predicted.ndim)):
      raise ValueError(f"only trailing axes can be pooled, got axis={axis} for ndim {predicted.ndim}")
  lead = predicted.shape[:kept]
  valid = (truth >= 0) & (truth < num_classes) & (predicted >= 0) & (predicted < num_classes)
  index = jnp.where(valid, truth * num_classes + predicted, num_classes * num_classes)
  index = index.reshape(int(np.prod(lead, dtype=np.int64)), -1)
  counts = jax.vmap(lambda i: jnp.bincount(i, length=num_classes * num_classes + 1))(index)
  return counts[:, :-1].reshape(*lead, num_classes, num_classes).astype(jnp.int32)


def soft_confusion_matrix(probs: ArrayLike, truth: ArrayLike) -> jax.Array:
  r"""Confusion matrix with probabilities as counts: ``cm[t, k] = sum_{i: y_i = t} p_ik``.

  Row sums are the true class sizes and column sums the summed probabilities, so
  :func:`dice_from_confusion` of it is the *soft* Dice
  :math:`2 \sum_i p_{ic} y_{ic} / (\sum_i p_{ic} + \sum_i y_{ic})`, and :func:`merge_classes`
  gives the soft Dice of a merged region (the summed probabilities of its classes). With one-hot
  ``probs`` it equals :func:`confusion_matrix` of their argmax.

  Args:
    probs: ``(..., C)`` class probabilities (channels last), e.g. a softmax or the mean of
      Monte-Carlo samples.
    truth: integer class map ``(...)``. Values outside ``[0, C)`` are not counted.

  Returns:
    float32 ``(C, C)``, every position pooled.
  """
  probs = jnp.asarray(probs, dtype=jnp.float32)
  truth = jnp.asarray(truth).astype(jnp.int32)
  if probs.ndim < 1 or probs.shape[:-1] != truth.shape:
    raise ValueError(f"probs {probs.shape} must be truth {truth.shape} + (classes,)")
  num_classes = probs.shape[-1]
  onehot = jax.nn.one_hot(truth.reshape(-1), num_classes, dtype=jnp.float32)
  return onehot.T @ probs.reshape(-1, num_classes)


def region_dice(cm: ArrayLike, classes: Sequence[int], *, empty: str = "nan") -> jax.Array:
  """Dice of the union of ``classes`` (e.g. WG = TZ u PZ) from confusion matrices ``(..., C, C)``.

  Hard or soft (:func:`soft_confusion_matrix`) matrices alike; ``(...)`` values, undefined (NaN
  or 1, see ``empty``) when the region is absent from both truth and prediction.
  """
  classes = tuple(int(c) for c in classes)
  if not classes:
    raise ValueError("classes must name at least one class")
  if len(classes) > 1:
    cm = merge_classes(cm, [classes])
  return dice_from_confusion(cm, empty=empty)[..., classes[0]]


def _check_policy(empty: str) -> None:
  if empty not in _EMPTY_POLICIES:
    raise ValueError(f"empty must be one of {_EMPTY_POLICIES}, got {empty!r}")


def _ratio(numerator: jax.Array, denominator: jax.Array, empty: str) -> jax.Array:
  undefined = 1.0 if empty == "one" else jnp.nan
  safe = jnp.where(denominator > 0, denominator, 1.0)
  return jnp.where(denominator > 0, numerator / safe, undefined)


def dice_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class Dice ``2 TP / (2 TP + FP + FN)`` of confusion matrices ``(..., C, C)`` -> ``(..., C)``."""
  _check_policy(empty)
  cm = jnp.asarray(cm, dtype=jnp.float32)
  tp = jnp.diagonal(cm, axis1=-2, axis2=-1)
  return _ratio(2.0 * tp, cm.sum(-1) + cm.sum(-2), empty)


def precision_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class precision ``TP / (TP + FP)``; undefined when nothing is predicted as the class."""
  _check_policy(empty)
  cm = jnp.asarray(cm, dtype=jnp.float32)
  return _ratio(jnp.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-2), empty)


def recall_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class recall (sensitivity) ``TP / (TP + FN)``; undefined when the class is absent."""
  _check_policy(empty)
  cm = jnp.asarray(cm, dtype=jnp.float32)
  return _ratio(jnp.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), empty)


def dice_per_class(
    predicted: ArrayLike,
    truth: ArrayLike,
    *,
    num_classes: int,
    empty: str = "nan",
) -> jax.Array:
  """Dice of every class of one case (all positions pooled) -> ``(C,)``; see module doc."""
  return dice_from_confusion(confusion_matrix(predicted, truth, num_classes=num_classes),
                             empty=empty)


def merge_classes(cm: ArrayLike, groups: Sequence[Sequence[int]]) -> jax.Array:
  """Merges groups of classes of confusion matrices ``(..., C, C)``.

  Each group becomes one class placed at the group's first index; the other members keep an all-zero
  row and column (their metrics become undefined). Use it for superclass metrics, e.g. the prostate
  (TZ + CG): ``dice_from_confusion(merge_classes(cm, [(4, 5)]))[..., 4]``.
  """
  cm = jnp.asarray(cm)
  num_classes = cm.shape[-1]
  target = np.arange(num_classes)
  for group in groups:
    for member in group:
      if not 0 <= member < num_classes:
        raise ValueError(f"class {member} outside [0, {num_classes})")
      target[member] = group[0]
  projection = jnp.asarray(np.eye(num_classes)[target], dtype=cm.dtype)  # (C, C): old -> new
  return jnp.einsum("...ij,ia,jb->...ab", cm, projection, projection)


def hierarchical_confusion_matrix(cm: ArrayLike, penalty: ArrayLike) -> jax.Array:
  """Confusion counts weighted by ``1 + D`` (seed-000 paper): anatomically far errors count more."""
  cm = jnp.asarray(cm, dtype=jnp.float32)
  penalty = jnp.asarray(penalty, dtype=jnp.float32)
  if penalty.shape != cm.shape[-2:]:
    raise ValueError(f"penalty {penalty.shape} does not match confusion matrix {cm.shape}")
  return cm * (1.0 + penalty)


def expected_hierarchical_cost(cm: ArrayLike, penalty: ArrayLike) -> jax.Array:
  """Mean penalty per voxel ``sum(cm * D) / sum(cm)``: 0 for a perfect segmentation."""
  cm = jnp.asarray(cm, dtype=jnp.float32)
  penalty = jnp.asarray(penalty, dtype=jnp.float32)
  if penalty.shape != cm.shape[-2:]:
    raise ValueError(f"penalty {penalty.shape} does not match confusion matrix {cm.shape}")
  total = cm.sum((-2, -1))
  return _ratio((cm * penalty).sum((-2, -1)), total, "nan")


def nan_mean_with_count(values: ArrayLike, axis: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Mean over the defined (non-NaN) values and how many were undefined, on the host."""
  values = np.asarray(values, dtype=np.float64)
  undefined = np.isnan(values).sum(axis=axis)
  with np.errstate(invalid="ignore"):
    defined = np.sum(~np.isnan(values), axis=axis)
    mean = np.where(defined > 0, np.nansum(values, axis=axis) / np.maximum(defined, 1), np.nan)
  return mean, undefined
