r"""Surface-distance metrics on binary masks: Hausdorff distance (HD, HD95), mean surface distance.

Host-side NumPy / SciPy code for evaluation, 2D or 3D, with the voxel spacing in millimetres. It
follows REFERENCE "Conventions" and the care of DeepMind's ``surface-distance`` library for edge
cases.

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
   medpy's ``hd95`` use. Erosion treats everything outside the image as background, so a mask that
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
interpolation):

- ``hausdorff_distance(method="max_directed")``: :math:`\max(P_q(D_{AB}), P_q(D_{BA}))` (MONAI
  ``HausdorffDistanceMetric``; surface-distance's robust Hausdorff, which additionally weights
  each surface element by its area).
- ``hausdorff_distance(method="pooled")``: :math:`P_q(D_{AB} \cup D_{BA})` (medpy
  ``metric.binary.hd95``, used by the MicroSegNet evaluation code; medpy's definition is this one
  with ``connectivity=1``, see "medpy" below).
- ``percentile=100`` gives the classic Hausdorff distance (both methods agree).
- ``average_surface_distance``: symmetric mean, pooled :math:`\operatorname{mean}(D_{AB} \cup
  D_{BA})` (MONAI ``symmetric=True``) or ``"mean_directed"``
  :math:`\tfrac12(\operatorname{mean} D_{AB} + \operatorname{mean} D_{BA})` (medpy ``assd``).

Empty masks: when either mask is empty the distances are undefined and every metric returns
``NaN``; the per-case API counts them (``n_undefined``) and never drops them silently.

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
    "surface_distances",
    "surface_voxels",
]

HausdorffMethod = Literal["max_directed", "pooled"]
AverageMethod = Literal["pooled", "mean_directed"]
SkipEmpty = Union[bool, Literal["none", "both", "either"]]

_HD_METHODS = ("max_directed", "pooled")
_ASD_METHODS = ("pooled", "mean_directed")
_SKIP_MODES = ("none", "both", "either")
_ALGORITHMS = ("auto", "separable", "edt", "kdtree")

# Keyword arguments of ``hd95_per_case`` that reproduce the MicroSegNet evaluation (module doc,
# "medpy and the MicroSegNet evaluation"): medpy's pooled percentile on face-connected surfaces,
# per 2D slice, over the slices where both masks are non-empty.
MICROSEGNET_HD95 = types.MappingProxyType({
    "method": "pooled", "connectivity": 1, "per_slice": True, "skip_empty_slices": "either"})


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
  sp = validate_spacing(spacing, ndim=a.ndim)
  conn = _check_connectivity(connectivity, a.ndim)
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
