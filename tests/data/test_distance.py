"""Tests for jaxseg.data.distance (signed distance maps, boundary loss)."""

from absl.testing import parameterized
import numpy as np

from jaxseg.data import distance


def _brute_force_sdm(mask, spacing, offset):
  """phi = d(q, inside) outside, -(d(q, outside) - offset) inside, float64."""
  mask = np.asarray(mask, bool)
  coords = np.stack(np.indices(mask.shape), -1).reshape(-1, mask.ndim)
  coords = coords * np.asarray(spacing, np.float64)
  flat = mask.ravel()
  d = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
  to_inside = np.where(flat[None, :], d, np.inf).min(1)
  to_outside = np.where(~flat[None, :], d, np.inf).min(1)
  phi = np.where(flat, -(to_outside - offset), to_inside)
  return phi.reshape(mask.shape)


class SignedDistanceMapTest(parameterized.TestCase):

  def test_1d_line(self):
    mask = np.array([0, 0, 1, 1, 1, 0])
    np.testing.assert_allclose(distance.signed_distance_map(mask),
                               [2, 1, 0, -1, 0, 1])

  def test_1d_spacing_offset(self):
    mask = np.array([0, 0, 1, 1, 1, 0])
    # Default offset = min(spacing) = 0.5: inside <= 0.
    np.testing.assert_allclose(
        distance.signed_distance_map(mask, spacing=0.5),
        [1.0, 0.5, 0.0, -0.5, 0.0, 0.5])
    # The literal "- 1" of Kervadec's code makes the inner band positive.
    np.testing.assert_allclose(
        distance.signed_distance_map(mask, spacing=0.5, inside_offset=1.0),
        [1.0, 0.5, 0.5, 0.0, 0.5, 0.5])

  def test_2d_line(self):
    mask = np.zeros((5, 3), bool)
    mask[2, :] = True  # A horizontal line: distance is the row offset.
    expected = np.array([2, 1, 0, 1, 2], float)[:, None].repeat(3, 1)
    np.testing.assert_allclose(distance.signed_distance_map(mask), expected)

  def test_2d_anisotropic(self):
    mask = np.zeros((3, 3), bool)
    mask[1, 1] = True
    got = distance.signed_distance_map(mask, spacing=(2.0, 1.0),
                                       dtype=np.float64)
    s5 = np.sqrt(5.0)
    expected = np.array([[s5, 2.0, s5], [1.0, 0.0, 1.0], [s5, 2.0, s5]])
    np.testing.assert_allclose(got, expected)
    self.assertEqual(got.dtype, np.float64)

  def test_2d_block_inside_negative(self):
    mask = np.zeros((7, 7), bool)
    mask[1:6, 1:6] = True
    got = distance.signed_distance_map(mask)
    self.assertEqual(got[3, 3], -2.0)  # Centre: 3 voxels to outside - 1.
    self.assertEqual(got[1, 1], 0.0)
    self.assertAlmostEqual(float(got[0, 0]), np.sqrt(2.0), places=6)
    self.assertTrue(np.all(got[mask] <= 0))
    self.assertTrue(np.all(got[~mask] > 0))

  @parameterized.parameters(
      ((1.0, 1.0), None), ((0.5, 3.0), None), ((0.75, 0.75, 3.0), None),
      ((2.0, 0.5), 1.0))
  def test_matches_brute_force(self, spacing, offset):
    rng = np.random.default_rng(len(spacing))
    shape = (6, 5) if len(spacing) == 2 else (4, 5, 3)
    mask = rng.uniform(size=shape) < 0.4
    got = distance.signed_distance_map(mask, spacing=spacing,
                                       inside_offset=offset, dtype=np.float64)
    ref = _brute_force_sdm(
        mask, spacing, min(spacing) if offset is None else offset)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)

  def test_empty_and_full_masks_give_zero(self):
    for mask in (np.zeros((4, 5), bool), np.ones((4, 5), bool)):
      got = distance.signed_distance_map(mask, spacing=(0.5, 2.0))
      np.testing.assert_array_equal(got, np.zeros((4, 5)))

  def test_one_hot_channels(self):
    label = np.array([[0, 1, 1], [2, 2, 0], [0, 0, 0]])
    onehot = np.eye(3, dtype=np.uint8)[label]
    got = distance.signed_distance_map(onehot, one_hot=True)
    self.assertEqual(got.shape, (3, 3, 3))
    for c in range(3):
      np.testing.assert_allclose(
          got[..., c], distance.signed_distance_map(onehot[..., c]))

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "binary"):
      distance.signed_distance_map(np.array([0, 1, 2]))
    with self.assertRaisesRegex(ValueError, "spacing"):
      distance.signed_distance_map(np.zeros((3, 3)), spacing=(1.0,))
    with self.assertRaisesRegex(ValueError, "spacing"):
      distance.signed_distance_map(np.zeros((3, 3)), spacing=(1.0, -1.0))
    with self.assertRaisesRegex(ValueError, "spacing"):
      distance.signed_distance_map(np.zeros((3, 3)), spacing=(1.0, np.nan))
    with self.assertRaisesRegex(ValueError, "non-empty"):
      distance.signed_distance_map(np.zeros((0, 3)))


class SignedDistanceMapsTest(parameterized.TestCase):

  def _label(self):
    label = np.zeros((6, 6), np.int64)
    label[1:3, 1:4] = 1
    label[4:6, 0:2] = 3  # Class 2 absent.
    return label

  def test_channels_and_absent_class(self):
    label = self._label()
    got = distance.signed_distance_maps(label, 4, spacing=(0.5, 1.5))
    self.assertEqual(got.shape, (6, 6, 3))
    self.assertEqual(got.dtype, np.float32)
    for k, c in enumerate((1, 2, 3)):
      np.testing.assert_allclose(
          got[..., k],
          distance.signed_distance_map(label == c, spacing=(0.5, 1.5)))
    np.testing.assert_array_equal(got[..., 1], 0.0)  # Class 2 absent.
    self.assertTrue(np.all(got[..., 0][label == 1] <= 0))
    self.assertTrue(np.all(got[..., 0][label != 1] > 0))

  def test_include_background(self):
    label = self._label()
    got = distance.signed_distance_maps(label, 4, include_background=True)
    self.assertEqual(got.shape, (6, 6, 4))
    np.testing.assert_allclose(got[..., 0],
                               distance.signed_distance_map(label == 0))
    np.testing.assert_allclose(got[..., 1:],
                               distance.signed_distance_maps(label, 4))

  def test_3d_volume(self):
    label = np.zeros((4, 4, 3), np.int32)
    label[1:3, 1:3, 1] = 1
    got = distance.signed_distance_maps(label, 2, spacing=(0.75, 0.75, 3.0))
    self.assertEqual(got.shape, (4, 4, 3, 1))
    # One slice away through-plane: 3 mm.
    np.testing.assert_allclose(got[1, 1, 0, 0], 3.0)
    np.testing.assert_allclose(got[1, 1, 1, 0], 0.0)

  def test_errors(self):
    label = self._label()
    with self.assertRaisesRegex(ValueError, "values must lie"):
      distance.signed_distance_maps(label, 3)
    with self.assertRaisesRegex(ValueError, "integer"):
      distance.signed_distance_maps(label.astype(float), 4)
    with self.assertRaisesRegex(ValueError, "num_classes"):
      distance.signed_distance_maps(label * 0, 1)
    with self.assertRaisesRegex(ValueError, "spacing"):
      distance.signed_distance_maps(label, 4, spacing=(1.0, 1.0, 1.0))
