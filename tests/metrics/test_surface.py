"""Tests for jaxseg.metrics.surface: hand-computed cases and a brute-force NumPy reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import ndimage

from jaxseg.metrics import overlap, surface

# ---------------------------------------------------------------------------------------------
# Independent reference: surface by explicit neighbour checks, distances from all pairs.


def _ref_surface(mask: np.ndarray, connectivity: int | None = None) -> np.ndarray:
  """Foreground voxels with a background neighbour (outside the image counts as background)."""
  mask = np.asarray(mask, bool)
  conn = mask.ndim if connectivity is None else connectivity
  padded = np.pad(mask, 1, constant_values=False)
  has_bg_neighbour = np.zeros(mask.shape, bool)
  for offset in itertools.product((-1, 0, 1), repeat=mask.ndim):
    n_nonzero = sum(o != 0 for o in offset)
    if n_nonzero == 0 or n_nonzero > conn:
      continue
    window = tuple(slice(1 + o, 1 + o + n) for o, n in zip(offset, mask.shape))
    has_bg_neighbour |= ~padded[window]
  return mask & has_bg_neighbour


def _ref_directed(a, b, spacing, connectivity=None):
  pa = np.argwhere(_ref_surface(a, connectivity)) * np.asarray(spacing, np.float64)
  pb = np.argwhere(_ref_surface(b, connectivity)) * np.asarray(spacing, np.float64)
  d = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
  return d.min(axis=1), d.min(axis=0)


def _ref_hd(a, b, spacing, q, method, connectivity=None):
  d_ab, d_ba = _ref_directed(a, b, spacing, connectivity)
  if method == "max_directed":
    return max(np.percentile(d_ab, q), np.percentile(d_ba, q))
  return np.percentile(np.concatenate([d_ab, d_ba]), q)


def _ref_asd(a, b, spacing, method, connectivity=None):
  d_ab, d_ba = _ref_directed(a, b, spacing, connectivity)
  if method == "pooled":
    return np.concatenate([d_ab, d_ba]).mean()
  return 0.5 * (d_ab.mean() + d_ba.mean())


def _random_mask(rng, shape, n_boxes=3):
  """Union of random boxes plus a few random voxels: convex, concave and isolated parts."""
  m = np.zeros(shape, bool)
  for _ in range(n_boxes):
    lo = [rng.integers(0, s - 1) for s in shape]
    hi = [rng.integers(l + 1, s + 1) for l, s in zip(lo, shape)]
    m[tuple(slice(l, h) for l, h in zip(lo, hi))] = True
  m |= rng.random(shape) < 0.03
  return m


def _square(shape, lo, size):
  m = np.zeros(shape, bool)
  m[tuple(slice(l, l + size) for l in lo)] = True
  return m


# ---------------------------------------------------------------------------------------------
# Surface voxels.


def test_surface_of_square_full_and_face_connectivity():
  m = np.zeros((7, 7), bool)
  m[1:6, 1:6] = True  # 5x5 square
  ring = m.copy()
  ring[2:5, 2:5] = False
  np.testing.assert_array_equal(surface.surface_voxels(m), ring)
  np.testing.assert_array_equal(surface.surface_voxels(m, connectivity=1), ring)
  # A diamond distinguishes the two: full connectivity also takes diagonal-touching voxels.
  diamond = np.add.outer(np.abs(np.arange(-3, 4)), np.abs(np.arange(-3, 4))) <= 3
  full = surface.surface_voxels(diamond)
  face = surface.surface_voxels(diamond, connectivity=1)
  np.testing.assert_array_equal(full, _ref_surface(diamond))
  np.testing.assert_array_equal(face, _ref_surface(diamond, 1))
  assert face.sum() == 12 and full.sum() == 20  # |x|+|y| == 3, resp. |x|+|y| in {2, 3}
  assert np.all(face <= full)


def test_surface_touching_border_and_full_foreground():
  m = np.ones((4, 5), bool)
  expected = np.ones((4, 5), bool)
  expected[1:3, 1:4] = False
  np.testing.assert_array_equal(surface.surface_voxels(m), expected)
  m3 = np.zeros((5, 5, 5), bool)
  m3[:3, :, 1:4] = True  # touches x = 0 and both y borders
  np.testing.assert_array_equal(surface.surface_voxels(m3), _ref_surface(m3))
  assert surface.surface_voxels(m3)[0, 2, 2]


@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_random_matches_reference(ndim):
  rng = np.random.default_rng(ndim)
  shape = (9, 10) if ndim == 2 else (7, 8, 6)
  for _ in range(5):
    m = _random_mask(rng, shape)
    for conn in range(1, ndim + 1):
      np.testing.assert_array_equal(
          surface.surface_voxels(m, connectivity=conn), _ref_surface(m, conn))


# ---------------------------------------------------------------------------------------------
# Hand-computed distances.


@pytest.mark.parametrize("method", ["max_directed", "pooled"])
@pytest.mark.parametrize("q", [0.0, 50.0, 95.0, 100.0])
def test_two_single_voxels_anisotropic(method, q):
  a = np.zeros((6, 7, 5), bool)
  b = np.zeros((6, 7, 5), bool)
  a[1, 1, 1] = True
  b[4, 5, 3] = True
  spacing = (0.5, 2.0, 3.0)
  expected = math.sqrt((3 * 0.5) ** 2 + (4 * 2.0) ** 2 + (2 * 3.0) ** 2)
  assert surface.hausdorff_distance(a, b, spacing=spacing, percentile=q, method=method) == (
      pytest.approx(expected, rel=1e-12))
  assert surface.average_surface_distance(a, b, spacing=spacing) == pytest.approx(expected)


@pytest.mark.parametrize("axis, k", [(0, 1), (0, 3), (1, 2), (1, 4)])
def test_square_shifted_by_k(axis, k):
  spacing = (0.7, 1.3)
  a = _square((20, 20), (5, 5), 5)
  b = np.roll(a, k, axis=axis)
  for method in ("max_directed", "pooled"):
    hd = surface.hausdorff_distance(a, b, spacing=spacing, percentile=100, method=method)
    assert hd == pytest.approx(k * spacing[axis], rel=1e-12)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_cube_shifted_along_slices(k):
  spacing = (0.5, 0.5, 3.0)
  a = _square((10, 10, 12), (3, 3, 2), 4)
  b = np.roll(a, k, axis=2)
  hd = surface.hausdorff_distance(a, b, spacing=spacing, percentile=100)
  assert hd == pytest.approx(k * 3.0, rel=1e-12)


def test_nested_squares_hand_computed():
  # A: 3x3 square, B: concentric 7x7 square, unit spacing, full connectivity.
  a = _square((11, 11), (4, 4), 3)
  b = _square((11, 11), (2, 2), 7)
  s5, s8 = math.sqrt(5), math.sqrt(8)
  d_ab, d_ba = surface.surface_distances(a, b, spacing=(1.0, 1.0))
  np.testing.assert_allclose(d_ab, np.full(8, 2.0))  # every ring voxel of A is 2 from B's ring
  # B's ring (24 voxels): per side [s8, s5, 2, 2, 2, s5, s8], corners shared.
  np.testing.assert_allclose(np.sort(d_ba), [2.0] * 12 + [s5] * 8 + [s8] * 4)
  hd = lambda **kw: surface.hausdorff_distance(a, b, spacing=(1.0, 1.0), **kw)
  assert hd(percentile=100) == pytest.approx(s8)
  assert hd(percentile=100, method="pooled") == pytest.approx(s8)
  # q = 50: D_BA position 11.5 -> 2 + 0.5 (s5 - 2); pooled (32 values) position 15.5 -> 2.
  assert hd(percentile=50) == pytest.approx(2 + 0.5 * (s5 - 2))
  assert hd(percentile=50, method="pooled") == pytest.approx(2.0)
  sum_ba = 24 + 8 * s5 + 4 * s8
  asd = lambda m: surface.average_surface_distance(a, b, spacing=(1.0, 1.0), method=m)
  assert asd("pooled") == pytest.approx((16 + sum_ba) / 32)
  assert asd("mean_directed") == pytest.approx(0.5 * (2 + sum_ba / 24))


def test_nested_cubes_3d():
  a = _square((11, 11, 11), (4, 4, 4), 3)
  b = _square((11, 11, 11), (2, 2, 2), 7)
  assert surface.hausdorff_distance(a, b, spacing=(1, 1, 1), percentile=100) == pytest.approx(
      math.sqrt(12))
  d_ab, _ = surface.surface_distances(a, b, spacing=(1, 1, 1))
  np.testing.assert_allclose(d_ab, np.full(26, 2.0))
  spacing = (0.6, 1.1, 2.5)
  for method in ("max_directed", "pooled"):
    for q in (50, 95, 100):
      assert surface.hausdorff_distance(a, b, spacing=spacing, percentile=q, method=method) == (
          pytest.approx(_ref_hd(a, b, spacing, q, method), rel=1e-12))


def test_percentile_methods_differ_on_a_line():
  # A: one pixel; B: a 1-pixel-wide segment of 10 starting at A. D_AB = [0], D_BA = [0..9] * s.
  a = np.zeros((5, 14), bool)
  b = np.zeros((5, 14), bool)
  a[2, 2] = True
  b[2, 2:12] = True
  s = 0.25
  spacing = (2.0, s)
  hd = lambda q, m: surface.hausdorff_distance(a, b, spacing=spacing, percentile=q, method=m)
  assert hd(50, "max_directed") == pytest.approx(4.5 * s)
  assert hd(50, "pooled") == pytest.approx(4.0 * s)  # [0, 0, 1, ..., 9]: position 5 -> 4
  assert hd(95, "max_directed") == pytest.approx(8.55 * s)
  assert hd(95, "pooled") == pytest.approx(8.5 * s)
  assert hd(100, "max_directed") == hd(100, "pooled") == pytest.approx(9 * s)
  avg = lambda m: surface.average_surface_distance(a, b, spacing=spacing, method=m)
  assert avg("pooled") == pytest.approx(45 * s / 11)
  assert avg("mean_directed") == pytest.approx(0.5 * 4.5 * s)


@pytest.mark.parametrize("ndim", [2, 3])
@pytest.mark.parametrize("connectivity", [1, None])
def test_random_masks_match_brute_force(ndim, connectivity):
  rng = np.random.default_rng(10 + ndim)
  shape = (14, 12) if ndim == 2 else (9, 10, 6)
  spacing = (0.5, 0.9) if ndim == 2 else (0.5, 0.7, 3.0)
  n_differ = 0
  for _ in range(4):
    a, b = _random_mask(rng, shape), _random_mask(rng, shape)
    d_ab, d_ba = surface.surface_distances(a, b, spacing=spacing, connectivity=connectivity)
    r_ab, r_ba = _ref_directed(a, b, spacing, connectivity)
    np.testing.assert_allclose(d_ab, r_ab, rtol=1e-12)
    np.testing.assert_allclose(d_ba, r_ba, rtol=1e-12)
    for q in (0, 37.5, 95, 100):
      got = {}
      for method in ("max_directed", "pooled"):
        got[method] = surface.hausdorff_distance(
            a, b, spacing=spacing, percentile=q, method=method, connectivity=connectivity)
        assert got[method] == pytest.approx(
            _ref_hd(a, b, spacing, q, method, connectivity), rel=1e-12)
      n_differ += not math.isclose(got["max_directed"], got["pooled"])
      assert got["max_directed"] >= got["pooled"] - 1e-12  # P_q of a union <= max of the P_q
    for method in ("pooled", "mean_directed"):
      assert surface.average_surface_distance(
          a, b, spacing=spacing, method=method, connectivity=connectivity) == pytest.approx(
              _ref_asd(a, b, spacing, method, connectivity), rel=1e-12)
  assert n_differ > 0  # the cases really separate the two methods


def test_crop_does_not_change_distances():
  # Objects far from each other and from the borders, and touching corners: compare with the
  # EDT of the whole, uncropped image.
  rng = np.random.default_rng(3)
  spacing = np.array([0.5, 0.5, 3.0])
  for _ in range(3):
    a = np.zeros((30, 28, 8), bool)
    b = np.zeros((30, 28, 8), bool)
    a[2:6, 20:27, 1:3] = True
    b[18:30, 0:5, 5:8] = True
    a |= rng.random(a.shape) < 0.002
    sa, sb = _ref_surface(a), _ref_surface(b)
    full_ab = ndimage.distance_transform_edt(~sb, sampling=spacing)[sa]
    full_ba = ndimage.distance_transform_edt(~sa, sampling=spacing)[sb]
    d_ab, d_ba = surface.surface_distances(a, b, spacing=spacing)
    np.testing.assert_allclose(d_ab, full_ab, rtol=1e-12)
    np.testing.assert_allclose(d_ba, full_ba, rtol=1e-12)


# ---------------------------------------------------------------------------------------------
# The three exact distance algorithms (separable, kdtree, edt) and their building blocks.

_ALGORITHMS = ("separable", "kdtree", "edt", "auto")


def _check_algorithms_against_reference(a, b, spacing, connectivity):
  """Every algorithm gives the brute-force directed distances (C order) for one pair."""
  conn = a.ndim if connectivity is None else connectivity
  r_ab, r_ba = _ref_directed(a, b, spacing, conn)
  for algorithm in _ALGORITHMS:
    d_ab, d_ba = surface._distances(a, b, np.asarray(spacing, np.float64), conn, algorithm)
    assert d_ab.dtype == d_ba.dtype == np.float64
    np.testing.assert_allclose(d_ab, r_ab, rtol=1e-12, atol=1e-12, err_msg=algorithm)
    np.testing.assert_allclose(d_ba, r_ba, rtol=1e-12, atol=1e-12, err_msg=algorithm)


@pytest.mark.parametrize("ndim, connectivity", [(2, 1), (2, 2), (3, 1), (3, 2), (3, 3)])
def test_algorithms_match_brute_force_on_random_masks(ndim, connectivity):
  # Boxes long enough (>= 16 along the searched axis) for several search-window widths, including
  # windows clipped at both ends of a line and whole-line searches.
  rng = np.random.default_rng(100 + 10 * ndim + connectivity)
  shape = (30, 22) if ndim == 2 else (20, 17, 6)
  for spacing in ((0.5, 0.9) if ndim == 2 else (0.5, 0.7, 3.0),
                  (2.0, 0.3) if ndim == 2 else (1.1, 0.4, 0.8)):
    for _ in range(3):
      a, b = _random_mask(rng, shape), _random_mask(rng, shape)
      _check_algorithms_against_reference(a, b, spacing, connectivity)


@pytest.mark.parametrize("ndim", [2, 3])
def test_algorithms_far_apart_and_nested_objects(ndim):
  # Far apart (long searches, many lines without any feature voxel), nested (surfaces apart, no
  # feature on most lines of the inner box) and overlapping (many voxels on both surfaces).
  shape = (26, 21) if ndim == 2 else (18, 16, 7)
  spacing = (0.6, 1.7) if ndim == 2 else (0.6, 1.7, 2.5)
  far_a, far_b = _square(shape, (0,) * ndim, 3), _square(shape, tuple(n - 4 for n in shape), 4)
  outer = _square(shape, (1,) * ndim, min(shape) - 2)
  inner = _square(shape, (3,) * ndim, 2)
  shifted = np.roll(outer, 1, axis=0)
  for a, b in ((far_a, far_b), (outer, inner), (outer, shifted), (outer | far_a, inner)):
    for connectivity in (1, ndim):
      _check_algorithms_against_reference(a, b, spacing, connectivity)
      _check_algorithms_against_reference(b, a, spacing, connectivity)


@pytest.mark.parametrize("algorithm", _ALGORITHMS)
def test_algorithms_edge_cases(algorithm):
  dist = lambda a, b, sp, conn=None: surface._distances(  # noqa: E731
      a, b, np.asarray(sp, np.float64), a.ndim if conn is None else conn, algorithm)
  # Single voxels, hand-computed.
  a = np.zeros((5, 9, 4), bool)
  b = np.zeros((5, 9, 4), bool)
  a[0, 0, 0] = True
  b[4, 8, 3] = True
  d_ab, d_ba = dist(a, b, (0.5, 0.25, 3.0))
  expected = math.sqrt(2.0 ** 2 + 2.0 ** 2 + 9.0 ** 2)
  np.testing.assert_allclose(d_ab, [expected], rtol=1e-14)
  np.testing.assert_allclose(d_ba, [expected], rtol=1e-14)
  # A single voxel against itself, and identical masks: all on both surfaces, all zero.
  assert dist(a, a, (1, 1, 1))[0].tolist() == [0.0]
  m = _square((9, 8), (2, 1), 5)
  d_ab, d_ba = dist(m, m, (0.3, 0.7))
  assert d_ab.shape == d_ba.shape == (16,) and not d_ab.any() and not d_ba.any()
  # Masks touching the image border (zero-padded copy instead of a view of the image).
  a = np.zeros((12, 10), bool)
  b = np.zeros((12, 10), bool)
  a[:, :4] = True
  b[3:12, 2:10] = True
  for conn in (1, 2):
    r_ab, r_ba = _ref_directed(a, b, (1.0, 1.5), conn)
    d_ab, d_ba = dist(a, b, (1.0, 1.5), conn)
    np.testing.assert_allclose(d_ab, r_ab, rtol=1e-12)
    np.testing.assert_allclose(d_ba, r_ba, rtol=1e-12)
  # Full-foreground 3D image against one voxel: the image border is the surface.
  full = np.ones((4, 5, 3), bool)
  one = np.zeros((4, 5, 3), bool)
  one[1, 2, 1] = True
  r_ab, r_ba = _ref_directed(full, one, (1.0, 2.0, 0.5))
  d_ab, d_ba = dist(full, one, (1.0, 2.0, 0.5))
  np.testing.assert_allclose(d_ab, r_ab, rtol=1e-12)
  np.testing.assert_allclose(d_ba, r_ba, rtol=1e-12)
  np.testing.assert_allclose(d_ba, [0.5])  # one slice away along the last axis
  # One mask empty: its surface has no voxel; the distances to it are +inf.
  empty = np.zeros((6, 7), bool)
  d_ab, d_ba = dist(m[:6, :7], empty, (1.0, 1.0))
  assert d_ab.shape == (int(_ref_surface(m[:6, :7]).sum()),) and np.all(np.isinf(d_ab))
  assert d_ba.shape == (0,)
  d_ab, d_ba = dist(empty, empty, (1.0, 1.0))
  assert d_ab.shape == d_ba.shape == (0,)


@pytest.mark.parametrize("method", ["max_directed", "pooled"])
def test_public_api_on_each_automatic_choice(method):
  # Pairs for which the cost model picks each algorithm; the public result matches brute force.
  ellipse = lambda c, r, shape: np.sum(  # noqa: E731
      [((g - ci) / ri) ** 2 for g, ci, ri in zip(np.indices(shape), c, r)], axis=0) <= 1.0
  shape3 = (40, 38, 9)
  blob_a = np.zeros((120, 110), bool)
  blob_b = np.zeros((120, 110), bool)
  blob_a[2:4, 3:5] = True
  blob_b[115:118, 100:104] = True
  cases = {
      "separable": (ellipse((20, 18, 4), (12, 10, 3), shape3),
                    ellipse((17, 20, 5), (9, 13, 3.5), shape3), (0.5, 0.6, 3.0)),
      "kdtree": (blob_a, blob_b, (0.4, 0.9)),
      "edt": (_square((8, 8), (1, 1), 3), _square((8, 8), (3, 2), 4), (1.0, 0.5)),
  }
  for expected, (a, b, spacing) in cases.items():
    box = surface._bounding_box(a | b)
    n_a, n_b = int(_ref_surface(a).sum()), int(_ref_surface(b).sum())
    assert surface._choose_algorithm(a[box].shape, n_a, n_b) == expected
    for q in (95, 100):
      assert surface.hausdorff_distance(a, b, spacing=spacing, percentile=q, method=method) == (
          pytest.approx(_ref_hd(a, b, spacing, q, method), rel=1e-12))


def test_bad_algorithm_is_rejected():
  m = _square((6, 6), (1, 1), 3)
  with pytest.raises(ValueError, match="algorithm"):
    surface._distances(m, m, np.ones(2), 2, "fmm")


def test_index_distance_axis0_both_paths_and_dtypes(monkeypatch):
  rng = np.random.default_rng(4)

  def reference(f):
    n = f.shape[0]
    out = np.full(f.shape, n, np.int64)
    for idx in np.ndindex(f.shape):
      hits = np.flatnonzero(f[(slice(None),) + idx[1:]])
      if hits.size:
        out[idx] = np.abs(hits - idx[0]).min()
    return out

  for shape in ((1, 3), (9, 5), (13, 4, 6)):
    f = rng.random(shape) < 0.2
    f[:, 0] = False  # lines without a feature voxel
    for slab_loop_min in (1, 10 ** 9):  # the slab loop and the ufunc.accumulate path
      monkeypatch.setattr(surface, "_SLAB_LOOP_MIN", slab_loop_min)
      got = surface._index_distance_axis0(f)
      assert got.dtype == np.int16
      np.testing.assert_array_equal(got, reference(f))
  # Lines too long for int16 indices.
  f = np.zeros((11000, 2), bool)
  f[10999, 0] = True
  f[17, 1] = True
  got = surface._index_distance_axis0(f)
  assert got.dtype == np.int64
  assert got[0, 0] == 10999 and got[10999, 0] == 0 and got[0, 1] == 17 and got[10999, 1] == 10982


def test_min_plus_parabola_axis0_matches_brute_force():
  rng = np.random.default_rng(5)
  g = rng.random((7, 3, 4)) * 20
  g[rng.random(g.shape) < 0.4] = np.inf
  g[:, 0, 0] = np.inf  # a column without any finite value stays +inf
  step = 1.3
  k = np.arange(7)
  expected = np.min(g[None, :] + ((step * (k[:, None] - k[None, :])) ** 2)[:, :, None, None],
                    axis=1)
  np.testing.assert_allclose(surface._min_plus_parabola_axis0(g, step), expected, rtol=1e-15)
  assert np.all(np.isinf(surface._min_plus_parabola_axis0(g, step)[:, 0, 0]))


@pytest.mark.parametrize("chunk", [1 << 17, 5])
def test_windowed_line_search_matches_full_search(monkeypatch, chunk):
  # Windows of every width (bounds from 0 to +inf), clipped at both ends, in several chunks.
  monkeypatch.setattr(surface, "_QUERY_CHUNK", chunk)
  rng = np.random.default_rng(6)
  n_rows, n_m, step = 9, 40, 0.7
  g = (rng.random((n_rows, n_m)) * 30) ** 2
  g[rng.random(g.shape) < 0.3] = np.inf
  g[0] = np.inf  # a row without any finite value: +inf answers
  g[1, :] = np.inf
  g[1, [0, n_m - 1]] = 0.0  # nearest values at the far ends of the line
  row = np.repeat(np.arange(n_rows), n_m)
  m = np.tile(np.arange(n_m), n_rows)
  offsets = (step * np.arange(-(n_m - 1), n_m, dtype=np.float64)) ** 2
  got = surface._windowed_line_search(g, row, m, offsets, step)
  i = np.arange(n_m)
  expected = np.sqrt(np.min(g[row] + (step * (i[None, :] - m[:, None])) ** 2, axis=1))
  np.testing.assert_allclose(got, expected, rtol=1e-14)
  assert np.all(np.isinf(got[row == 0])) and np.isfinite(got[row == 1]).all()


def test_bounding_box_and_surface_in_box():
  rng = np.random.default_rng(8)
  for shape in ((7, 9), (6, 8, 5)):
    for _ in range(6):
      m = rng.random(shape) < 0.05
      box = surface._bounding_box(m)
      idx = np.argwhere(m)
      if idx.size == 0:
        assert box is None
        continue
      assert box == tuple(slice(lo, hi + 1) for lo, hi in zip(idx.min(0), idx.max(0)))
      for conn in range(1, len(shape) + 1):
        np.testing.assert_array_equal(surface._surface_in_box(m, box, conn),
                                      _ref_surface(m, conn)[box])
  # A non-contiguous input (a slice of a stack), as in the per-slice mode.
  stack = np.zeros((8, 9, 3), bool)
  stack[2:5, 3:7, 1] = True
  assert surface._bounding_box(stack[..., 1]) == (slice(2, 5), slice(3, 7))
  assert surface._bounding_box(stack[..., 0]) is None


# ---------------------------------------------------------------------------------------------
# Properties and edge cases.


@pytest.mark.parametrize("method", ["max_directed", "pooled"])
def test_symmetric(method):
  rng = np.random.default_rng(7)
  for shape, spacing in (((12, 13), (0.3, 1.7)), ((8, 9, 5), (1.0, 0.4, 2.0))):
    a, b = _random_mask(rng, shape), _random_mask(rng, shape)
    for q in (50, 95, 100):
      hd_ab = surface.hausdorff_distance(a, b, spacing=spacing, percentile=q, method=method)
      hd_ba = surface.hausdorff_distance(b, a, spacing=spacing, percentile=q, method=method)
      assert hd_ab == pytest.approx(hd_ba, rel=1e-12)
    for m in ("pooled", "mean_directed"):
      assert surface.average_surface_distance(a, b, spacing=spacing, method=m) == pytest.approx(
          surface.average_surface_distance(b, a, spacing=spacing, method=m), rel=1e-12)


def test_identical_masks_give_zero():
  rng = np.random.default_rng(0)
  for shape in ((10, 11), (6, 7, 5)):
    m = _random_mask(rng, shape)
    sp = (0.5,) * len(shape)
    for method in ("max_directed", "pooled"):
      assert surface.hausdorff_distance(m, m, spacing=sp, percentile=100, method=method) == 0.0
    assert surface.average_surface_distance(m, m, spacing=sp) == 0.0


def test_empty_masks_give_nan():
  empty = np.zeros((6, 6), bool)
  full = _square((6, 6), (1, 1), 3)
  for a, b in ((empty, full), (full, empty), (empty, empty)):
    for method in ("max_directed", "pooled"):
      assert math.isnan(surface.hausdorff_distance(a, b, spacing=(1, 1), method=method))
    for method in ("pooled", "mean_directed"):
      assert math.isnan(surface.average_surface_distance(a, b, spacing=(1, 1), method=method))
  # Distances *to* an empty mask are +inf (scipy's EDT of an all-True input would be finite).
  d_ab, d_ba = surface.surface_distances(full, empty, spacing=(1, 1))
  assert d_ab.shape == (8,) and np.all(np.isinf(d_ab))
  assert d_ba.shape == (0,)
  d_ab, d_ba = surface.surface_distances(empty, empty, spacing=(1, 1))
  assert d_ab.shape == d_ba.shape == (0,)


def test_edt_without_background_is_inf():
  # scipy.ndimage.distance_transform_edt returns finite nonsense here; the helper must not.
  assert np.all(np.isinf(surface._edt(np.ones((3, 4), bool), np.array([0.5, 2.0]))))
  out = surface._edt(np.array([[True, False, True]]), np.array([1.0, 2.0]))
  np.testing.assert_allclose(out, [[2.0, 0.0, 2.0]])


def test_no_background_full_foreground_masks():
  full = np.ones((5, 7), bool)
  assert surface.hausdorff_distance(full, full, spacing=(1, 1), percentile=100) == 0.0
  # Full 5x5 image against its centre pixel, spacing (1, 2): corners are sqrt(2^2 + 4^2) away,
  # the centre is 2 away from the nearest border pixel (along axis 0).
  a = np.ones((5, 5), bool)
  b = np.zeros((5, 5), bool)
  b[2, 2] = True
  d_ab, d_ba = surface.surface_distances(a, b, spacing=(1.0, 2.0))
  assert d_ab.shape == (16,)
  np.testing.assert_allclose(d_ba, [2.0])
  assert d_ab.max() == pytest.approx(math.sqrt(20))
  assert surface.hausdorff_distance(a, b, spacing=(1.0, 2.0), percentile=100) == pytest.approx(
      math.sqrt(20))


def test_mask_touching_border():
  a = np.zeros((10, 10), bool)
  b = np.zeros((10, 10), bool)
  a[:, :5] = True  # touches three borders
  b[:, :7] = True
  spacing = (1.0, 1.5)
  d_ab, d_ba = surface.surface_distances(a, b, spacing=spacing)
  r_ab, r_ba = _ref_directed(a, b, spacing)
  np.testing.assert_allclose(d_ab, r_ab)
  np.testing.assert_allclose(d_ba, r_ba)
  # B's surface includes column 0 and rows 0/9 (the border), so A's border voxels are at 0 and the
  # far column 4 of A is 2 columns from B's column 6; B's column 6 is 2 columns from A's column 4.
  assert d_ab.max() == pytest.approx(2 * 1.5)
  assert surface.hausdorff_distance(a, b, spacing=spacing, percentile=100) == pytest.approx(3.0)


def test_numeric_masks_are_accepted():
  a = _square((8, 8), (1, 1), 3)
  b = _square((8, 8), (2, 3), 4)
  ref = surface.hausdorff_distance(a, b, spacing=(1, 1))
  assert surface.hausdorff_distance(a.astype(np.uint8), b.astype(np.float32), spacing=[1, 1]) == (
      ref)
  assert isinstance(ref, float)


# ---------------------------------------------------------------------------------------------
# Per-case aggregation.


def _slice_stack():
  """One case of 4 slices: shifts of 1 and 2 along x, both empty, prediction empty."""
  shape = (12, 12, 4)
  pred = np.zeros(shape, bool)
  truth = np.zeros(shape, bool)
  sq = _square((12, 12), (3, 3), 4)
  pred[..., 0], truth[..., 0] = sq, np.roll(sq, 1, axis=0)
  pred[..., 1], truth[..., 1] = sq, np.roll(sq, 2, axis=0)
  truth[..., 3] = sq
  return pred, truth


def test_per_slice_skip_modes():
  pred, truth = _slice_stack()
  clean_p, clean_t = pred[..., :2], truth[..., :2]  # a second case with only defined slices
  spacing = (0.5, 0.8, 3.0)
  kw = dict(spacing=spacing, percentile=100, per_slice=True)
  expected = 0.5 * (1 * 0.5 + 2 * 0.5)  # mean over slices of k * sx

  r = surface.hd95_per_case([pred, clean_p], [truth, clean_t], skip_empty_slices=True, **kw)
  np.testing.assert_allclose(r.values, [expected, expected])
  np.testing.assert_array_equal(r.n_slices, [2, 2])
  np.testing.assert_array_equal(r.n_skipped_slices, [2, 0])
  np.testing.assert_array_equal(r.n_undefined_slices, [0, 0])
  assert r.n_undefined == 0 and r.n_defined == 2 and r.mean_defined() == pytest.approx(expected)
  assert surface.hd95_per_case(
      [pred], [truth], skip_empty_slices="either", **kw).values[0] == pytest.approx(expected)

  r = surface.hd95_per_case([pred, clean_p], [truth, clean_t], skip_empty_slices="both", **kw)
  assert math.isnan(r.values[0]) and r.values[1] == pytest.approx(expected)
  np.testing.assert_array_equal(r.n_skipped_slices, [1, 0])
  np.testing.assert_array_equal(r.n_undefined_slices, [1, 0])
  np.testing.assert_array_equal(r.defined, [False, True])
  assert r.n_undefined == 1 and r.mean_defined() == pytest.approx(expected)

  r = surface.hd95_per_case([pred, clean_p], [truth, clean_t], skip_empty_slices=False, **kw)
  assert math.isnan(r.values[0]) and r.values[1] == pytest.approx(expected)
  np.testing.assert_array_equal(r.n_slices, [4, 2])
  np.testing.assert_array_equal(r.n_skipped_slices, [0, 0])
  np.testing.assert_array_equal(r.n_undefined_slices, [2, 0])
  assert r.n_undefined == 1


def test_per_slice_all_slices_skipped_is_undefined():
  pred = np.zeros((6, 6, 3), bool)
  truth = np.zeros((6, 6, 3), bool)
  truth[2:4, 2:4, :] = True
  r = surface.hd95_per_case(pred[None], truth[None], spacing=(1, 1, 1), per_slice=True,
                            skip_empty_slices=True)
  assert r.n_undefined == 1 and math.isnan(r.values[0]) and r.n_slices[0] == 0
  assert math.isnan(r.mean_defined())


def test_per_slice_matches_2d_function_per_slice():
  rng = np.random.default_rng(5)
  pred = np.stack([_random_mask(rng, (10, 9)) for _ in range(3)], axis=-1)
  truth = np.stack([_random_mask(rng, (10, 9)) for _ in range(3)], axis=-1)
  spacing = (0.4, 0.6, 5.0)
  for method in ("max_directed", "pooled"):
    r = surface.hd95_per_case([pred], [truth], spacing=spacing, per_slice=True, method=method)
    per_slice = [surface.hausdorff_distance(pred[..., k], truth[..., k], spacing=spacing[:2],
                                            method=method) for k in range(3)]
    assert r.values[0] == pytest.approx(np.mean(per_slice), rel=1e-12)
    asd = surface.average_surface_distance_per_case(
        [pred], [truth], spacing=spacing, per_slice=True)
    assert asd.values[0] == pytest.approx(np.mean([
        _ref_asd(pred[..., k], truth[..., k], spacing[:2], "pooled") for k in range(3)]))


def test_per_case_3d_counts_undefined_and_accepts_layouts():
  rng = np.random.default_rng(9)
  shape = (8, 9, 4)
  preds = np.stack([_random_mask(rng, shape) for _ in range(3)])
  truths = np.stack([_random_mask(rng, shape) for _ in range(3)])
  preds[1] = False  # undefined case
  spacing = (0.5, 0.5, 3.0)
  r = surface.hd95_per_case(preds, truths, spacing=spacing, method="pooled")
  assert r.n_slices is None and r.n_cases == 3
  assert r.n_undefined == 1 and r.n_defined == 2
  np.testing.assert_array_equal(r.defined, [True, False, True])
  for i in (0, 2):
    assert r.values[i] == pytest.approx(_ref_hd(preds[i], truths[i], spacing, 95, "pooled"))
  assert r.mean_defined() == pytest.approx(np.mean(r.values[[0, 2]]))
  # Per-case spacings and lists of differently shaped cases.
  per_case_sp = [(0.5, 0.5, 3.0), (1.0, 1.0, 1.0)]
  other = _random_mask(rng, (6, 5, 3))
  other_truth = other ^ (rng.random(other.shape) < 0.2)
  r2 = surface.hd95_per_case([preds[0], other], [truths[0], other_truth], spacing=per_case_sp)
  for i, (p, t) in enumerate([(preds[0], truths[0]), (other, other_truth)]):
    assert r2.values[i] == pytest.approx(_ref_hd(p, t, per_case_sp[i], 95, "max_directed"))
  assert np.isfinite(r2.values[1])
  asd = surface.average_surface_distance_per_case(preds, truths, spacing=spacing)
  assert asd.n_undefined == 1
  assert asd.values[0] == pytest.approx(_ref_asd(preds[0], truths[0], spacing, "pooled"))


# ---------------------------------------------------------------------------------------------
# medpy / MicroSegNet convention.


def _ref_medpy_hd95(a, b, spacing=None):
  """medpy ``metric.binary.hd95`` from its definition: XOR-erosion borders with the face
  (connectivity-1) structure, EDT of the complement of the other border, pooled percentile."""
  a, b = np.asarray(a, bool), np.asarray(b, bool)
  footprint = ndimage.generate_binary_structure(a.ndim, 1)
  border_a = a ^ ndimage.binary_erosion(a, structure=footprint, iterations=1)
  border_b = b ^ ndimage.binary_erosion(b, structure=footprint, iterations=1)
  d_ab = ndimage.distance_transform_edt(~border_b, sampling=spacing)[border_a]
  d_ba = ndimage.distance_transform_edt(~border_a, sampling=spacing)[border_b]
  return np.percentile(np.hstack((d_ab, d_ba)), 95)


def _ref_microsegnet_hd95(pred, truth, s):
  """The original per-slice loop: medpy hd95 in pixels over slices with both masks, times s."""
  total, num = 0.0, 0
  for k in range(pred.shape[-1]):
    if pred[..., k].sum() > 0 and truth[..., k].sum() > 0:
      num += 1
      total += _ref_medpy_hd95(pred[..., k], truth[..., k])
  return total * s / num


@pytest.mark.parametrize("ndim", [2, 3])
def test_pooled_face_connectivity_is_medpy_hd95(ndim):
  rng = np.random.default_rng(20 + ndim)
  shape = (13, 11) if ndim == 2 else (8, 9, 5)
  spacing = (0.3, 0.8) if ndim == 2 else (0.4, 0.7, 2.5)
  for i in range(5):
    a, b = _random_mask(rng, shape), _random_mask(rng, shape)
    if i == 0:
      a[0, :] = b[:, -1] = True  # touching the image border
    want = _ref_medpy_hd95(a, b, spacing)
    assert want == pytest.approx(_ref_hd(a, b, spacing, 95, "pooled", 1), rel=1e-12)
    got = surface.hausdorff_distance(a, b, spacing=spacing, method="pooled", connectivity=1)
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_array_equal(
        surface.surface_voxels(a, connectivity=1),
        a ^ ndimage.binary_erosion(a, structure=ndimage.generate_binary_structure(ndim, 1)))


def test_microsegnet_convention_hand_computed():
  # Slice 0: A one pixel, B a 1-pixel-wide segment of 10 starting at A (all its pixels are
  # surface): D_AB = [0], D_BA = [0, 1, ..., 9] s. Pooled [0, 0, 1, ..., 9]: position 9.5 -> 8.5 s;
  # max of the directed P95: position 8.55 of [0..9] -> 8.55 s. Slice 1: identical masks (0).
  # Slice 2: truth only; slice 3: both empty -- both skipped by the original rule.
  s = 0.033586
  pred = np.zeros((5, 14, 4), bool)
  truth = np.zeros((5, 14, 4), bool)
  pred[2, 2, 0] = True
  truth[2, 2:12, 0] = True
  pred[1:4, 3:8, 1] = truth[1:4, 3:8, 1] = True
  truth[1:3, 1:3, 2] = True
  spacing = (s, s, 2.0)
  r = surface.hd95_per_case([pred], [truth], spacing=spacing, **surface.MICROSEGNET_HD95)
  assert r.values[0] == pytest.approx((8.5 * s + 0.0) / 2, rel=1e-12)
  assert r.values[0] == pytest.approx(_ref_microsegnet_hd95(pred, truth, s), rel=1e-12)
  np.testing.assert_array_equal(r.n_slices, [2])
  np.testing.assert_array_equal(r.n_skipped_slices, [2])
  np.testing.assert_array_equal(r.n_undefined_slices, [0])
  kw = {**surface.MICROSEGNET_HD95, "method": "max_directed"}
  r_max = surface.hd95_per_case([pred], [truth], spacing=spacing, **kw)
  assert r_max.values[0] == pytest.approx((8.55 * s + 0.0) / 2, rel=1e-12)
  # Not skipping the truth-only slice makes the case undefined (REFERENCE default rule).
  kw = {**surface.MICROSEGNET_HD95, "skip_empty_slices": "both"}
  r_both = surface.hd95_per_case([pred], [truth], spacing=spacing, **kw)
  assert math.isnan(r_both.values[0]) and r_both.n_undefined_slices[0] == 1
  with pytest.raises(TypeError):
    surface.MICROSEGNET_HD95["method"] = "max_directed"  # read-only preset


def test_microsegnet_convention_matches_original_loop_and_dice_slices():
  rng = np.random.default_rng(31)
  s = 0.25
  preds, truths = [], []
  for _ in range(3):
    pred = np.stack([_random_mask(rng, (12, 10)) for _ in range(5)], axis=-1)
    truth = np.stack([_random_mask(rng, (12, 10)) for _ in range(5)], axis=-1)
    pred[..., 1] = False
    truth[..., 3] = False
    preds.append(pred)
    truths.append(truth)
  r = surface.hd95_per_case(preds, truths, spacing=(s, s, 3.0), **surface.MICROSEGNET_HD95)
  for i in range(3):
    assert r.values[i] == pytest.approx(_ref_microsegnet_hd95(preds[i], truths[i], s), rel=1e-12)
    dice = overlap.per_slice_dice(preds[i], truths[i], skip_empty_slices="either")
    assert int(dice.n_slices) == r.n_slices[i] == 3
  # Anisotropic in-plane spacing: medpy with voxelspacing on each slice.
  sp = (0.2, 0.45, 3.0)
  r = surface.hd95_per_case(preds, truths, spacing=sp, **surface.MICROSEGNET_HD95)
  for i in range(3):
    want = np.mean([_ref_medpy_hd95(preds[i][..., k], truths[i][..., k], sp[:2])
                    for k in (0, 2, 4)])
    assert r.values[i] == pytest.approx(want, rel=1e-12)


# ---------------------------------------------------------------------------------------------
# Validation.


@pytest.mark.parametrize("pred, truth, spacing, kwargs, match", [
    (np.zeros((4, 4)), np.zeros((4, 5)), (1, 1), {}, "same shape"),
    (np.zeros(4), np.zeros(4), (1,), {}, "2D or 3D"),
    (np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)), (1, 1, 1, 1), {}, "2D or 3D"),
    (np.zeros((0, 4)), np.zeros((0, 4)), (1, 1), {}, "empty arrays"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1), {}, "one per axis"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 0), {}, "finite and positive"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, -1), {}, "finite and positive"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, np.nan), {}, "finite and positive"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, np.inf), {}, "finite and positive"),
    (np.zeros((4, 4)), np.zeros((4, 4)), ("a", 1), {}, "spacing"),
    (np.full((4, 4), 0.5), np.zeros((4, 4)), (1, 1), {}, "binary mask"),
    (np.zeros((4, 4)), np.full((4, 4), 2), (1, 1), {}, "binary mask"),
    (np.zeros((4, 4)), np.full((4, 4), np.nan), (1, 1), {}, "binary mask"),
    (np.full((4, 4), "a"), np.zeros((4, 4)), (1, 1), {}, "dtype"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"method": "mean"}, "method"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"percentile": 101}, "percentile"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"percentile": -1}, "percentile"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"percentile": None}, "percentile"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"connectivity": 3}, "connectivity"),
    (np.zeros((4, 4)), np.zeros((4, 4)), (1, 1), {"connectivity": 0}, "connectivity"),
])
def test_hausdorff_validation(pred, truth, spacing, kwargs, match):
  with pytest.raises(ValueError, match=match):
    surface.hausdorff_distance(pred, truth, spacing=spacing, **kwargs)


def test_other_validation():
  m = np.zeros((4, 4), bool)
  with pytest.raises(ValueError, match="method"):
    surface.average_surface_distance(m, m, spacing=(1, 1), method="max_directed")
  with pytest.raises(ValueError, match="spacing"):
    surface.surface_distances(m, m, spacing=(1,))
  with pytest.raises(ValueError, match="2D or 3D"):
    surface.surface_voxels(np.zeros(3, bool))
  m3 = np.zeros((2, 4, 4, 3), bool)
  with pytest.raises(ValueError, match="2 predictions but 1"):
    surface.hd95_per_case(m3, m3[:1], spacing=(1, 1, 1))
  with pytest.raises(ValueError, match="no cases"):
    surface.hd95_per_case([], [], spacing=(1, 1, 1))
  with pytest.raises(ValueError, match="case 1: pred and truth must have the same shape"):
    surface.hd95_per_case([m3[0], m3[0]], [m3[0], m3[0, :3]], spacing=(1, 1, 1))
  with pytest.raises(ValueError, match="per_slice=True needs 3D"):
    surface.hd95_per_case([m], [m], spacing=(1, 1), per_slice=True)
  with pytest.raises(ValueError, match="only applies with per_slice"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), skip_empty_slices=True)
  with pytest.raises(ValueError, match="skip_empty_slices"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), per_slice=True, skip_empty_slices="some")
  with pytest.raises(ValueError, match="skip_empty_slices"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), per_slice=True, skip_empty_slices=1)
  with pytest.raises(ValueError, match="one per case"):
    surface.hd95_per_case(m3, m3, spacing=np.ones((3, 3)))
  with pytest.raises(ValueError, match="connectivity"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), per_slice=True, connectivity=3)
  with pytest.raises(ValueError, match="percentile"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), percentile=float("nan"))


# ---------------------------------------------------------------------------------------------
# surface= definitions: "monai" (face-connected voxels), "surface_distance" (corner-grid surfels).


def _ref_corner_surfels(mask):
  """Corner-grid surfels by explicit loops: corner i (per axis) sits between voxels i-1 and i.

  Returns the (n, ndim) corner indices and their neighbourhood codes, neighbour offset o in
  {0,1}^ndim having bit 2^(2^ndim - 1 - index(o)) (surface-distance's encoding kernel).
  """
  mask = np.asarray(mask, bool)
  ndim = mask.ndim
  offsets = list(itertools.product((0, 1), repeat=ndim))
  pts, codes = [], []
  for corner in itertools.product(*(range(n + 1) for n in mask.shape)):
    code = 0
    for index, o in enumerate(offsets):
      v = tuple(c - 1 + d for c, d in zip(corner, o))
      if all(0 <= x < n for x, n in zip(v, mask.shape)) and mask[v]:
        code |= 1 << (2 ** ndim - 1 - index)
    if code not in (0, 2 ** 2 ** ndim - 1):
      pts.append(corner)
      codes.append(code)
  return np.array(pts, np.float64).reshape(-1, ndim), np.array(codes, np.int64)


def _ref_weighted_directed(a, b, spacing):
  sp = np.asarray(spacing, np.float64)
  table = surface._surfel_measure_table(tuple(float(s) for s in sp))
  pa, ca = _ref_corner_surfels(a)
  pb, cb = _ref_corner_surfels(b)
  d = np.sqrt((((pa[:, None, :] - pb[None, :, :]) * sp) ** 2).sum(-1))
  return d.min(axis=1), d.min(axis=0), table[ca], table[cb]


def _ref_robust_percentile(d, w, q):
  """surface-distance's compute_robust_hausdorff for one direction, written out."""
  pairs = sorted(zip(d, w))
  total = sum(p[1] for p in pairs)
  acc = 0.0
  for k, (dist, area) in enumerate(pairs):
    acc += area
    if acc / total >= q / 100.0:
      return dist
  return pairs[-1][0]


def _box_area(shape, s):
  """Marching-cubes area of a solid box of ``shape`` voxels: faces, edges and 8 vertex cuts."""
  a, b, c = shape
  s0, s1, s2 = s
  faces = 2 * ((b - 1) * (c - 1) * s1 * s2 + (a - 1) * (c - 1) * s0 * s2
               + (a - 1) * (b - 1) * s0 * s1)
  edges = 4 * 0.5 * ((c - 1) * s2 * math.hypot(s0, s1) + (b - 1) * s1 * math.hypot(s0, s2)
                     + (a - 1) * s0 * math.hypot(s1, s2))
  vertices = math.sqrt((s1 * s2) ** 2 + (s0 * s2) ** 2 + (s0 * s1) ** 2)
  return faces + edges + vertices


@pytest.mark.parametrize("shape,spacing", [((1, 1, 1), (1, 1, 1)), ((1, 1, 1), (0.5, 0.8, 3.0)),
                                           ((3, 4, 2), (0.5, 0.8, 3.0)), ((5, 1, 2), (2, 1, 0.3))])
def test_surfel_area_of_boxes_by_hand(shape, spacing):
  m = np.zeros(tuple(n + 3 for n in shape), bool)
  m[tuple(slice(1, 1 + n) for n in shape)] = True
  _, w = surface.surface_points(m, spacing=spacing, surface="surface_distance")
  np.testing.assert_allclose(w.sum(), _box_area(shape, spacing), rtol=1e-12)


@pytest.mark.parametrize("shape,spacing", [((1, 1), (1, 1)), ((1, 1), (0.5, 2.0)),
                                           ((3, 5), (0.7, 2.5)), ((4, 1), (3.0, 0.4))])
def test_contour_length_of_rectangles_by_hand(shape, spacing):
  # Octagon through the edge midpoints: straight sides plus four half diagonals.
  h, w = shape
  s0, s1 = spacing
  m = np.zeros((h + 2, w + 3), bool)
  m[1:1 + h, 2:2 + w] = True
  expected = 2 * (h - 1) * s0 + 2 * (w - 1) * s1 + 2 * math.hypot(s0, s1)
  pts, weights = surface.surface_points(m, spacing=spacing, surface="surface_distance")
  np.testing.assert_allclose(weights.sum(), expected, rtol=1e-12)
  assert pts.shape == (2 * (h + 1) + 2 * (w + 1) - 4, 2)
  np.testing.assert_array_equal(pts.min(axis=0), [0.5, 1.5])  # half a voxel off the centres


def test_contour_length_table_saddles_and_symmetry():
  s = (0.7, 2.5)
  t = surface._contour_length_table(s)
  half_diag = 0.5 * math.hypot(*s)
  assert t[0] == t[15] == 0
  np.testing.assert_allclose(t[[0b0110, 0b1001]], 2 * half_diag)
  np.testing.assert_allclose(t[[0b0011, 0b1100]], s[1])   # a row inside: cut along axis 1
  np.testing.assert_allclose(t[[0b0101, 0b1010]], s[0])
  np.testing.assert_allclose(t, t[::-1])                   # complement: same contour


def test_surfel_area_table_properties():
  t = surface._surfel_measure_table((0.5, 0.8, 3.0))
  assert t.shape == (256,) and t[0] == t[255] == 0
  assert np.all(t[1:255] > 0)
  np.testing.assert_allclose(t, t[::-1], rtol=1e-12)      # complement: same surface
  iso = surface._surfel_measure_table((1.0, 1.0, 1.0))
  np.testing.assert_allclose(iso[0b00001111], 1.0)       # a face of the cell inside: unit square
  np.testing.assert_allclose(iso[1], math.sqrt(3) / 8)    # a corner cut: triangle of half-edges
  np.testing.assert_allclose(surface._surfel_measure_table((2.0, 2.0, 2.0)), 4 * iso)


@pytest.mark.parametrize("ndim", [2, 3])
def test_surface_distance_definition_matches_brute_force(ndim):
  rng = np.random.default_rng(40 + ndim)
  shape = (7, 6) if ndim == 2 else (6, 5, 4)
  spacings = [(0.7, 2.3), (1.0, 1.0)] if ndim == 2 else [(0.6, 0.9, 2.7), (1.0, 1.0, 1.0)]
  for trial in range(6):
    a, b = _random_mask(rng, shape), _random_mask(rng, shape)
    for sp in spacings:
      d_ab, d_ba, w_a, w_b = _ref_weighted_directed(a, b, sp)
      got = surface.surface_distances(a, b, spacing=sp, surface="surface_distance",
                                      return_weights=True)
      for x, y in zip(got, (d_ab, d_ba, w_a, w_b)):
        np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
      for q in (50, 95, 100):
        ref = max(_ref_robust_percentile(d_ab, w_a, q), _ref_robust_percentile(d_ba, w_b, q))
        np.testing.assert_allclose(surface.hausdorff_distance(
            a, b, spacing=sp, percentile=q, surface="surface_distance"), ref, rtol=1e-12)
      pooled = (np.dot(w_a, d_ab) + np.dot(w_b, d_ba)) / (w_a.sum() + w_b.sum())
      directed = 0.5 * (np.dot(w_a, d_ab) / w_a.sum() + np.dot(w_b, d_ba) / w_b.sum())
      np.testing.assert_allclose(surface.average_surface_distance(
          a, b, spacing=sp, surface="surface_distance"), pooled, rtol=1e-12)
      np.testing.assert_allclose(surface.average_surface_distance(
          a, b, spacing=sp, surface="surface_distance", method="mean_directed"), directed,
          rtol=1e-12)
      for tau in (0.0, 1.0, 2.0):
        nsd = (w_a[d_ab <= tau].sum() + w_b[d_ba <= tau].sum()) / (w_a.sum() + w_b.sum())
        np.testing.assert_allclose(surface.normalized_surface_dice(
            a, b, spacing=sp, tolerance_mm=tau), nsd, rtol=1e-12)


@pytest.mark.parametrize("algorithm", ["separable", "edt", "kdtree"])
def test_surfel_distances_with_each_algorithm(algorithm):
  rng = np.random.default_rng(7)
  a, b = _random_mask(rng, (9, 8, 7)), _random_mask(rng, (9, 8, 7))
  sp = np.array([0.6, 0.9, 2.7])
  ref = _ref_weighted_directed(a, b, sp)
  got = surface._weighted_distances(a, b, sp, None, algorithm)
  for x, y in zip(got, ref):
    np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)


def test_two_single_voxels_on_the_corner_grid():
  # Voxels 3 apart along axis 0: A's corners at x=+0.5 are 2 steps from B's nearest corners,
  # those at x=-0.5 are 3 steps (equal weights): HD (any q > 50) = 3 s0, ASD = 2.5 s0; the voxel
  # centres are 3 s0 apart everywhere.
  a = np.zeros((6, 3, 3), bool)
  b = np.zeros((6, 3, 3), bool)
  a[1, 1, 1] = b[4, 1, 1] = True
  sp = (0.7, 1.0, 2.0)
  for q in (95, 100):
    assert surface.hausdorff_distance(a, b, spacing=sp, percentile=q,
                                      surface="surface_distance") == pytest.approx(2.1)
  assert surface.hausdorff_distance(a, b, spacing=sp, percentile=50,
                                    surface="surface_distance") == pytest.approx(1.4)
  assert surface.average_surface_distance(a, b, spacing=sp,
                                          surface="surface_distance") == pytest.approx(1.75)
  assert surface.average_surface_distance(a, b, spacing=sp) == pytest.approx(2.1)
  assert surface.normalized_surface_dice(a, b, spacing=sp, tolerance_mm=1.4) == pytest.approx(0.5)
  assert surface.normalized_surface_dice(a, b, spacing=sp, tolerance_mm=1.39) == 0.0
  assert surface.normalized_surface_dice(a, b, spacing=sp, tolerance_mm=2.1) == pytest.approx(1.0)
  assert surface.normalized_surface_dice(a, b, spacing=sp, tolerance_mm=2.0,
                                         surface="monai") == 0.0


def test_definitions_differ_on_anisotropic_pairs():
  # A sphere-ish blob against a shifted one: the corner grid changes the distances, not just the
  # weights (the surface.py docstring's correction).
  z, y, x = np.mgrid[:12, :12, :12]
  a = (z - 6) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 <= 16
  b = (z - 6.6) ** 2 + (y - 5.5) ** 2 + (x - 6) ** 2 <= 12
  sp = (3.0, 0.6, 0.6)
  values = {s: (surface.hausdorff_distance(a, b, spacing=sp, percentile=90, surface=s),
                surface.average_surface_distance(a, b, spacing=sp, surface=s))
            for s in ("jaxseg", "monai", "surface_distance")}
  np.testing.assert_allclose(values["jaxseg"][0], 3.0)
  np.testing.assert_allclose(values["surface_distance"][0], math.hypot(0.6, 0.6))
  assert len(set(round(v[1], 9) for v in values.values())) == 3
  d_vox = surface.surface_distances(a, b, spacing=sp, connectivity=1)
  d_sd = surface.surface_distances(a, b, spacing=sp, surface="surface_distance")
  assert d_vox[0].size != d_sd[0].size


def test_monai_surface_is_face_connectivity():
  rng = np.random.default_rng(11)
  for ndim, shape in ((2, (9, 8)), (3, (7, 6, 5))):
    a, b = _random_mask(rng, shape), _random_mask(rng, shape)
    sp = (0.7, 1.9, 2.5)[:ndim]
    for f, kw in ((surface.hausdorff_distance, {}), (surface.average_surface_distance, {}),
                  (surface.normalized_surface_dice, {"tolerance_mm": 1.5})):
      assert f(a, b, spacing=sp, surface="monai", **kw) == f(
          a, b, spacing=sp, surface="jaxseg", connectivity=1, **kw)
      assert f(a, b, spacing=sp, surface="monai", connectivity=1, **kw) == f(
          a, b, spacing=sp, surface="monai", **kw)
    pts, w = surface.surface_points(a, spacing=sp, surface="monai")
    np.testing.assert_array_equal(pts, np.argwhere(_ref_surface(a, 1)))
    np.testing.assert_array_equal(w, 1.0)


def test_unweighted_nsd_by_hand():
  # Squares 4x4 and 4x4 shifted by one row (spacing 1): face-connected surfaces of 12 voxels
  # each; the rows that are 1 apart... checked against the brute-force definition.
  a = _square((8, 8), (1, 1), 4)
  b = _square((8, 8), (2, 1), 4)
  d_ab, d_ba = _ref_directed(a, b, (1, 1), 1)
  for tau in (0, 0.5, 1, 2):
    expected = (np.sum(d_ab <= tau) + np.sum(d_ba <= tau)) / (d_ab.size + d_ba.size)
    assert surface.normalized_surface_dice(a, b, spacing=(1, 1), tolerance_mm=tau,
                                           surface="monai") == pytest.approx(expected)
  assert surface.normalized_surface_dice(a, b, spacing=(1, 1), tolerance_mm=1,
                                         surface="monai") == 1.0
  assert surface.normalized_surface_dice(a, a, spacing=(1, 1), tolerance_mm=0) == 1.0


@pytest.mark.parametrize("srf", ["jaxseg", "monai", "surface_distance"])
def test_empty_masks_for_every_definition(srf):
  e = np.zeros((5, 6, 4), bool)
  m = e.copy()
  m[2, 3, 1] = True
  sp = (0.5, 0.9, 2.0)
  for x, y in ((e, e), (e, m), (m, e)):
    assert math.isnan(surface.hausdorff_distance(x, y, spacing=sp, surface=srf))
    assert math.isnan(surface.average_surface_distance(x, y, spacing=sp, surface=srf))
  assert math.isnan(surface.normalized_surface_dice(e, e, spacing=sp, tolerance_mm=1,
                                                    surface=srf))
  assert surface.normalized_surface_dice(e, m, spacing=sp, tolerance_mm=1, surface=srf) == 0.0
  assert surface.normalized_surface_dice(m, e, spacing=sp, tolerance_mm=1e9, surface=srf) == 0.0
  d_ab, d_ba, w_a, w_b = surface.surface_distances(m, e, spacing=sp, surface=srf,
                                                   return_weights=True)
  assert np.all(np.isinf(d_ab)) and d_ba.size == 0 and w_b.size == 0 and w_a.size == d_ab.size
  # Single voxels, identical: everything 0 / 1.
  assert surface.hausdorff_distance(m, m, spacing=sp, surface=srf) == 0.0
  assert surface.normalized_surface_dice(m, m, spacing=sp, tolerance_mm=0, surface=srf) == 1.0


def test_full_foreground_and_border_on_the_corner_grid():
  # A full mask: its surfels are the corners of the image border (outside is background).
  m = np.ones((3, 4), bool)
  pts, w = surface.surface_points(m, spacing=(1, 2), surface="surface_distance")
  assert pts.shape[0] == 2 * 4 + 2 * 5 - 4
  np.testing.assert_allclose(w.sum(), 2 * 2 * 1 + 2 * 3 * 2 + 2 * math.hypot(1, 2))
  assert surface.hausdorff_distance(m, m, spacing=(1, 2), surface="surface_distance") == 0.0


def test_nsd_per_case_counts_undefined_and_per_slice():
  rng = np.random.default_rng(5)
  preds = [_random_mask(rng, (6, 6, 3)) for _ in range(3)] + [np.zeros((6, 6, 3), bool)]
  truths = [_random_mask(rng, (6, 6, 3)) for _ in range(3)] + [np.zeros((6, 6, 3), bool)]
  sp = (0.8, 0.8, 3.0)
  r = surface.normalized_surface_dice_per_case(preds, truths, spacing=sp, tolerance_mm=1.0)
  assert r.n_cases == 4 and r.n_undefined == 1 and math.isnan(r.values[3])
  for i in range(3):
    assert r.values[i] == surface.normalized_surface_dice(preds[i], truths[i], spacing=sp,
                                                          tolerance_mm=1.0)
  rs = surface.normalized_surface_dice_per_case(preds[:1], truths[:1], spacing=sp,
                                                tolerance_mm=1.0, per_slice=True,
                                                skip_empty_slices="both")
  per = [surface.normalized_surface_dice(preds[0][..., k], truths[0][..., k], spacing=sp[:2],
                                         tolerance_mm=1.0) for k in range(3)]
  per = [v for v, k in zip(per, range(3)) if preds[0][..., k].any() or truths[0][..., k].any()]
  np.testing.assert_allclose(rs.values[0], np.mean(per))
  for srf in ("jaxseg", "monai", "surface_distance"):
    hd = surface.hd95_per_case(preds, truths, spacing=sp, surface=srf)
    asd = surface.average_surface_distance_per_case(preds, truths, spacing=sp, surface=srf,
                                                    method="mean_directed")
    for i in range(3):
      assert hd.values[i] == surface.hausdorff_distance(preds[i], truths[i], spacing=sp,
                                                        surface=srf)
      assert asd.values[i] == surface.average_surface_distance(
          preds[i], truths[i], spacing=sp, surface=srf, method="mean_directed")
    assert hd.n_undefined == 1 and asd.n_undefined == 1


def test_bf16_and_float16_inputs_are_computed_in_float64():
  jnp = pytest.importorskip("jax.numpy")
  rng = np.random.default_rng(9)
  a, b = _random_mask(rng, (8, 7, 5)), _random_mask(rng, (8, 7, 5))
  sp = (0.75, 0.5, 2.5)  # exact in bfloat16
  for srf in ("jaxseg", "monai", "surface_distance"):
    ref = surface.hausdorff_distance(a, b, spacing=sp, surface=srf)
    for cast in (lambda m: jnp.asarray(m, jnp.bfloat16), lambda m: m.astype(np.float16)):
      assert surface.hausdorff_distance(cast(a), cast(b), spacing=sp, surface=srf) == ref
    assert surface.hausdorff_distance(a, b, spacing=jnp.asarray(sp, jnp.bfloat16),
                                      surface=srf) == ref
    got = surface.normalized_surface_dice(jnp.asarray(a, jnp.bfloat16), b, spacing=sp,
                                          tolerance_mm=1.0, surface=srf)
    assert isinstance(got, float)
    assert got == surface.normalized_surface_dice(a, b, spacing=sp, tolerance_mm=1.0,
                                                  surface=srf)
  d = surface.surface_distances(jnp.asarray(a, jnp.bfloat16), b, spacing=sp)
  assert d[0].dtype == np.float64
  with pytest.raises(ValueError, match="binary"):
    surface.hausdorff_distance(jnp.asarray(a * 0.5, jnp.bfloat16), b, spacing=sp)


def test_surface_switch_validation():
  m = np.zeros((4, 4), bool)
  with pytest.raises(ValueError, match="surface must be one of"):
    surface.hausdorff_distance(m, m, spacing=(1, 1), surface="medpy")
  with pytest.raises(ValueError, match="connectivity must be None or 1"):
    surface.hausdorff_distance(m, m, spacing=(1, 1), surface="monai", connectivity=2)
  with pytest.raises(ValueError, match="connectivity does not apply"):
    surface.average_surface_distance(m, m, spacing=(1, 1), surface="surface_distance",
                                     connectivity=1)
  for bad in (-1, float("nan"), float("inf"), "1", None):
    with pytest.raises(ValueError, match="tolerance_mm"):
      surface.normalized_surface_dice(m, m, spacing=(1, 1), tolerance_mm=bad)
  with pytest.raises(ValueError, match="surface must be one of"):
    surface.surface_points(m, spacing=(1, 1), surface="x")
  m3 = np.zeros((2, 4, 4, 3), bool)
  with pytest.raises(ValueError, match="connectivity must be None or 1"):
    surface.hd95_per_case(m3, m3, spacing=(1, 1, 1), per_slice=True, surface="monai",
                          connectivity=2)
  with pytest.raises(ValueError, match="tolerance_mm"):
    surface.normalized_surface_dice_per_case(m3, m3, spacing=(1, 1, 1), tolerance_mm=-2)
