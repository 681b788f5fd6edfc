"""Tests for the synthetic bpMRI phantom (`phantoms.bpmri`)."""

import time

from absl.testing import absltest
from absl.testing import parameterized
import numpy as np

from jaxseg.data.phantoms import bpmri
from jaxseg.data.phantoms import gland

# The default field of view (96 x 96 x 60 mm) at a coarse, cheap resolution.
_SMALL = dict(shape=(64, 64, 20), spacing=(1.5, 1.5, 3.0))
_SEEDS = tuple(range(24))
_T2W, _DWI, _ADC = range(3)


def _centroid_mm(mask, affine):
  idx = np.array(np.nonzero(mask), np.float64).mean(axis=1)
  return affine[:3, :3] @ idx + affine[:3, 3]


class BpmriPhantomTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    start = time.perf_counter()
    cls.default = bpmri.make_bpmri_case(6)  # default size; seed 6 has two lesions
    cls.default_seconds = time.perf_counter() - start
    cls.small = [bpmri.make_bpmri_case(s, **_SMALL) for s in _SEEDS]

  def test_dtypes_shapes_affine(self):
    case = self.default
    self.assertEqual(case.image.shape, (192, 192, 20, 3))
    self.assertEqual(case.image.dtype, np.float32)
    for arr in (case.zones, case.lesions, case.lesion_index):
      self.assertEqual(arr.shape, (192, 192, 20))
      self.assertEqual(arr.dtype, np.uint8)
    self.assertEqual(case.spacing, bpmri.BPMRI_PHANTOM_SPACING)
    self.assertEqual(case.case_id, "bpmri-0006")
    self.assertEqual(self.small[11].case_id, "bpmri-0011")
    np.testing.assert_allclose(np.diag(case.affine), [0.5, 0.5, 3.0, 1.0])
    np.testing.assert_allclose((case.affine @ [95.5, 95.5, 9.5, 1.0])[:3], 0.0, atol=1e-9)
    self.assertEqual(bpmri.CHANNELS, ("t2w", "dwi", "adc"))
    self.assertEqual(bpmri.ZONE_CLASSES, ("background", "tz", "pz"))
    for c in (case, *self.small):
      self.assertTrue(np.all(np.isfinite(c.image)))
      self.assertGreaterEqual(float(c.image.min()), 0.0)  # magnitudes, ADC >= 0
      self.assertEqual(set(np.unique(c.zones).tolist()), {0, 1, 2})
      self.assertTrue(set(np.unique(c.lesions).tolist()) <= {0, 1})
      # Lesions lie in the gland; lesion_index / lesion_isup / patient_label agree.
      self.assertFalse(np.any(c.lesions.astype(bool) & (c.zones == 0)))
      np.testing.assert_array_equal(c.lesions, (c.lesion_index > 0).astype(np.uint8))
      self.assertEqual(sorted(set(np.unique(c.lesion_index).tolist()) - {0}),
                       list(range(1, len(c.lesion_isup) + 1)))
      self.assertEqual(c.patient_label, int(len(c.lesion_isup) > 0))
      self.assertTrue(all(g in (2, 3, 4, 5) for g in c.lesion_isup))
      self.assertLessEqual(len(c.lesion_isup), 3)
    self.assertEqual(len(case.lesion_isup), 2)

  def test_anatomy_is_the_gland_phantom(self):
    # Same seed, same grid: T2W anatomy and gland of `gland.make_gland_scene`.
    for seed in (0, 4):
      scene, _ = gland.make_gland_scene(seed, **_SMALL)
      case = self.small[seed]
      np.testing.assert_array_equal(case.zones > 0, scene.label.astype(bool))
      np.testing.assert_allclose(case.affine, scene.affine)
      # T2W is the gland phantom's, darkened only at lesions and benign foci in the gland.
      same = np.isclose(case.image[..., _T2W], scene.image, rtol=1e-6)
      self.assertTrue(np.all(same | (case.zones > 0)))
      self.assertGreater(same.mean(), 0.97)
      if case.patient_label:
        self.assertFalse(np.any(same & (case.lesions > 0)))

  def test_determinism(self):
    a = bpmri.make_bpmri_case(4, **_SMALL)
    b = bpmri.make_bpmri_case(4, **_SMALL)
    self.assertEqual(a.image.tobytes(), b.image.tobytes())
    np.testing.assert_array_equal(a.zones, b.zones)
    np.testing.assert_array_equal(a.lesion_index, b.lesion_index)
    self.assertEqual(a.lesion_isup, b.lesion_isup)
    np.testing.assert_array_equal(a.image, self.small[4].image)
    c = bpmri.make_bpmri_case(5, **_SMALL)
    self.assertFalse(np.array_equal(a.zones, c.zones))
    self.assertGreater(float(np.abs(a.image - c.image).mean()), 0.01)

  def test_resolution_independent_anatomy(self):
    # Lesions and zones are placed in mm: the same seed at 0.5 and 1.5 mm agrees.
    fine, coarse = self.default, self.small[6]
    self.assertEqual(fine.lesion_isup, coarse.lesion_isup)
    for k in range(1, len(fine.lesion_isup) + 1):
      a = _centroid_mm(fine.lesion_index == k, fine.affine)
      b = _centroid_mm(coarse.lesion_index == k, coarse.affine)
      np.testing.assert_allclose(a, b, atol=1.0)
      vol_a = (fine.lesion_index == k).sum() * 0.75
      vol_b = (coarse.lesion_index == k).sum() * 6.75
      self.assertLess(abs(vol_a - vol_b) / vol_a, 0.3)
    for zone in (1, 2):
      np.testing.assert_allclose(_centroid_mm(fine.zones == zone, fine.affine),
                                 _centroid_mm(coarse.zones == zone, coarse.affine), atol=1.0)

  def test_planned_patient_label(self):
    self.assertEqual([bpmri.planned_patient_label(s) for s in _SEEDS],
                     [c.patient_label for c in self.small])
    with self.assertRaisesRegex(ValueError, "seed"):
      bpmri.planned_patient_label(-1)

  def test_lesion_statistics(self):
    labels = np.array([c.patient_label for c in self.small])
    self.assertBetween(labels.mean(), 0.3, 0.7)  # about half the patients have csPCa
    in_pz, diameters = [], []
    for c in self.small:
      for k in range(1, len(c.lesion_isup) + 1):
        m = c.lesion_index == k
        zones = np.unique(c.zones[m])
        self.assertLen(zones, 1)  # each lesion stays in its zone
        in_pz.append(zones[0] == 2)
        diameters.append(2 * (3 * m.sum() * 6.75 / (4 * np.pi)) ** (1 / 3))
    self.assertGreaterEqual(len(in_pz), 10)
    self.assertBetween(np.mean(in_pz), 0.55, 0.9)  # mostly in the PZ (~70%)
    self.assertGreater(min(diameters), 1.5)  # mm; 3-15 mm lesions, clipped to their zone
    self.assertLess(max(diameters), 20.0)
    self.assertGreater(np.ptp(diameters), 4.0)

  def test_lesion_contrast(self):
    # csPCa: bright on DWI, dark on ADC, (subtly) dark on T2W, relative to the rest of the gland.
    ratios = []
    for c in self.small + [self.default]:
      if not c.patient_label:
        continue
      les = c.lesions.astype(bool)
      rest = (c.zones > 0) & ~les
      ratios.append([c.image[..., ch][les].mean() / c.image[..., ch][rest].mean()
                     for ch in range(3)])
      adc = c.image[..., _ADC][les].mean()
      self.assertBetween(adc, 600.0, 1450.0)  # um^2/s
    ratios = np.array(ratios)
    self.assertTrue(np.all(ratios[:, _DWI] > 1.1), ratios[:, _DWI])
    self.assertGreater(np.mean(ratios[:, _DWI]), 1.4)
    self.assertTrue(np.all(ratios[:, _ADC] < 1.0), ratios[:, _ADC])
    self.assertLess(np.mean(ratios[:, _ADC]), 0.85)
    self.assertLess(np.mean(ratios[:, _T2W]), 0.95)
    self.assertGreater(np.mean(ratios[:, _T2W]), 0.5)  # subtle, not a void

  def test_detection_is_not_trivial(self):
    # Benign hot spots (BPH nodules, prostatitis, edges) reach the lesions' DWI / ADC levels.
    neg_dwi, pos_dwi, neg_adc, pos_adc = [], [], [], []
    for c in self.small:
      rest = (c.zones > 0) & (c.lesions == 0)
      med = np.median(c.image[..., _DWI][rest])
      if c.patient_label:
        les = c.lesions.astype(bool)
        pos_dwi.append(c.image[..., _DWI][les].mean() / med)
        pos_adc.append(c.image[..., _ADC][les].mean())
      else:
        neg_dwi.append(np.percentile(c.image[..., _DWI][rest], 98) / med)
        neg_adc.append(np.percentile(c.image[..., _ADC][rest], 2))
    self.assertGreater(np.median(neg_dwi), 0.75 * np.median(pos_dwi))
    self.assertLess(np.median(neg_adc), np.median(pos_adc))

  def test_zones_anatomy(self):
    for c in self.small:
      tz, pz = _centroid_mm(c.zones == 1, c.affine), _centroid_mm(c.zones == 2, c.affine)
      wg = _centroid_mm(c.zones > 0, c.affine)
      self.assertGreater(tz[1], pz[1] + 2.0)  # TZ anterior to PZ (RAS+: +y anterior)
      self.assertLess(abs(tz[0] - wg[0]), 5.0)  # TZ central (left-right)
      # The posterior quarter of the gland is (nearly all) PZ: a posterior crescent.
      idx = np.array(np.nonzero(c.zones), np.float64)
      y = (c.affine[:3, :3] @ idx + c.affine[:3, 3:])[1]
      lo, hi = y.min(), y.max()
      posterior = c.zones[tuple(idx[:, y < lo + (hi - lo) / 4].astype(int))]
      self.assertGreater(np.mean(posterior == 2), 0.9)
      frac_tz = np.mean(c.zones[c.zones > 0] == 1)
      self.assertBetween(frac_tz, 0.1, 0.8)
      # Normal tissue: PZ has a higher ADC than TZ (1500-1900 vs 1150-1450 um^2/s).
      les = c.lesions.astype(bool)
      self.assertGreater(c.image[..., _ADC][(c.zones == 2) & ~les].mean(),
                         c.image[..., _ADC][(c.zones == 1) & ~les].mean())

  def test_blurred_dwi(self):
    # DWI / ADC have a lower resolution than T2W: weaker voxel-to-voxel gradients in-plane
    # relative to their contrast, measured on the default 0.5 mm grid.
    case = self.default
    gland_mask = case.zones > 0

    def roughness(x):
      d = np.abs(np.diff(x, axis=0))[gland_mask[1:]]
      return d.mean() / x[gland_mask].std()

    self.assertLess(roughness(case.image[..., _ADC]), 0.6 * roughness(case.image[..., _T2W]))

  def test_speed(self):
    self.assertLess(self.default_seconds, 3.0)  # ~0.4 s on one core; generous for CI

  @parameterized.parameters(
      dict(seed=-1), dict(seed=1.5), dict(seed=True),
      dict(seed=0, shape=(10, 10)), dict(seed=0, spacing=(1.0, 0.0, 3.0)),
      dict(seed=0, shape=(10, 0, 4)),
  )
  def test_bad_inputs(self, seed, **kwargs):
    with self.assertRaises(ValueError):
      bpmri.make_bpmri_case(seed, **kwargs)


if __name__ == "__main__":
  absltest.main()
