"""Tests for the synthetic prostate-gland phantom (`phantoms.gland`)."""

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np
from scipy import ndimage

from jaxseg.data.phantoms import gland

# The default field of view (192 x 192 x 48 mm) at a coarse, cheap resolution.
_SMALL = dict(shape=(48, 48, 16), spacing=(4.0, 4.0, 3.0))
_SEEDS = tuple(range(12))


def _tissue_mask(tissue, *names):
  return np.isin(tissue, [gland.TISSUE_NAMES.index(n) for n in names])


def _centroid_mm(mask, affine):
  idx = np.array(np.nonzero(mask), np.float64).mean(axis=1)
  return affine[:3, :3] @ idx + affine[:3, 3]


def _boundary_contrast(case):
  """|inner ring - outer ring| / mean of both, rings 2 voxels wide in-plane."""
  m = case.label.astype(bool)
  st = np.ones((3, 3, 1), bool)
  inner = m & ~ndimage.binary_erosion(m, st, iterations=2)
  outer = ndimage.binary_dilation(m, st, iterations=2) & ~m
  a, b = case.image[inner].mean(), case.image[outer].mean()
  return abs(a - b) / (0.5 * (a + b))


class GlandPhantomTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    # Default size (128 x 128 x 16 at 1.5 x 1.5 x 3 mm): a few cases.
    cls.default = [gland.make_gland_scene(s) for s in _SEEDS[:4]]
    cls.small = [gland.make_gland_scene(s, **_SMALL) for s in _SEEDS]

  def test_dtypes_shapes_affine(self):
    case, tissue = self.default[0]
    self.assertEqual(case.image.shape, gland.GLAND_PHANTOM_SHAPE)
    self.assertEqual(case.label.shape, (128, 128, 16))
    self.assertEqual(case.image.dtype, np.float32)
    self.assertEqual(case.label.dtype, np.uint8)
    self.assertEqual(tissue.shape, case.image.shape)
    self.assertLess(int(tissue.max()), len(gland.TISSUE_NAMES))
    self.assertEqual(case.spacing, (1.5, 1.5, 3.0))
    self.assertEqual(case.case_id, "gland-0000")
    self.assertEqual(self.small[11][0].case_id, "gland-0011")
    np.testing.assert_allclose(np.diag(case.affine), [1.5, 1.5, 3.0, 1.0])
    centre = case.affine @ [63.5, 63.5, 7.5, 1.0]
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    for c, _ in self.default + self.small:
      self.assertEqual(set(np.unique(c.label).tolist()), {0, 1})
      self.assertTrue(np.all(np.isfinite(c.image)))
      self.assertGreaterEqual(float(c.image.min()), 0.0)  # Rician magnitude

  def test_determinism(self):
    a = gland.make_gland_case(3, **_SMALL)
    b = gland.make_gland_case(3, **_SMALL)
    self.assertEqual(a.image.tobytes(), b.image.tobytes())
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.label, self.small[3][0].label)
    np.testing.assert_array_equal(a.image, self.small[3][0].image)
    c = gland.make_gland_case(4, **_SMALL)
    self.assertFalse(np.array_equal(a.label, c.label))
    self.assertGreater(float(np.abs(a.image - c.image).mean()), 0.01)

  def test_variation(self):
    cases = [c for c, _ in self.small]
    vol = np.array([c.label.sum() for c in cases], np.float64) * 48.0  # mm^3 per voxel
    self.assertGreater(vol.std() / vol.mean(), 0.15)  # sizes vary
    self.assertGreater(vol.max() / vol.min(), 1.6)
    cen = np.array([_centroid_mm(c.label, c.affine) for c in cases])
    self.assertGreater(np.ptp(cen[:, 0]), 8.0)  # not always centred (left-right) ...
    self.assertGreater(np.ptp(cen[:, 1]), 8.0)  # ... nor antero-posteriorly
    self.assertGreater(np.abs(cen[:, :2]).max(), 6.0)
    contrast = np.array([_boundary_contrast(c) for c in cases])
    self.assertLess(contrast.min(), 0.15)  # sometimes low ...
    self.assertGreater(contrast.max(), 0.3)  # ... sometimes high
    coil = [bool(_tissue_mask(t, "coil_void").any()) for _, t in self.small]
    self.assertIn(True, coil)  # endorectal coil in some cases only
    self.assertIn(False, coil)

  def test_gland_fraction_per_slice(self):
    # PROSTATEx: ~1-6% of a 192 mm slice where the gland appears.
    for c, _ in self.default:
      frac = c.label.mean(axis=(0, 1))
      on = frac[frac > 0]
      self.assertGreaterEqual(on.size, 8, msg=c.case_id)  # >= 24 mm long
      self.assertGreater(np.median(on), 0.01, msg=c.case_id)
      self.assertLess(on.max(), 0.10, msg=c.case_id)
      self.assertGreater(on.max(), 0.015, msg=c.case_id)

  def test_shrinks_and_vanishes_toward_apex_and_base(self):
    for c, _ in self.default + self.small:
      frac = c.label.mean(axis=(0, 1))
      peak = int(np.argmax(frac))
      self.assertTrue(2 <= peak <= 13, msg=f"{c.case_id}: {frac}")
      self.assertLess(max(frac[0], frac[-1]), 0.1 * frac[peak], msg=c.case_id)
      self.assertLess(max(frac[0], frac[-1]), 0.001, msg=c.case_id)
      # The slice area falls off monotonically (up to 5% wiggle) away from the peak.
      self.assertTrue(np.all(np.diff(frac[:peak + 1]) >= -0.05 * frac[peak]), msg=c.case_id)
      self.assertTrue(np.all(np.diff(frac[peak:]) <= 0.05 * frac[peak]), msg=c.case_id)

  def test_anatomy_around_the_gland(self):
    for c, t in self.default + self.small:
      p = _centroid_mm(c.label, c.affine)
      bladder = _centroid_mm(_tissue_mask(t, "urine", "bladder_wall"), c.affine) - p
      self.assertGreater(bladder[1], 3.0, msg=c.case_id)  # anterior
      self.assertGreater(bladder[2], 8.0, msg=c.case_id)  # superior
      rect = _tissue_mask(t, "rectal_wall", "rectal_air", "rectal_content", "coil_void")
      rectum = _centroid_mm(rect, c.affine) - p
      self.assertLess(rectum[1], -12.0, msg=c.case_id)  # posterior
      self.assertLess(abs(rectum[0]), 10.0, msg=c.case_id)  # midline
      # Bone on both sides, well lateral to the gland.
      gx = np.nonzero(c.label.any(axis=(1, 2)))[0]
      x_mm = c.affine[0, 0] * np.arange(c.label.shape[0]) + c.affine[0, 3]
      bone = _tissue_mask(t, "cortex", "marrow")
      bone_x = x_mm[bone.any(axis=(1, 2))]
      self.assertLess(bone_x.min(), x_mm[gx.min()] - 20.0, msg=c.case_id)
      self.assertGreater(bone_x.max(), x_mm[gx.max()] + 20.0, msg=c.case_id)
      # Nothing but gland tissue under the label.
      inside = t[c.label == 1]
      allowed = [gland.TISSUE_NAMES.index(n) for n in (
          "pz", "tz", "capsule", "afms", "tz_nodule_bright", "tz_nodule_dark")]
      self.assertTrue(np.all(np.isin(inside, allowed)), msg=c.case_id)
      self.assertFalse(np.any(np.isin(t[c.label == 0], allowed[:3])), msg=c.case_id)

  def test_intensities(self):
    for c, t in self.default:
      urine = ndimage.binary_erosion(_tissue_mask(t, "urine"), iterations=2,
                                     structure=np.ones((3, 3, 1), bool))
      muscle = _tissue_mask(t, "muscle")
      g = c.image[c.label == 1].mean()
      self.assertGreater(c.image[urine].mean(), g + 0.1, msg=c.case_id)  # T2: urine bright
      self.assertGreater(g, c.image[muscle].mean(), msg=c.case_id)
      # Noise: no two urine voxels alike.
      vals = c.image[urine]
      self.assertGreater(len(np.unique(vals)), 0.9 * vals.size)
      # Air outside the body: dark Rician floor.
      self.assertLess(float(np.median(c.image[_tissue_mask(t, "air")])), 0.15)
    for c, t in self.small:
      void = _tissue_mask(t, "coil_void")
      if void.sum() > 20:  # The balloon is a signal void next to a bright near field.
        self.assertLess(float(np.median(c.image[void])), 0.3)

  def test_same_anatomy_at_another_resolution(self):
    # Same seed and field of view: same gland in mm (volume, centroid).
    fine, _ = self.default[1]
    coarse = gland.make_gland_case(1, shape=(64, 64, 16), spacing=(3.0, 3.0, 3.0))
    v_fine = fine.label.sum() * np.prod(fine.spacing)
    v_coarse = coarse.label.sum() * np.prod(coarse.spacing)
    self.assertLess(abs(v_coarse / v_fine - 1.0), 0.08)
    np.testing.assert_allclose(_centroid_mm(coarse.label, coarse.affine),
                               _centroid_mm(fine.label, fine.affine), atol=1.5)

  @parameterized.parameters(-1, 1.5, True, "3")
  def test_bad_seed(self, seed):
    with self.assertRaises(ValueError):
      gland.make_gland_case(seed, **_SMALL)

  def test_bad_shape_spacing(self):
    with self.assertRaises(ValueError):
      gland.make_gland_case(0, shape=(10, 10), spacing=(1.0, 1.0, 1.0))
    with self.assertRaises(ValueError):
      gland.make_gland_case(0, shape=(10, 10, 10), spacing=(1.0, 0.0, 1.0))


if __name__ == "__main__":
  absltest.main()
