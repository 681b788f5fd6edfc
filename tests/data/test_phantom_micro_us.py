"""Tests for the micro-ultrasound phantom (`jaxseg.data.phantoms.micro_us`)."""

import math

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import ndimage
from scipy import stats

from jaxseg.data.phantoms import micro_us

# A small field of view: 64 x 0.7 = 44.8 mm (the default), 4 slices 5 mm apart.
_SMALL = dict(num_slices=4, size=(64, 64), spacing=(0.7, 5.0))
_MEDIUM = dict(num_slices=6, size=(96, 96), spacing=(0.467, 6.0))


def _block_stats(image, b=6):
  """Means and standard deviations of non-overlapping b x b blocks without clipped pixels."""
  nx, ny, nz = image.shape
  blocks = image[: nx // b * b, : ny // b * b].astype(np.float64)
  blocks = blocks.reshape(nx // b, b, ny // b, b, nz).transpose(0, 2, 4, 1, 3).reshape(-1, b * b)
  blocks = blocks[(blocks.max(1) < 1.0) & (blocks.min(1) > 0.0)]
  return blocks, blocks.mean(1), blocks.std(1)


def _angles(mask, gland):
  """Angle (degrees) of each voxel of ``mask`` around its slice's gland centroid.

  0 = towards the base (+x), 90 = anterior (deeper, +y), -90 = posterior (towards the probe).
  """
  ii, jj, kk = np.nonzero(mask)
  centre = np.array([
      np.mean(np.nonzero(gland[:, :, k]), axis=1) if gland[:, :, k].any() else [np.nan] * 2
      for k in range(gland.shape[2])
  ])
  return np.degrees(np.arctan2(jj - centre[kk, 1], ii - centre[kk, 0]))


class CaseTest(parameterized.TestCase):

  def test_types_and_geometry(self):
    case = micro_us.make_micro_us_case(3, **_SMALL)
    self.assertEqual(case.image.shape, (64, 64, 4))
    self.assertEqual(case.image.dtype, np.float32)
    for mask in (case.expert, case.non_expert, case.label, case.disagreement):
      self.assertEqual(mask.shape, (64, 64, 4))
      self.assertEqual(mask.dtype, np.uint8)
      self.assertLessEqual(set(np.unique(mask)), {0, 1})
    np.testing.assert_array_equal(case.label, case.expert)
    np.testing.assert_array_equal(case.disagreement, case.expert ^ case.non_expert)
    self.assertEqual(case.case_id, "phantom-0003")
    self.assertEqual(case.spacing, (0.7, 0.7, 5.0))
    self.assertGreaterEqual(case.image.min(), 0.0)
    self.assertLessEqual(case.image.max(), 1.0)
    # Affine: axis 0 -> +z (superior), axis 1 (depth) -> +y (anterior), axis 2 -> +x.
    a = case.affine
    np.testing.assert_allclose(a[:3, :3], [[0, 0, 5.0], [0, 0.7, 0], [0.7, 0, 0]])
    np.testing.assert_allclose(a @ [0, 0, 0, 1], [-7.5, 0.35, -22.05, 1])  # top row at d = s/2
    np.testing.assert_allclose(a @ [63, 63, 3, 1], [7.5, 44.45, 22.05, 1])
    np.testing.assert_allclose(micro_us.micro_us_affine((64, 64), 4, (0.7, 5.0)), a)
    # Calcifications: on a slice, inside the gland.
    self.assertGreaterEqual(len(case.calcifications), 1)
    for x, y, z, r in case.calcifications:
      self.assertEqual(z, int(z))
      self.assertTrue(0.35 <= r <= 0.9)
      self.assertEqual(case.expert[int(round(x)), int(round(y)), int(z)], 1)

  def test_deterministic(self):
    a = micro_us.make_micro_us_case(7, **_SMALL)
    b = micro_us.make_micro_us_case(7, **_SMALL)
    c = micro_us.make_micro_us_case(8, **_SMALL)
    for name in ("image", "expert", "non_expert", "affine", "calcifications"):
      np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    self.assertFalse(np.array_equal(a.image, c.image))
    self.assertFalse(np.array_equal(a.expert, c.expert))

  def test_gland_varies_along_stack_and_between_cases(self):
    volumes = []
    for seed in range(4):
      case = micro_us.make_micro_us_case(seed, num_slices=8, size=(64, 64), spacing=(0.7, 5.0))
      area = case.expert.sum(axis=(0, 1)).astype(float)
      # Largest near the middle of the sweep, smaller toward both ends.
      self.assertGreater(area[3:5].min(), 1.5 * area[0])
      self.assertGreater(area[3:5].min(), 1.5 * area[-1])
      mm2 = area.max() * 0.7**2  # sagittal area, mm^2: roughly pi * 14-19 * 9-13.5
      self.assertTrue(250 < mm2 < 900, mm2)
      volumes.append(area.sum())
    self.assertGreater(max(volumes) / min(volumes), 1.1)

  def test_same_anatomy_at_another_resolution(self):
    coarse = micro_us.make_micro_us_case(5, num_slices=4, size=(56, 56), spacing=(0.8, 5.0))
    fine = micro_us.make_micro_us_case(5, num_slices=4, size=(112, 112), spacing=(0.4, 5.0))
    vol_coarse = coarse.expert.sum() * 0.8**2
    vol_fine = fine.expert.sum() * 0.4**2
    self.assertAlmostEqual(vol_coarse / vol_fine, 1.0, delta=0.04)
    down = fine.expert.reshape(56, 2, 56, 2, 4).mean(axis=(1, 3)) > 0.5
    dice = 2 * np.sum(down & coarse.expert.astype(bool)) / (down.sum() + coarse.expert.sum())
    self.assertGreater(dice, 0.97)

  @parameterized.parameters(
      dict(kwargs=dict(seed=-1)), dict(kwargs=dict(seed=1.5)), dict(kwargs=dict(seed=True)),
      dict(kwargs=dict(seed=0, size=(64,))), dict(kwargs=dict(seed=0, size=(0, 64))),
      dict(kwargs=dict(seed=0, spacing=(0.7, 0.7, 5.0))),
      dict(kwargs=dict(seed=0, spacing=(0.7, -1.0))), dict(kwargs=dict(seed=0, num_slices=0)),
      dict(kwargs=dict(seed=0, num_slices=2.0)))
  def test_bad_arguments(self, kwargs):
    with self.assertRaises(ValueError):
      micro_us.make_micro_us_case(**kwargs)


class SpeckleTest(absltest.TestCase):

  def test_gamma_speckle_statistics(self):
    looks = 6.0
    s = micro_us.gamma_speckle(np.random.default_rng(0), (128, 128, 8), looks=looks,
                               sigma_px=(1.0, 0.7))
    self.assertEqual(s.dtype, np.float32)
    self.assertGreaterEqual(s.min(), 0.0)
    x = s.astype(np.float64).ravel()
    # Gamma(L, 1/L): mean 1, CV 1/sqrt(L), skewness 2/sqrt(L).
    self.assertAlmostEqual(x.mean(), 1.0, delta=0.01)
    self.assertAlmostEqual(x.std(), 1 / math.sqrt(looks), delta=0.02)
    self.assertAlmostEqual(stats.skew(x), 2 / math.sqrt(looks), delta=0.1)
    # Correlated in-plane (more along axis 0, sigma 1 px, than axis 1, 0.7 px), independent
    # between slices.
    c = s - s.mean()

    def corr(a, b):
      return float(np.mean(a * b) / np.sqrt(np.mean(a * a) * np.mean(b * b)))

    c0, c1 = corr(c[1:], c[:-1]), corr(c[:, 1:], c[:, :-1])
    cz = corr(c[:, :, 1:], c[:, :, :-1])
    self.assertGreater(c0, 0.5)
    self.assertGreater(c0, c1 + 0.05)
    self.assertGreater(c1, 0.3)
    self.assertLess(abs(cz), 0.02)

  def test_gamma_speckle_white_and_errors(self):
    s = micro_us.gamma_speckle(np.random.default_rng(1), (64, 64), looks=4.0, sigma_px=(0, 0))
    c = s - s.mean()
    self.assertLess(abs(np.mean(c[1:] * c[:-1]) / np.mean(c * c)), 0.03)
    self.assertAlmostEqual(float(s.std()), 0.5, delta=0.03)
    for kwargs in (dict(looks=0.5), dict(sigma_px=(1.0,)), dict(sigma_px=(-1.0, 0.0))):
      with self.assertRaises(ValueError):
        micro_us.gamma_speckle(np.random.default_rng(0), (8, 8), **kwargs)
    with self.assertRaises(ValueError):
      micro_us.gamma_speckle(np.random.default_rng(0), (8,))

  def test_phantom_speckle_is_multiplicative_and_not_gaussian(self):
    for seed in (0, 1):
      case = micro_us.make_micro_us_case(seed, **_MEDIUM)
      blocks, mean, std = _block_stats(case.image)
      self.assertGreater(len(mean), 500)
      # Multiplicative: log(std) grows ~linearly with log(mean), slope ~1 (additive noise: 0).
      fit = stats.linregress(np.log(mean), np.log(std))
      self.assertGreater(fit.slope, 0.7)
      self.assertGreater(fit.rvalue, 0.7)
      # Bright blocks are noisier in absolute terms than dark ones, alike relative to the mean.
      lo, hi = mean < np.quantile(mean, 0.25), mean > np.quantile(mean, 0.75)
      self.assertGreater(std[hi].mean(), 1.5 * std[lo].mean())
      cv = std / mean
      self.assertLess(abs(np.log(cv[hi].mean() / cv[lo].mean())), np.log(1.5))
      # Skewed grey levels within blocks (Gaussian: 0).
      z = ((blocks - mean[:, None]) / std[:, None]).ravel()
      self.assertGreater(stats.skew(z), 0.25)

    # The statistics can tell additive Gaussian noise apart: slope ~0, no skew.
    rng = np.random.default_rng(0)
    smooth = ndimage.gaussian_filter(case.image.astype(np.float64), (4, 4, 0))
    additive = np.clip(smooth + rng.normal(0, 0.08, smooth.shape), 1e-3, 0.999)
    blocks, mean, std = _block_stats(additive)
    self.assertLess(stats.linregress(np.log(mean), np.log(std)).slope, 0.3)
    z = ((blocks - mean[:, None]) / std[:, None]).ravel()
    self.assertLess(abs(stats.skew(z)), 0.1)


class ArtefactTest(absltest.TestCase):

  def test_acoustic_shadowing(self):
    for seed in (0, 2):
      with_shadow = micro_us.make_micro_us_case(seed, **_MEDIUM)
      without = micro_us.make_micro_us_case(seed, shadowing=False, **_MEDIUM)
      np.testing.assert_array_equal(with_shadow.expert, without.expert)
      np.testing.assert_array_equal(with_shadow.calcifications, without.calcifications)
      s = 0.467
      shadow_cols = np.zeros(with_shadow.image.shape, bool)
      for x, y, z, r in with_shadow.calcifications:
        x, y, z = int(round(x)), int(round(y)), int(z)
        # Bright calcification.
        peak = with_shadow.image[x - 1:x + 2, y - 1:y + 2, z].max()
        self.assertGreater(peak, 1.5 * with_shadow.image[:, :, z].mean())
        # A dark streak below it, to the bottom of the image.
        half = max(int(0.5 * r / s), 0)
        below = slice(y + int(3 * r / s) + 1, None)
        ratio = (with_shadow.image[x - half:x + half + 1, below, z].mean()
                 / without.image[x - half:x + half + 1, below, z].mean())
        self.assertLess(ratio, 0.6)
        deep = with_shadow.image[x - half:x + half + 1, -20:, z].mean()
        self.assertLess(deep, 0.7 * without.image[x - half:x + half + 1, -20:, z].mean())
        shadow_cols[x - int(4 * r / s) - 1:x + int(4 * r / s) + 2, :, z] = True
      # Nothing changes outside the shadowed columns.
      np.testing.assert_array_equal(with_shadow.image[~shadow_cols], without.image[~shadow_cols])

  def test_near_field_is_bright(self):
    case = micro_us.make_micro_us_case(4, **_SMALL)
    top = case.image[:, 0].mean()  # first row, d = 0.35 mm
    self.assertGreater(top, 0.6)
    self.assertGreater(top, 1.5 * case.image.mean())


class AnnotationTest(absltest.TestCase):

  def test_disagreement_small_and_at_weak_boundary(self):
    post_density, ant_density = [], []
    for seed in range(5):
      case = micro_us.make_micro_us_case(seed, **_MEDIUM)
      gland = case.expert.astype(bool)
      xor = case.disagreement.astype(bool)
      # Hard regions exist but are a small fraction of the gland.
      self.assertGreater(xor.sum(), 0)
      self.assertLess(xor.sum() / gland.sum(), 0.10)
      # Density of disagreement per boundary pixel, by sector around the gland centre.
      boundary = gland & ~ndimage.binary_erosion(gland, np.ones((3, 3, 1)), border_value=1)
      a_xor, a_bnd = _angles(xor, gland), _angles(boundary, gland)

      def density(lo, hi):
        return (np.mean((a_xor >= lo) & (a_xor < hi))
                / np.mean((a_bnd >= lo) & (a_bnd < hi)))

      post_density.append(density(-135, -45))  # facing the probe: crisp capsule
      ant_density.append(density(0, 180))  # anterior half: bladder side, apex, stroma
    # Uniform disagreement would give densities ~1 everywhere.
    self.assertLess(max(post_density), 0.6)
    self.assertGreater(min(ant_density), 1.2)
    self.assertLess(np.mean(post_density), 0.35)


if __name__ == "__main__":
  absltest.main()
