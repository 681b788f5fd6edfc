r"""Surface-distance metrics on binary masks: Hausdorff distance (HD, HD95), mean surface distance.

Host-side NumPy / SciPy code for evaluation, 2D or 3D, with the voxel spacing in millimetres. It
follows REFERENCE "Conventions" and the care of DeepMind's ``surface-distance`` library for edge
cases.

Algorithm
---------
1. **Surface voxels.** The surface :math:`S_A` of a mask :math:`A` is the set of foreground voxels
   that have at least one background neighbour, ``A & ~erode(A)``. The neighbourhood is *full
   connectivity* by default (8 neighbours in 2D, 26 in 3D, ``connectivity=ndim``); pass
   ``connectivity=1`` for face neighbours only (4 / 6), which is what MONAI's ``get_mask_edges`` and
   medpy's ``hd95`` use. Erosion treats everything outside the image as background, so a mask that
   touches the image border has its border voxels on the surface (a full-foreground mask has the
   image border as its surface).
2. **Directed distances.** For every :math:`a \in S_A`,
   :math:`d(a, S_B) = \min_{b \in S_B} \lVert (a - b) \odot s \rVert_2`, with :math:`s` the
   spacing, read off an exact Euclidean distance transform of the complement of :math:`S_B`
   (``scipy.ndimage.distance_transform_edt(~S_B, sampling=spacing)``). SciPy returns wrong,
   finite values when its input has no zero (no surface voxel at all); that case is caught and
   gives ``+inf`` (there is no surface to reach).
3. **Cropping (speed).** Both masks are cropped to the bounding box of :math:`A \cup B` plus a
   margin of 1 voxel (clipped to the image) before steps 1-2. Nothing changes inside the box:
   (i) every voxel outside it is background in the full image, or lies outside the image, which
   erosion also treats as background, so the surfaces are identical; (ii) all surface voxels of
   both masks lie inside the box, so the nearest surface voxel of :math:`S_B` to any point of
   :math:`S_A` is inside the box and the EDT, exact, returns the same distance. Only the work
   shrinks, from the whole image to the objects' extent.

Metrics (``D_{AB} = \{d(a, S_B) : a \in S_A\}``, ``P_q`` = ``numpy.percentile`` with linear
interpolation):

- ``hausdorff_distance(method="max_directed")``: :math:`\max(P_q(D_{AB}), P_q(D_{BA}))` (MONAI
  ``HausdorffDistanceMetric``; surface-distance's robust Hausdorff, which additionally weights
  each surface element by its area).
- ``hausdorff_distance(method="pooled")``: :math:`P_q(D_{AB} \cup D_{BA})` (medpy
  ``metric.binary.hd95``, used by the MicroSegNet evaluation code; medpy's definition is this one
  with ``connectivity=1``).
- ``percentile=100`` gives the classic Hausdorff distance (both methods agree).
- ``average_surface_distance``: symmetric mean, pooled :math:`\operatorname{mean}(D_{AB} \cup
  D_{BA})` (MONAI ``symmetric=True``) or ``"mean_directed"``
  :math:`\tfrac12(\operatorname{mean} D_{AB} + \operatorname{mean} D_{BA})` (medpy ``assd``).

Empty masks: when either mask is empty the distances are undefined and every metric returns
``NaN``; the per-case API counts them (``n_undefined``) and never drops them silently.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Callable, Literal, Union

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

__all__ = [
    "SurfaceMetricResult",
    "average_surface_distance",
    "average_surface_distance_per_case",
    "hausdorff_distance",
    "hd95_per_case",
    "surface_distances",
    "surface_voxels",
]

HausdorffMethod = Literal["max_directed", "pooled"]
AverageMethod = Literal["pooled", "mean_directed"]
SkipEmpty = Union[bool, Literal["none", "both", "either"]]

_HD_METHODS = ("max_directed", "pooled")
_ASD_METHODS = ("pooled", "mean_directed")
_SKIP_MODES = ("none", "both", "either")


# ---------------------------------------------------------------------------------------------
# Validation.


def _as_mask(x: ArrayLike, name: str) -> np.ndarray:
  """Returns ``x`` as a boolean array; non-boolean input must hold only 0 and 1."""
  arr = np.asarray(x)
  if arr.dtype == bool:
    return arr
  if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f"{name} must be a boolean or numeric 0/1 mask, got dtype {arr.dtype}")
  if not np.all((arr == 0) | (arr == 1)):
    raise ValueError(
        f"{name} must be a binary mask (values 0/1 or bool); threshold probabilities or select a "
        f"label first. Found values {np.unique(arr[(arr != 0) & (arr != 1)])[:5]}")
  return arr.astype(bool)


def _check_spacing(spacing: ArrayLike, ndim: int) -> np.ndarray:
  try:
    sp = np.asarray(spacing, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"spacing must be a sequence of {ndim} numbers, got {spacing!r}") from e
  if sp.ndim != 1 or sp.shape[0] != ndim:
    raise ValueError(f"spacing must have one value per axis ({ndim}), got {spacing!r}")
  if not np.all(np.isfinite(sp)) or not np.all(sp > 0):
    raise ValueError(f"spacing values must be finite and > 0, got {spacing!r}")
  return sp


def _check_connectivity(connectivity: int | None, ndim: int) -> int:
  if connectivity is None:
    return ndim
  if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)):
    raise ValueError(f"connectivity must be an int in [1, {ndim}] or None, got {connectivity!r}")
  if not 1 <= connectivity <= ndim:
    raise ValueError(f"connectivity must be in [1, {ndim}] for {ndim}D masks, got {connectivity}")
  return int(connectivity)


def _check_percentile(percentile: float) -> float:
  try:
    q = float(percentile)
  except (TypeError, ValueError) as e:
    raise ValueError(f"percentile must be a number in [0, 100], got {percentile!r}") from e
  if not np.isfinite(q) or not 0.0 <= q <= 100.0:
    raise ValueError(f"percentile must be in [0, 100], got {percentile!r}")
  return q


def _skip_mode(skip_empty_slices: SkipEmpty) -> str:
  if isinstance(skip_empty_slices, (bool, np.bool_)):
    return "either" if skip_empty_slices else "none"
  if isinstance(skip_empty_slices, str) and skip_empty_slices in _SKIP_MODES:
    return skip_empty_slices
  raise ValueError(
      f"skip_empty_slices must be a bool or one of {_SKIP_MODES}, got {skip_empty_slices!r}")


def _check_pair(
    pred: ArrayLike, truth: ArrayLike, spacing: ArrayLike, connectivity: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
  a = _as_mask(pred, "pred")
  b = _as_mask(truth, "truth")
  if a.shape != b.shape:
    raise ValueError(f"pred and truth must have the same shape, got {a.shape} and {b.shape}")
  if a.ndim not in (2, 3):
    raise ValueError(f"masks must be 2D or 3D, got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"masks must not be empty arrays, got shape {a.shape}")
  sp = _check_spacing(spacing, a.ndim)
  conn = _check_connectivity(connectivity, a.ndim)
  return a, b, sp, conn


# ---------------------------------------------------------------------------------------------
# Core.


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
  if connectivity == mask.ndim:
    # Erosion by the full 3^ndim cube is a separable minimum filter (same result, faster).
    eroded = ndimage.minimum_filter(mask, size=3, mode="constant", cval=0)
  else:
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    eroded = ndimage.binary_erosion(mask, structure=structure, border_value=0)
  return mask & ~eroded


def _edt(nonzero: np.ndarray, spacing: np.ndarray) -> np.ndarray:
  """Exact EDT: distance of each voxel to the nearest ``False`` voxel, ``+inf`` if there is none.

  ``scipy.ndimage.distance_transform_edt`` silently returns finite but meaningless values when its
  input has no zero; that case is returned as ``+inf`` everywhere.
  """
  if nonzero.all():
    return np.full(nonzero.shape, np.inf)
  return ndimage.distance_transform_edt(nonzero, sampling=spacing)


def _bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...] | None:
  """Bounding box of ``mask`` grown by ``margin`` voxels and clipped to the array; None if empty."""
  box = []
  for axis in range(mask.ndim):
    other = tuple(i for i in range(mask.ndim) if i != axis)
    idx = np.flatnonzero(np.any(mask, axis=other))
    if idx.size == 0:
      return None
    box.append(slice(max(idx[0] - margin, 0), min(idx[-1] + 1 + margin, mask.shape[axis])))
  return tuple(box)


def _distances(
    a: np.ndarray, b: np.ndarray, spacing: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
  """Directed distances on validated boolean masks (see module docstring, steps 1-3)."""
  box = _bounding_box(a | b, margin=1)
  if box is None:
    return np.zeros((0,)), np.zeros((0,))
  a, b = a[box], b[box]
  sa, sb = _surface(a, connectivity), _surface(b, connectivity)
  # An empty surface gives +inf distances to it (an all-True EDT input).
  d_ab = _edt(~sb, spacing)[sa] if sa.any() else np.zeros((0,))
  d_ba = _edt(~sa, spacing)[sb] if sb.any() else np.zeros((0,))
  return d_ab, d_ba


def _hd_from(d_ab: np.ndarray, d_ba: np.ndarray, q: float, method: str) -> float:
  if d_ab.size == 0 or d_ba.size == 0:
    return float("nan")
  if method == "max_directed":
    return float(max(np.percentile(d_ab, q), np.percentile(d_ba, q)))
  return float(np.percentile(np.concatenate([d_ab, d_ba]), q))


def _asd_from(d_ab: np.ndarray, d_ba: np.ndarray, method: str) -> float:
  if d_ab.size == 0 or d_ba.size == 0:
    return float("nan")
  if method == "pooled":
    return float(np.mean(np.concatenate([d_ab, d_ba])))
  return float(0.5 * (np.mean(d_ab) + np.mean(d_ba)))


# ---------------------------------------------------------------------------------------------
# Public single-pair API.


def surface_voxels(mask: ArrayLike, *, connectivity: int | None = None) -> np.ndarray:
  """Surface of a binary mask: foreground voxels with at least one background neighbour.

  Computed as ``mask & ~binary_erosion(mask)`` with a background border, so a mask touching the
  image border has its border voxels on the surface.

  Args:
    mask: 2D or 3D binary mask (bool or 0/1 numbers).
    connectivity: neighbourhood of the erosion, as in ``scipy.ndimage.generate_binary_structure``:
      ``1`` = face neighbours (4 in 2D / 6 in 3D), ``ndim`` = full (8 / 26). Default (None): full.

  Returns:
    Boolean array of the mask's shape, True on surface voxels.
  """
  m = _as_mask(mask, "mask")
  if m.ndim not in (2, 3):
    raise ValueError(f"mask must be 2D or 3D, got shape {m.shape}")
  return _surface(m, _check_connectivity(connectivity, m.ndim))


def surface_distances(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    connectivity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  r"""Directed surface distances in mm, both ways.

  .. math:: D_{PT} = \{\min_{t \in S_T} \lVert (p - t) \odot s \rVert_2 : p \in S_P\}

  and :math:`D_{TP}` likewise, with :math:`S_X` the surface voxels (see ``surface_voxels``) and
  :math:`s` the spacing.

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis, ``len(spacing) == pred.ndim``.
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full).

  Returns:
    ``(d_pred_to_truth, d_truth_to_pred)``, float64 arrays with one value per surface voxel of
    ``pred`` (resp. ``truth``) in C order. An empty mask has no surface voxel (an empty array); the
    distances *to* an empty mask are ``+inf`` (as in surface-distance).
  """
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity)
  return _distances(a, b, sp, conn)


def hausdorff_distance(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    percentile: float = 95.0,
    method: HausdorffMethod = "max_directed",
    connectivity: int | None = None,
) -> float:
  r"""(Percentile) Hausdorff distance between two binary masks, in mm.

  .. math::
     \mathrm{HD}_q^{\max} = \max\big(P_q(D_{PT}),\, P_q(D_{TP})\big) \qquad
     \mathrm{HD}_q^{\mathrm{pooled}} = P_q(D_{PT} \cup D_{TP})

  with :math:`D` the directed surface distances (``surface_distances``) and :math:`P_q` the
  ``numpy.percentile`` (linear interpolation). ``q = 95`` is HD95, ``q = 100`` the classic
  Hausdorff distance (both methods then agree). Symmetric in ``pred`` and ``truth``.

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis.
    percentile: ``q`` in [0, 100].
    method: ``"max_directed"`` (MONAI / surface-distance; REFERENCE default) or ``"pooled"``
      (medpy ``hd95``, the MicroSegNet code).
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full; medpy and MONAI
      use ``1``).

  Returns:
    The distance as a Python float; ``NaN`` when either mask is empty (undefined: count it, do
    not drop it) -- including when both are empty.
  """
  q = _check_percentile(percentile)
  if method not in _HD_METHODS:
    raise ValueError(f"method must be one of {_HD_METHODS}, got {method!r}")
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity)
  return _hd_from(*_distances(a, b, sp, conn), q, method)


def average_surface_distance(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    method: AverageMethod = "pooled",
    connectivity: int | None = None,
) -> float:
  r"""Symmetric average surface distance (ASSD) between two binary masks, in mm.

  .. math::
     \mathrm{ASSD}^{\mathrm{pooled}} = \frac{\sum D_{PT} + \sum D_{TP}}{|S_P| + |S_T|} \qquad
     \mathrm{ASSD}^{\mathrm{md}} = \tfrac12\big(\overline{D_{PT}} + \overline{D_{TP}}\big)

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis.
    method: ``"pooled"`` (MONAI ``compute_average_surface_distance(symmetric=True)``) or
      ``"mean_directed"`` (md above; medpy ``assd``).
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full).

  Returns:
    A Python float; ``NaN`` when either mask is empty.
  """
  if method not in _ASD_METHODS:
    raise ValueError(f"method must be one of {_ASD_METHODS}, got {method!r}")
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity)
  return _asd_from(*_distances(a, b, sp, conn), method)


# ---------------------------------------------------------------------------------------------
# Per-case aggregation.


@dataclasses.dataclass(frozen=True)
class SurfaceMetricResult:
  """Per-case values of a surface metric, with the undefined cases kept and counted.

  Attributes:
    values: ``(n_cases,)`` float64 values in mm; ``NaN`` marks an undefined case.
    n_slices: per-slice mode only, ``(n_cases,)`` number of slices that entered the case's mean
      (undefined slices included, skipped ones not); None for one-value-per-volume results.
    n_skipped_slices: per-slice mode only, ``(n_cases,)`` slices skipped by ``skip_empty_slices``.
    n_undefined_slices: per-slice mode only, ``(n_cases,)`` slices that were kept but undefined
      (an empty mask on that slice); any such slice makes the case ``NaN``.
  """

  values: np.ndarray
  n_slices: np.ndarray | None = None
  n_skipped_slices: np.ndarray | None = None
  n_undefined_slices: np.ndarray | None = None

  @property
  def defined(self) -> np.ndarray:
    """``(n_cases,)`` bool, True where the value is defined (not NaN)."""
    return ~np.isnan(self.values)

  @property
  def n_cases(self) -> int:
    return int(self.values.shape[0])

  @property
  def n_defined(self) -> int:
    return int(np.count_nonzero(self.defined))

  @property
  def n_undefined(self) -> int:
    """Number of undefined (NaN) cases; report it next to any mean ("n undefined")."""
    return self.n_cases - self.n_defined

  def mean_defined(self) -> float:
    """Mean over the defined cases only (NaN if none); always report ``n_undefined`` with it."""
    if self.n_defined == 0:
      return float("nan")
    return float(np.mean(self.values[self.defined]))


def _split_cases(x, name: str) -> list:
  if isinstance(x, np.ndarray):
    if x.ndim < 1:
      raise ValueError(f"{name} must be a sequence of masks or a stacked array, got a scalar")
    return list(x)
  if isinstance(x, (list, tuple)):
    return list(x)
  arr = np.asarray(x)
  if arr.ndim < 1:
    raise ValueError(f"{name} must be a sequence of masks or a stacked array, got a scalar")
  return list(arr)


def _case_spacings(spacing: ArrayLike, n_cases: int) -> list[np.ndarray]:
  try:
    sp = np.asarray(spacing, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"spacing must be numbers, got {spacing!r}") from e
  if sp.ndim == 1:
    return [sp] * n_cases
  if sp.ndim == 2 and sp.shape[0] == n_cases:
    return list(sp)
  raise ValueError(
      f"spacing must be one spacing (ndim,) shared by all cases or one per case "
      f"({n_cases}, ndim), got shape {sp.shape}")


def _per_case(
    metric: Callable[[np.ndarray, np.ndarray], float],
    preds,
    truths,
    spacing: ArrayLike,
    per_slice: bool,
    skip_empty_slices: SkipEmpty,
    connectivity: int | None,
) -> SurfaceMetricResult:
  """Shared loop: ``metric(d_ab, d_ba) -> float`` applied per volume or per slice."""
  skip = _skip_mode(skip_empty_slices)
  if skip != "none" and not per_slice:
    raise ValueError("skip_empty_slices only applies with per_slice=True")
  p_list, t_list = _split_cases(preds, "preds"), _split_cases(truths, "truths")
  if len(p_list) != len(t_list):
    raise ValueError(f"got {len(p_list)} predictions but {len(t_list)} ground truths")
  if not p_list:
    raise ValueError("no cases given")
  spacings = _case_spacings(spacing, len(p_list))

  values = np.full(len(p_list), np.nan)
  n_slices = np.zeros(len(p_list), dtype=np.int64)
  n_skipped = np.zeros(len(p_list), dtype=np.int64)
  n_undef = np.zeros(len(p_list), dtype=np.int64)
  for i, (p, t, sp) in enumerate(zip(p_list, t_list, spacings)):
    try:
      a, b, sp, conn = _check_pair(p, t, sp, connectivity if not per_slice else None)
      if per_slice:
        if a.ndim != 3:
          raise ValueError(f"per_slice=True needs 3D (x, y, slice) masks, got shape {a.shape}")
        conn = _check_connectivity(connectivity, 2)
    except ValueError as e:
      raise ValueError(f"case {i}: {e}") from e
    if not per_slice:
      values[i] = metric(*_distances(a, b, sp, conn))
      continue
    slice_values = []
    for k in range(a.shape[-1]):
      ak, bk = a[..., k], b[..., k]
      has_a, has_b = ak.any(), bk.any()
      if (skip == "either" and not (has_a and has_b)) or (
          skip == "both" and not (has_a or has_b)):
        n_skipped[i] += 1
        continue
      v = metric(*_distances(ak, bk, sp[:2], conn))
      n_undef[i] += np.isnan(v)
      slice_values.append(v)
    n_slices[i] = len(slice_values)
    # NaN propagates: a case with an undefined slice, or with no slice left, is undefined.
    values[i] = float(np.mean(slice_values)) if slice_values else float("nan")
  if per_slice:
    return SurfaceMetricResult(values, n_slices, n_skipped, n_undef)
  return SurfaceMetricResult(values)


def hd95_per_case(
    preds: Sequence[ArrayLike] | np.ndarray,
    truths: Sequence[ArrayLike] | np.ndarray,
    *,
    spacing: ArrayLike,
    percentile: float = 95.0,
    method: HausdorffMethod = "max_directed",
    per_slice: bool = False,
    skip_empty_slices: SkipEmpty = False,
    connectivity: int | None = None,
) -> SurfaceMetricResult:
  """HD95 (or another percentile) for each case, keeping and counting undefined cases.

  With ``per_slice=False`` each case gets one ``hausdorff_distance`` of its 2D/3D masks. With
  ``per_slice=True`` (the MicroSegNet convention) each 3D case ``(x, y, slice)`` gets the mean over
  its slices (last axis) of the 2D HD on that slice with spacing ``spacing[:2]``. Slices where a
  mask is empty are governed by ``skip_empty_slices``:

  - ``False`` / ``"none"``: every slice is kept; a slice with an empty mask (either one, or both)
    is undefined, and so is the case.
  - ``"both"``: slices where both masks are empty (true negatives: nothing to measure) are skipped;
    a slice where exactly one mask is empty (a missed or a spurious object) makes the case
    undefined.
  - ``True`` / ``"either"``: slices where either mask is empty are skipped, as the original
    MicroSegNet code did (hides missed and spurious slices -- report it as such).

  A case with no slice left is undefined. Undefined cases are NaN in ``values`` and counted in
  ``n_undefined``; nothing is dropped silently.

  Args:
    preds: stacked array ``(n_cases, *spatial)`` or a sequence of binary masks (shapes may differ
      between cases).
    truths: the ground truths, same layout.
    spacing: voxel size in mm, ``(ndim,)`` shared by all cases or ``(n_cases, ndim)`` per case.
    percentile: Hausdorff percentile in [0, 100] (100: classic Hausdorff).
    method: ``"max_directed"`` or ``"pooled"``, see ``hausdorff_distance``.
    per_slice: average 2D values over the slices of each 3D case instead of one 3D value.
    skip_empty_slices: see above; only with ``per_slice=True``.
    connectivity: surface neighbourhood of the masks the distances are computed on (2D slices in
      per-slice mode); default full.

  Returns:
    A ``SurfaceMetricResult``.
  """
  q = _check_percentile(percentile)
  if method not in _HD_METHODS:
    raise ValueError(f"method must be one of {_HD_METHODS}, got {method!r}")
  return _per_case(lambda d_ab, d_ba: _hd_from(d_ab, d_ba, q, method), preds, truths, spacing,
                   per_slice, skip_empty_slices, connectivity)


def average_surface_distance_per_case(
    preds: Sequence[ArrayLike] | np.ndarray,
    truths: Sequence[ArrayLike] | np.ndarray,
    *,
    spacing: ArrayLike,
    method: AverageMethod = "pooled",
    per_slice: bool = False,
    skip_empty_slices: SkipEmpty = False,
    connectivity: int | None = None,
) -> SurfaceMetricResult:
  """``average_surface_distance`` per case; layout and slice conventions as ``hd95_per_case``."""
  if method not in _ASD_METHODS:
    raise ValueError(f"method must be one of {_ASD_METHODS}, got {method!r}")
  return _per_case(lambda d_ab, d_ba: _asd_from(d_ab, d_ba, method), preds, truths, spacing,
                   per_slice, skip_empty_slices, connectivity)
