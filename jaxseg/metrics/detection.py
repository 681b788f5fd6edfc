"""Lesion-level detection metrics (FROC, AP) and patient-level AUROC.

Follows the PI-CAI evaluation (``picai_eval`` and ``report_guided_annotation``;
Saha et al., "Artificial intelligence and radiologists in prostate cancer
detection on MRI (PI-CAI)", Lancet Oncol. 2024; Bosma et al., Radiol. AI
2023). Host-side NumPy / SciPy; one case is one volume ``(x, y, z)`` (or one 2D
image ``(h, w)``) without batch or channel axes.

Pipeline for one case:

1. `extract_lesion_candidates`: threshold the lesion-probability map, take
   connected components (26-connectivity in 3D, 8 in 2D), drop components of
   ``<= min_voxels`` voxels, give each the confidence ``max p`` inside it, keep
   the ``max_candidates`` most confident. "dynamic-fast" thresholding uses
   ``t = max(p) / 2.5`` (a per-case static threshold).
2. `match_lesions`: ground-truth lesions are the connected components of the
   binary truth; IoU between every candidate and every lesion; a one-to-one
   (Hungarian) assignment maximises first the number of pairs with
   ``IoU >= min_iou`` (0.10) and then their total IoU. Matched candidates are
   true positives, candidates with no sufficient overlap are false positives,
   unmatched lesions are misses. A candidate that overlaps a lesion enough but
   lost the assignment to another candidate ("redundant hit") is ignored, as in
   picai_eval's default (``redundant_hits="false_positive"`` counts it as FP).
3. Across cases, `froc` sweeps a threshold over all candidate confidences:
   sensitivity = TP / #lesions, FP rate = FP / #cases, and `auroc` ranks case
   scores (``max p`` of each map) against case labels (any lesion present).

Differences from picai_eval, all deliberate:

* ``max_candidates`` also applies to "dynamic-fast" (picai caps only its
  iterative "dynamic" mode); pass ``max_candidates=None`` for picai's output.
* Matching is strictly lexicographic (number of hits, then IoU); picai's
  ``+1`` weighting can trade one hit for more total IoU in rare cases.
* The FROC keeps every operating point, including the last one (picai
  overwrites its lowest threshold with the extension to infinite FP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from scipy import ndimage
from scipy import optimize
from scipy import stats as sp_stats

from jaxseg.metrics import stats

__all__ = [
    "LesionMatches",
    "auroc",
    "average_precision",
    "evaluate_cases",
    "extract_lesion_candidates",
    "froc",
    "froc_bootstrap_band",
    "match_lesions",
    "partial_area",
    "sensitivity_at",
]

_CONNECTIVITY_RANK = {
    2: {4: 1, 8: 2},
    3: {6: 1, 18: 2, 26: 3},
}


class LesionMatches(NamedTuple):
  """Lesion-level results of one case.

  Attributes:
    candidates: one ``(is_tp, confidence)`` per counted candidate (true and
      false positives; ignored redundant hits are left out), in candidate
      order.
    num_lesions: number of ground-truth lesions in the case. Misses are
      ``num_lesions - sum(is_tp)`` (confidence 0 in picai's convention).
  """

  candidates: list[tuple[bool, float]]
  num_lesions: int

  @property
  def num_tp(self) -> int:
    return int(sum(bool(t) for t, _ in self.candidates))

  @property
  def num_fp(self) -> int:
    return len(self.candidates) - self.num_tp

  @property
  def num_missed(self) -> int:
    return self.num_lesions - self.num_tp


def _structure(ndim: int, connectivity: int | None) -> np.ndarray:
  """Structuring element for ``ndimage.label`` from a voxel-neighbour count."""
  if ndim < 1:
    raise ValueError("maps must have at least one spatial axis.")
  if connectivity is None:
    return ndimage.generate_binary_structure(ndim, ndim)
  ranks = _CONNECTIVITY_RANK.get(ndim)
  if ranks is None or connectivity not in ranks:
    allowed = sorted(ranks) if ranks else "None (full connectivity)"
    raise ValueError(
        f"connectivity {connectivity} is not valid for {ndim}-D maps; use "
        f"{allowed}.")
  return ndimage.generate_binary_structure(ndim, ranks[connectivity])


def _check_prob_map(prob_map: Any) -> np.ndarray:
  p = np.asarray(prob_map)
  if p.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 is not a NumPy number; read as float32.
    p = p.astype(np.float32)
  if p.ndim < 1 or p.size == 0:
    raise ValueError(f"prob_map must be a non-empty array, got shape {p.shape}.")
  if p.dtype == bool or not np.issubdtype(p.dtype, np.number):
    raise ValueError(f"prob_map must be numeric, got dtype {p.dtype}.")
  p = p.astype(np.float64, copy=False)
  if not np.isfinite(p).all():
    raise ValueError("prob_map contains NaN or infinite values.")
  if p.min() < 0:
    raise ValueError("prob_map must be non-negative (detection confidences).")
  return p


def extract_lesion_candidates(
    prob_map: Any,
    *,
    threshold: str | float = "dynamic-fast",
    min_voxels: int = 10,
    max_candidates: int | None = 5,
    connectivity: int | None = None,
    dynamic_threshold_factor: float = 2.5,
) -> tuple[np.ndarray, np.ndarray]:
  """Extracts lesion candidates from a lesion-probability map (PI-CAI).

  Candidate voxels are ``p >= t`` and ``p > 0`` with

  * ``threshold="dynamic-fast"``: ``t = max(p) / dynamic_threshold_factor``
    (``max / 2.5``), one threshold per case;
  * ``threshold=<float>``: ``t`` itself (a static threshold).

  Each connected component is a candidate with confidence ``max p`` over its
  voxels. Components with ``<= min_voxels`` voxels are dropped. The remaining
  ones are sorted by confidence (descending; ties by position of the first
  voxel in C order) and the first ``max_candidates`` kept.

  Args:
    prob_map: lesion probabilities of one case, ``(x, y, z)`` or ``(h, w)``,
      non-negative.
    threshold: "dynamic-fast" or a float threshold.
    min_voxels: components with this many voxels or fewer are removed.
    max_candidates: keep at most this many candidates (None: no cap).
    connectivity: neighbours that connect voxels: 6/18/26 in 3D, 4/8 in 2D;
      None (default) is full connectivity (26 in 3D, 8 in 2D), as picai_eval.
    dynamic_threshold_factor: divisor of the maximum for "dynamic-fast".

  Returns:
    ``(candidate_map, confidences)``: ``candidate_map`` int32 of the input
    shape, 0 outside candidates and ``k`` (1-based) on the voxels of the
    ``k``-th candidate; ``confidences`` float64 ``(K,)`` (descending),
    ``confidences[k - 1]`` belonging to label ``k``.

  Raises:
    ValueError: on empty / non-finite / negative maps, unknown threshold
      modes, bad connectivity, negative min_voxels or max_candidates < 0.
  """
  p = _check_prob_map(prob_map)
  if min_voxels < 0:
    raise ValueError(f"min_voxels must be >= 0, got {min_voxels}.")
  if max_candidates is not None and max_candidates < 0:
    raise ValueError(f"max_candidates must be >= 0 or None, got "
                     f"{max_candidates}.")
  structure = _structure(p.ndim, connectivity)
  if isinstance(threshold, str):
    if threshold != "dynamic-fast":
      raise ValueError(
          f"Unknown threshold mode {threshold!r}; use 'dynamic-fast' or a "
          "float.")
    if dynamic_threshold_factor <= 0:
      raise ValueError("dynamic_threshold_factor must be positive.")
    t = float(p.max()) / float(dynamic_threshold_factor)
  else:
    t = float(threshold)
    if not np.isfinite(t):
      raise ValueError(f"threshold must be finite, got {threshold}.")

  empty = (np.zeros(p.shape, np.int32), np.zeros((0,), np.float64))
  mask = (p >= t) & (p > 0)
  labels, num = ndimage.label(mask, structure=structure)
  if num == 0:
    return empty
  sizes = np.bincount(labels.reshape(-1), minlength=num + 1)[1:]
  ids = np.arange(1, num + 1)
  keep = ids[sizes > min_voxels]
  if keep.size == 0:
    return empty
  conf = np.asarray(ndimage.maximum(p, labels, keep), dtype=np.float64)
  # ndimage.label numbers components in C order of their first voxel, so a
  # stable sort breaks ties by position.
  order = np.argsort(-conf, kind="stable")
  if max_candidates is not None:
    order = order[:max_candidates]
  lookup = np.zeros(num + 1, np.int32)
  lookup[keep[order]] = np.arange(1, order.size + 1, dtype=np.int32)
  return lookup[labels], conf[order]


def _iou_matrix(
    candidate_map: np.ndarray, num_candidates: int, gt_labels: np.ndarray,
    num_lesions: int
) -> np.ndarray:
  """IoU ``(num_candidates, num_lesions)`` from a joint label histogram."""
  c = candidate_map.reshape(-1).astype(np.int64)
  g = gt_labels.reshape(-1).astype(np.int64)
  joint = np.bincount(c * (num_lesions + 1) + g,
                      minlength=(num_candidates + 1) * (num_lesions + 1))
  joint = joint.reshape(num_candidates + 1, num_lesions + 1)
  inter = joint[1:, 1:].astype(np.float64)
  cand_size = joint[1:, :].sum(axis=1).astype(np.float64)
  gt_size = joint[:, 1:].sum(axis=0).astype(np.float64)
  union = cand_size[:, None] + gt_size[None, :] - inter
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(union > 0, inter / union, 0.0)


def match_lesions(
    candidate_map: Any,
    confidences: Any,
    gt_lesion_mask: Any,
    *,
    min_iou: float = 0.10,
    connectivity: int | None = None,
    redundant_hits: str = "ignore",
) -> LesionMatches:
  """Matches lesion candidates one-to-one to ground-truth lesions.

  Ground-truth lesions are the connected components of ``gt_lesion_mask > 0``.
  With ``IoU_kl = |C_k & G_l| / |C_k | G_l|``, pairs with ``IoU >= min_iou``
  are eligible, and `scipy.optimize.linear_sum_assignment` picks the
  one-to-one assignment with the most eligible pairs and, among those, the
  largest total IoU (weights ``eligible * (W + IoU)`` with ``W`` above any
  achievable total IoU). Then:

  * assigned candidates are true positives (``is_tp=True``);
  * candidates with ``IoU < min_iou`` to every lesion are false positives;
  * eligible but unassigned candidates (a second candidate on an already
    matched lesion) are ignored (``redundant_hits="ignore"``, picai_eval's
    default) or false positives (``"false_positive"``);
  * unassigned lesions are misses (counted via ``num_lesions``).

  Args:
    candidate_map: int map, 0 background and ``k`` for candidate ``k``
      (1-based), e.g. from `extract_lesion_candidates`.
    confidences: ``(K,)`` confidence of each candidate, ``K >=
      candidate_map.max()``.
    gt_lesion_mask: binary truth (non-zero = lesion) of the same shape.
    min_iou: minimum IoU for a hit (PI-CAI: 0.10).
    connectivity: for the ground-truth components; see
      `extract_lesion_candidates` (default: full, 26 in 3D).
    redundant_hits: "ignore" or "false_positive".

  Returns:
    ``LesionMatches(candidates=[(is_tp, confidence), ...], num_lesions)``.

  Raises:
    ValueError: on mismatched shapes, negative labels, too few confidences,
      min_iou outside (0, 1], or unknown ``redundant_hits``.
  """
  cmap = np.asarray(candidate_map)
  gt = np.asarray(gt_lesion_mask)
  conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
  if cmap.shape != gt.shape:
    raise ValueError(
        f"candidate_map shape {cmap.shape} and gt_lesion_mask shape "
        f"{gt.shape} must match.")
  if cmap.size == 0:
    raise ValueError("candidate_map is empty.")
  if not np.issubdtype(cmap.dtype, np.integer):
    raise ValueError(f"candidate_map must be integer, got {cmap.dtype}.")
  if cmap.min() < 0:
    raise ValueError("candidate_map labels must be >= 0.")
  if not 0.0 < min_iou <= 1.0:
    raise ValueError(f"min_iou must be in (0, 1], got {min_iou}.")
  if redundant_hits not in ("ignore", "false_positive"):
    raise ValueError(
        f"redundant_hits must be 'ignore' or 'false_positive', got "
        f"{redundant_hits!r}.")
  num_candidates = int(conf.size)
  if int(cmap.max()) > num_candidates:
    raise ValueError(
        f"candidate_map has label {int(cmap.max())} but only {num_candidates} "
        "confidences were given.")
  if not np.isfinite(conf).all():
    raise ValueError("confidences must be finite.")

  gt_labels, num_lesions = ndimage.label(
      gt != 0, structure=_structure(gt.ndim, connectivity))
  is_tp = np.zeros(num_candidates, bool)
  counted = np.ones(num_candidates, bool)
  if num_lesions > 0 and num_candidates > 0:
    iou = _iou_matrix(cmap, num_candidates, gt_labels, num_lesions)
    eligible = iou >= min_iou
    big = float(min(num_candidates, num_lesions)) + 1.0
    weights = np.where(eligible, big + iou, 0.0)
    rows, cols = optimize.linear_sum_assignment(weights, maximize=True)
    hit = eligible[rows, cols]
    is_tp[rows[hit]] = True
    if redundant_hits == "ignore":
      counted = is_tp | ~eligible.any(axis=1)
  candidates = [(bool(is_tp[k]), float(conf[k]))
                for k in range(num_candidates) if counted[k]]
  return LesionMatches(candidates, int(num_lesions))


def _check_case_results(case_results: Sequence[LesionMatches]) -> None:
  if len(case_results) == 0:
    raise ValueError("case_results is empty.")
  for r in case_results:
    if not isinstance(r, tuple) or len(r) != 2:
      raise ValueError(
          "Each case result must be LesionMatches(candidates, num_lesions).")


def _pool(case_results: Sequence[LesionMatches]):
  conf = np.array([c for r in case_results for _, c in r[0]], np.float64)
  tp = np.array([bool(t) for r in case_results for t, _ in r[0]], bool)
  num_lesions = int(sum(int(r[1]) for r in case_results))
  return conf, tp, num_lesions


def _operating_points(conf: np.ndarray, tp: np.ndarray):
  """Cumulative (thresholds, TP, FP) at each distinct confidence, descending."""
  order = np.argsort(-conf, kind="stable")
  c, t = conf[order], tp[order]
  cum_tp = np.cumsum(t)
  cum_fp = np.cumsum(~t)
  # last index of each group of equal confidences: threshold "conf >= c".
  last = np.r_[np.nonzero(np.diff(c))[0], c.size - 1] if c.size else np.zeros(
      0, int)
  return c[last], cum_tp[last].astype(np.float64), cum_fp[last].astype(
      np.float64)


def partial_area(
    x: Any, y: Any, *, x_range: tuple[float, float]
) -> float:
  """Area under a piecewise-linear curve over ``x_range`` (linear x axis).

  The curve joins the points ``(x_i, y_i)`` (``x`` non-decreasing; equal
  consecutive ``x`` make vertical steps) with straight segments and continues
  horizontally at ``y_last`` beyond the last point (and is undefined below
  ``x_0``: ``x_range[0]`` must be ``>= x_0``). The area is exact:

  .. math:: \\int_{a}^{b} y(x)\\, dx.

  Args:
    x: non-decreasing x coordinates, ``(P,)``.
    y: y coordinates, ``(P,)``.
    x_range: ``(a, b)`` with ``x_0 <= a < b``.

  Returns:
    The area (a Python float).
  """
  x = np.asarray(x, np.float64).reshape(-1)
  y = np.asarray(y, np.float64).reshape(-1)
  a, b = (float(v) for v in x_range)
  if x.shape != y.shape or x.size == 0:
    raise ValueError("x and y must be non-empty and of equal length.")
  if not a < b:
    raise ValueError(f"x_range must be increasing, got {x_range}.")
  if np.any(np.diff(x) < 0):
    raise ValueError("x must be non-decreasing.")
  if a < x[0]:
    raise ValueError(f"x_range starts at {a}, before the curve ({x[0]}).")
  # Extend horizontally to cover b.
  if x[-1] < b:
    x = np.r_[x, b]
    y = np.r_[y, y[-1]]
  x0, x1, y0, y1 = x[:-1], x[1:], y[:-1], y[1:]
  lo = np.clip(x0, a, b)
  hi = np.clip(x1, a, b)
  width = x1 - x0
  with np.errstate(invalid="ignore", divide="ignore"):
    slope = np.where(width > 0, (y1 - y0) / width, 0.0)
  y_lo = y0 + slope * (lo - x0)
  y_hi = y0 + slope * (hi - x0)
  return float(np.sum(np.where(hi > lo, 0.5 * (y_lo + y_hi) * (hi - lo), 0.0)))


def average_precision(case_results: Sequence[LesionMatches]) -> float:
  """Lesion-level average precision (step integral of the PR curve).

  With the candidates of all cases pooled and distinct confidences
  ``t_1 > t_2 > ...``: ``R_k = TP(>= t_k) / #lesions``, ``P_k = TP(>= t_k) /
  (TP + FP)(>= t_k)`` and ``AP = sum_k (R_k - R_{k-1}) P_k`` (``R_0 = 0``),
  i.e. scikit-learn's ``average_precision_score`` where missed lesions are
  positives with precision 0 (picai_eval's definition).

  Returns:
    AP in [0, 1]; NaN when there are no ground-truth lesions.
  """
  _check_case_results(case_results)
  conf, tp, num_lesions = _pool(case_results)
  if num_lesions == 0:
    return float("nan")
  _, tps, fps = _operating_points(conf, tp)
  if tps.size == 0:
    return 0.0
  recall = tps / num_lesions
  precision = tps / (tps + fps)
  return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def froc(
    case_results: Sequence[LesionMatches],
    *,
    fp_range: tuple[float, float] = (0.1, 2.5),
) -> dict[str, Any]:
  """Free-response ROC over cases, its partial area, max sensitivity and AP.

  Pooling the candidates of all ``N`` cases, for each distinct confidence
  ``t`` (descending) the operating point is

  .. math::

    \\mathrm{sens}(t) = \\frac{\\#\\{TP: c \\ge t\\}}{\\#\\text{lesions}}, \\qquad
    \\mathrm{FP/case}(t) = \\frac{\\#\\{FP: c \\ge t\\}}{N}.

  The curve starts at ``(0, 0)`` (threshold ``+inf``), joins consecutive
  points with straight lines (vertical for a new TP, horizontal for a new FP,
  diagonal when both share one confidence, i.e. ties count half-half as in an
  ROC) and continues horizontally beyond the last point. ``pauc`` is its area
  over ``fp_range`` with a **linear** FP axis, as picai_eval's
  ``calculate_pAUC_from_graph`` (maximum ``b - a = 2.4`` for 0.1-2.5);
  ``pauc_normalized`` divides by ``b - a``.

  Args:
    case_results: one `LesionMatches` per case (cases without lesions and
      candidates included: they count in ``N``).
    fp_range: ``(a, b)``, ``0 <= a < b``, false positives per case.

  Returns:
    dict with ``fp_per_case`` and ``sensitivity`` (operating points, starting
    with the ``(0, 0)`` point), ``thresholds`` (``inf`` then the distinct
    confidences), ``pauc``, ``pauc_normalized``, ``max_sensitivity``
    (sensitivity at the lowest threshold), ``average_precision``,
    ``num_lesions``, ``num_cases``, ``num_tp``, ``num_fp`` (at the lowest
    threshold). Sensitivity-based values are NaN when there are no lesions.
  """
  _check_case_results(case_results)
  a, b = (float(v) for v in fp_range)
  if not 0.0 <= a < b:
    raise ValueError(f"fp_range must satisfy 0 <= a < b, got {fp_range}.")
  num_cases = len(case_results)
  conf, tp, num_lesions = _pool(case_results)
  thresholds, tps, fps = _operating_points(conf, tp)
  thresholds = np.r_[np.inf, thresholds]
  tps = np.r_[0.0, tps]
  fps = np.r_[0.0, fps]
  fp_per_case = fps / num_cases
  if num_lesions > 0:
    sensitivity = tps / num_lesions
    pauc = partial_area(fp_per_case, sensitivity, x_range=(a, b))
    max_sensitivity = float(sensitivity[-1])
  else:
    sensitivity = np.full_like(tps, np.nan)
    pauc = max_sensitivity = float("nan")
  return dict(
      fp_per_case=fp_per_case,
      sensitivity=sensitivity,
      thresholds=thresholds,
      pauc=pauc,
      pauc_normalized=pauc / (b - a),
      max_sensitivity=max_sensitivity,
      average_precision=average_precision(case_results),
      num_lesions=num_lesions,
      num_cases=num_cases,
      num_tp=int(tps[-1]),
      num_fp=int(fps[-1]),
  )


def sensitivity_at(fp_per_case: Any, sensitivity: Any, fp_grid: Any) -> np.ndarray:
  """Sensitivity of a FROC curve (as returned by `froc`) at the FP rates of ``fp_grid``.

  Operating points sharing one FP rate (a vertical step) collapse to their highest sensitivity;
  between points the curve is linear, beyond the last one flat (as `froc` describes it).
  """
  fp = np.asarray(fp_per_case, np.float64)
  sens = np.asarray(sensitivity, np.float64)
  if fp.ndim != 1 or fp.shape != sens.shape or fp.size == 0:
    raise ValueError(f"fp_per_case {fp.shape} and sensitivity {sens.shape} must be equal-length, "
                     "non-empty 1-D arrays.")
  unique, inverse = np.unique(fp, return_inverse=True)
  top = np.full(unique.shape, -np.inf)
  np.maximum.at(top, inverse, sens)
  return np.interp(np.asarray(fp_grid, np.float64), unique, top)


def froc_bootstrap_band(
    case_results: Sequence[LesionMatches],
    fp_grid: Any,
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Percentile-bootstrap band (over cases) of the FROC sensitivity at each FP rate of a grid.

  Each resample of the cases gets its own `froc`, read at ``fp_grid`` with `sensitivity_at`;
  the band is the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles at every grid point.
  Resamples without lesions are skipped. The resamples are those of
  :func:`jaxseg.metrics.stats.bootstrap_ci_paired` for the same seed, so the band and the CIs of
  the scalar FROC metrics come from the same resampled case sets.

  Returns:
    ``(low, high)``, each with the grid's shape; all NaN when no resample holds a lesion.
  """
  _check_case_results(case_results)
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}.")
  indices = stats.bootstrap_indices(len(case_results), num_resamples=num_resamples, seed=seed)
  curves = []
  for idx in indices:
    f = froc([case_results[i] for i in idx])
    if f["num_lesions"]:
      curves.append(sensitivity_at(f["fp_per_case"], f["sensitivity"], fp_grid))
  if not curves:
    nan = np.full(np.shape(fp_grid), np.nan)
    return nan, nan
  tail = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(np.stack(curves), [tail, 100.0 - tail], axis=0)
  return low, high


def auroc(case_scores: Any, case_labels: Any) -> float:
  """Patient-level area under the ROC curve (Mann-Whitney U statistic).

  .. math::

    \\mathrm{AUROC} = \\frac{1}{n_+ n_-} \\sum_{i \\in +} \\sum_{j \\in -}
      \\left([s_i > s_j] + \\tfrac12 [s_i = s_j]\\right)
      = \\frac{R_+ - n_+(n_+ + 1)/2}{n_+ n_-},

  with ``R_+`` the sum of the (tie-averaged) ranks of the positive cases; the
  same value as the trapezoidal area under the ROC curve.

  Args:
    case_scores: ``(n_cases,)`` scores (e.g. max of each probability map).
    case_labels: ``(n_cases,)`` binary labels (1 = lesion present).

  Returns:
    AUROC in [0, 1]; NaN when only one class is present.
  """
  s = np.asarray(case_scores, np.float64).reshape(-1)
  y = np.asarray(case_labels)
  if y.ndim != 1 or s.shape != y.shape:
    raise ValueError(
        f"case_scores {np.shape(case_scores)} and case_labels {y.shape} must "
        "be 1-D of equal length.")
  if s.size == 0:
    raise ValueError("No cases given.")
  if not np.isfinite(s).all():
    raise ValueError("case_scores must be finite.")
  if not np.isin(y, (0, 1)).all():
    raise ValueError("case_labels must be binary (0/1 or bool).")
  pos = y.astype(bool)
  n_pos, n_neg = int(pos.sum()), int((~pos).sum())
  if n_pos == 0 or n_neg == 0:
    return float("nan")
  ranks = sp_stats.rankdata(s)  # average ranks for ties
  u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
  return float(u / (n_pos * n_neg))


def evaluate_cases(
    prob_maps: Sequence[Any],
    gt_masks: Sequence[Any],
    *,
    threshold: str | float = "dynamic-fast",
    min_voxels: int = 10,
    max_candidates: int | None = 5,
    min_iou: float = 0.10,
    connectivity: int | None = None,
    redundant_hits: str = "ignore",
    fp_range: tuple[float, float] = (0.1, 2.5),
) -> dict[str, Any]:
  """PI-CAI style evaluation of a list of cases.

  Per case: `extract_lesion_candidates` -> `match_lesions`; case score =
  ``max`` of the probability map, case label = any lesion voxel. Then `froc`
  over all cases and `auroc` over the case scores.

  Args:
    prob_maps: one lesion-probability map per case (shapes may differ between
      cases).
    gt_masks: one binary lesion mask per case, same shape as its map.
    threshold, min_voxels, max_candidates, connectivity: see
      `extract_lesion_candidates` (connectivity is also used for the truth).
    min_iou, redundant_hits: see `match_lesions`.
    fp_range: see `froc`.

  Returns:
    The `froc` dict plus ``auroc``, ``score`` (``(auroc + AP) / 2``, the PI-CAI
    ranking score), ``case_scores`` ``(N,)``, ``case_labels`` ``(N,)`` int and
    ``case_results`` (list of `LesionMatches`, e.g. for
    `jaxseg.metrics.stats.bootstrap_ci_paired`).
  """
  if len(prob_maps) != len(gt_masks):
    raise ValueError(
        f"Got {len(prob_maps)} probability maps but {len(gt_masks)} masks.")
  if len(prob_maps) == 0:
    raise ValueError("No cases given.")
  case_results, scores, labels = [], [], []
  for i, (pm, gt) in enumerate(zip(prob_maps, gt_masks)):
    p = _check_prob_map(pm)
    g = np.asarray(gt)
    if p.shape != g.shape:
      raise ValueError(
          f"Case {i}: prob_map shape {p.shape} != gt shape {g.shape}.")
    cmap, conf = extract_lesion_candidates(
        p, threshold=threshold, min_voxels=min_voxels,
        max_candidates=max_candidates, connectivity=connectivity)
    case_results.append(match_lesions(
        cmap, conf, g, min_iou=min_iou, connectivity=connectivity,
        redundant_hits=redundant_hits))
    scores.append(float(p.max()))
    labels.append(int(np.any(g != 0)))
  result = froc(case_results, fp_range=fp_range)
  scores_arr = np.asarray(scores, np.float64)
  labels_arr = np.asarray(labels, np.int64)
  result["auroc"] = auroc(scores_arr, labels_arr)
  result["score"] = (result["auroc"] + result["average_precision"]) / 2.0
  result["case_scores"] = scores_arr
  result["case_labels"] = labels_arr
  result["case_results"] = case_results
  return result
