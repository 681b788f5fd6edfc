"""Tests for jaxseg.data.preprocess: resampling, intensity normalisation, splits, NIfTI I/O."""

import os
import struct

from absl.testing import parameterized
import chex
import nibabel as nib
import numpy as np
import pytest

from jaxseg import hierarchy
from jaxseg.data import distance, preprocess
from jaxseg.data.phantoms import common
from jaxseg.metrics import surface
from jaxseg.report import figures


def _voxel_to_input(m, t, s):
  """Input voxel index sampled by output voxel j (the documented convention), float64."""
  return (np.arange(m) + 0.5) * (t / s) - 0.5


def _rotation(angle):
  c, s = np.cos(angle), np.sin(angle)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class ResampleTest(chex.TestCase):

  @parameterized.parameters(
      ((10, 4, 4), (1, 1, 1), (2, 1, 1), (5, 4, 4)),
      ((5, 4, 3), (1, 1, 1), (2, 2, 2), (3, 2, 2)),  # 2.5 -> 3, 1.5 -> 2: halves round up.
      ((24, 24, 5), (0.5, 0.5, 3.6), (0.75, 0.75, 3.0), (16, 16, 6)),
      ((3, 3, 2), (3.0, 3.0, 3.0), (1.0, 1.0, 1.0), (9, 9, 6)),
      ((4, 4, 1), (1.0, 1.0, 1.0), (10.0, 10.0, 10.0), (1, 1, 1)),  # never below 1.
  )
  def test_output_shape(self, shape, spacing, target, expected):
    vol = np.zeros(shape, np.float32)
    self.assertEqual(preprocess.resample(vol, spacing, target, order=1).shape, expected)
    self.assertEqual(preprocess.resample(vol, spacing, target, order=0).shape, expected)
    self.assertEqual(preprocess.resampled_shape(shape, spacing, target), expected)

  def test_explicit_shape(self):
    vol = np.random.default_rng(0).normal(size=(6, 6, 4))
    out = preprocess.resample(vol, (1, 1, 1), (2, 2, 2), order=1, shape=(4, 3, 2))
    self.assertEqual(out.shape, (4, 3, 2))

  def test_identity(self):
    vol = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    np.testing.assert_array_equal(preprocess.resample(vol, (1, 2, 3), (1, 2, 3), order=1), vol)
    lab = np.random.default_rng(1).integers(0, 9, size=(5, 6, 7)).astype(np.uint8)
    out = preprocess.resample(lab, (1, 2, 3), (1, 2, 3), order=0)
    np.testing.assert_array_equal(out, lab)
    self.assertEqual(out.dtype, np.uint8)

  def test_nearest_integer_downsampling_picks_centres(self):
    # Ratio 3: output voxel j samples input index (j + 1/2) * 3 - 1/2 = 3 j + 1 exactly.
    lab = np.random.default_rng(0).integers(0, 9, size=(9, 12, 6)).astype(np.uint8)
    out = preprocess.resample(lab, (1, 1, 1), (3, 3, 3), order=0)
    np.testing.assert_array_equal(out, lab[1::3, 1::3, 1::3])

  def test_nearest_integer_upsampling_repeats(self):
    # Ratio 1/3: indices (j + 1/2) / 3 - 1/2 round to j // 3: each voxel is repeated 3 times.
    lab = np.random.default_rng(0).integers(0, 9, size=(4, 3, 2)).astype(np.int16)
    out = preprocess.resample(lab, (3, 3, 3), (1, 1, 1), order=0)
    expected = np.repeat(np.repeat(np.repeat(lab, 3, 0), 3, 1), 3, 2)
    np.testing.assert_array_equal(out, expected)
    self.assertEqual(out.dtype, np.int16)

  @parameterized.parameters(
      ((0.5, 0.7, 3.6), (0.75, 0.75, 3.0)),
      ((1.0, 1.0, 1.0), (1.37, 0.61, 2.2)),
  )
  def test_nearest_keeps_label_values(self, spacing, target):
    rng = np.random.default_rng(0)
    lab = rng.choice(np.array([0, 2, 5, 8], np.uint8), size=(17, 13, 7))
    out = preprocess.resample(lab, spacing, target, order=0)
    self.assertEqual(out.dtype, np.uint8)
    self.assertTrue(set(np.unique(out)) <= {0, 2, 5, 8})
    # Every output voxel copies the input voxel nearest to where it samples.
    idx = [
        np.clip(np.floor(_voxel_to_input(m, t, s) + 0.5).astype(int), 0, n - 1)
        for n, m, s, t in zip(lab.shape, out.shape, spacing, target)
    ]
    np.testing.assert_array_equal(out, lab[np.ix_(*idx)])

  @parameterized.parameters(
      ((1.0, 1.0, 1.0), (1.5, 0.7, 2.0)),
      ((0.5, 0.5, 3.6), (0.75, 0.75, 3.0)),
      ((2.0, 1.0, 3.0), (1.0, 3.0, 3.0)),
  )
  def test_linear_is_exact_on_a_ramp(self, spacing, target):
    shape = (13, 11, 6)
    coef = np.array([0.7, -1.3, 2.1])
    grid = np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")
    ramp = 5.0 + sum(c * g for c, g in zip(coef, grid))
    out = preprocess.resample(ramp, spacing, target, order=1)
    self.assertEqual(out.dtype, np.float64)
    # Outside the input, samples take the nearest edge value: the ramp at the clipped index.
    coords = [
        np.clip(_voxel_to_input(m, t, s), 0, n - 1)
        for n, m, s, t in zip(shape, out.shape, spacing, target)
    ]
    cgrid = np.meshgrid(*coords, indexing="ij")
    expected = 5.0 + sum(c * g for c, g in zip(coef, cgrid))
    np.testing.assert_allclose(out, expected, atol=1e-10)

  def test_linear_returns_float32_for_integer_input(self):
    vol = np.arange(64, dtype=np.int16).reshape(4, 4, 4)
    out = preprocess.resample(vol, (1, 1, 1), (2, 2, 2), order=1)
    self.assertEqual(out.dtype, np.float32)

  def test_world_positions_match_through_resample_affine(self):
    # An image whose value is a linear function of the world position: after resampling, the
    # value at each output voxel must be that function at the voxel's world position given by
    # the new affine (where the sample lies inside the input).
    spacing = np.array([0.5, 0.8, 3.6])
    target = np.array([0.75, 0.75, 3.0])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.3) @ np.diag(spacing) @ np.diag([-1, 1, 1])
    affine[:3, 3] = [12.0, -40.0, 7.5]
    shape = (20, 15, 6)
    w = np.array([0.3, -0.2, 0.05])
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    image = world @ w + 1.0
    out = preprocess.resample(image, spacing, target, order=1)
    new_affine = preprocess.resample_affine(affine, spacing, target)
    oidx = np.stack(np.meshgrid(*[np.arange(n) for n in out.shape], indexing="ij"), -1)
    oworld = oidx @ new_affine[:3, :3].T + new_affine[:3, 3]
    inside = np.ones(out.shape, bool)
    for ax, (n, m, s, t) in enumerate(zip(shape, out.shape, spacing, target)):
      x = _voxel_to_input(m, t, s)
      ok = (x >= 0) & (x <= n - 1)
      inside &= np.expand_dims(ok, [a for a in range(3) if a != ax])
    self.assertGreater(inside.sum(), out.size // 2)
    np.testing.assert_allclose(out[inside], (oworld @ w + 1.0)[inside], atol=1e-9)

  @parameterized.parameters(
      dict(spacing=(0, 1, 1)),
      dict(spacing=(-1, 1, 1)),
      dict(spacing=(np.nan, 1, 1)),
      dict(spacing=(1, 1)),
      dict(target=(1, np.inf, 1)),
      dict(order=6),
      dict(order=-1),
      dict(shape=(2, 2)),
  )
  def test_bad_arguments(self, spacing=(1, 1, 1), target=(1, 1, 1), order=1, shape=None):
    with self.assertRaises(ValueError):
      preprocess.resample(np.zeros((4, 4, 4)), spacing, target, order=order, shape=shape)

  def test_empty_volume(self):
    with self.assertRaisesRegex(ValueError, "non-empty"):
      preprocess.resample(np.zeros((0, 4, 4)), (1, 1, 1), (1, 1, 1), order=1)


class ResampleAffineTest(chex.TestCase):

  @parameterized.parameters(0.0, 0.4)
  def test_voxel_centres(self, angle):
    spacing = np.array([0.6, 0.6, 3.6])
    target = np.array([0.75, 0.75, 3.0])
    affine = np.eye(4)
    affine[:3, :3] = _rotation(angle) @ np.diag(spacing)
    affine[:3, 3] = [-100.0, 20.0, 3.0]
    new = preprocess.resample_affine(affine, spacing, target)
    # World position of output voxel j == world position of input point x_in(j).
    j = np.array([[0, 0, 0], [1, 2, 3], [7, 0, 5]], np.float64)
    x_in = (j + 0.5) * (target / spacing) - 0.5
    w_out = j @ new[:3, :3].T + new[:3, 3]
    w_in = x_in @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(w_out, w_in, atol=1e-12)
    # Columns have the target length; the bottom row is untouched.
    np.testing.assert_allclose(np.linalg.norm(new[:3, :3], axis=0), target)
    np.testing.assert_array_equal(new[3], [0, 0, 0, 1])

  def test_hand_computed(self):
    # spacing 1 -> 2 along x: columns doubled, origin moves by half an input voxel.
    new = preprocess.resample_affine(np.eye(4), (1, 1, 1), (2, 1, 1))
    expected = np.diag([2.0, 1.0, 1.0, 1.0])
    expected[0, 3] = 0.5
    np.testing.assert_allclose(new, expected)

  def test_identity(self):
    a = np.arange(16, dtype=np.float64).reshape(4, 4)
    a[3] = [0, 0, 0, 1]
    np.testing.assert_allclose(preprocess.resample_affine(a, (1, 2, 3), (1, 2, 3)), a)

  def test_bad_affine(self):
    with self.assertRaisesRegex(ValueError, "4x4"):
      preprocess.resample_affine(np.eye(3), (1, 1, 1), (1, 1, 1))
    bad = np.eye(4)
    bad[0, 0] = np.nan
    with self.assertRaisesRegex(ValueError, "non-finite"):
      preprocess.resample_affine(bad, (1, 1, 1), (1, 1, 1))


class ResampleCaseTest(chex.TestCase):

  def test_case(self):
    rng = np.random.default_rng(0)
    image = rng.normal(size=(24, 20, 5)).astype(np.float32)
    label = rng.integers(0, 9, size=(24, 20, 5)).astype(np.uint8)
    spacing, target = (0.5, 0.6, 3.6), (0.75, 0.75, 3.0)
    affine = np.diag([0.5, 0.6, 3.6, 1.0])
    img, lab, sp, aff = preprocess.resample_case(image, label, spacing, affine, target)
    self.assertEqual(img.shape, (16, 16, 6))
    self.assertEqual(lab.shape, img.shape)
    self.assertEqual(img.dtype, np.float32)
    self.assertEqual(lab.dtype, np.uint8)
    np.testing.assert_array_equal(sp, target)
    np.testing.assert_allclose(aff, preprocess.resample_affine(affine, spacing, target))
    np.testing.assert_array_equal(lab, preprocess.resample(label, spacing, target, order=0))
    np.testing.assert_allclose(img, preprocess.resample(image, spacing, target, order=1))

  def test_no_label(self):
    out = preprocess.resample_case(np.zeros((4, 4, 4)), None, (1, 1, 1), np.eye(4), (2, 2, 2))
    self.assertIsNone(out[1])
    self.assertEqual(out[0].shape, (2, 2, 2))

  def test_shape_mismatch(self):
    with self.assertRaisesRegex(ValueError, "label shape"):
      preprocess.resample_case(
          np.zeros((4, 4, 4)), np.zeros((4, 4, 3)), (1, 1, 1), np.eye(4), (1, 1, 1)
      )
    with self.assertRaisesRegex(ValueError, "3D"):
      preprocess.resample_case(np.zeros((4, 4)), None, (1, 1, 1), np.eye(4), (1, 1, 1))


def _world(affine, shape):
  """World coordinates (3, *shape) of the voxel centres."""
  idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
  return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape((3,) + tuple(shape))


class ResampleToReferenceTest(chex.TestCase):

  def test_linear_is_exact_on_a_world_ramp(self):
    # Source: a 2 x 2 x 3 mm grid (flipped x, shifted); reference: 0.5 x 0.5 x 3 mm, as in PI-CAI.
    src_aff = np.diag([-2.0, 2.0, 3.0, 1.0])
    src_aff[:3, 3] = [60.0, -82.0, 12.0]
    ref_aff = np.diag([-0.5, 0.5, 3.0, 1.0])
    ref_aff[:3, 3] = [60.0, -80.0, 12.0]
    ramp = lambda w: 1000.0 + 10.0 * w[0] + 5.0 * w[1] + 2.0 * w[2]
    src = ramp(_world(src_aff, (8, 8, 6))).astype(np.float32)
    out = preprocess.resample_to_reference(
        src, src_aff, reference_shape=(30, 20, 6), reference_affine=ref_aff, order=1, cval=-1.0)
    self.assertEqual(out.dtype, np.float32)
    self.assertEqual(out.shape, (30, 20, 6))
    expected = ramp(_world(ref_aff, (30, 20, 6)))
    # Reference voxels i >= 29 (x_w < 46) are outside the source's field of view: cval.
    inside = np.zeros(out.shape, bool)
    inside[:29] = True
    np.testing.assert_allclose(out[inside], expected[inside], rtol=1e-5)
    np.testing.assert_array_equal(out[~inside], -1.0)

  def test_nearest_and_identity(self):
    src_aff = np.diag([2.0, 2.0, 3.0, 1.0])
    ref_aff = np.diag([1.0, 1.0, 3.0, 1.0])
    labels = np.zeros((4, 4, 2), np.uint8)
    labels[1:3, 1:3, :] = 2
    labels[0, 0, 0] = 1
    out = preprocess.resample_to_reference(
        labels, src_aff, reference_shape=(8, 8, 2), reference_affine=ref_aff, order=0)
    self.assertEqual(out.dtype, np.uint8)
    self.assertLessEqual(set(np.unique(out).tolist()), {0, 1, 2})
    # Reference voxel j sits at source index j / 2: even j hit source voxels exactly.
    np.testing.assert_array_equal(out[::2, ::2], labels)
    same = preprocess.resample_to_reference(
        labels, src_aff, reference_shape=(4, 4, 2), reference_affine=src_aff + 1e-6, order=0)
    np.testing.assert_array_equal(same, labels)
    self.assertIsNot(same, labels)
    with self.assertRaisesRegex(ValueError, "order"):
      preprocess.resample_to_reference(
          labels, src_aff, reference_shape=(8, 8, 2), reference_affine=ref_aff, order=3)
    with self.assertRaisesRegex(ValueError, "singular"):
      preprocess.resample_to_reference(
          labels, np.zeros((4, 4)), reference_shape=(8, 8, 2), reference_affine=ref_aff,
          order=0)
    with self.assertRaisesRegex(ValueError, "3D"):
      preprocess.resample_to_reference(
          labels[0], src_aff, reference_shape=(8, 8, 2), reference_affine=ref_aff, order=0)

  def test_agrees_with_resample_inside_the_field_of_view(self):
    # The grid of `resample` (affine `resample_affine`) is a reference grid like any other:
    # wherever it samples inside the input, both give the same linear interpolation.
    rng = np.random.default_rng(3)
    vol = rng.normal(size=(12, 10, 5)).astype(np.float32)
    spacing, target = (0.5, 0.6, 3.0), (0.7, 0.45, 2.0)
    affine = np.diag(list(spacing) + [1.0])
    affine[:3, 3] = [4.0, -3.0, 7.0]
    want = preprocess.resample(vol, spacing, target, order=1)
    got = preprocess.resample_to_reference(
        vol, affine, reference_shape=want.shape,
        reference_affine=preprocess.resample_affine(affine, spacing, target), order=1)
    inside = np.ones(want.shape, bool)
    for axis, (n, m) in enumerate(zip(vol.shape, want.shape)):
      x = _voxel_to_input(m, target[axis], spacing[axis])
      keep = (x >= 0) & (x <= n - 1)
      inside &= np.expand_dims(keep, [a for a in range(3) if a != axis])
    self.assertGreater(inside.mean(), 0.5)
    np.testing.assert_allclose(got[inside], want[inside], rtol=1e-5, atol=1e-5)


class CenterCropOrPadTest(chex.TestCase):

  def test_crop_pad_and_affine(self):
    vol = np.arange(6 * 5 * 3).reshape(6, 5, 3)
    aff = np.diag([-0.5, 0.5, 3.0, 1.0])
    aff[:3, 3] = [10.0, -20.0, 5.0]
    out, new_aff = preprocess.center_crop_or_pad(vol, (4, 7, 3), affine=aff)
    self.assertEqual(out.shape, (4, 7, 3))
    # x: crop start (6 - 4) // 2 = 1; y: pad start (5 - 7) // 2 = -1 (one zero row each side).
    np.testing.assert_array_equal(out[:, 1:6], vol[1:5])
    np.testing.assert_array_equal(out[:, 0], 0)
    np.testing.assert_array_equal(out[:, 6], 0)
    # The world position of every kept voxel is unchanged.
    np.testing.assert_allclose(new_aff @ [0, 1, 0, 1], aff @ [1, 0, 0, 1])
    self.assertIsNone(preprocess.center_crop_or_pad(vol, (4, 7, 3))[1])

  def test_odd_sizes_and_channels(self):
    vol = np.arange(6 * 5 * 3).reshape(6, 5, 3)
    # Odd padding: start (3 - 6) // 2 = -2, i.e. two voxels before and one after.
    odd, _ = preprocess.center_crop_or_pad(vol[..., None], (6, 5, 6), fill=-1)
    self.assertEqual(odd.shape, (6, 5, 6, 1))
    np.testing.assert_array_equal(odd[:, :, 2:5, 0], vol)
    self.assertTrue(np.all(odd[:, :, [0, 1, 5]] == -1))
    # Odd cropping: start (5 - 2) // 2 = 1, i.e. one voxel removed before and two after.
    np.testing.assert_array_equal(preprocess.center_crop_or_pad(vol, (6, 2, 3))[0], vol[:, 1:3])
    with self.assertRaisesRegex(ValueError, "crop shape"):
      preprocess.center_crop_or_pad(vol, (4, 4))


def _normalize_reference(x, lower, upper, mask=None):
  x = np.asarray(x, np.float64)
  sel = x if mask is None else x[mask]
  lo = np.percentile(sel, lower)
  hi = np.percentile(sel, upper)
  clipped = np.minimum(np.maximum(x, lo), hi)
  vals = np.minimum(np.maximum(sel, lo), hi)
  mu = vals.sum() / vals.size
  sd = np.sqrt(((vals - mu) ** 2).sum() / vals.size)
  return (clipped - mu) / sd


class NormalizeIntensityTest(chex.TestCase):

  @parameterized.parameters((0.5, 99.5), (0.0, 100.0), (5.0, 95.0))
  def test_matches_reference(self, lower, upper):
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 50.0, size=(16, 16, 4))
    x[0, 0, 0] = 1e5  # an outlier the clip removes
    out = preprocess.normalize_intensity(x, lower=lower, upper=upper)
    self.assertEqual(out.dtype, np.float32)
    self.assertEqual(out.shape, x.shape)
    np.testing.assert_allclose(out, _normalize_reference(x, lower, upper), rtol=1e-5, atol=1e-5)
    self.assertAlmostEqual(float(out.mean()), 0.0, places=5)
    self.assertAlmostEqual(float(out.std()), 1.0, places=4)

  def test_clipping_bounds_outlier(self):
    x = np.zeros(1000)
    x[:500] = 1.0
    x[0] = 1e9
    out = preprocess.normalize_intensity(x)
    # With the outlier clipped the two populations map to -1 and +1.
    np.testing.assert_allclose(np.sort(np.unique(out)), [-1.0, 1.0], atol=1e-6)

  def test_hand_computed(self):
    out = preprocess.normalize_intensity(np.array([1.0, 2.0, 3.0, 4.0]), lower=0, upper=100)
    np.testing.assert_allclose(out, (np.array([1, 2, 3, 4]) - 2.5) / np.sqrt(1.25), rtol=1e-6)

  def test_constant_gives_zeros(self):
    out = preprocess.normalize_intensity(np.full((4, 4, 4), 7.0))
    np.testing.assert_array_equal(out, np.zeros((4, 4, 4), np.float32))
    self.assertFalse(np.isnan(out).any())

  def test_mask(self):
    rng = np.random.default_rng(1)
    x = rng.normal(100.0, 10.0, size=(8, 8, 3))
    mask = np.zeros(x.shape, bool)
    mask[2:6, 2:6] = True
    x[~mask] = 0.0  # background would dominate the statistics without the mask
    out = preprocess.normalize_intensity(x, mask=mask)
    np.testing.assert_allclose(out, _normalize_reference(x, 0.5, 99.5, mask), rtol=1e-5, atol=1e-5)
    self.assertAlmostEqual(float(out[mask].mean()), 0.0, places=5)
    self.assertAlmostEqual(float(out[mask].std()), 1.0, places=4)

  @parameterized.parameters(np.nan, np.inf, -np.inf)
  def test_non_finite_raises_with_count(self, bad):
    x = np.ones((4, 4, 4))
    x[0, 0, 0] = bad
    x[1, 2, 3] = bad
    with self.assertRaisesRegex(ValueError, r"\b2 non-finite"):
      preprocess.normalize_intensity(x)

  def test_bad_arguments(self):
    x = np.arange(8.0)
    with self.assertRaisesRegex(ValueError, "lower"):
      preprocess.normalize_intensity(x, lower=60, upper=40)
    with self.assertRaisesRegex(ValueError, "lower"):
      preprocess.normalize_intensity(x, lower=-1)
    with self.assertRaisesRegex(ValueError, "mask shape"):
      preprocess.normalize_intensity(x, mask=np.ones(7, bool))
    with self.assertRaisesRegex(ValueError, "no voxel"):
      preprocess.normalize_intensity(x, mask=np.zeros(8, bool))
    with self.assertRaisesRegex(ValueError, "empty"):
      preprocess.normalize_intensity(np.zeros((0,)))


class SplitCasesTest(chex.TestCase):

  def _check_partition(self, split, ids):
    self.assertEqual(set(split), {"train", "validation", "test"})
    sets = [set(split[k]) for k in ("train", "validation", "test")]
    self.assertEqual(sum(len(s) for s in sets), len(ids))
    self.assertEqual(set().union(*sets), set(ids))
    for k in split:
      self.assertEqual(split[k], sorted(split[k]))

  @parameterized.parameters(
      (589, (471, 59, 59)), (10, (8, 1, 1)), (7, (5, 1, 1)), (40, (32, 4, 4)), (13, (11, 1, 1))
  )
  def test_sizes_and_partition(self, n, sizes):
    ids = [f"{i:06d}" for i in range(n)]
    split = preprocess.split_cases(ids)
    self._check_partition(split, ids)
    self.assertEqual(tuple(len(split[k]) for k in ("train", "validation", "test")), sizes)

  def test_deterministic_and_order_independent(self):
    ids = [f"case{i}" for i in range(50)]
    a = preprocess.split_cases(ids, seed=42)
    b = preprocess.split_cases(list(reversed(ids)), seed=42)
    self.assertEqual(a, b)
    c = preprocess.split_cases(ids, seed=43)
    self.assertNotEqual(a, c)

  def test_is_random(self):
    # Over seeds, every case lands in the test split sometimes (not a fixed block).
    ids = [f"c{i:02d}" for i in range(20)]
    seen = set()
    for seed in range(60):
      seen |= set(preprocess.split_cases(ids, seed=seed)["test"])
    self.assertEqual(seen, set(ids))

  def test_groups_stratified(self):
    groups = ["UCL"] * 30 + ["bergen"] * 20 + ["Nijmegen"] * 10 + ["Rutgers"] * 7
    ids = [f"{i:06d}" for i in range(len(groups))]
    for seed in range(5):
      split = preprocess.split_cases(ids, seed=seed, groups=groups)
      self._check_partition(split, ids)
      self.assertEqual([len(split[k]) for k in ("train", "validation", "test")], [53, 7, 7])
      by_case = dict(zip(ids, groups))
      for g in set(groups):
        n_g = groups.count(g)
        for k, f in (("train", 0.8), ("validation", 0.1), ("test", 0.1)):
          count = sum(by_case[c] == g for c in split[k])
          self.assertLess(abs(count - f * n_g), 2.0, (seed, g, k, count))

  def test_groups_two_institutions_one_each(self):
    groups = ["A"] * 10 + ["B"] * 10
    ids = [f"{i:06d}" for i in range(20)]
    split = preprocess.split_cases(ids, groups=groups)
    for k in ("validation", "test"):
      self.assertEqual(sorted(groups[int(c)] for c in split[k]), ["A", "B"])

  def test_zero_fraction(self):
    ids = [str(i) for i in range(10)]
    split = preprocess.split_cases(ids, fractions=(0.9, 0.1, 0.0))
    self.assertEqual([len(split[k]) for k in ("train", "validation", "test")], [9, 1, 0])

  def test_too_few_cases(self):
    with self.assertRaisesRegex(ValueError, r"got 6, need at least 7"):
      preprocess.split_cases([str(i) for i in range(6)])
    with self.assertRaisesRegex(ValueError, r"need at least 3"):
      preprocess.split_cases(["a", "b"], fractions=(1 / 3, 1 / 3, 1 / 3))
    with self.assertRaisesRegex(ValueError, r"need at least"):
      preprocess.split_cases([])

  def test_bad_input(self):
    with self.assertRaisesRegex(ValueError, "unique"):
      preprocess.split_cases(["a", "a"] + [str(i) for i in range(10)])
    with self.assertRaisesRegex(ValueError, "sum to 1"):
      preprocess.split_cases([str(i) for i in range(10)], fractions=(0.8, 0.1, 0.2))
    with self.assertRaisesRegex(ValueError, "non-negative"):
      preprocess.split_cases([str(i) for i in range(10)], fractions=(1.1, -0.1, 0.0))
    with self.assertRaisesRegex(ValueError, "one entry per case"):
      preprocess.split_cases([str(i) for i in range(10)], groups=["a"] * 9)


def _save(path, data, affine):
  nib.save(nib.Nifti1Image(data, affine), str(path))
  return str(path)


class LoadNiftiTest(chex.TestCase):

  @pytest.fixture(autouse=True)
  def _tmp(self, tmp_path):
    self.tmp = tmp_path

  def test_round_trip(self):
    data = np.arange(60, dtype=np.int16).reshape(5, 4, 3)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(0.2) @ np.diag([0.5, 0.6, 3.6])
    affine[:3, 3] = [1.0, -2.0, 30.0]
    path = _save(self.tmp / "x.nii", data, affine)
    arr, spacing, aff = preprocess.load_nifti(path)
    np.testing.assert_array_equal(arr, data)
    self.assertEqual(arr.dtype, np.int16)
    np.testing.assert_allclose(spacing, [0.5, 0.6, 3.6], rtol=1e-6)
    np.testing.assert_allclose(aff, affine, atol=1e-5)
    self.assertEqual(aff.dtype, np.float64)

  def test_gz_and_trailing_singleton(self):
    data = np.ones((3, 4, 5, 1), np.float32)
    path = _save(self.tmp / "x.nii.gz", data, np.diag([1.0, 2.0, 3.0, 1.0]))
    arr, spacing, _ = preprocess.load_nifti(path)
    self.assertEqual(arr.shape, (3, 4, 5))
    np.testing.assert_allclose(spacing, [1, 2, 3])

  def test_missing(self):
    with self.assertRaisesRegex(FileNotFoundError, "nope.nii"):
      preprocess.load_nifti(self.tmp / "nope.nii")

  def test_truncated(self):
    path = _save(self.tmp / "t.nii", np.ones((8, 8, 8), np.float32), np.eye(4))
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
      f.truncate(size - 100)
    with self.assertRaisesRegex(ValueError, r"t\.nii.*(truncated|corrupt)"):
      preprocess.load_nifti(path)

  def test_garbage(self):
    path = self.tmp / "g.nii"
    path.write_bytes(b"this is not a nifti file" * 20)
    with self.assertRaisesRegex(ValueError, r"g\.nii"):
      preprocess.load_nifti(path)

  def test_corrupt_gzip(self):
    path = _save(self.tmp / "c.nii.gz", np.ones((8, 8, 8), np.float32), np.eye(4))
    raw = bytearray(open(path, "rb").read())
    raw[len(raw) // 2 :] = b"\x00" * (len(raw) - len(raw) // 2)
    open(path, "wb").write(bytes(raw))
    with self.assertRaisesRegex(ValueError, r"c\.nii\.gz"):
      preprocess.load_nifti(path)

  def test_not_3d(self):
    path = _save(self.tmp / "f.nii", np.ones((3, 4, 5, 2), np.float32), np.eye(4))
    with self.assertRaisesRegex(ValueError, r"f\.nii is not a 3D volume"):
      preprocess.load_nifti(path)
    path = _save(self.tmp / "two.nii", np.ones((3, 4), np.float32), np.eye(4))
    with self.assertRaisesRegex(ValueError, r"two\.nii is not a 3D volume"):
      preprocess.load_nifti(path)

  @parameterized.parameters(0.0, -1.0, np.nan, np.inf)
  def test_bad_spacing(self, value):
    path = _save(self.tmp / "s.nii", np.ones((3, 4, 5), np.float32), np.eye(4))
    # pixdim[2] (the y spacing) is the float32 at byte 76 + 2 * 4 of the NIfTI-1 header.
    with open(path, "r+b") as f:
      f.seek(76 + 8)
      f.write(struct.pack("<f", value))
    with self.assertRaisesRegex(ValueError, r"s\.nii: voxel spacing must be finite and positive"):
      preprocess.load_nifti(path)


class ValidateSpacingTest(chex.TestCase):

  def test_valid(self):
    got = preprocess.validate_spacing([1, 0.5, 3])
    self.assertEqual(got.dtype, np.float64)
    np.testing.assert_array_equal(got, [1.0, 0.5, 3.0])
    np.testing.assert_array_equal(preprocess.validate_spacing((2, 1), ndim=2), [2.0, 1.0])

  @parameterized.parameters(
      ((1.0, 1.0), r"^sp must have 3 entries \(one per axis\), got \(1\.0, 1\.0\)\.$"),
      (("a", 1.0, 1.0), r"^sp must be 3 numbers, got \('a', 1\.0, 1\.0\)\.$"),
      ((1.0, 0.0, 1.0), r"^sp must be finite and positive, got \(1\.0, 0\.0, 1\.0\)\.$"),
      ((1.0, 1.0, -np.inf), r"^sp must be finite and positive, got \(1\.0, 1\.0, -inf\)\.$"),
  )
  def test_invalid(self, spacing, message):
    with self.assertRaisesRegex(ValueError, message):
      preprocess.validate_spacing(spacing, name="sp")

  def test_every_caller_uses_it(self):
    # The one spacing check: each function that takes a spacing raises its message.
    mask = np.zeros((4, 4, 2), bool)
    mask[1:3, 1:3] = True
    calls = [
        lambda: distance.signed_distance_map(mask, spacing=(1.0, np.nan, 1.0)),
        lambda: surface.hausdorff_distance(mask, mask, spacing=(1.0, np.nan, 1.0)),
        lambda: hierarchy.class_centroids_mm(mask.astype(np.uint8), spacing=(1.0, np.nan, 1.0),
                                             num_classes=2),
        lambda: figures.display_aspect((1.0, np.nan)),
        lambda: common.check_shape_spacing((4, 4, 2), (1.0, np.nan, 1.0)),
    ]
    for call in calls:
      with self.assertRaisesRegex(ValueError, r"spacing must be finite and positive, got \("):
        call()


class ValidateLabelTest(chex.TestCase):

  def test_valid(self):
    lab = np.array([[[0, 1], [8, 3]]], np.int64)
    out = preprocess.validate_label(lab, 9, name="m", shape=(1, 2, 2))
    self.assertEqual(out.dtype, np.uint8)
    np.testing.assert_array_equal(out, lab)

  def test_integral_floats_accepted(self):
    out = preprocess.validate_label(np.array([0.0, 2.0, 8.0]), 9)
    np.testing.assert_array_equal(out, [0, 2, 8])
    self.assertEqual(out.dtype, np.uint8)

  def test_out_of_range(self):
    with self.assertRaisesRegex(ValueError, r"mask\.nii: label values outside 0\.\.8: -1, 9, 12"):
      preprocess.validate_label(np.array([0, 9, 12, -1, 3]), 9, name="mask.nii")

  def test_not_integer(self):
    with self.assertRaisesRegex(ValueError, r"1 label voxel\(s\) are not integers"):
      preprocess.validate_label(np.array([0.0, 1.5, 2.0]), 9)
    with self.assertRaisesRegex(ValueError, "NaN"):
      preprocess.validate_label(np.array([0.0, np.nan]), 9)

  def test_shape(self):
    with self.assertRaisesRegex(ValueError, r"lbl: label shape \(2, 2\) differs"):
      preprocess.validate_label(np.zeros((2, 2)), 9, name="lbl", shape=(2, 3))
