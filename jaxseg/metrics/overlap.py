"""Overlap metrics from confusion matrices: Dice, precision, recall, hierarchical costs.

Every overlap metric of jaxseg is derived here from one object, the confusion matrix
``cm[true, predicted]`` of a case (counts of voxels). Dice of class ``c`` is
``2 cm[c, c] / (sum_j cm[c, j] + sum_i cm[i, c])``; merging rows and columns gives superclass
metrics; weighting counts by a penalty matrix gives the hierarchical confusion matrix.

Empty-mask policy (REFERENCE "Conventions"): a class absent from both truth and prediction has an
undefined Dice, returned as NaN by default (``empty="nan"``) or as 1 (``empty="one"``); a class
present in only one of them scores 0. Means over classes or cases must then count the NaNs
(:func:`nan_mean_with_count`), never drop them silently.

Per-slice Dice (:func:`per_slice_dice`, REFERENCE section 4, the MicroSegNet / TransUNet
evaluation): a case's Dice is the mean of the Dice of its 2D slices (last axis), not the Dice of
its pooled voxels; a mean over cases then weighs every case equally. Which slices enter the mean
is the explicit ``skip_empty_slices`` argument (the original code kept only the slices where both
masks are non-empty).

The functions are written with ``jax.numpy`` so they run inside ``jit`` on device (the confusion
matrix of a batch is a cheap reduction) and equally on host NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from jaxseg.metrics.surface import SkipEmpty, _skip_mode

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


class SliceDice(NamedTuple):
  """Per-slice Dice of one case (or of each case of a batch); see :func:`per_slice_dice`.

  A NamedTuple of arrays, so it passes through ``jit``.

  Attributes:
    value: ``(...)`` float32 case Dice, the mean of ``slice_dice`` over the counted slices; NaN
      when no slice is counted or a counted slice is undefined.
    slice_dice: ``(..., z)`` float32 Dice of every slice, whether counted or not: 0 where exactly
      one mask is empty, NaN (``empty="nan"``) or 1 (``empty="one"``) where both are.
    counted: ``(..., z)`` bool, True for the slices that entered ``value``.
  """

  value: jax.Array
  slice_dice: jax.Array
  counted: jax.Array

  @property
  def n_slices(self) -> jax.Array:
    """``(...)`` number of slices that entered the mean (undefined ones included)."""
    return jnp.sum(self.counted, axis=-1)

  @property
  def n_skipped_slices(self) -> jax.Array:
    """``(...)`` number of slices left out by ``skip_empty_slices``."""
    return self.counted.shape[-1] - self.n_slices

  @property
  def n_undefined_slices(self) -> jax.Array:
    """``(...)`` counted slices whose Dice is NaN (both masks empty, ``empty="nan"``)."""
    return jnp.sum(self.counted & jnp.isnan(self.slice_dice), axis=-1)


def _binary_mask(x: ArrayLike, name: str) -> jax.Array:
  """``x != 0`` as bool; concrete (non-traced) input must hold only 0 and 1."""
  if not isinstance(x, jax.core.Tracer):
    values = np.asarray(x)
    if values.dtype != bool and not np.all((values == 0) | (values == 1)):
      bad = np.unique(values[~((values == 0) | (values == 1))])[:5]
      raise ValueError(f"{name} must be a binary mask (bool or 0/1); threshold probabilities or "
                       f"select a label first. Found values {bad}")
  return jnp.asarray(x) != 0


def per_slice_dice(
    prediction: ArrayLike,
    truth: ArrayLike,
    *,
    skip_empty_slices: SkipEmpty = "both",
    empty: str = "nan",
) -> SliceDice:
  r"""Mean over slices of the 2D Dice of binary masks (MicroSegNet / TransUNet evaluation).

  For slices :math:`k` (the last axis) with masks :math:`P_k, G_k` and the set :math:`K` of
  counted slices,

  .. math::
     \mathrm{DSC}_k = rac{2 |P_k \cap G_k|}{|P_k| + |G_k|}, \qquad
     \mathrm{DSC}_{\mathrm{case}} = rac{1}{|K|} \sum_{k \in K} \mathrm{DSC}_k .

  Reference: REFERENCE section 4 ("Dice too is per slice: a case's Dice is the mean of its
  slices' Dice, not the Dice of its pooled voxels"; the original "skipped slices where
  prediction or truth is empty -- report both conventions"), i.e. ``calculate_metric_percase``
  of the MicroSegNet code (Jiang et al., 2024, github.com/mirthAI/MicroSegNet,
  ``TransUNet/utils.py``), which averages ``medpy.metric.binary.dc`` over the slices where both
  masks are non-empty; the mean over patients is then taken by the caller. This is not the Dice
  of the pooled voxels (:func:`dice_per_class`), which weighs large slices more.

  A slice where exactly one mask is empty has Dice 0 (a missed or spurious slice); one where
  both are empty is undefined: NaN (``empty="nan"``) or 1 (``empty="one"``), the REFERENCE
  "Conventions" rule. ``skip_empty_slices`` chooses :math:`K`:

  - ``"both"`` (default): slices where both masks are empty are skipped (nothing to measure);
    missed and spurious slices count as 0.
  - ``True`` / ``"either"``: only slices where both masks are non-empty count -- the original
    MicroSegNet convention, which hides missed and spurious slices (report it as such).
  - ``False`` / ``"none"``: every slice counts; a both-empty slice is ``empty`` (NaN makes the
    case undefined).

  A case with no counted slice is NaN (the original code divided by zero). Undefined cases must be
  counted, not dropped, when averaging (:func:`nan_mean_with_count`).

  Args:
    prediction: binary mask ``(..., x, y, z)`` (bool or 0/1), slices along the last axis;
      leading axes are cases.
    truth: binary mask of the same shape.
    skip_empty_slices: ``"both"``, ``"either"`` (or True) or ``"none"`` (or False), see above;
      the same modes as :func:`jaxseg.metrics.surface.hd95_per_case` with ``per_slice=True``, so
      ``"either"`` counts the very slices that its HD95 averages over.
    empty: ``"nan"`` or ``"one"``, the Dice of a slice where both masks are empty.

  Returns:
    A :class:`SliceDice` with the case values ``(...)``, the per-slice Dice ``(..., z)`` and the
    mask of counted slices (``n_slices``, ``n_skipped_slices``, ``n_undefined_slices``).

  Raises:
    ValueError: shapes differ, fewer than 3 axes, a concrete mask holds values other than 0/1, or
      an unknown policy.
  """
  _check_policy(empty)
  mode = _skip_mode(skip_empty_slices)
  p = _binary_mask(prediction, "prediction")
  t = _binary_mask(truth, "truth")
  if p.shape != t.shape:
    raise ValueError(f"prediction {p.shape} and truth {t.shape} differ in shape")
  if p.ndim < 3:
    raise ValueError(f"masks must be (..., x, y, z) with slices on the last axis, got {p.shape}")
  intersection = jnp.sum(p & t, axis=(-3, -2))
  size_p = jnp.sum(p, axis=(-3, -2))
  size_t = jnp.sum(t, axis=(-3, -2))
  denominator = (size_p + size_t).astype(jnp.float32)
  slice_dice = _ratio(2.0 * intersection.astype(jnp.float32), denominator, empty)
  if mode == "none":
    counted = jnp.ones(slice_dice.shape, dtype=bool)
  elif mode == "both":
    counted = (size_p > 0) | (size_t > 0)
  else:
    counted = (size_p > 0) & (size_t > 0)
  n = jnp.sum(counted, axis=-1)
  total = jnp.sum(jnp.where(counted, slice_dice, 0.0), axis=-1)  # a counted NaN propagates
  value = jnp.where(n > 0, total / jnp.maximum(n, 1).astype(jnp.float32), jnp.nan)
  return SliceDice(value, slice_dice, counted)


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
