"""Summary statistics over cases: percentile-bootstrap confidence intervals.

Every experiment reports a per-case metric (Dice, HD95, ...) as a point estimate
with a 95% confidence interval over cases. This module holds the one helper used
for that, so that all tables are computed the same way.

Percentile bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap",
1993, ch. 13): given ``n`` cases ``x_1..x_n`` and a statistic ``T``, draw ``B``
resamples of ``n`` cases with replacement, compute ``T`` on each, and report

.. math::

  \\hat\\theta = T(x), \\qquad
  [\\mathrm{low}, \\mathrm{high}] = [q_{(1-\\ell)/2}, q_{(1+\\ell)/2}]
  \\text{ of } \\{T(x^{*b})\\}_{b=1}^{B},

with ``ell`` the confidence level and ``q`` empirical percentiles (NumPy's
default linear interpolation).

Undefined values: per-case metrics use NaN for "undefined" (e.g. Dice of two
empty masks). `bootstrap_ci` and `mean_std` exclude them and report how many
were excluded (``n_undefined``), so they are never silently dropped from a table.

Randomness comes only from the ``seed`` argument (``np.random.default_rng``);
the same seed gives the same interval.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = [
    "Estimate",
    "MeanStd",
    "bootstrap_ci",
    "bootstrap_ci_paired",
    "bootstrap_ci_runs",
    "format_estimate",
    "mean_std",
]

# Upper bound on the number of elements of one chunk of resampled data, so
# that vectorised bootstrap of large samples stays within a few tens of MB.
_MAX_CHUNK_ELEMENTS = 4_000_000


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A point estimate with a confidence interval.

  Attributes:
    value: the statistic on the (defined part of the) full sample.
    low: lower bound of the confidence interval.
    high: upper bound of the confidence interval.
    n: number of defined (non-NaN) cases the estimate is computed from; for
      `bootstrap_ci_paired` the number of cases (rows).
    n_undefined: number of NaN cases excluded (always 0 for
      `bootstrap_ci_paired`, which does not look inside the arrays).
    n_resamples_undefined: number of bootstrap resamples whose statistic was
      NaN (e.g. an AUROC resample holding one class only); they are left out of
      the percentiles.
  """

  value: float
  low: float
  high: float
  n: int
  n_undefined: int = 0
  n_resamples_undefined: int = 0

  def format(self, precision: int = 3) -> str:
    """Formats as ``'0.812 [0.790, 0.833]'`` with ``precision`` decimals."""
    if precision < 0:
      raise ValueError(f"precision must be >= 0, got {precision}.")
    p = int(precision)
    return f"{self.value:.{p}f} [{self.low:.{p}f}, {self.high:.{p}f}]"

  def __str__(self) -> str:
    return self.format(3)


class MeanStd(NamedTuple):
  """Mean and standard deviation over the defined (non-NaN) values."""

  mean: float
  std: float
  n: int
  n_undefined: int


def _check_common(num_resamples: int, level: float) -> None:
  if int(num_resamples) != num_resamples or num_resamples < 1:
    raise ValueError(
        f"num_resamples must be a positive integer, got {num_resamples}.")
  if not 0.0 < level < 1.0:
    raise ValueError(f"level must be in (0, 1), got {level}.")


def _as_float_vector(values: Any, name: str = "values") -> np.ndarray:
  arr = np.asarray(values, dtype=np.float64)
  if arr.ndim != 1:
    raise ValueError(
        f"{name} must be one-dimensional (one value per case), got shape "
        f"{arr.shape}. Call once per column, or use bootstrap_ci_paired.")
  if arr.size == 0:
    raise ValueError(f"{name} is empty.")
  if np.isinf(arr).any():
    raise ValueError(f"{name} contains infinite values.")
  return arr


def _percentiles(replicates: np.ndarray, level: float) -> tuple[float, float]:
  alpha = 100.0 * (1.0 - level) / 2.0
  low, high = np.percentile(replicates, [alpha, 100.0 - alpha])
  return float(low), float(high)


def _resampled_statistic_vectorised(
    values: np.ndarray, statistic: Callable[..., Any], indices: np.ndarray
) -> np.ndarray | None:
  """Applies ``statistic(values[idx], axis=-1)`` in chunks; None if unsupported."""
  n = values.shape[0]
  chunk = max(1, _MAX_CHUNK_ELEMENTS // max(n, 1))
  out = []
  for start in range(0, indices.shape[0], chunk):
    block = values[indices[start:start + chunk]]
    try:
      res = np.asarray(statistic(block, axis=-1), dtype=np.float64)
    except TypeError:
      return None
    if res.shape != (block.shape[0],):
      return None
    out.append(res)
  return np.concatenate(out)


def bootstrap_indices(n: int, *, num_resamples: int, seed: int) -> np.ndarray:
  """The case indices of every resample, ``(num_resamples, n)`` ints in ``[0, n)``.

  Drawn with ``np.random.default_rng(seed)``; `bootstrap_ci`, `bootstrap_ci_paired` and any other
  resampling over the same cases (e.g. a FROC band) use this matrix, so their resamples agree for
  one seed.
  """
  if int(n) != n or n < 1:
    raise ValueError(f"n must be a positive integer (the number of cases), got {n}.")
  _check_common(num_resamples, 0.5)
  return np.random.default_rng(seed).integers(0, int(n), size=(int(num_resamples), int(n)))


def bootstrap_ci(
    values: Any,
    *,
    statistic: Callable[..., Any] = np.mean,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
  """Percentile-bootstrap confidence interval of a statistic over cases.

  NaN values are excluded first (and counted in ``n_undefined``); the ``n``
  remaining values are resampled with replacement ``num_resamples`` times, the
  statistic is computed on each resample, and the interval is the pair of
  ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of those replicates.

  Args:
    values: per-case values, shape ``(n_cases,)``; NaN marks "undefined".
    statistic: reduces a 1-D array to a scalar. If it accepts an ``axis``
      keyword (like ``np.mean``, ``np.median``) the resamples are evaluated
      vectorised as ``statistic(samples, axis=-1)``; otherwise one call per
      resample.
    num_resamples: number of bootstrap resamples ``B``.
    level: confidence level in (0, 1).
    seed: seed of ``np.random.default_rng``; same seed -> same interval.

  Returns:
    ``Estimate(value, low, high, n, n_undefined)``. When every value is NaN,
    value/low/high are NaN and ``n == 0``.

  Raises:
    ValueError: on empty or non-1-D input, infinite values, bad level or
      num_resamples.
  """
  _check_common(num_resamples, level)
  arr = _as_float_vector(values)
  defined = arr[~np.isnan(arr)]
  n, n_undefined = int(defined.size), int(arr.size - defined.size)
  if n == 0:
    return Estimate(np.nan, np.nan, np.nan, 0, n_undefined)

  value = float(statistic(defined))
  indices = bootstrap_indices(n, num_resamples=num_resamples, seed=seed)
  replicates = _resampled_statistic_vectorised(defined, statistic, indices)
  if replicates is None:
    replicates = np.array(
        [float(statistic(defined[idx])) for idx in indices], dtype=np.float64)
  ok = ~np.isnan(replicates)
  n_bad = int(replicates.size - ok.sum())
  if not ok.any():
    return Estimate(value, np.nan, np.nan, n, n_undefined, n_bad)
  low, high = _percentiles(replicates[ok], level)
  return Estimate(value, low, high, n, n_undefined, n_bad)


def _take(array: Any, idx: np.ndarray) -> Any:
  """Rows ``idx`` of an ndarray, or the items ``idx`` of a list/tuple."""
  if isinstance(array, np.ndarray):
    return array[idx]
  return [array[i] for i in idx]


def bootstrap_ci_paired(
    arrays: Sequence[Any],
    statistic: Callable[..., Any],
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
  """Percentile bootstrap of a statistic of several arrays resampled together.

  All arrays are indexed with the same case indices in every resample, so rows
  stay aligned (e.g. ``(scores, labels)`` for an AUROC, or per-case lesion
  results for a FROC). The statistic is called as ``statistic(*resampled)``.

  NumPy arrays are resampled along their first axis; lists and tuples (e.g. a
  list of per-case detection results) are resampled item-wise and passed on as
  lists. Other array-likes are converted with ``np.asarray``.

  Resamples whose statistic is NaN (e.g. an AUROC resample that holds a single
  class) are left out of the percentiles and counted in
  ``n_resamples_undefined``; no NaN filtering is done on the inputs.

  Args:
    arrays: sequence of arrays / lists with the same first dimension n_cases.
    statistic: ``statistic(*arrays) -> scalar``.
    num_resamples: number of bootstrap resamples.
    level: confidence level in (0, 1).
    seed: seed of ``np.random.default_rng``; the index matrix for a given
      (seed, n_cases, num_resamples) is the same as `bootstrap_ci`'s.

  Returns:
    ``Estimate(value, low, high, n=n_cases, n_undefined=0,
    n_resamples_undefined)``.

  Raises:
    ValueError: when no arrays are given, lengths differ, or they are empty.
  """
  _check_common(num_resamples, level)
  if isinstance(arrays, np.ndarray) or not isinstance(arrays, Sequence):
    raise ValueError("arrays must be a list or tuple of arrays.")
  if len(arrays) == 0:
    raise ValueError("arrays is empty: pass at least one array.")
  prepared = [
      a if isinstance(a, (np.ndarray, list, tuple)) else np.asarray(a)
      for a in arrays
  ]
  lengths = set()
  for a in prepared:
    if isinstance(a, np.ndarray) and a.ndim == 0:
      raise ValueError("Every array needs a leading case axis; got a scalar.")
    lengths.add(len(a))
  if len(lengths) != 1:
    raise ValueError(f"All arrays must have the same length, got {lengths}.")
  n = lengths.pop()
  if n == 0:
    raise ValueError("arrays have no cases (length 0).")

  value = float(statistic(*prepared))
  indices = bootstrap_indices(n, num_resamples=num_resamples, seed=seed)
  replicates = np.array(
      [float(statistic(*[_take(a, idx) for a in prepared])) for idx in indices],
      dtype=np.float64)
  ok = ~np.isnan(replicates)
  n_bad = int(replicates.size - ok.sum())
  if not ok.any():
    return Estimate(value, np.nan, np.nan, n, 0, n_bad)
  low, high = _percentiles(replicates[ok], level)
  return Estimate(value, low, high, n, 0, n_bad)


def mean_std(values: Any, *, ddof: int = 0) -> MeanStd:
  """Mean and standard deviation over the non-NaN values.

  .. math::

    \\bar x = \\frac{1}{n} \\sum_i x_i, \\qquad
    s = \\sqrt{\\frac{1}{n - \\mathrm{ddof}} \\sum_i (x_i - \\bar x)^2}

  over the ``n`` defined values (NaN excluded and counted).

  Args:
    values: per-case values, shape ``(n_cases,)``.
    ddof: delta degrees of freedom of the std (0: population std, as
      ``np.std``; 1: sample std).

  Returns:
    ``MeanStd(mean, std, n, n_undefined)``; mean/std are NaN when no value is
    defined, std is NaN when ``n <= ddof``.

  Raises:
    ValueError: on empty or non-1-D input, infinite values, negative ddof.
  """
  if ddof < 0:
    raise ValueError(f"ddof must be >= 0, got {ddof}.")
  arr = _as_float_vector(values)
  defined = arr[~np.isnan(arr)]
  n, n_undefined = int(defined.size), int(arr.size - defined.size)
  if n == 0:
    return MeanStd(np.nan, np.nan, 0, n_undefined)
  mean = float(defined.mean())
  std = float(defined.std(ddof=ddof)) if n > ddof else np.nan
  return MeanStd(mean, std, n, n_undefined)


def bootstrap_ci_runs(
    values: Any,
    *,
    num_resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
  """Percentile bootstrap of the mean over runs (seeds) and cases, resampling both.

  ``values[r, i]`` is the metric of case ``i`` under run ``r`` (for example a loss trained with
  ``R`` seeds, evaluated on ``N`` test cases); NaN marks "undefined". The estimate is the mean of
  the defined entries. Each resample draws ``N`` cases with replacement (the index matrix of
  :func:`bootstrap_indices`, so with one run this is exactly :func:`bootstrap_ci` over the
  cases) and, when ``R > 1``, independently ``R`` runs with replacement (a two-stage bootstrap:
  Davison & Hinkley, "Bootstrap Methods and their Application", 1997, §3.8); the statistic is the
  mean of the defined entries of the resampled ``(R, N)`` block. The interval therefore covers
  the variation between cases *and* between training runs.

  For a paired comparison of two losses pass their difference ``a - b`` (same runs, same cases;
  NaN where either is undefined).

  Args:
    values: ``(runs, cases)`` or ``(cases,)`` (one run).
    num_resamples: number of bootstrap resamples.
    level: confidence level in (0, 1).
    seed: seed of the resampling.

  Returns:
    ``Estimate(value, low, high, n, n_undefined)`` with ``n`` the number of defined entries
    (runs x cases) and ``n_undefined`` the number of NaN entries. All NaN: NaN estimate, n = 0.
  """
  _check_common(num_resamples, level)
  arr = np.asarray(values, dtype=np.float64)
  if arr.ndim == 1:
    arr = arr[None]
  if arr.ndim != 2 or arr.size == 0:
    raise ValueError(f"values must be (runs, cases) with at least one entry, got shape "
                     f"{np.shape(values)}.")
  if np.isinf(arr).any():
    raise ValueError("values must be finite or NaN (undefined); got an infinite value.")
  defined = ~np.isnan(arr)
  n, n_undefined = int(defined.sum()), int(arr.size - defined.sum())
  if n == 0:
    return Estimate(np.nan, np.nan, np.nan, 0, n_undefined)
  value = float(arr[defined].mean())
  runs, cases = arr.shape
  case_idx = bootstrap_indices(cases, num_resamples=num_resamples, seed=seed)
  run_idx = (np.random.default_rng([seed, 1]).integers(0, runs, size=(num_resamples, runs))
             if runs > 1 else np.zeros((num_resamples, 1), np.int64))
  filled = np.where(defined, arr, 0.0)
  weight = defined.astype(np.float64)
  # Sum over the resampled block = sum_r sum_i filled[run_idx[b, r], case_idx[b, i]].
  # Count how often each run and case is drawn, then contract: O(B (R + N) + B R N) at most.
  run_counts = np.zeros((num_resamples, runs))
  np.add.at(run_counts, (np.arange(num_resamples)[:, None], run_idx), 1.0)
  case_counts = np.zeros((num_resamples, cases))
  np.add.at(case_counts, (np.arange(num_resamples)[:, None], case_idx), 1.0)
  totals = np.einsum("br,rn,bn->b", run_counts, filled, case_counts)
  counts = np.einsum("br,rn,bn->b", run_counts, weight, case_counts)
  with np.errstate(invalid="ignore", divide="ignore"):
    replicates = totals / counts
  ok = counts > 0
  n_bad = int(num_resamples - ok.sum())
  if not ok.any():
    return Estimate(value, np.nan, np.nan, n, n_undefined, n_bad)
  low, high = _percentiles(replicates[ok], level)
  return Estimate(value, low, high, n, n_undefined, n_bad)


def format_estimate(e: Estimate, precision: int = 3, *, signed: bool = False) -> str:
  """A table cell: ``'0.812 [0.790, 0.833] (n=7)'``, with the undefined count when there is one.

  Every cell says how many values are behind it; ``'undefined (n=0, 3 undef.)'`` when none is
  defined. ``signed`` writes a leading ``+`` on positive values (differences).
  """
  count = f"n={e.n}" + (f", {e.n_undefined} undef." if e.n_undefined else "")
  if not np.isfinite(e.value):
    return f"undefined ({count})"
  sign = "+" if signed else ""
  p = int(precision)
  if np.isfinite(e.low) and np.isfinite(e.high):
    return f"{e.value:{sign}.{p}f} [{e.low:{sign}.{p}f}, {e.high:{sign}.{p}f}] ({count})"
  return f"{e.value:{sign}.{p}f} ({count})"
