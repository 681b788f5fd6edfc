"""Tests for the phantom utilities (`phantoms.common`) and pelvis phantom."""

import os
import tempfile

from absl.testing import absltest
from absl.testing import parameterized
import chex
import numpy as np
from scipy import ndimage

from jaxseg.data.phantoms import common
from jaxseg.data.phantoms import pelvis

_SMALL = dict(shape=(64, 64, 12), spacing=(2.25, 2.25, 6.0))  # default FOV


def _centroid_mm(mask, spacing):
  return np.array(np.nonzero(mask), np.float64).mean(axis=1) * np.asarray(
      spacing)


class GridTest(parameterized.TestCase):

  @parameterized.parameters(((4, 5, 3), (0.5, 1.0, 3.0)),
                            ((192, 192, 24), (0.75, 0.75, 3.0)))
  def test_grid_matches_affine(self, shape, spacing):
    x, y, z = common.mm_grid(shape, spacing)
    aff = common.centred_affine(shape, spacing)
    chex.assert_shape([x, y, z], shape)
    self.assertEqual(aff.dtype, np.float64)
    idx = np.array([[0, 0, 0], [shape[0] - 1, 1, shape[2] - 1], [1, 2, 1]])
    world = idx @ aff[:3, :3].T + aff[:3, 3]
    for (i, j, k), w in zip(idx, world):
      np.testing.assert_allclose([x[i, j, k], y[i, j, k], z[i, j, k]], w,
                                 atol=1e-5)
    # Centred: symmetric coordinates.
    np.testing.assert_allclose(x[0, 0, 0], -x[-1, 0, 0], atol=1e-6)
    self.assertAlmostEqual(float(x[1, 0, 0] - x[0, 0, 0]), spacing[0], 6)

  def test_sparse_grid_broadcasts(self):
    xs = common.mm_grid((3, 4, 5), (1.0, 2.0, 3.0), sparse=True)
    self.assertEqual([a.shape for a in xs], [(3, 1, 1), (1, 4, 1), (1, 1, 5)])
    np.testing.assert_allclose(xs[2].ravel(), [-6, -3, 0, 3, 6])

  @parameterized.parameters(((0, 4, 4), (1, 1, 1)), ((4, 4), (1, 1, 1)),
                            ((4, 4, 4), (1, 0, 1)), ((4, 4, 4), (1, np.nan, 1)))
  def test_bad_shape_spacing(self, shape, spacing):
    with self.assertRaises(ValueError):
      common.mm_grid(shape, spacing)

  def test_bbox_slices(self):
    # 10 voxels of 2 mm: centres at -9, -7, ..., 9.
    sl = common.bbox_slices((-3.0, -100, 50), (3.0, 100, 60), shape=(10,) * 3,
                            spacing=(2.0,) * 3, margin_mm=0.0)
    x = common.axis_coordinates(10, 2.0)
    inside = x[sl[0]]
    self.assertTrue(np.all(np.isin([-3, -1, 1, 3], inside)))
    self.assertEqual((sl[1].start, sl[1].stop), (0, 10))
    self.assertEqual(sl[2].stop - sl[2].start, 0)  # box outside the volume
    sl_m = common.bbox_slices((-3.0,) * 3, (3.0,) * 3, shape=(10,) * 3,
                              spacing=(2.0,) * 3, margin_mm=4.0)
    self.assertTrue(np.all(np.isin([-7, 7], x[sl_m[0]])))

  def test_rotation_matrix(self):
    r = common.rotation_matrix((10.0, -20.0, 33.0))
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    self.assertAlmostEqual(np.linalg.det(r), 1.0, 12)
    rz = common.rotation_matrix((0.0, 0.0, 90.0))
    np.testing.assert_allclose(rz @ [1.0, 0, 0], [0, 1, 0], atol=1e-12)

  def test_transform_coords_moves_anatomy(self):
    # A point at the frame's (1, 0, 0), rotated 90 deg about z and shifted by
    # (0, 0, 2), must appear at world (0, 1, 2).
    r = common.rotation_matrix((0.0, 0.0, 90.0))
    world = tuple(np.array([v], np.float32) for v in (0.0, 1.0, 2.0))
    q = common.transform_coords(world, rotation=r, translation=(0, 0, 2))
    np.testing.assert_allclose([c[0] for c in q], [1, 0, 0], atol=1e-6)


class PrimitiveTest(parameterized.TestCase):

  def test_ellipsoid_sdf_axes(self):
    pts = tuple(np.array(v, np.float32) for v in
                ([0, 5, 0, 0, 2, 0], [0, 0, 3, 0, 0, 4], [0, 0, 0, 2, 0, 0]))
    sd = common.ellipsoid_sdf(pts, center=(0, 0, 0), semi_axes=(4, 2, 1))
    # (||p / a|| - 1) * min(a), min(a) = 1.
    want = [-1.0, 0.25, 0.5, 1.0, -0.5, 1.0]
    np.testing.assert_allclose(sd, want, atol=1e-6)

  def test_ellipsoid_rotation(self):
    r = common.rotation_matrix((0.0, 0.0, 90.0))  # long axis x -> y
    pts = tuple(np.array(v, np.float32) for v in ([3.5, 0], [0, 3.5], [0, 0]))
    sd = common.ellipsoid_sdf(pts, center=(0, 0, 0), semi_axes=(4, 1, 1),
                              rotation=r)
    self.assertGreater(sd[0], 0)
    self.assertLess(sd[1], 0)

  def test_ellipsoid_bad_axes(self):
    with self.assertRaises(ValueError):
      common.ellipsoid_sdf((np.zeros(1),) * 3, center=(0, 0, 0),
                           semi_axes=(1, 0, 1))

  def test_tube_sdf_segment_distances(self):
    pts = [[0, 0, 0], [10, 0, 0]]
    q = np.array([[5, 3, 0], [-4, 0, 3], [12, 0, 0], [5, 0, 0.5]], np.float32)
    sd = common.tube_sdf(tuple(q.T), points=pts, radius=1.0)
    # Reference: distance to the segment minus the radius (float64 NumPy).
    def ref(p):
      a, b = np.array(pts[0], float), np.array(pts[1], float)
      t = np.clip(np.dot(p - a, b - a) / np.dot(b - a, b - a), 0, 1)
      return np.linalg.norm(p - a - t * (b - a)) - 1.0
    np.testing.assert_allclose(sd, [ref(p) for p in q.astype(float)],
                               atol=1e-5)
    np.testing.assert_allclose(sd, [2.0, 4.0, 1.0, -0.5], atol=1e-5)

  def test_tube_polyline_and_variable_radius(self):
    pts = [[0, 0, 0], [10, 0, 0], [10, 10, 0]]
    q = np.array([[5, 0, 0], [10, 5, 0], [0, 0, 0], [10, 10, 0]], np.float32)
    sd = common.tube_sdf(tuple(q.T), points=pts, radius=[1.0, 3.0, 5.0])
    np.testing.assert_allclose(sd, [-2.0, -4.0, -1.0, -5.0], atol=1e-5)
    # A single point is a sphere.
    sd1 = common.tube_sdf(tuple(q.T), points=[[0, 0, 0]], radius=2.0)
    np.testing.assert_allclose(sd1[2:], [-2.0, np.sqrt(200) - 2], atol=1e-5)

  def test_tube_axis_scale_gives_elliptic_section(self):
    q = tuple(np.array(v, np.float32) for v in ([1.8, 0], [0, 1.8], [0, 0]))
    sd = common.tube_sdf(q, points=[[0, 0, -5], [0, 0, 5]], radius=1.0,
                         axis_scale=(2.0, 1.0, 1.0))
    self.assertLess(sd[0], 0)  # inside the 2 mm wide axis
    self.assertGreater(sd[1], 0)

  def test_tube_bad_inputs(self):
    c = (np.zeros(2, np.float32),) * 3
    with self.assertRaises(ValueError):
      common.tube_sdf(c, points=[[0, 0]], radius=1.0)
    with self.assertRaises(ValueError):
      common.tube_sdf(c, points=[[0, 0, 0]], radius=-1.0)


class RandomFieldTest(parameterized.TestCase):

  def test_smooth_field_statistics_and_determinism(self):
    shape, spacing = (48, 48, 16), (1.0, 1.0, 1.0)
    f = common.smooth_random_field(np.random.default_rng(0), shape, spacing,
                                   correlation_mm=6.0, std=2.0)
    g = common.smooth_random_field(np.random.default_rng(0), shape, spacing,
                                   correlation_mm=6.0, std=2.0)
    self.assertEqual(f.dtype, np.float32)
    np.testing.assert_array_equal(f, g)
    self.assertAlmostEqual(float(f.std()), 2.0, delta=0.5)
    # Smooth: neighbours 1 mm apart are strongly correlated, far ones are not.
    near = np.corrcoef(f[:-1].ravel(), f[1:].ravel())[0, 1]
    far = np.corrcoef(f[:-20].ravel(), f[20:].ravel())[0, 1]
    self.assertGreater(near, 0.9)
    self.assertLess(abs(far), 0.3)

  def test_same_field_at_two_resolutions(self):
    # Centres of the coarse grid coincide with every other fine centre.
    kw = dict(correlation_mm=10.0, half_extent_mm=(40.0, 40.0, 40.0))
    fine = common.smooth_random_field(np.random.default_rng(3), (17, 9, 5),
                                      (1.0, 2.0, 2.0), **kw)
    coarse = common.smooth_random_field(np.random.default_rng(3), (9, 9, 5),
                                        (2.0, 2.0, 2.0), **kw)
    np.testing.assert_allclose(fine[::2], coarse, atol=1e-5)

  def test_displacement_and_bias(self):
    rng = np.random.default_rng(1)
    u = common.random_displacement_field(rng, (8, 9, 4), (1, 1, 2),
                                         magnitude_mm=2.0)
    chex.assert_shape(u, (3, 8, 9, 4))
    b = common.random_bias_field(rng, (8, 9, 4), (1, 1, 2), log_std=0.3)
    self.assertTrue(np.all(b > 0))
    self.assertEqual(b.dtype, np.float32)

  def test_deform_volume_identity_and_shift(self):
    rng = np.random.default_rng(0)
    img = rng.standard_normal((6, 7, 5)).astype(np.float32)
    lab = rng.integers(0, 4, (6, 7, 5)).astype(np.uint8)
    zero = np.zeros((3, 6, 7, 5), np.float32)
    out_i, out_l = common.deform_volume(img, lab, zero, (1.0, 1.0, 2.0))
    np.testing.assert_allclose(out_i, img, atol=1e-6)
    np.testing.assert_array_equal(out_l, lab)
    # Pull-back by +1 voxel (2 mm) along z: out[..., k] = in[..., k + 1].
    shift = zero.copy()
    shift[2] = 2.0
    out_i, out_l = common.deform_volume(img, lab, shift, (1.0, 1.0, 2.0))
    np.testing.assert_allclose(out_i[..., :-1], img[..., 1:], atol=1e-5)
    np.testing.assert_array_equal(out_l[..., :-1], lab[..., 1:])
    self.assertEqual(out_l.dtype, np.uint8)
    # Smooth random warps keep labels integral and never invent classes.
    u = common.random_displacement_field(rng, (6, 7, 5), (1.0, 1.0, 2.0),
                                         magnitude_mm=1.5, correlation_mm=5.0)
    _, out_l = common.deform_volume(img, np.where(lab == 2, 3, lab), u,
                                    (1.0, 1.0, 2.0))
    self.assertNotIn(2, np.unique(out_l))
    with self.assertRaises(ValueError):
      common.deform_volume(img, lab, zero[:, :-1], (1.0, 1.0, 2.0))

  def test_rician_noise(self):
    rng = np.random.default_rng(0)
    img = np.full((64, 64, 8), 0.7, np.float32)
    np.testing.assert_allclose(common.add_rician_noise(rng, img, sigma=0.0),
                               img)
    # Zero signal gives Rayleigh noise: mean sigma * sqrt(pi / 2).
    noise = common.add_rician_noise(rng, np.zeros_like(img), sigma=0.1)
    self.assertTrue(np.all(noise >= 0))
    self.assertAlmostEqual(float(noise.mean()), 0.1 * np.sqrt(np.pi / 2),
                           delta=3e-3)
    # High SNR: nearly Gaussian around the signal, std ~ sigma.
    high = common.add_rician_noise(rng, img, sigma=0.01)
    self.assertAlmostEqual(float(high.std()), 0.01, delta=1e-3)
    with self.assertRaises(ValueError):
      common.add_rician_noise(rng, img, sigma=-1.0)

  def test_phantom_case_validation(self):
    img = np.zeros((2, 2, 2), np.float32)
    lab = np.zeros((2, 2, 2), np.uint8)
    common.PhantomCase(img, lab, (1.0, 1.0, 1.0), np.eye(4), "x")
    with self.assertRaises(ValueError):
      common.PhantomCase(img, lab[:1], (1.0, 1.0, 1.0), np.eye(4), "x")
    with self.assertRaises(ValueError):
      common.PhantomCase(img.astype(np.float64), lab, (1, 1, 1), np.eye(4), "x")


class PelvisPhantomTest(parameterized.TestCase):

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.case = pelvis.make_pelvis_case(0)
    cls.case_b = pelvis.make_pelvis_case(1)

  def test_dtypes_shapes_affine(self):
    c = self.case
    self.assertEqual(c.image.shape, pelvis.PELVIS_PHANTOM_SHAPE)
    self.assertEqual(c.label.shape, pelvis.PELVIS_PHANTOM_SHAPE)
    self.assertEqual(c.image.dtype, np.float32)
    self.assertEqual(c.label.dtype, np.uint8)
    self.assertEqual(c.spacing, (0.75, 0.75, 3.0))
    self.assertEqual(c.case_id, "phantom-0000")
    self.assertEqual(pelvis.make_pelvis_case(7, **_SMALL).case_id,
                     "phantom-0007")
    np.testing.assert_allclose(np.diag(c.affine), [0.75, 0.75, 3.0, 1.0])
    # The volume centre maps to the world origin.
    centre = c.affine @ [95.5, 95.5, 11.5, 1.0]
    np.testing.assert_allclose(centre[:3], 0.0, atol=1e-9)
    self.assertTrue(np.all(np.isfinite(c.image)))
    self.assertGreaterEqual(float(c.image.min()), 0.0)  # Rician magnitude
    self.assertLessEqual(int(c.label.max()), 8)

  def test_determinism(self):
    a = pelvis.make_pelvis_case(11, **_SMALL)
    b = pelvis.make_pelvis_case(11, **_SMALL)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    self.assertEqual(a.image.tobytes(), b.image.tobytes())
    c = pelvis.make_pelvis_case(12, **_SMALL)
    self.assertFalse(np.array_equal(a.label, c.label))
    self.assertGreater(float(np.abs(a.image - c.image).mean()), 0.01)
    self.assertFalse(np.array_equal(self.case.label, self.case_b.label))

  def test_all_labels_present(self):
    for c in (self.case, self.case_b):
      counts = np.bincount(c.label.ravel(), minlength=9)
      self.assertLen(counts, 9)
      self.assertTrue(np.all(counts > 0), msg=f"{c.case_id}: {counts}")

  def test_relative_positions(self):
    for c in (self.case, self.case_b):
      lb, sp = c.label, c.spacing
      prostate = (lb == pelvis.TZ) | (lb == pelvis.CG)
      p = _centroid_mm(prostate, sp)
      bladder = _centroid_mm(lb == pelvis.BLADDER, sp) - p
      self.assertGreater(bladder[1], 3.0)  # anterior
      self.assertGreater(bladder[2], 10.0)  # superior
      rectum = _centroid_mm(lb == pelvis.RECTUM, sp) - p
      self.assertLess(rectum[1], -15.0)  # posterior
      sv = _centroid_mm(lb == pelvis.SV, sp) - p
      self.assertGreater(sv[2], 8.0)  # superior
      self.assertLess(sv[1], -5.0)  # posterior
      # SVs lie between the bladder (anterior) and the rectum (posterior).
      self.assertLess(sv[1], bladder[1])
      self.assertGreater(sv[1], rectum[1])

  def test_bilateral_and_lateral_structures(self):
    for c in (self.case, self.case_b):
      lb, sp = c.label, c.spacing
      half = lb.shape[0] // 2
      prostate = (lb == pelvis.TZ) | (lb == pelvis.CG)
      p = _centroid_mm(prostate, sp)
      px = np.nonzero(prostate)[0] * sp[0]
      for k, min_lateral in ((pelvis.BONE, 10.0), (pelvis.OBTURATOR, 10.0),
                             (pelvis.NVB, 5.0)):
        for side in (-1, 1):
          m = np.zeros_like(lb, bool)
          sl = slice(0, half) if side < 0 else slice(half, None)
          m[sl] = lb[sl] == k
          self.assertGreater(m.sum(), 0, msg=f"class {k} side {side}")
          cen = _centroid_mm(m, sp)
          lateral = side * (cen[0] - p[0])
          self.assertGreater(lateral, min_lateral, msg=f"class {k}")
          if k == pelvis.NVB:
            self.assertLess(cen[1], p[1] - 3.0)  # posterolateral
          else:  # beyond the prostate's lateral edge
            edge = px.min() if side < 0 else px.max()
            self.assertGreater(side * (cen[0] - edge), 5.0, msg=f"class {k}")

  def test_nvb_is_thin_and_runs_craniocaudally(self):
    lb = self.case.label
    nvb = lb == pelvis.NVB
    z_slices = np.nonzero(nvb.any(axis=(0, 1)))[0]
    self.assertGreaterEqual(len(z_slices), 6)  # >= 18 mm long
    # In-plane: per slice and side at most a few mm across.
    for k in z_slices:
      lab, n = ndimage.label(nvb[:, :, k])
      for j in range(1, n + 1):
        xs, ys = np.nonzero(lab == j)
        width_mm = (min(np.ptp(xs), np.ptp(ys)) + 1) * 0.75
        self.assertLessEqual(width_mm, 6.0)

  def test_tz_enclosed_by_cg(self):
    for c in (self.case, self.case_b):
      lb = c.label
      tz = lb == pelvis.TZ
      prostate = tz | (lb == pelvis.CG)
      grown = ndimage.binary_dilation(tz, structure=np.ones((3, 3, 1), bool))
      self.assertGreater(prostate[grown].mean(), 0.98)
      self.assertGreater((lb == pelvis.CG).sum(), 0.5 * tz.sum())

  def test_class_imbalance(self):
    for c in (self.case, self.case_b):
      frac = np.bincount(c.label.ravel(), minlength=9) / c.label.size
      self.assertLess(frac[pelvis.NVB], 0.005)
      self.assertLess(frac[pelvis.TZ] + frac[pelvis.CG], 0.05)
      self.assertGreater(frac[0], 0.5)

  def test_intensity_ordering(self):
    for c in (self.case, self.case_b):
      im, lb = c.image, c.label
      bladder = im[lb == pelvis.BLADDER].mean()
      prostate = im[(lb == pelvis.TZ) | (lb == pelvis.CG)].mean()
      obturator = im[lb == pelvis.OBTURATOR].mean()
      self.assertGreater(bladder, prostate + 0.05)
      self.assertGreater(prostate, obturator + 0.05)
      # TZ / CG / SV contrast is low compared with bladder vs prostate.
      tz, cg, sv = (im[lb == k].mean() for k in (pelvis.TZ, pelvis.CG,
                                                  pelvis.SV))
      self.assertLess(max(tz, cg, sv) - min(tz, cg, sv), bladder - prostate)

  def test_noise_present(self):
    im, lb = self.case.image, self.case.label
    urine = ndimage.binary_erosion(lb == pelvis.BLADDER, iterations=8,
                                   structure=np.ones((3, 3, 1), bool))
    self.assertGreater(urine.sum(), 100)
    vals = im[urine]
    self.assertGreater(vals.std() / vals.mean(), 0.01)
    self.assertGreater(len(np.unique(vals)), 0.9 * vals.size)
    # Air outside the body is dark but not zero (Rician floor).
    air = im[:, -1, :]
    self.assertGreater(float(air.min()), 0.0)
    self.assertLess(float(np.median(air)), 0.15)

  def test_nondefault_shape_spacing_same_anatomy(self):
    low = pelvis.make_pelvis_case(0, shape=(96, 96, 24),
                                  spacing=(1.5, 1.5, 3.0))
    self.assertEqual(low.image.shape, (96, 96, 24))
    self.assertEqual(low.spacing, (1.5, 1.5, 3.0))
    np.testing.assert_allclose(np.diag(low.affine), [1.5, 1.5, 3.0, 1.0])
    self.assertTrue(np.all(np.bincount(low.label.ravel(), minlength=9) > 0))
    # Same field of view and seed: the labels agree with the full-resolution
    # case at (nearly) coinciding voxel centres.
    agree = (self.case.label[::2, ::2] == low.label).mean()
    self.assertGreater(agree, 0.95)
    # Another field of view also works; anatomy keeps its mm size.
    other = pelvis.make_pelvis_case(0, shape=(40, 48, 10),
                                    spacing=(2.0, 2.0, 4.0))
    self.assertEqual(other.label.shape, (40, 48, 10))
    self.assertIn(pelvis.CG, np.unique(other.label))

  @parameterized.parameters(-1, 1.5, True)
  def test_bad_seed(self, seed):
    with self.assertRaises(ValueError):
      pelvis.make_pelvis_case(seed, **_SMALL)

  def test_bad_shape(self):
    with self.assertRaises(ValueError):
      pelvis.make_pelvis_case(0, shape=(10, 10), spacing=(1.0, 1.0, 1.0))
    with self.assertRaises(ValueError):
      pelvis.make_pelvis_case(0, shape=(10, 10, 10), spacing=(1.0, -1.0, 1.0))

  def test_montage_renders(self):
    # pylint: disable-next=g-import-not-at-top
    from datasets.male_pelvic_mr import montage
    case = pelvis.make_pelvis_case(3, **_SMALL)
    with tempfile.TemporaryDirectory() as d:
      out = os.path.join(d, "m.png")
      montage.render_montage([case], out, dpi=30)
      self.assertGreater(os.path.getsize(out), 1000)
      self.assertLess(os.path.getsize(out), 1_000_000)
      with open(out, "rb") as f:
        self.assertEqual(f.read(8), b"\x89PNG\r\n\x1a\n")


if __name__ == "__main__":
  absltest.main()
