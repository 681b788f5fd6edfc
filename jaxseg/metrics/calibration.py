"""Calibration metrics for voxel-wise class probabilities (host-side NumPy).

Multi-class maps: ``probs`` are channels-last ``(..., C)`` probabilities (e.g.
a softmax output, or the mean of Monte-Carlo samples), ``labels`` are integer
maps ``(...)`` with values in ``[0, C)``. Every voxel is one sample.

* Negative log-likelihood (mean over voxels, Saha et al. use it as their
  calibration measure):

  .. math:: \\mathrm{NLL} = -\\frac{1}{N} \\sum_i \\log \\max(p_{i, y_i}, \\epsilon)

* Expected calibration error, top-label (Guo et al., "On Calibration of Modern
  Neural Networks", ICML 2017): confidence ``c_i = max_k p_ik``, prediction
  ``argmax_k p_ik``, ``M`` equal-width bins ``B_m = ((m-1)/M, m/M]`` (the first
  bin also holds ``c = 0``):

  .. math::

    \\mathrm{ECE} = \\sum_{m=1}^{M} \\frac{|B_m|}{N}
      \\left| \\mathrm{acc}(B_m) - \\mathrm{conf}(B_m) \\right|

Binary maps (a foreground-probability map ``p`` in ``[0, 1]`` against a binary
truth): `binary_negative_log_likelihood` is the binary cross-entropy, and
`binary_expected_calibration_error` / `binary_reliability_diagram` use the
*foreground-probability* definition (as ``sklearn.calibration
.calibration_curve``): voxels are binned by ``p`` itself and the observed
foreground frequency of each bin is compared with its mean ``p``,

.. math::

  \\mathrm{ECE}_{fg} = \\sum_m \\frac{|B_m|}{N}
    \\left| \\overline{y}(B_m) - \\overline{p}(B_m) \\right|.

This differs from the top-label ECE of the two-class map ``[1 - p, p]`` (whose
confidence ``max(p, 1 - p)`` lives in ``[0.5, 1]``); for that one, call
`expected_calibration_error` on ``np.stack([1 - p, p], -1)``.

All binning uses ``np.searchsorted`` + ``np.bincount`` (O(N log M) time, O(N)
memory), so whole volumes are fine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "binary_expected_calibration_error",
    "binary_negative_log_likelihood",
    "binary_reliability_diagram",
    "ece_from_diagram",
    "expected_calibration_error",
    "negative_log_likelihood",
    "pool_reliability_diagrams",
    "reliability_diagram",
]

_PROB_TOL = 1e-4  # tolerance on [0, 1] range and on sum-to-one of class probs


def _check_probs(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates a class-probability map and an integer label map."""
  p = np.asarray(probs)
  y = np.asarray(labels)
  if p.ndim < 1:
    raise ValueError("probs must have a trailing class axis (..., C).")
  if p.shape[:-1] != y.shape:
    raise ValueError(
        f"probs shape {p.shape} must be labels shape {y.shape} plus a class "
        "axis (channels-last).")
  if p.shape[-1] < 2:
    raise ValueError(
        f"probs needs at least 2 classes, got {p.shape[-1]}; use the binary_* "
        "functions for a foreground-probability map.")
  if y.size == 0:
    raise ValueError("probs and labels are empty.")
  if not np.issubdtype(y.dtype, np.integer) and y.dtype != bool:
    if not np.all(np.mod(y, 1) == 0):
      raise ValueError("labels must be integers.")
  y = y.astype(np.int64)
  num_classes = p.shape[-1]
  if y.min() < 0 or y.max() >= num_classes:
    raise ValueError(
        f"labels must be in [0, {num_classes}), got [{y.min()}, {y.max()}].")
  if not np.issubdtype(p.dtype, np.floating):
    p = p.astype(np.float64)
  if not np.isfinite(p).all():
    raise ValueError("probs contain NaN or infinite values.")
  if p.min() < -_PROB_TOL or p.max() > 1 + _PROB_TOL:
    raise ValueError("probs must lie in [0, 1] (pass probabilities, not logits).")
  sums = p.sum(axis=-1, dtype=np.float64)
  if np.abs(sums - 1.0).max() > _PROB_TOL * num_classes:
    raise ValueError("probs must sum to 1 over the last (class) axis.")
  return p, y


def _check_binary(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
  """Validates a foreground-probability map and a binary truth map."""
  p = np.asarray(probs)
  y = np.asarray(labels)
  if p.shape != y.shape:
    raise ValueError(
        f"probs shape {p.shape} and labels shape {y.shape} must match.")
  if p.size == 0:
    raise ValueError("probs and labels are empty.")
  if not np.issubdtype(p.dtype, np.floating):
    p = p.astype(np.float64)
  if not np.isfinite(p).all():
    raise ValueError("probs contain NaN or infinite values.")
  if p.min() < -_PROB_TOL or p.max() > 1 + _PROB_TOL:
    raise ValueError("probs must lie in [0, 1] (pass probabilities, not logits).")
  if not np.isin(y, (0, 1)).all():
    raise ValueError("labels must be binary (0/1 or bool).")
  return p, y.astype(bool)


def _check_num_bins(num_bins: int) -> None:
  if int(num_bins) != num_bins or num_bins < 1:
    raise ValueError(f"num_bins must be a positive integer, got {num_bins}.")


def _binned(
    values: np.ndarray, targets: np.ndarray, num_bins: int
) -> dict[str, np.ndarray]:
  """Bins ``values`` in ``((m-1)/M, m/M]`` and averages values and targets."""
  edges = np.linspace(0.0, 1.0, num_bins + 1)
  v = np.clip(values.reshape(-1), 0.0, 1.0)
  # searchsorted(side="left") gives k with edges[k-1] < v <= edges[k].
  idx = np.clip(np.searchsorted(edges, v, side="left") - 1, 0, num_bins - 1)
  counts = np.bincount(idx, minlength=num_bins)
  sum_v = np.bincount(idx, weights=v.astype(np.float64), minlength=num_bins)
  sum_t = np.bincount(
      idx, weights=targets.reshape(-1).astype(np.float64), minlength=num_bins)
  with np.errstate(invalid="ignore", divide="ignore"):
    mean_v = np.where(counts > 0, sum_v / counts, np.nan)
    mean_t = np.where(counts > 0, sum_t / counts, np.nan)
  return dict(bin_edges=edges, confidence=mean_v, accuracy=mean_t,
              counts=counts)


def pool_reliability_diagrams(diagrams: Any) -> dict[str, np.ndarray]:
  """Pools reliability diagrams of several cases (same bins) into the diagram of all their voxels.

  ``counts`` add up and each bin's ``confidence`` / ``accuracy`` is the count-weighted mean of the
  cases' values, so the result equals :func:`reliability_diagram` of the concatenated voxels, and
  :func:`ece_from_diagram` of it is their pooled ECE (cheaper than concatenating whole volumes, and
  what a bootstrap over cases needs).

  Args:
    diagrams: non-empty sequence of dicts returned by :func:`reliability_diagram` (or the binary
      variant) with identical ``bin_edges``.

  Returns:
    A diagram dict (``bin_edges``, ``confidence``, ``accuracy``, ``counts``).
  """
  diagrams = list(diagrams)
  if not diagrams:
    raise ValueError("at least one reliability diagram is needed.")
  edges = np.asarray(diagrams[0]["bin_edges"])
  for d in diagrams[1:]:
    if not np.array_equal(np.asarray(d["bin_edges"]), edges):
      raise ValueError("reliability diagrams with different bins cannot be pooled.")
  counts = np.sum([np.asarray(d["counts"]) for d in diagrams], axis=0).astype(np.int64)
  out = {"bin_edges": edges, "counts": counts}
  for key in ("confidence", "accuracy"):
    total = np.sum([np.nan_to_num(np.asarray(d[key], np.float64)) * np.asarray(d["counts"])
                    for d in diagrams], axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
      out[key] = np.where(counts > 0, total / np.maximum(counts, 1), np.nan)
  return out


def ece_from_diagram(diagram: dict[str, np.ndarray]) -> float:
  """ECE of a reliability diagram: ``sum_m |B_m| |acc_m - conf_m| / N`` (empty bins add 0)."""
  counts = np.asarray(diagram["counts"])
  if counts.sum() == 0:
    raise ValueError("the reliability diagram holds no voxels.")
  nonempty = counts > 0
  gap = np.abs(np.asarray(diagram["accuracy"])[nonempty]
               - np.asarray(diagram["confidence"])[nonempty])
  return float(np.sum(counts[nonempty] * gap) / counts.sum())


def negative_log_likelihood(
    probs: Any, labels: Any, *, eps: float = 1e-7
) -> float:
  """Mean voxel-wise negative log-likelihood of the true class.

  ``NLL = -mean_i log(max(p[i, y_i], eps))``.

  Args:
    probs: class probabilities, channels-last ``(..., C)``, summing to 1.
    labels: integer labels ``(...)`` in ``[0, C)``.
    eps: floor on the probability before the log (keeps the value finite for
      a confident mistake; ``-log(1e-7) ~= 16.1``).

  Returns:
    The mean NLL over all voxels (a Python float).

  Raises:
    ValueError: on mismatched shapes, labels out of range, values outside
      [0, 1] or not summing to one, empty input, eps not in (0, 1).
  """
  if not 0.0 < eps < 1.0:
    raise ValueError(f"eps must be in (0, 1), got {eps}.")
  p, y = _check_probs(probs, labels)
  p_true = np.take_along_axis(p, y[..., None], axis=-1)[..., 0]
  p_true = np.clip(p_true.astype(np.float64), eps, 1.0)
  return float(-np.mean(np.log(p_true)))


def reliability_diagram(
    probs: Any, labels: Any, *, num_bins: int = 15
) -> dict[str, np.ndarray]:
  """Top-label reliability diagram with equal-width confidence bins.

  Args:
    probs: class probabilities, channels-last ``(..., C)``.
    labels: integer labels ``(...)``.
    num_bins: number ``M`` of equal-width bins on [0, 1]; bin ``m`` is
      ``(edges[m], edges[m+1]]`` (bin 0 also holds confidence 0).

  Returns:
    dict with ``bin_edges`` ``(M + 1,)``, ``confidence`` (mean top-label
    confidence per bin, NaN for empty bins) ``(M,)``, ``accuracy`` (fraction of
    voxels whose argmax is the true class, NaN for empty bins) ``(M,)`` and
    ``counts`` (voxels per bin, int) ``(M,)``.
  """
  _check_num_bins(num_bins)
  p, y = _check_probs(probs, labels)
  confidence = p.max(axis=-1)
  correct = p.argmax(axis=-1) == y
  return _binned(confidence, correct, int(num_bins))


def expected_calibration_error(
    probs: Any, labels: Any, *, num_bins: int = 15
) -> float:
  """Top-label expected calibration error (Guo et al. 2017).

  ``ECE = sum_m |B_m| / N * |acc(B_m) - conf(B_m)|`` over equal-width bins of
  the top-label confidence ``max_k p_k``; empty bins contribute 0.

  Args:
    probs: class probabilities, channels-last ``(..., C)``.
    labels: integer labels ``(...)``.
    num_bins: number of equal-width bins on [0, 1].

  Returns:
    The ECE in [0, 1] (a Python float).
  """
  return ece_from_diagram(reliability_diagram(probs, labels,
                                               num_bins=num_bins))


def binary_negative_log_likelihood(
    probs: Any, labels: Any, *, eps: float = 1e-7
) -> float:
  """Mean binary cross-entropy of a foreground-probability map.

  ``NLL = -mean_i [y_i log(max(p_i, eps)) + (1 - y_i) log(max(1 - p_i, eps))]``
  (equal to `negative_log_likelihood` on ``[1 - p, p]``).

  Args:
    probs: foreground probabilities, any shape.
    labels: binary truth (0/1 or bool), same shape.
    eps: floor on the probability of the true outcome.

  Returns:
    The mean NLL over voxels (a Python float).
  """
  if not 0.0 < eps < 1.0:
    raise ValueError(f"eps must be in (0, 1), got {eps}.")
  p, y = _check_binary(probs, labels)
  p = p.astype(np.float64)
  p_true = np.where(y, p, 1.0 - p)
  return float(-np.mean(np.log(np.clip(p_true, eps, 1.0))))


def binary_reliability_diagram(
    probs: Any, labels: Any, *, num_bins: int = 15
) -> dict[str, np.ndarray]:
  """Foreground-probability reliability diagram of a binary map.

  Voxels are binned by their foreground probability ``p`` (equal-width bins
  ``(edges[m], edges[m+1]]``, bin 0 also holds ``p = 0``); per bin the mean
  ``p`` is compared with the observed foreground fraction (as
  ``sklearn.calibration.calibration_curve`` with ``strategy="uniform"``).

  Args:
    probs: foreground probabilities, any shape.
    labels: binary truth, same shape.
    num_bins: number of equal-width bins on [0, 1].

  Returns:
    dict with ``bin_edges``, ``confidence`` (mean ``p`` per bin), ``accuracy``
    (observed foreground fraction per bin; NaN for empty bins) and ``counts``.
  """
  _check_num_bins(num_bins)
  p, y = _check_binary(probs, labels)
  return _binned(p, y, int(num_bins))


def binary_expected_calibration_error(
    probs: Any, labels: Any, *, num_bins: int = 15
) -> float:
  """Foreground-probability ECE of a binary map (see module docstring).

  ``ECE_fg = sum_m |B_m| / N * |mean(y in B_m) - mean(p in B_m)|`` with bins
  over ``p`` itself (not over ``max(p, 1 - p)``).

  Args:
    probs: foreground probabilities, any shape.
    labels: binary truth, same shape.
    num_bins: number of equal-width bins on [0, 1].

  Returns:
    The ECE in [0, 1] (a Python float).
  """
  return ece_from_diagram(
      binary_reliability_diagram(probs, labels, num_bins=num_bins))
