r"""Surface-distance metrics on binary masks: Hausdorff distance (HD, HD95), mean surface distance,
normalized surface Dice (NSD).

Host-side NumPy / SciPy code for evaluation, 2D or 3D, with the voxel spacing in millimetres. It
follows REFERENCE "Conventions" and the care of DeepMind's ``surface-distance`` library for edge
cases. Every metric takes ``surface=``, the definition of the surface points and their weights:

======================  =========================================  ==========  ===================
``surface=``            surface points                             weights     reproduces
======================  =========================================  ==========  ===================
``"jaxseg"`` (default)  voxel centres of the foreground voxels     1 each      --
                        with a background neighbour (full
                        connectivity, or ``connectivity=``)
``"monai"``             the same with face connectivity            1 each      MONAI ``get_mask_edges``
                        (``binary_erosion`` with SciPy's default               / ``get_surface_distance``
                        cross; ``connectivity`` must be None / 1)              (``use_subvoxels=False``)
``"surface_distance"``  corners of the voxel grid (half a voxel     surfel      DeepMind
                        off the centres) whose 2^ndim neighbour     area (mm^2  ``compute_surface_distances``;
                        voxels are neither all fore- nor all        in 3D,      MONAI ``use_subvoxels=True``
                        background                                  length mm
                                                                    in 2D)
======================  =========================================  ==========  ===================

``"surface_distance"`` in detail (DeepMind ``surface-distance``, ``compute_surface_distances``):
every point of the grid of voxel corners (shape ``n + 1`` per axis of the bounding box, point
``i`` between voxels ``i - 1`` and ``i``) gets the code of its 2x2 (2D) or 2x2x2 (3D)
neighbourhood, one bit per neighbour voxel (``ENCODE_NEIGHBOURHOOD_*D_KERNEL``: the neighbour at
offset ``(d0, d1[, d2])`` in ``{0, 1}`` has bit ``2^(2^ndim - 1 - index)``, ``index`` the offset
read as a binary number). Codes other than 0 and "all ones" are surfels. Their measure comes
from the marching-squares / marching-cubes surface through the edge midpoints: in 2D the contour
length of the cell (half the cell diagonal per cut corner, a full side for a straight cut), in 3D
the sum over the triangles of the cell of the triangle area, scaled to the spacing as
``|(n0 s1 s2, n1 s0 s2, n2 s0 s1)|`` from the triangle's area vector ``n`` in voxel units
(surface-distance's ``_NEIGHBOUR_CODE_TO_NORMALS``, ``_SURFEL_AREA_VECTORS`` below). Distances
are exact Euclidean distances between surfels of the two masks (the same algorithms as for
voxel surfaces, on the corner grid); percentiles and means weight each surfel by its measure.

This is **not** the ``"jaxseg"`` surface with area weights: the points lie on a different grid
(voxel corners, not centres) and a surfel exists wherever a corner touches both fore- and
background, so the two definitions give different distances, most visibly on anisotropic
spacings (on five anisotropic pairs surface-distance's HD95 measured 1.80--2.83 mm where
``"jaxseg"`` gave 2.00--3.12 mm). Use ``surface="surface_distance"`` to reproduce it; the
fixture tests (``tests/metrics/test_fixtures.py``) check it against the library.

Algorithm
---------
1. **Cropping.** Everything happens in the bounding box of :math:`A \cup B`. Nothing changes
   inside it: every voxel outside it is background in the image, or lies outside the image,
   which erosion also treats as background, so the surfaces are identical, and all surface voxels
   of both masks lie inside it. Only the work shrinks, from the image to the objects' extent.
2. **Surface voxels.** The surface :math:`S_A` of a mask :math:`A` is the set of foreground voxels
   that have at least one background neighbour, ``A & ~erode(A)``. The neighbourhood is *full
   connectivity* by default (8 neighbours in 2D, 26 in 3D, ``connectivity=ndim``); pass
   ``connectivity=1`` for face neighbours only (4 / 6), which is what MONAI's ``get_mask_edges`` and
   medpy's ``hd95`` use (``surface="monai"``). With ``surface="surface_distance"`` the points are
   instead the surfels on the grid of voxel corners (table above); steps 1 and 3 are the same. Erosion treats everything outside the image as background, so a mask that
   touches the image border has its border voxels on the surface (a full-foreground mask has the
   image border as its surface). The erosion is the AND of shifted views of the box grown by one
   background voxel (a view of the image, or a zero-padded copy at the image border); the full
   cube is separable (three ANDs per axis).
3. **Directed distances.** For every :math:`a \in S_A`,
   :math:`d(a, S_B) = \min_{b \in S_B} \lVert (a - b) \odot s \rVert_2`, with :math:`s` the
   spacing; voxels on both surfaces are at 0. An empty mask has no surface voxel: the distances
   to it are ``+inf`` (there is no surface to reach). Three exact algorithms, equal up to float
   rounding (~1e-14 mm); each pair uses the one with the lowest estimated cost for its box size
   and surface sizes (``_choose_algorithm``):

   - *separable* (most 3D pairs): the squared distance is a sum of per-axis terms, so its minimum
     over :math:`S_B` is a nested minimum, one axis at a time (as in separable EDTs). With the box
     axes ordered ``p`` (longest), ``r`` (shortest) and ``m``: exact 1D distances to :math:`S_B`
     along ``p`` (running max / min of feature indices), then
     :math:`g(v) = \min_k g_p(v + k e_r) + (s_r k)^2` along ``r`` by brute force over the few
     offsets, both over the whole box; then :math:`d^2(a) = \min_k g(a + k e_m) + (s_m k)^2`
     only at the surface voxels :math:`a` of :math:`A`, in a window
     :math:`|k| \le \sqrt{g(a)} / s_m` (:math:`g(a)` bounds the answer). Linear in the box
     size (times the shortest side), instead of an EDT of the whole box per direction.
   - *kdtree* (sparse surfaces in a large box, e.g. small far-apart objects or 2D slices):
     nearest neighbour of each point of :math:`S_A` (index times spacing) in a
     ``scipy.spatial.cKDTree`` of :math:`S_B`.
   - *edt* (small boxes): ``scipy.ndimage.distance_transform_edt(~S_B, sampling=spacing)`` read at
     :math:`S_A`. SciPy returns wrong, finite values when its input has no zero (no surface voxel
     at all); that case is caught and gives ``+inf``.

Metrics (``D_{AB} = \{d(a, S_B) : a \in S_A\}``, ``P_q`` = ``numpy.percentile`` with linear
interpolation for the unweighted surfaces, and for ``surface="surface_distance"`` the weighted
percentile of ``compute_robust_hausdorff``: distances sorted (ties by weight), the first one whose
cumulative weight fraction reaches ``q / 100``, no interpolation):

- ``hausdorff_distance(method="max_directed")``: :math:`\max(P_q(D_{AB}), P_q(D_{BA}))` (MONAI
  ``HausdorffDistanceMetric`` with ``surface="monai"``; surface-distance's
  ``compute_robust_hausdorff`` with ``surface="surface_distance"``).
- ``hausdorff_distance(method="pooled")``: :math:`P_q(D_{AB} \cup D_{BA})` (medpy
  ``metric.binary.hd95``, used by the MicroSegNet evaluation code; medpy's definition is this one
  with ``connectivity=1``, see "medpy" below).
- ``percentile=100`` gives the classic Hausdorff distance (both methods agree).
- ``average_surface_distance``: symmetric mean, pooled :math:`\operatorname{mean}(D_{AB} \cup
  D_{BA})` (MONAI ``SurfaceDistanceMetric(symmetric=True)``) or ``"mean_directed"``
  :math:`\tfrac12(\operatorname{mean} D_{AB} + \operatorname{mean} D_{BA})` (medpy ``assd``).
  Means are weighted by the surfel measures with ``surface="surface_distance"``: its
  ``compute_average_surface_distance`` returns the two directed weighted means
  ``(mean_w D_TP, mean_w D_PT)`` (truth to prediction first); ``"mean_directed"`` is their
  average, ``"pooled"`` the weighted mean of both sets together, and
  ``surface_distances(..., return_weights=True)`` gives the pieces to form either one.
- ``normalized_surface_dice`` (NSD at tolerance :math:`\tau`):
  :math:`\frac{w(\{a: d(a, S_B) \le \tau\}) + w(\{b: d(b, S_A) \le \tau\})}{w(S_A) + w(S_B)}`
  with :math:`w` the summed weights (surface-distance ``compute_surface_dice_at_tolerance`` with
  ``surface="surface_distance"``, the default; MONAI ``SurfaceDiceMetric`` with
  ``surface="monai"``, or with ``"surface_distance"`` for ``use_subvoxels=True``).

Empty masks: when either mask is empty HD and ASD are undefined and return ``NaN``; NSD is 0 when
exactly one mask is empty (no surface element is within the tolerance, as in both libraries) and
``NaN`` when both are. The per-case API counts undefined cases (``n_undefined``) and never drops
them silently. The libraries differ here: surface-distance returns ``inf`` for HD when either mask
is empty (both included) and ``inf`` / ``NaN`` for the directed mean distances to / from an empty
mask; MONAI, when exactly one mask is empty, returns ``inf`` for HD100 and ASD and ``NaN`` for a
percentile HD (``torch.quantile`` of infinite distances), and ``NaN`` when both are empty.

medpy and the MicroSegNet evaluation
------------------------------------
medpy's ``metric.binary.hd95(result, reference, voxelspacing, connectivity=1)`` is
``numpy.percentile(numpy.hstack((d(R -> G), d(G -> R))), 95)`` with ``d(X -> Y)`` read from
``distance_transform_edt(~border(Y), sampling=voxelspacing)`` at ``border(X)`` and
``border(X) = X ^ binary_erosion(X, generate_binary_structure(ndim, connectivity))``. SciPy's
erosion has ``border_value=0`` (outside the image is background) and an eroded mask lies inside
the mask, so ``border`` is the surface of step 2 with ``connectivity=1`` and the EDT reads the
directed distances of step 3: medpy's HD95 is ``method="pooled", connectivity=1``, exactly (the
tests check it against that recipe). Two differences: medpy raises ``RuntimeError`` on an empty
mask where jaxseg returns ``NaN``, and its default neighbourhood (1, face neighbours) is not
jaxseg's (full).

MicroSegNet (Jiang et al., 2024, ``TransUNet/utils.py``, ``calculate_metric_percase``; REFERENCE
section 4) evaluates slice by slice: over the slices where both prediction and truth are
non-empty it averages ``medpy.metric.binary.hd95`` computed in pixels, times the in-plane
spacing 0.033586 mm (a percentile with linear interpolation scales with its values, so this is
the HD95 with spacing ``(s, s)``), and the mean over patients is taken afterwards. That is
``hd95_per_case(..., **MICROSEGNET_HD95)`` with the in-plane spacing in ``spacing[:2]``; its
Dice counterpart is ``overlap.per_slice_dice(..., skip_empty_slices="either")``, which counts the
same slices.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import types
from collections.abc import Sequence
from typing import Callable, Literal, Union

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage, spatial

from jaxseg.data.preprocess import validate_spacing

__all__ = [
    "MICROSEGNET_HD95",
    "SurfaceMetricResult",
    "average_surface_distance",
    "average_surface_distance_per_case",
    "hausdorff_distance",
    "hd95_per_case",
    "normalized_surface_dice",
    "normalized_surface_dice_per_case",
    "surface_distances",
    "surface_points",
    "surface_voxels",
]

HausdorffMethod = Literal["max_directed", "pooled"]
AverageMethod = Literal["pooled", "mean_directed"]
SkipEmpty = Union[bool, Literal["none", "both", "either"]]
SurfaceDefinition = Literal["jaxseg", "surface_distance", "monai"]

_HD_METHODS = ("max_directed", "pooled")
_ASD_METHODS = ("pooled", "mean_directed")
_SKIP_MODES = ("none", "both", "either")
_ALGORITHMS = ("auto", "separable", "edt", "kdtree")
_SURFACES = ("jaxseg", "surface_distance", "monai")

# Keyword arguments of ``hd95_per_case`` that reproduce the MicroSegNet evaluation (module doc,
# "medpy and the MicroSegNet evaluation"): medpy's pooled percentile on face-connected surfaces,
# per 2D slice, over the slices where both masks are non-empty.
MICROSEGNET_HD95 = types.MappingProxyType({
    "method": "pooled", "connectivity": 1, "per_slice": True, "skip_empty_slices": "either"})


# ---------------------------------------------------------------------------------------------
# Validation.


def _as_mask(x: ArrayLike, name: str) -> np.ndarray:
  """Returns ``x`` as a boolean array; non-boolean input must hold only 0 and 1.

  Low-precision floats (bfloat16 from JAX, float16) are read as float32 first; NumPy does not
  classify ``ml_dtypes.bfloat16`` as a floating type.
  """
  arr = np.asarray(x)
  if arr.dtype == bool:
    return arr
  if arr.dtype.name in ("bfloat16", "float16"):
    arr = arr.astype(np.float32)
  if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
    raise ValueError(f"{name} must be a boolean or numeric 0/1 mask, got dtype {arr.dtype}")
  if not np.all((arr == 0) | (arr == 1)):
    raise ValueError(
        f"{name} must be a binary mask (values 0/1 or bool); threshold probabilities or select a "
        f"label first. Found values {np.unique(arr[(arr != 0) & (arr != 1)])[:5]}")
  return arr.astype(bool)


def _check_connectivity(connectivity: int | None, ndim: int) -> int:
  if connectivity is None:
    return ndim
  if isinstance(connectivity, bool) or not isinstance(connectivity, (int, np.integer)):
    raise ValueError(f"connectivity must be an int in [1, {ndim}] or None, got {connectivity!r}")
  if not 1 <= connectivity <= ndim:
    raise ValueError(f"connectivity must be in [1, {ndim}] for {ndim}D masks, got {connectivity}")
  return int(connectivity)


def _check_surface(surface: str, connectivity: int | None, ndim: int) -> int | None:
  """Connectivity of the voxel surface of ``surface`` (None for the corner-grid surfels)."""
  if surface not in _SURFACES:
    raise ValueError(f"surface must be one of {_SURFACES}, got {surface!r}")
  if surface == "monai":
    if connectivity is not None and (isinstance(connectivity, bool) or connectivity != 1):
      raise ValueError("surface='monai' is the face-connected voxel surface (MONAI's binary "
                       f"erosion); connectivity must be None or 1, got {connectivity!r}")
    return 1
  if surface == "surface_distance":
    if connectivity is not None:
      raise ValueError("connectivity does not apply to surface='surface_distance' (surfels on "
                       f"the voxel-corner grid), got {connectivity!r}")
    return None
  return _check_connectivity(connectivity, ndim)


def _check_tolerance(tolerance_mm: float) -> float:
  if isinstance(tolerance_mm, (str, bytes)):
    raise ValueError(f"tolerance_mm must be a number >= 0, got {tolerance_mm!r}")
  try:
    tau = float(tolerance_mm)
  except (TypeError, ValueError) as e:
    raise ValueError(f"tolerance_mm must be a number >= 0, got {tolerance_mm!r}") from e
  if not np.isfinite(tau) or tau < 0:
    raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm!r}")
  return tau


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


def _check_spacing(spacing: ArrayLike, ndim: int) -> np.ndarray:
  """``validate_spacing`` that also reads bfloat16 / float16 spacings (as float64)."""
  arr = np.asarray(spacing)
  if arr.dtype.name in ("bfloat16", "float16"):
    spacing = arr.astype(np.float64)
  return validate_spacing(spacing, ndim=ndim)


def _check_pair(
    pred: ArrayLike,
    truth: ArrayLike,
    spacing: ArrayLike,
    connectivity: int | None,
    surface: str = "jaxseg",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int | None]:
  a = _as_mask(pred, "pred")
  b = _as_mask(truth, "truth")
  if a.shape != b.shape:
    raise ValueError(f"pred and truth must have the same shape, got {a.shape} and {b.shape}")
  if a.ndim not in (2, 3):
    raise ValueError(f"masks must be 2D or 3D, got shape {a.shape}")
  if a.size == 0:
    raise ValueError(f"masks must not be empty arrays, got shape {a.shape}")
  sp = _check_spacing(spacing, a.ndim)
  conn = _check_surface(surface, connectivity, a.ndim)
  return a, b, sp, conn


# ---------------------------------------------------------------------------------------------
# Core.


@functools.lru_cache(maxsize=None)
def _neighbour_offsets(ndim: int, connectivity: int) -> tuple[tuple[int, ...], ...]:
  """Offsets in {-1, 0, 1}^ndim with 1 to ``connectivity`` non-zero components."""
  return tuple(o for o in itertools.product((-1, 0, 1), repeat=ndim)
               if 0 < sum(c != 0 for c in o) <= connectivity)


def _surface_of_padded(padded: np.ndarray, connectivity: int) -> np.ndarray:
  """Surface of ``padded[1:-1, ...]``, the outer layer of ``padded`` being background.

  ``mask & ~erode(mask)`` with the erosion as the AND of the shifted views of ``padded``, one per
  neighbour offset with at most ``connectivity`` non-zero components; the full cube
  (``connectivity == ndim``) is separable: three ANDs per axis instead of ``3^ndim - 1``.
  """
  ndim = padded.ndim
  inner = padded[(slice(1, -1),) * ndim]
  if connectivity == ndim:
    eroded = padded
    for axis in range(ndim):
      n = eroded.shape[axis]
      views = []
      for lo in range(3):
        sl = [slice(None)] * ndim
        sl[axis] = slice(lo, lo + n - 2)
        views.append(eroded[tuple(sl)])
      eroded = views[0] & views[1]
      eroded &= views[2]
  else:
    eroded = None
    for offset in _neighbour_offsets(ndim, connectivity):
      view = padded[tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, inner.shape))]
      if eroded is None:
        eroded = view.copy()
      else:
        eroded &= view
  np.logical_not(eroded, out=eroded)
  eroded &= inner
  return eroded


def _surface(mask: np.ndarray, connectivity: int) -> np.ndarray:
  """``mask & ~erode(mask)``, everything outside the array being background."""
  padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=bool)
  padded[(slice(1, -1),) * mask.ndim] = mask
  return _surface_of_padded(padded, connectivity)


def _surface_in_box(mask: np.ndarray, box: tuple[slice, ...], connectivity: int) -> np.ndarray:
  """``_surface(mask)[box]`` for a box holding all of ``mask``'s foreground, without the rest.

  Inside the box the surface only depends on the box and a one-voxel background layer around it:
  the image itself (a view, no copy) where the grown box fits in it, else a zero-padded copy.
  """
  if all(s.start >= 1 and s.stop < n for s, n in zip(box, mask.shape)):
    return _surface_of_padded(mask[tuple(slice(s.start - 1, s.stop + 1) for s in box)],
                              connectivity)
  return _surface(mask[box], connectivity)


def _edt(nonzero: np.ndarray, spacing: np.ndarray) -> np.ndarray:
  """Exact EDT: distance of each voxel to the nearest ``False`` voxel, ``+inf`` if there is none.

  ``scipy.ndimage.distance_transform_edt`` silently returns finite but meaningless values when its
  input has no zero; that case is returned as ``+inf`` everywhere.
  """
  if nonzero.all():
    return np.full(nonzero.shape, np.inf)
  return ndimage.distance_transform_edt(nonzero, sampling=spacing)


# ---------------------------------------------------------------------------------------------
# Surfels on the voxel-corner grid (surface="surface_distance").

# Area vectors of the marching-cubes triangles of each 2x2x2 neighbourhood code, in voxel units:
# the numbers of surface-distance's ``lookup_tables._NEIGHBOUR_CODE_TO_NORMALS`` (Apache-2.0, as
# jaxseg; MONAI ships the same table), stored as absolute values in eighths (all its entries are
# multiples of 1/8 in [-1/2, 1/2], and signs do not change an area): one space-separated entry
# per code 0..255, three digits per triangle, "-" for no triangle. The bench-venv parity test
# compares the resulting areas with the library for all 256 codes.
_SURFEL_AREA_VECTORS = (
    "- 111 111 220220 111 202202 111111 400222111 111 111111 202202 400222111 220220 "
    "400222111 400222111 400400 111 022022 111111 040222111 111111 004222111 111111111 "
    "111222222111 111111 022022111 202202111 111333022202 111220220 333022111220 400111222111 "
    "400111222 111 111111 022022 040111222 111111 111202202 022022111 333022111202 111111 "
    "111111111 004222111 222222111111 111220220 400222111111 022333111220 400222111 220220 "
    "040222111 040111222 040040 220220111 333202111220 111040222111 040222111 111220220 "
    "040222111111 333220111202 040222111 220220220220 220220111 111220220 220220 111 111111 "
    "111111 111220220 022022 004222111 022022111 333022111220 111111 111111111 111202202 "
    "400222111111 040222111 222222111111 202333022111 400222111 202202 004222111 111202202 "
    "202333220111 004222111 004004 111111222004 111222004 202202111 004222111111 202202202202 "
    "111202202 202333220111 004222111 111202202 202202 111111 111111111 111022022 "
    "040111222111 022022111 004222111111 022022022022 022022111 111111111 111111111111 "
    "004222111111 111111111 040222111111 111111111 022022111 111111 400222111 222111222111 "
    "333022111202 040222111 333220022111 111222004 111022022 022022 400222111111 111111111 "
    "202202111 111111 220220111 111111 111111 111 111 111111 111111 220220111 111111 "
    "202202111 111111111 400222111111 022022 111022022 111222004 333220022111 040222111 "
    "333022111202 222111222111 400222111 111111 022022111 111111111 040222111111 111111111 "
    "004222111111 111111111111 111111111 022022111 022022022022 004222111111 022022111 "
    "040111222111 111022022 111111111 111111 202202 111202202 004222111 202333220111 "
    "111202202 202202202202 004222111111 202202111 111222004 111111222004 004004 004222111 "
    "202333220111 111202202 004222111 202202 400222111 202333022111 222222111111 040222111 "
    "400222111111 111202202 111111111 111111 333022111220 022022111 004222111 022022 "
    "111220220 111111 111111 111 220220 111220220 220220111 220220220220 040222111 "
    "333220111202 040222111111 111220220 040222111 111040222111 333202111220 220220111 040040 "
    "040111222 040222111 220220 400222111 022333111220 400222111111 111220220 222222111111 "
    "004222111 111111111 111111 333022111202 022022111 111202202 111111 040111222 022022 "
    "111111 111 400111222 400111222111 333022111220 111220220 111333022202 202202111 "
    "022022111 111111 111222222111 111111111 004222111 111111 040222111 111111 022022 111 "
    "400400 400222111 400222111 220220 400222111 202202 111111 111 400222111 111111 202202 "
    "111 220220 111 111 - "
).split()


@functools.lru_cache(maxsize=None)
def _surfel_area_vectors() -> np.ndarray:
  """``(256, 4, 3)`` float64 triangle area vectors (voxel units), zero rows for missing triangles."""
  if len(_SURFEL_AREA_VECTORS) != 256:
    raise AssertionError("corrupt surfel table")
  out = np.zeros((256, 4, 3))
  for code, entry in enumerate(_SURFEL_AREA_VECTORS):
    if entry != "-":
      digits = np.array([int(c) for c in entry], np.float64).reshape(-1, 3)
      out[code, :digits.shape[0]] = digits / 8.0
  return out


def _contour_length_table(spacing: tuple[float, ...]) -> np.ndarray:
  """Marching-squares contour length (mm) of each 2x2 neighbourhood code (16 codes).

  The contour joins the midpoints of the cell edges whose corners differ: one cut corner (one in,
  or three in) gives a half diagonal ``sqrt(s0^2 + s1^2) / 2``; two corners on one row (same
  ``d0``) a segment across the cell along axis 1 (``s1``), on one column ``s0``; two opposite
  corners two half diagonals (surface-distance's table, whose saddle codes count both).
  """
  s0, s1 = spacing
  half_diagonal = 0.5 * math.sqrt(s0 * s0 + s1 * s1)
  offsets = list(itertools.product((0, 1), repeat=2))
  table = np.zeros(16)
  for code in range(16):
    inside = [o for i, o in enumerate(offsets) if code & (1 << (3 - i))]
    if len(inside) in (1, 3):
      table[code] = half_diagonal
    elif len(inside) == 2:
      (p0, p1), (q0, q1) = inside
      table[code] = s1 if p0 == q0 else s0 if p1 == q1 else 2.0 * half_diagonal
  return table


@functools.lru_cache(maxsize=64)
def _surfel_measure_table(spacing: tuple[float, ...]) -> np.ndarray:
  """Surfel measure of each neighbourhood code: contour length (2D, mm) or area (3D, mm^2).

  3D: ``sum_t |(n0 s1 s2, n1 s0 s2, n2 s0 s1)|`` over the code's triangles ``t`` with area vector
  ``n`` (a linear map ``diag(s)`` scales area vectors by its cofactor matrix ``det(s) / s``).
  """
  if len(spacing) == 2:
    return _contour_length_table(spacing)
  s0, s1, s2 = spacing
  scale = np.array([s1 * s2, s0 * s2, s0 * s1])
  return np.linalg.norm(_surfel_area_vectors() * scale, axis=-1).sum(axis=-1)


def _corner_codes(mask: np.ndarray) -> np.ndarray:
  """Neighbourhood codes on the voxel-corner grid, ``mask.shape + 1`` per axis.

  Corner ``i`` (per axis) lies between voxels ``i - 1`` and ``i``; outside the array is
  background. The neighbour voxel at offset ``o`` in ``{0, 1}^ndim`` (voxel ``i - 1 + o``) sets
  bit ``2^(2^ndim - 1 - index(o))``, ``index(o)`` the offset read as a binary number
  (surface-distance's ``ENCODE_NEIGHBOURHOOD_*D_KERNEL``).
  """
  ndim = mask.ndim
  padded = np.zeros(tuple(n + 2 for n in mask.shape), dtype=np.uint8)
  padded[(slice(1, -1),) * ndim] = mask
  codes = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.uint8)
  n_bits = 2 ** ndim
  for index, offset in enumerate(itertools.product((0, 1), repeat=ndim)):
    view = padded[tuple(slice(o, o + n + 1) for o, n in zip(offset, mask.shape))]
    codes |= view << np.uint8(n_bits - 1 - index)
  return codes


def _surfels(mask_box: np.ndarray, spacing: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Surfel mask on the corner grid of ``mask_box`` and the measures of its surfels (C order)."""
  codes = _corner_codes(mask_box)
  full = 2 ** (2 ** mask_box.ndim) - 1
  where = (codes != 0) & (codes != full)
  table = _surfel_measure_table(tuple(float(v) for v in spacing))
  return where, table[codes[where]]


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
  """Tight bounding box of the True voxels of ``mask``; None if there is none.

  Axis 0 from the first and last True of the flattened array (``argmax`` stops at the first
  True), the other axes from ``any`` over axis 0 of that slab (a fast, contiguous reduction).
  """
  flat = mask.reshape(-1)
  first = int(np.argmax(flat))
  if not flat[first]:
    return None
  last = flat.size - 1 - int(np.argmax(flat[::-1]))
  stride = flat.size // mask.shape[0]
  box = (slice(first // stride, last // stride + 1),)
  if mask.ndim == 1:
    return box
  return box + _bounding_box(np.any(mask[box[0]], axis=0))


_SLAB_LOOP_MIN = 256  # voxels per slab from which the running max / min loops over slabs


def _index_distance_axis0(feature: np.ndarray) -> np.ndarray:
  """Distance in voxels to the nearest True voxel on each line along axis 0; ``n`` if none.

  ``n = feature.shape[0]``. Index of the previous / next True voxel by a running max / min over
  the slabs of axis 0 (small integers: int16 where they fit).
  """
  n = feature.shape[0]
  dtype = np.int16 if 3 * n < np.iinfo(np.int16).max else np.int64
  index = np.arange(n, dtype=dtype).reshape((n,) + (1,) * (feature.ndim - 1))
  prev = np.where(feature, index, dtype(-n))  # a line without True ends at >= n
  nxt = np.where(feature, index, dtype(2 * n))
  if feature.size < _SLAB_LOOP_MIN * n:
    np.maximum.accumulate(prev, axis=0, out=prev)
    np.minimum.accumulate(nxt[::-1], axis=0, out=nxt[::-1])
  else:  # a loop over large slabs beats ufunc.accumulate along axis 0 (~2x)
    for i in range(1, n):
      np.maximum(prev[i - 1], prev[i], out=prev[i])
    for i in range(n - 2, -1, -1):
      np.minimum(nxt[i + 1], nxt[i], out=nxt[i])
  np.subtract(index, prev, out=prev)
  np.subtract(nxt, index, out=nxt)
  np.minimum(prev, nxt, out=prev)
  np.minimum(prev, n, out=prev)
  return prev


def _min_plus_parabola_axis0(g: np.ndarray, step: float) -> np.ndarray:
  """``out[i] = min_j (g[j] + (step (i - j))^2)`` along axis 0, by brute force over offsets."""
  out = g.copy()
  tmp = np.empty_like(g)
  n = g.shape[0]
  for k in range(1, n):
    c = (step * k) ** 2
    np.add(g[:n - k], c, out=tmp[:n - k])
    np.minimum(out[k:], tmp[:n - k], out=out[k:])
    np.add(g[k:], c, out=tmp[:n - k])
    np.minimum(out[:n - k], tmp[:n - k], out=out[:n - k])
  return out


_QUERY_CHUNK = 1 << 17  # elements of the (queries, line) work array per chunk (1 MiB, cache-sized)


def _separable_axes(shape: tuple[int, ...]) -> tuple[int, ...]:
  """Axis order ``(r, p, m)`` (3D) or ``(p, m)`` (2D) of the separable algorithm.

  ``m`` (searched at the query voxels only) is the middle-length axis in 3D and the shorter one in
  2D, ``r`` (brute-force pass over the whole box) the shortest, ``p`` (linear-time pass) the
  longest.
  """
  order = [int(i) for i in np.argsort(shape, kind="stable")]
  if len(shape) == 3:
    return order[0], order[2], order[1]
  return order[1], order[0]


def _separable_directed(
    pairs: Sequence[tuple[np.ndarray, tuple[np.ndarray, ...]]], spacing: np.ndarray
) -> list[np.ndarray]:
  """Exact distances from query voxels to the True voxels of a feature mask, for several pairs.

  ``pairs``: ``(feature, queries)`` with boolean ``feature`` masks of one shape, each with a True
  voxel, and ``queries`` index arrays (as from ``np.nonzero``). Returns one float64 array of
  distances (mm) per pair.

  Separable squared EDT (the minimum over feature voxels of a sum of per-axis squared offsets is
  a nested minimum, one axis at a time), the feature masks stacked so that each pass runs once:
  exact 1D distances along ``p`` (``_index_distance_axis0``, only on the lines that hold a
  feature voxel), the lower envelope of parabolas along ``r`` by brute force (3D), both over the
  whole box, then the search along ``m`` at the query voxels only. That search is windowed: the
  value ``u`` at the query itself (its distance within its own ``m`` plane) bounds the answer, so
  only offsets ``|k| <= sqrt(u) / s_m`` can win; queries are grouped by that half-width rounded up
  to ``2^j - 1`` and each group reads windows of ``2^(j+1) - 1`` voxels (wider windows only add
  candidates, so the minimum stays exact).
  """
  ndim = pairs[0][0].ndim
  n_f = len(pairs)
  perm = _separable_axes(pairs[0][0].shape)
  shape = tuple(pairs[0][0].shape[i] for i in perm)
  sp = spacing[list(perm)]
  n_p, n_m = shape[-2], shape[-1]
  # Linear pass along p on a (p, [r,] feature, m) copy, restricted to the lines with a feature
  # voxel (the others stay at n_p, i.e. +inf).
  axes = (perm[-2],) + perm[:-2] + (-1, perm[-1])
  stacked = np.stack([f for f, _ in pairs], axis=-1)  # (..., feature)
  lines = np.ascontiguousarray(stacked.transpose(axes)).reshape(n_p, -1)
  has = np.flatnonzero(lines.any(axis=0))
  found = _index_distance_axis0(lines[:, has])
  dist = np.full(lines.shape, n_p, dtype=found.dtype)
  dist[:, has] = found
  # Squared distances from a lookup table, in (r, feature, p, m) order: the brute-force pass runs
  # along the leading axis (contiguous slabs), and each (r, feature, p) is a row along m.
  table = (sp[-2] * np.arange(n_p + 1, dtype=np.float64)) ** 2
  table[n_p] = np.inf  # no feature voxel on the line
  dist = dist.reshape((n_p,) + shape[:-2] + (n_f, n_m))
  g = np.take(table, dist.transpose(1, 2, 0, 3) if ndim == 3 else dist.transpose(1, 0, 2))
  if ndim == 3:
    g = _min_plus_parabola_axis0(g, sp[0])
  g = g.reshape(-1, n_m)
  # offsets[i] = (s_m (i - (n_m - 1)))^2: a window of w voxels starting at line position
  # ``start`` for a query at ``m`` adds offsets[start - m + n_m - 1 :][:w].
  offsets = (sp[-1] * np.arange(-(n_m - 1), n_m, dtype=np.float64)) ** 2
  results = []
  for k, (_, queries) in enumerate(pairs):
    q = [queries[i] for i in perm]
    row = (q[0] * n_f + k) * n_p + q[1] if ndim == 3 else k * n_p + q[0]
    results.append(_windowed_line_search(g, row, q[-1], offsets, sp[-1]))
  return results


def _windowed_line_search(
    g: np.ndarray, row: np.ndarray, m: np.ndarray, offsets: np.ndarray, step: float
) -> np.ndarray:
  """``sqrt(min_i g[row, i] + offsets[i - m + n_m - 1])`` per query, in bounded windows."""
  n_m = g.shape[1]
  out = g[row, m]
  with np.errstate(invalid="ignore"):
    half = np.sqrt(out) / step  # +inf where the query's plane has no feature voxel
  # Group j: the queries with half-width in (2^(j-1) - 1, 2^j - 1]; the last one reads the whole
  # line (its half-width bound reaches n_m - 1, or is +inf).
  group = np.zeros(out.shape[0], dtype=np.int64)
  bound = 0
  while bound < n_m - 1:
    group += half > bound
    bound = 2 * bound + 1
  counts = np.bincount(group)
  order = np.argsort(group, kind="stable")
  end = 0
  for j, count in enumerate(counts):
    sel, end = order[end:end + count], end + count
    w = min(2 ** (j + 1) - 1, n_m)
    if w == 1 or count == 0:
      continue  # half-width 0: the value at the query is the answer
    # Window views (read only): g_win[r, i] = g[r, i:i + w], off_win[i] = offsets[i:i + w].
    g_win = np.ndarray((g.shape[0], n_m - w + 1, w), g.dtype, g, 0, g.strides + g.strides[1:])
    off_win = np.ndarray((2 * n_m - w, w), offsets.dtype, offsets, 0, offsets.strides * 2)
    chunk = max(1, _QUERY_CHUNK // w)
    for lo in range(0, count, chunk):
      idx = sel[lo:lo + chunk]
      mi = m[idx]
      start = np.maximum(mi - (w // 2), 0)
      np.minimum(start, n_m - w, out=start)
      vals = g_win[row[idx], start]
      vals += off_win[start - mi + (n_m - 1)]
      out[idx] = vals.min(axis=1)
  return np.sqrt(out, out=out)


def _kdtree_directed(feature_points: np.ndarray, query_points: np.ndarray) -> np.ndarray:
  """Exact distances from ``query_points`` to the nearest of ``feature_points`` (mm coordinates)."""
  return spatial.cKDTree(feature_points).query(query_points, k=1)[0]


# Rough costs in microseconds of the three exact algorithms (both directions, surfaces excluded),
# fitted on 2D/3D boxes of 40 to 400k voxels (ellipsoids, squares, noise, far-apart blobs) on a
# 2-core x86 CPU with NumPy 2.4 / SciPy 1.17. ``{ndim: (fixed, per box voxel, per box voxel and
# brute-force offset, per surface voxel)}``. They only steer the choice, never the values.
_COSTS_US = {
    "edt": {2: (50.0, 0.08, 0.0, 0.0), 3: (50.0, 0.2, 0.0, 0.0)},
    "kdtree": {2: (100.0, 0.0, 0.0, 0.8), 3: (100.0, 0.0, 0.0, 2.0)},
    "separable": {2: (500.0, 0.03, 0.0, 0.2), 3: (300.0, 0.02, 0.0025, 0.15)},
}


def _choose_algorithm(shape: tuple[int, ...], n_a: int, n_b: int) -> str:
  """The exact algorithm with the lowest estimated cost for a box ``shape`` and surface sizes."""
  size = math.prod(shape)
  offsets = min(shape) - 1 if len(shape) == 3 else 0  # brute-force pass along the shortest axis
  cost = {}
  for name, per_ndim in _COSTS_US.items():
    fixed, per_voxel, per_offset, per_point = per_ndim[len(shape)]
    cost[name] = fixed + size * (per_voxel + offsets * per_offset) + (n_a + n_b) * per_point
  return min(cost, key=cost.get)


def _distances(
    a: np.ndarray,
    b: np.ndarray,
    spacing: np.ndarray,
    connectivity: int,
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
  """Directed distances on validated boolean masks (see module docstring, steps 1-3).

  ``algorithm``: ``"auto"`` (cheapest by ``_choose_algorithm``), ``"separable"``, ``"edt"`` or
  ``"kdtree"``; all are exact and agree up to float rounding.
  """
  if algorithm not in _ALGORITHMS:
    raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
  box = _bounding_box(a | b)
  if box is None:
    return np.zeros((0,)), np.zeros((0,))
  sa = _surface_in_box(a, box, connectivity)
  sb = _surface_in_box(b, box, connectivity)
  return _directed_between(sa, sb, spacing, algorithm)


def _weighted_distances(
    a: np.ndarray,
    b: np.ndarray,
    spacing: np.ndarray,
    connectivity: int | None,
    algorithm: str = "auto",
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
  """``(d_ab, d_ba, w_a, w_b)``: directed distances and the weights of the surface points.

  ``connectivity=None`` selects the surfels of the voxel-corner grid (``surface_distance``),
  weighted by their measure; otherwise voxel surfaces with that connectivity and weights None
  (one per point).
  """
  if connectivity is not None:
    return _distances(a, b, spacing, connectivity, algorithm) + (None, None)
  if algorithm not in _ALGORITHMS:
    raise ValueError(f"algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
  box = _bounding_box(a | b)
  if box is None:
    empty = np.zeros((0,))
    return empty, empty, empty, empty
  sa, wa = _surfels(a[box], spacing)
  sb, wb = _surfels(b[box], spacing)
  return _directed_between(sa, sb, spacing, algorithm) + (wa, wb)


def _directed_between(
    sa: np.ndarray, sb: np.ndarray, spacing: np.ndarray, algorithm: str
) -> tuple[np.ndarray, np.ndarray]:
  """Distances from each True point of ``sa`` to the nearest of ``sb`` and back (C order)."""
  ia = np.unravel_index(np.flatnonzero(sa), sa.shape)  # C order, as boolean indexing
  ib = np.unravel_index(np.flatnonzero(sb), sb.shape)
  n_a, n_b = ia[0].shape[0], ib[0].shape[0]
  if n_a == 0 or n_b == 0:
    # One mask is empty (a non-empty mask always has a surface voxel): there is no surface to
    # reach, so the distances from the other one are +inf.
    return np.full(n_a, np.inf), np.full(n_b, np.inf)
  if algorithm == "auto":
    algorithm = _choose_algorithm(sa.shape, n_a, n_b)
  if algorithm == "edt":
    return _edt(~sb, spacing)[sa], _edt(~sa, spacing)[sb]
  # Voxels on both surfaces are at distance 0; only the others are searched.
  d_ab, d_ba = np.zeros(n_a), np.zeros(n_b)
  a_only, b_only = ~sb[ia], ~sa[ib]
  if algorithm == "kdtree":
    pa = np.stack(ia, axis=-1) * spacing
    pb = np.stack(ib, axis=-1) * spacing
    if a_only.any():
      d_ab[a_only] = _kdtree_directed(pb, pa[a_only])
    if b_only.any():
      d_ba[b_only] = _kdtree_directed(pa, pb[b_only])
    return d_ab, d_ba
  pairs, targets = [], []
  if a_only.any():
    pairs.append((sb, tuple(i[a_only] for i in ia)))
    targets.append((d_ab, a_only))
  if b_only.any():
    pairs.append((sa, tuple(i[b_only] for i in ib)))
    targets.append((d_ba, b_only))
  if pairs:
    for (d, where), values in zip(targets, _separable_directed(pairs, spacing)):
      d[where] = values
  return d_ab, d_ba


def _weighted_percentile(d: np.ndarray, w: np.ndarray, q: float) -> float:
  """surface-distance's robust-Hausdorff percentile: sort by (distance, weight), first distance
  whose cumulative weight fraction reaches ``q / 100`` (the last one if rounding never does)."""
  order = np.lexsort((w, d))
  d, w = d[order], w[order]
  cum = np.cumsum(w) / np.sum(w)
  idx = int(np.searchsorted(cum, q / 100.0))
  return float(d[min(idx, d.size - 1)])


def _hd_from(
    d_ab: np.ndarray,
    d_ba: np.ndarray,
    q: float,
    method: str,
    w_a: np.ndarray | None = None,
    w_b: np.ndarray | None = None,
) -> float:
  if d_ab.size == 0 or d_ba.size == 0:
    return float("nan")
  if w_a is None:
    if method == "max_directed":
      return float(max(np.percentile(d_ab, q), np.percentile(d_ba, q)))
    return float(np.percentile(np.concatenate([d_ab, d_ba]), q))
  if method == "max_directed":
    return max(_weighted_percentile(d_ab, w_a, q), _weighted_percentile(d_ba, w_b, q))
  return _weighted_percentile(np.concatenate([d_ab, d_ba]), np.concatenate([w_a, w_b]), q)


def _asd_from(
    d_ab: np.ndarray,
    d_ba: np.ndarray,
    method: str,
    w_a: np.ndarray | None = None,
    w_b: np.ndarray | None = None,
) -> float:
  if d_ab.size == 0 or d_ba.size == 0:
    return float("nan")
  if w_a is None:
    if method == "pooled":
      return float(np.mean(np.concatenate([d_ab, d_ba])))
    return float(0.5 * (np.mean(d_ab) + np.mean(d_ba)))
  if method == "pooled":
    return float((np.dot(w_a, d_ab) + np.dot(w_b, d_ba)) / (np.sum(w_a) + np.sum(w_b)))
  return float(0.5 * (np.dot(w_a, d_ab) / np.sum(w_a) + np.dot(w_b, d_ba) / np.sum(w_b)))


def _nsd_from(
    d_ab: np.ndarray,
    d_ba: np.ndarray,
    tau: float,
    w_a: np.ndarray | None = None,
    w_b: np.ndarray | None = None,
) -> float:
  """NSD; 0 when exactly one surface is empty (nothing within tau), NaN when both are."""
  if d_ab.size == 0 and d_ba.size == 0:
    return float("nan")
  if w_a is None:
    return float((np.count_nonzero(d_ab <= tau) + np.count_nonzero(d_ba <= tau))
                 / (d_ab.size + d_ba.size))
  return float((np.sum(w_a[d_ab <= tau]) + np.sum(w_b[d_ba <= tau]))
               / (np.sum(w_a) + np.sum(w_b)))


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


def surface_points(
    mask: ArrayLike,
    *,
    spacing: Sequence[float],
    surface: SurfaceDefinition = "jaxseg",
    connectivity: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """Surface points of a binary mask under a ``surface=`` definition, with their weights.

  Args:
    mask: 2D or 3D binary mask.
    spacing: voxel size in mm per axis (it sets the surfel measures).
    surface: ``"jaxseg"``, ``"monai"`` or ``"surface_distance"`` (module docstring table).
    connectivity: voxel-surface neighbourhood (``"jaxseg"`` only; ``"monai"`` is 1).

  Returns:
    ``(coords, weights)``: ``(n, ndim)`` float64 positions in voxel-index units, in C order of
    their grid (voxel centres are integers; the corners of ``"surface_distance"`` are
    half-integers, corner ``i`` at ``i - 0.5``), and ``(n,)`` weights: 1 per surface voxel, the
    surfel measure (mm in 2D, mm^2 in 3D) per surfel.
  """
  m = _as_mask(mask, "mask")
  if m.ndim not in (2, 3):
    raise ValueError(f"mask must be 2D or 3D, got shape {m.shape}")
  sp = _check_spacing(spacing, m.ndim)
  conn = _check_surface(surface, connectivity, m.ndim)
  if conn is not None:
    where = _surface(m, conn)
    return np.argwhere(where).astype(np.float64), np.ones(int(np.count_nonzero(where)))
  where, weights = _surfels(m, sp)
  return np.argwhere(where) - 0.5, weights


def surface_distances(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    connectivity: int | None = None,
    surface: SurfaceDefinition = "jaxseg",
    return_weights: bool = False,
) -> tuple[np.ndarray, ...]:
  r"""Directed surface distances in mm, both ways.

  .. math:: D_{PT} = \{\min_{t \in S_T} \lVert (p - t) \odot s \rVert_2 : p \in S_P\}

  and :math:`D_{TP}` likewise, with :math:`S_X` the surface points of ``surface`` (module
  docstring table; ``"jaxseg"``: the surface voxels of ``surface_voxels``) and :math:`s` the
  spacing.

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis, ``len(spacing) == pred.ndim``.
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full; ``"jaxseg"``
      only).
    surface: ``"jaxseg"`` (default), ``"monai"`` or ``"surface_distance"``.
    return_weights: also return the weights of the points (``surface_points``): 1 each, or the
      surfel measures for ``"surface_distance"``.

  Returns:
    ``(d_pred_to_truth, d_truth_to_pred)`` (plus ``(w_pred, w_truth)`` with ``return_weights``),
    float64 arrays with one value per surface point of ``pred`` (resp. ``truth``) in C order of
    its grid (surface-distance returns them sorted instead). An empty mask has no surface point
    (an empty array); the distances *to* an empty mask are ``+inf`` (as in surface-distance).
    surface-distance's directed means ``compute_average_surface_distance`` are
    ``(sum(w_truth * d_truth_to_pred) / sum(w_truth), sum(w_pred * d_pred_to_truth) /
    sum(w_pred))``.
  """
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity, surface)
  d_ab, d_ba, w_a, w_b = _weighted_distances(a, b, sp, conn)
  if not return_weights:
    return d_ab, d_ba
  if w_a is None:
    w_a, w_b = np.ones(d_ab.shape), np.ones(d_ba.shape)
  return d_ab, d_ba, w_a, w_b


def hausdorff_distance(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    percentile: float = 95.0,
    method: HausdorffMethod = "max_directed",
    connectivity: int | None = None,
    surface: SurfaceDefinition = "jaxseg",
) -> float:
  r"""(Percentile) Hausdorff distance between two binary masks, in mm.

  .. math::
     \mathrm{HD}_q^{\max} = \max\big(P_q(D_{PT}),\, P_q(D_{TP})\big) \qquad
     \mathrm{HD}_q^{\mathrm{pooled}} = P_q(D_{PT} \cup D_{TP})

  with :math:`D` the directed surface distances (``surface_distances``) and :math:`P_q` the
  ``numpy.percentile`` (linear interpolation), or for ``surface="surface_distance"`` the
  area-weighted percentile of ``compute_robust_hausdorff`` (module doc). ``q = 95`` is HD95,
  ``q = 100`` the classic Hausdorff distance (both methods then agree). Symmetric in ``pred`` and
  ``truth``.

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis.
    percentile: ``q`` in [0, 100].
    method: ``"max_directed"`` (MONAI / surface-distance; REFERENCE default) or ``"pooled"``
      (medpy ``hd95``, the MicroSegNet code).
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full; medpy and MONAI
      use ``1``).
    surface: ``"jaxseg"`` (default), ``"monai"`` (MONAI ``HausdorffDistanceMetric``) or
      ``"surface_distance"`` (surface-distance ``compute_robust_hausdorff``).

  Returns:
    The distance as a Python float; ``NaN`` when either mask is empty (undefined: count it, do
    not drop it) -- including when both are empty.
  """
  q = _check_percentile(percentile)
  if method not in _HD_METHODS:
    raise ValueError(f"method must be one of {_HD_METHODS}, got {method!r}")
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity, surface)
  d_ab, d_ba, w_a, w_b = _weighted_distances(a, b, sp, conn)
  return _hd_from(d_ab, d_ba, q, method, w_a, w_b)


def average_surface_distance(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    method: AverageMethod = "pooled",
    connectivity: int | None = None,
    surface: SurfaceDefinition = "jaxseg",
) -> float:
  r"""Symmetric average surface distance (ASSD) between two binary masks, in mm.

  .. math::
     \mathrm{ASSD}^{\mathrm{pooled}} = \frac{\sum w_P D_{PT} + \sum w_T D_{TP}}
       {\sum w_P + \sum w_T} \qquad
     \mathrm{ASSD}^{\mathrm{md}} = \tfrac12\big(\overline{D_{PT}}^{w} + \overline{D_{TP}}^{w}\big)

  with the weights :math:`w` of ``surface_points`` (1 per voxel; surfel areas for
  ``surface="surface_distance"``).

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis.
    method: ``"pooled"`` (MONAI ``SurfaceDistanceMetric(symmetric=True)``) or
      ``"mean_directed"`` (md above; medpy ``assd``; with ``surface="surface_distance"`` the
      mean of the two values of surface-distance's ``compute_average_surface_distance``).
    connectivity: surface neighbourhood, see ``surface_voxels`` (default: full).
    surface: ``"jaxseg"`` (default), ``"monai"`` or ``"surface_distance"``.

  Returns:
    A Python float; ``NaN`` when either mask is empty.
  """
  if method not in _ASD_METHODS:
    raise ValueError(f"method must be one of {_ASD_METHODS}, got {method!r}")
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity, surface)
  d_ab, d_ba, w_a, w_b = _weighted_distances(a, b, sp, conn)
  return _asd_from(d_ab, d_ba, method, w_a, w_b)


def normalized_surface_dice(
    pred: ArrayLike,
    truth: ArrayLike,
    *,
    spacing: Sequence[float],
    tolerance_mm: float,
    surface: SurfaceDefinition = "surface_distance",
    connectivity: int | None = None,
) -> float:
  r"""Normalized surface Dice (surface Dice, NSD) at a tolerance of ``tolerance_mm``.

  .. math::
     \mathrm{NSD}_\tau = \frac{\sum_{p \in S_P,\, d(p, S_T) \le \tau} w_p
       + \sum_{t \in S_T,\, d(t, S_P) \le \tau} w_t}{\sum_{p \in S_P} w_p + \sum_{t \in S_T} w_t}

  Nikolov et al. (2021), surface-distance ``compute_surface_dice_at_tolerance`` (the default
  ``surface="surface_distance"``: surfel areas as weights); ``surface="monai"`` counts surface
  voxels as MONAI ``SurfaceDiceMetric`` (its ``use_subvoxels=True`` is ``"surface_distance"``).

  Args:
    pred: 2D or 3D binary mask.
    truth: binary mask of the same shape.
    spacing: voxel size in mm per axis.
    tolerance_mm: :math:`\tau >= 0` in mm (a distance equal to it counts as within).
    surface: ``"surface_distance"`` (default), ``"monai"`` or ``"jaxseg"``.
    connectivity: voxel-surface neighbourhood (``"jaxseg"`` only).

  Returns:
    A Python float in [0, 1]; 0 when exactly one mask is empty, ``NaN`` when both are.
  """
  tau = _check_tolerance(tolerance_mm)
  a, b, sp, conn = _check_pair(pred, truth, spacing, connectivity, surface)
  d_ab, d_ba, w_a, w_b = _weighted_distances(a, b, sp, conn)
  return _nsd_from(d_ab, d_ba, tau, w_a, w_b)


# ---------------------------------------------------------------------------------------------
# Per-case aggregation.


@dataclasses.dataclass(frozen=True)
class SurfaceMetricResult:
  """Per-case values of a surface metric, with the undefined cases kept and counted.

  Attributes:
    values: ``(n_cases,)`` float64 values in mm (NSD: a fraction in [0, 1]); ``NaN`` marks an
      undefined case.
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
    metric: Callable[..., float],
    preds,
    truths,
    spacing: ArrayLike,
    per_slice: bool,
    skip_empty_slices: SkipEmpty,
    connectivity: int | None,
    surface: str = "jaxseg",
) -> SurfaceMetricResult:
  """Shared loop: ``metric(d_ab, d_ba, w_a, w_b) -> float`` applied per volume or per slice."""
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
      a, b, sp, conn = _check_pair(p, t, sp, connectivity if not per_slice else None,
                                   surface if not per_slice else "jaxseg")
      if per_slice:
        if a.ndim != 3:
          raise ValueError(f"per_slice=True needs 3D (x, y, slice) masks, got shape {a.shape}")
        conn = _check_surface(surface, connectivity, 2)
    except ValueError as e:
      raise ValueError(f"case {i}: {e}") from e
    if not per_slice:
      values[i] = metric(*_weighted_distances(a, b, sp, conn))
      continue
    slice_values = []
    for k in range(a.shape[-1]):
      ak, bk = a[..., k], b[..., k]
      has_a, has_b = ak.any(), bk.any()
      if (skip == "either" and not (has_a and has_b)) or (
          skip == "both" and not (has_a or has_b)):
        n_skipped[i] += 1
        continue
      v = metric(*_weighted_distances(ak, bk, sp[:2], conn))
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
    surface: SurfaceDefinition = "jaxseg",
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

  The original MicroSegNet / medpy convention (REFERENCE section 4: per slice, "the original
  skipped slices where prediction or truth is empty", medpy's pooled percentile) is
  ``hd95_per_case(preds, truths, spacing=..., **MICROSEGNET_HD95)``, i.e. ``method="pooled",
  connectivity=1, per_slice=True, skip_empty_slices="either"``: the 95th percentile of the pooled
  set of both directed distances, ``P_95(D_PT u D_TP)``, not ``max(P_95(D_PT), P_95(D_TP))``.

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
    surface: surface definition, see ``hausdorff_distance`` (module docstring table).

  Returns:
    A ``SurfaceMetricResult``.
  """
  q = _check_percentile(percentile)
  if method not in _HD_METHODS:
    raise ValueError(f"method must be one of {_HD_METHODS}, got {method!r}")
  return _per_case(lambda *d: _hd_from(d[0], d[1], q, method, d[2], d[3]), preds, truths,
                   spacing, per_slice, skip_empty_slices, connectivity, surface)


def average_surface_distance_per_case(
    preds: Sequence[ArrayLike] | np.ndarray,
    truths: Sequence[ArrayLike] | np.ndarray,
    *,
    spacing: ArrayLike,
    method: AverageMethod = "pooled",
    per_slice: bool = False,
    skip_empty_slices: SkipEmpty = False,
    connectivity: int | None = None,
    surface: SurfaceDefinition = "jaxseg",
) -> SurfaceMetricResult:
  """``average_surface_distance`` per case; layout and slice conventions as ``hd95_per_case``."""
  if method not in _ASD_METHODS:
    raise ValueError(f"method must be one of {_ASD_METHODS}, got {method!r}")
  return _per_case(lambda *d: _asd_from(d[0], d[1], method, d[2], d[3]), preds, truths, spacing,
                   per_slice, skip_empty_slices, connectivity, surface)


def normalized_surface_dice_per_case(
    preds: Sequence[ArrayLike] | np.ndarray,
    truths: Sequence[ArrayLike] | np.ndarray,
    *,
    spacing: ArrayLike,
    tolerance_mm: float,
    surface: SurfaceDefinition = "surface_distance",
    per_slice: bool = False,
    skip_empty_slices: SkipEmpty = False,
    connectivity: int | None = None,
) -> SurfaceMetricResult:
  """``normalized_surface_dice`` per case; layout and slice conventions as ``hd95_per_case``.

  ``values`` are NSDs in [0, 1] (not mm). A case (or, per slice, a kept slice) where both masks
  are empty is undefined (NaN, counted in ``n_undefined`` / ``n_undefined_slices``); one where
  exactly one mask is empty scores 0. In per-slice mode the surfels are those of the 2D slices
  (contour lengths as weights with ``surface="surface_distance"``).
  """
  tau = _check_tolerance(tolerance_mm)
  return _per_case(lambda *d: _nsd_from(d[0], d[1], tau, d[2], d[3]), preds, truths, spacing,
                   per_slice, skip_empty_slices, connectivity, surface)
