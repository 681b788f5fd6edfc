"""Classes of the male pelvis, their superclasses, and anatomical penalty matrices.

This module is the one home of the label set of the hierarchical-loss study (seed ``000``,
REFERENCE §1) and of the penalty matrix ``D`` that the hierarchical cross-entropy and the
hierarchical confusion matrix use.

``D[i, j]`` is the cost of predicting class ``j`` where the truth is class ``i``. It is symmetric,
has a zero diagonal, a zero background row and column, and zero cost between members of a
superclass (the transition zone and the central gland are both "prostate").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from jaxseg.data.preprocess import validate_spacing

PELVIS_CLASSES: tuple[str, ...] = (
    "background",
    "bladder",
    "bone",
    "obturator_internus",
    "transition_zone",
    "central_gland",
    "rectum",
    "seminal_vesicle",
    "neurovascular_bundle",
)
"""Label index -> name, in the order of the Zenodo 7013610 release and the seed-000 paper."""

PELVIS_ABBREVIATIONS: tuple[str, ...] = ("BG", "BL", "BO", "OI", "TZ", "CG", "RE", "SV", "NVB")

PROSTATE_SUPERCLASS: tuple[int, ...] = (4, 5)
"""TZ and CG together form the prostate."""

PAPER_PENALTY_MATRIX: np.ndarray = np.array(
    [
        [0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00, 0.00],
        [0.00, 0.00, 0.91, 0.64, 0.45, 0.45, 0.82, 0.64, 0.55],
        [0.00, 0.91, 0.00, 0.45, 0.82, 0.82, 1.00, 0.73, 0.73],
        [0.00, 0.64, 0.45, 0.00, 0.36, 0.36, 0.55, 0.27, 0.27],
        [0.00, 0.45, 0.82, 0.36, 0.00, 0.00, 0.36, 0.18, 0.09],
        [0.00, 0.45, 0.82, 0.36, 0.00, 0.00, 0.36, 0.18, 0.09],
        [0.00, 0.82, 1.00, 0.55, 0.36, 0.36, 0.00, 0.27, 0.36],
        [0.00, 0.64, 0.73, 0.27, 0.18, 0.18, 0.27, 0.00, 0.09],
        [0.00, 0.55, 0.73, 0.27, 0.09, 0.09, 0.36, 0.09, 0.00],
    ],
    dtype=np.float64,
)
"""The penalty matrix of the seed-000 paper, Table 1 (rows: truth, columns: prediction)."""
PAPER_PENALTY_MATRIX.setflags(write=False)


def _merge_groups(label: np.ndarray, groups: Sequence[Sequence[int]]) -> np.ndarray:
  """Relabels every member of a group with the group's first member."""
  merged = label.copy()
  for group in groups:
    for member in group[1:]:
      merged[label == member] = group[0]
  return merged


def class_centroids_mm(
    label: np.ndarray,
    *,
    spacing: Sequence[float],
    num_classes: int,
    bilateral_axis: int | None = 0,
) -> np.ndarray:
  """Centroids of every class of one label volume, in millimetres.

  Args:
    label: integer label volume, e.g. ``(x, y, z)``.
    spacing: voxel size in mm along each axis of ``label``.
    num_classes: number of classes; centroids are returned for all of them.
    bilateral_axis: axis that separates the patient's two sides. The volume is cut at the middle of
      this axis and a centroid is computed in each half (bilateral structures such as bone have a
      centroid outside themselves otherwise). ``None`` computes one whole-volume centroid.

  Returns:
    ``(halves, num_classes, ndim)`` centroids in mm (index times spacing), NaN where a class is
    absent from a half. ``halves`` is 2, or 1 if ``bilateral_axis`` is None.
  """
  label = np.asarray(label)
  spacing = validate_spacing(spacing, ndim=label.ndim)
  if bilateral_axis is None:
    halves = [np.ones(label.shape, dtype=bool)]
  else:
    index = np.arange(label.shape[bilateral_axis])
    first = index < label.shape[bilateral_axis] / 2.0
    shape = [1] * label.ndim
    shape[bilateral_axis] = -1
    first = np.broadcast_to(first.reshape(shape), label.shape)
    halves = [first, ~first]
  flat_label = label.ravel()
  coords = np.indices(label.shape).reshape(label.ndim, -1).T  # (voxels, ndim)
  out = np.full((len(halves), num_classes, label.ndim), np.nan)
  for h, half in enumerate(halves):
    keep = half.ravel()
    lab = flat_label[keep].astype(np.int64)
    counts = np.bincount(lab, minlength=num_classes)[:num_classes]
    for d in range(label.ndim):
      sums = np.bincount(lab, weights=coords[keep, d], minlength=num_classes)[:num_classes]
      with np.errstate(invalid="ignore", divide="ignore"):
        out[h, :, d] = np.where(counts > 0, sums / np.maximum(counts, 1) * spacing[d], np.nan)
  return out


def centroid_distances_mm(
    labels: Iterable[np.ndarray],
    spacings: Iterable[Sequence[float]],
    *,
    num_classes: int = len(PELVIS_CLASSES),
    superclasses: Sequence[Sequence[int]] = (PROSTATE_SUPERCLASS,),
    bilateral_axis: int | None = 0,
) -> np.ndarray:
  """Distances in mm between the mean class centroids of training volumes (REFERENCE §1, 1-3).

  Superclass members are merged first (they share the representative's distances); centroids are
  computed per half along ``bilateral_axis`` and averaged over the cases where a class is present;
  the distance of a pair is the mean over the halves where both classes appear.

  Returns:
    ``(num_classes, num_classes)`` float64 distances, NaN for a pair never seen together.

  Raises:
    ValueError: if no case is given or a label lies outside ``[0, num_classes)``.
  """
  sums = None
  counts = None
  n_cases = 0
  for label, spacing in zip(labels, spacings, strict=True):
    label = np.asarray(label)
    if label.size and (label.min() < 0 or label.max() >= num_classes):
      raise ValueError(f"labels must lie in [0, {num_classes}), got [{label.min()}, {label.max()}]")
    centroids = class_centroids_mm(
        _merge_groups(label, superclasses), spacing=spacing, num_classes=num_classes,
        bilateral_axis=bilateral_axis)
    present = np.isfinite(centroids)
    if sums is None:
      sums = np.zeros_like(centroids)
      counts = np.zeros_like(centroids)
    sums += np.where(present, centroids, 0.0)
    counts += present
    n_cases += 1
  if n_cases == 0:
    raise ValueError("the penalty matrix needs at least one training label volume")
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_centroids = sums / counts  # (halves, classes, ndim), NaN where never present
  diffs = mean_centroids[:, :, None, :] - mean_centroids[:, None, :, :]
  per_half = np.sqrt(np.sum(diffs**2, axis=-1))  # (halves, C, C), NaN where a class is absent
  finite = np.isfinite(per_half)
  with np.errstate(invalid="ignore", divide="ignore"):
    distance = np.where(finite, per_half, 0.0).sum(0) / finite.sum(0)  # NaN: pair never seen
  for group in superclasses:  # members share the representative's (merged) distances
    for member in group[1:]:
      distance[member, :] = distance[group[0], :]
      distance[:, member] = distance[:, group[0]]
  return distance


def _foreground(num_classes: int, superclasses: Sequence[Sequence[int]],
                background: int) -> list[int]:
  merged_away = {m for group in superclasses for m in group[1:]}
  return [c for c in range(num_classes) if c != background and c not in merged_away]


def penalty_matrix_from_labels(
    labels: Iterable[np.ndarray],
    spacings: Iterable[Sequence[float]],
    *,
    num_classes: int = len(PELVIS_CLASSES),
    superclasses: Sequence[Sequence[int]] = (PROSTATE_SUPERCLASS,),
    bilateral_axis: int | None = 0,
    round_to: float | None = 10.0,
    background: int = 0,
) -> np.ndarray:
  """Builds an anatomical penalty matrix from training label volumes (REFERENCE §1).

  The algorithm of the seed-000 paper, computed in 3D with physical spacing:

  1. Members of each superclass are merged into one class (TZ and CG become "prostate").
  2. For every case and each half of the volume along ``bilateral_axis``, the centroid of every
     class in mm; centroids are averaged over the cases where the class is present.
  3. ``d[i, j]`` = Euclidean distance between the mean centroids of ``i`` and ``j``, averaged over
     the two halves (a class missing from one half uses the other half alone);
     :func:`centroid_distances_mm` returns these distances.
  4. Distances are rounded to the nearest ``round_to`` mm, then min-max normalised to [0, 1] over
     the foreground block (its diagonal zeros included, so the normalisation is ``d / max d`` as in
     the paper's Table 1, whose largest distance is 110 mm: every entry is a multiple of 1/11).
  5. The background row and column, the diagonal, and the blocks between members of a superclass
     are zero; superclass members share their row and column.

  How close the result comes to Table 1 depends on the anatomy it is given:
  :func:`penalty_rank_agreement` measures it. On labels placed at Table 1's geometry the builder
  gives Table 1 back (``tests/test_hierarchy.py``); on the pelvis phantom it does not (Spearman
  0.73 on the cpu preset's 30 cases, ``python -m benchmarks.penalty_matrix``), which is why the
  hierarchical study trains phantoms with the paper's matrix.

  Args:
    labels: integer label volumes, one per training case.
    spacings: voxel spacing of each case, in mm.
    num_classes: size of the label set.
    superclasses: groups of labels that count as one class.
    bilateral_axis: the left-right axis of the volumes (see :func:`class_centroids_mm`).
    round_to: rounding step in mm; ``None`` keeps the raw distances.
    background: the background label, whose row and column are zero.

  Returns:
    ``(num_classes, num_classes)`` float64 penalty matrix.

  Raises:
    ValueError: if no case is given, or a foreground class never appears.
  """
  distance = centroid_distances_mm(labels, spacings, num_classes=num_classes,
                                   superclasses=superclasses, bilateral_axis=bilateral_axis)
  foreground = _foreground(num_classes, superclasses, background)
  missing = [c for c in foreground if np.all(np.isnan(np.delete(distance[c], c)))]
  if missing:
    raise ValueError(f"classes {missing} never appear in the training labels")
  if round_to is not None:
    distance = np.round(distance / round_to) * round_to

  block = distance[np.ix_(foreground, foreground)]
  lo, hi = np.min(block), np.max(block)
  if hi <= lo:
    raise ValueError("all class centroids coincide; the penalty matrix is undefined")
  penalty = np.zeros((num_classes, num_classes))
  penalty[np.ix_(foreground, foreground)] = (block - lo) / (hi - lo)
  for group in superclasses:  # members copy the representative's row and column
    for member in group[1:]:
      penalty[member, :] = penalty[group[0], :]
      penalty[:, member] = penalty[:, group[0]]
  for group in superclasses:
    penalty[np.ix_(group, group)] = 0.0
  penalty[background, :] = 0.0
  penalty[:, background] = 0.0
  np.fill_diagonal(penalty, 0.0)
  return penalty


PAPER_MAX_DISTANCE_MM = 110.0
"""Table 1's normalisation: its entries are multiples of 1/11 of the largest distance, 110 mm."""


def penalty_pairs(num_classes: int = len(PELVIS_CLASSES), *,
                  superclasses: Sequence[Sequence[int]] = (PROSTATE_SUPERCLASS,),
                  background: int = 0) -> list[tuple[int, int]]:
  """The distinct off-diagonal pairs of a penalty matrix (21 for the pelvis label set)."""
  foreground = _foreground(num_classes, superclasses, background)
  return [(i, j) for a, i in enumerate(foreground) for j in foreground[a + 1:]]


def penalty_rank_agreement(penalty: np.ndarray,
                           reference: np.ndarray = PAPER_PENALTY_MATRIX) -> float:
  """Spearman rank correlation of two penalty matrices over their distinct pairs.

  Ties (Table 1 has 11 levels for 21 pairs) are ranked by their mean rank.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top
  penalty, reference = np.asarray(penalty), np.asarray(reference)
  if penalty.shape != reference.shape:
    raise ValueError(f"penalty {penalty.shape} and reference {reference.shape} differ in shape")
  pairs = penalty_pairs(penalty.shape[0]) if penalty.shape[0] == len(PELVIS_CLASSES) else [
      (i, j) for i in range(1, penalty.shape[0]) for j in range(i + 1, penalty.shape[0])]
  a = [penalty[p] for p in pairs]
  b = [reference[p] for p in pairs]
  return float(stats.spearmanr(a, b).statistic)


def ordinal_cost_matrix(num_classes: int) -> np.ndarray:
  """Galdran et al.'s default cost matrix ``M[i, j] = |i - j|^2 / max``."""
  index = np.arange(num_classes, dtype=np.float64)
  cost = (index[:, None] - index[None, :]) ** 2
  return cost / cost.max()
