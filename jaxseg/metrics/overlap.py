"""Overlap metrics from confusion matrices: Dice, precision, recall, hierarchical costs.

Every overlap metric of jaxseg is derived here from one object, the confusion matrix
``cm[true, predicted]`` of a case (counts of voxels). Dice of class ``c`` is
``2 cm[c, c] / (sum_j cm[c, j] + sum_i cm[i, c])``; merging rows and columns gives superclass
metrics; weighting counts by a penalty matrix gives the hierarchical confusion matrix.

Empty-mask policy (REFERENCE "Conventions"): a ratio whose denominator is 0 (for Dice: the class
is absent from both truth and prediction) is undefined. The ``empty`` argument of every ratio
function chooses what is returned, one named policy per library convention:

=========================  ===========  ==================  =========================================
``empty=``                 both empty   truth empty only    convention it reproduces
=========================  ===========  ==================  =========================================
``"nan"`` (default)        NaN          0                   jaxseg / REFERENCE; nnU-Net v2
                                                            (``evaluate_predictions.compute_metrics``:
                                                            Dice NaN when ``tp + fp + fn == 0``);
                                                            surface-distance ``compute_dice_coefficient``
``"one"``                  1            0                   MONAI ``DiceMetric(ignore_empty=False)``
``"zero"``                 0            0                   "zero_division=0" (scikit-learn style)
``"nan_if_truth_empty"``   NaN          NaN                 MONAI ``DiceMetric(ignore_empty=True)``
                                                            (MONAI's default)
=========================  ===========  ==================  =========================================

"Truth empty only" is a case where something is predicted but the class is absent from the truth
(Dice 0 under the first three policies). A class present in the truth but not predicted always
scores Dice 0. The library names are accepted as aliases of the policies (``LIBRARY_EMPTY_POLICIES``):
``"nnunet"`` and ``"surface_distance"`` = ``"nan"``, ``"monai"`` = ``"nan_if_truth_empty"``
(``ignore_empty=True``, MONAI's default), ``"monai_keep_empty"`` = ``"one"``.

Means differ too: nnU-Net averages a class over cases with ``np.nanmean`` (NaN cases are dropped
silently), MONAI's ``reduction="mean"`` averages the non-NaN values and can return the count of
the others (``get_not_nans``). In jaxseg means over classes or cases must count the NaNs
(:func:`nan_mean_with_count`), never drop them silently; its mean equals nnU-Net's ``nanmean``.

For precision ``TP / (TP + FP)`` and recall ``TP / (TP + FN)`` the same policies apply to their
own zero denominators (nothing predicted, resp. class absent from the truth);
``"nan_if_truth_empty"`` also makes every ratio NaN where the truth is empty.

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

_EMPTY_POLICIES = ("nan", "one", "zero", "nan_if_truth_empty")

# Library conventions, as aliases of the policies above (module docstring table).
LIBRARY_EMPTY_POLICIES = {
    "jaxseg": "nan",
    "nnunet": "nan",
    "surface_distance": "nan",
    "monai": "nan_if_truth_empty",
    "monai_ignore_empty": "nan_if_truth_empty",
    "monai_keep_empty": "one",
}


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

  Hard or soft (:func:`soft_confusion_matrix`) matrices alike; ``(...)`` values, undefined (the ``empty``
  policy, module doc) when the region is absent from both truth and prediction.
  """
  classes = tuple(int(c) for c in classes)
  if not classes:
    raise ValueError("classes must name at least one class")
  if len(classes) > 1:
    cm = merge_classes(cm, [classes])
  return dice_from_confusion(cm, empty=empty)[..., classes[0]]


def empty_policy(empty: str) -> str:
  """The policy name (``"nan"``, ``"one"``, ``"zero"``, ``"nan_if_truth_empty"``) of ``empty``.

  ``empty`` is a policy name or a library alias of ``LIBRARY_EMPTY_POLICIES`` (module doc).
  """
  if isinstance(empty, str):
    if empty in _EMPTY_POLICIES:
      return empty
    if empty in LIBRARY_EMPTY_POLICIES:
      return LIBRARY_EMPTY_POLICIES[empty]
  raise ValueError(f"empty must be one of {_EMPTY_POLICIES} or a library alias "
                   f"{tuple(LIBRARY_EMPTY_POLICIES)}, got {empty!r}")


def _check_policy(empty: str) -> str:
  return empty_policy(empty)


_UNDEFINED_VALUE = {"nan": float("nan"), "one": 1.0, "zero": 0.0, "nan_if_truth_empty": float("nan")}


def _ratio(
    numerator: jax.Array, denominator: jax.Array, empty: str, truth_size: jax.Array | None = None
) -> jax.Array:
  """``numerator / denominator``; ``empty``'s value where the denominator is 0 (module doc).

  ``truth_size``: per-entry size of the truth, needed by ``"nan_if_truth_empty"`` (NaN where it
  is 0, whatever the prediction).
  """
  empty = empty_policy(empty)
  safe = jnp.where(denominator > 0, denominator, 1.0)
  out = jnp.where(denominator > 0, numerator / safe, _UNDEFINED_VALUE[empty])
  if empty == "nan_if_truth_empty":
    if truth_size is None:
      raise ValueError("empty='nan_if_truth_empty' needs the truth size")
    out = jnp.where(truth_size > 0, out, jnp.nan)
  return out


def _as_float_cm(cm: ArrayLike) -> jax.Array:
  """Confusion matrices as float32 (bfloat16 / float16 / integer input is upcast first)."""
  return jnp.asarray(cm).astype(jnp.float32)


def dice_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class Dice ``2 TP / (2 TP + FP + FN)`` of confusion matrices ``(..., C, C)`` -> ``(..., C)``.

  ``empty``: value of an undefined Dice, see the module docstring table (``"nan"``, ``"one"``,
  ``"zero"``, ``"nan_if_truth_empty"`` or a library alias). Computed in float32 whatever the
  input dtype (bfloat16 soft counts included).
  """
  empty = _check_policy(empty)
  cm = _as_float_cm(cm)
  tp = jnp.diagonal(cm, axis1=-2, axis2=-1)
  truth_size = cm.sum(-1)
  return _ratio(2.0 * tp, truth_size + cm.sum(-2), empty, truth_size)


def precision_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class precision ``TP / (TP + FP)``; undefined when nothing is predicted as the class."""
  empty = _check_policy(empty)
  cm = _as_float_cm(cm)
  return _ratio(jnp.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-2), empty, cm.sum(-1))


def recall_from_confusion(cm: ArrayLike, *, empty: str = "nan") -> jax.Array:
  """Per-class recall (sensitivity) ``TP / (TP + FN)``; undefined when the class is absent."""
  empty = _check_policy(empty)
  cm = _as_float_cm(cm)
  return _ratio(jnp.diagonal(cm, axis1=-2, axis2=-1), cm.sum(-1), empty, cm.sum(-1))


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
      one mask is empty, the ``empty`` policy's value where both are (and NaN wherever the truth
      is empty with ``"nan_if_truth_empty"``).
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
    """``(...)`` counted slices whose Dice is NaN (undefined under the ``empty`` policy)."""
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
     \mathrm{DSC}_k = \frac{2 |P_k \cap G_k|}{|P_k| + |G_k|}, \qquad
     \mathrm{DSC}_{\mathrm{case}} = \frac{1}{|K|} \sum_{k \in K} \mathrm{DSC}_k .

  Reference: REFERENCE section 4 ("Dice too is per slice: a case's Dice is the mean of its
  slices' Dice, not the Dice of its pooled voxels"; the original "skipped slices where
  prediction or truth is empty -- report both conventions"), i.e. ``calculate_metric_percase``
  of the MicroSegNet code (Jiang et al., 2024, github.com/mirthAI/MicroSegNet,
  ``TransUNet/utils.py``), which averages ``medpy.metric.binary.dc`` over the slices where both
  masks are non-empty; the mean over patients is then taken by the caller. This is not the Dice
  of the pooled voxels (:func:`dice_per_class`), which weighs large slices more.

  A slice where exactly one mask is empty has Dice 0 (a missed or spurious slice); one where
  both are empty is undefined: NaN (``empty="nan"``), 1 (``"one"``) or 0 (``"zero"``), the
  REFERENCE "Conventions" rule; ``"nan_if_truth_empty"`` (MONAI ``ignore_empty=True``) makes
  every slice with an empty truth NaN, spurious slices included (module docstring table). ``skip_empty_slices`` chooses :math:`K`:

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
    empty: the empty-mask policy of each slice's Dice (module docstring table).

  Returns:
    A :class:`SliceDice` with the case values ``(...)``, the per-slice Dice ``(..., z)`` and the
    mask of counted slices (``n_slices``, ``n_skipped_slices``, ``n_undefined_slices``).

  Raises:
    ValueError: shapes differ, fewer than 3 axes, a concrete mask holds values other than 0/1, or
      an unknown policy.
  """
  empty = _check_policy(empty)
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
  slice_dice = _ratio(2.0 * intersection.astype(jnp.float32), denominator, empty, size_t)
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
