"""Tests for jaxseg.metrics.calibration (NLL, ECE, reliability diagrams)."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import numpy as np

from jaxseg.metrics import calibration


def _random_probs(rng, shape, num_classes):
  logits = rng.normal(size=shape + (num_classes,)) * 2
  e = np.exp(logits - logits.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _ece_reference(conf, correct, num_bins):
  """Loop over bins (m-1)/M < c <= m/M (bin 0 also holds c = 0)."""
  conf = np.asarray(conf, np.float64).ravel()
  correct = np.asarray(correct, np.float64).ravel()
  n = conf.size
  ece = 0.0
  for m in range(num_bins):
    lo, hi = m / num_bins, (m + 1) / num_bins
    in_bin = (conf > lo) & (conf <= hi)
    if m == 0:
      in_bin |= conf == 0
    if in_bin.any():
      ece += in_bin.sum() / n * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return ece


class NLLTest(chex.TestCase):

  def test_hand_computed(self):
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    labels = np.array([0, 1])
    expected = -(np.log(0.7) + np.log(0.1)) / 2
    self.assertAlmostEqual(
        calibration.negative_log_likelihood(probs, labels), expected, places=12)

  def test_random_3d_against_direct_formula(self):
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, (2, 3, 4, 5), 4).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 3, 4, 5))
    ref = -np.mean(np.log(np.clip(
        np.eye(4)[labels].astype(np.float64) * probs, 0, 1).sum(-1)))
    self.assertAlmostEqual(
        calibration.negative_log_likelihood(probs, labels), ref, places=6)

  def test_eps_floor(self):
    probs = np.array([[1.0, 0.0]])
    self.assertAlmostEqual(
        calibration.negative_log_likelihood(probs, [1], eps=1e-7),
        -np.log(1e-7))
    self.assertEqual(calibration.negative_log_likelihood(probs, [0]), 0.0)

  @parameterized.parameters(
      dict(probs=np.full((2, 2), 0.5), labels=np.array([0, 2])),  # range
      dict(probs=np.full((2, 2), 0.5), labels=np.array([0])),  # shape
      dict(probs=np.full((2, 2), 0.7), labels=np.array([0, 1])),  # sum
      dict(probs=np.array([[2.0, -1.0]]), labels=np.array([0])),  # logits
      dict(probs=np.full((0, 2), 0.5), labels=np.zeros(0, int)),  # empty
      dict(probs=np.array([[np.nan, 0.5]]), labels=np.array([0])),
      dict(probs=np.full((2, 2), 0.5), labels=np.array([0.5, 1.0])),
  )
  def test_bad_input(self, probs, labels):
    with self.assertRaises(ValueError):
      calibration.negative_log_likelihood(probs, labels)

  def test_binary_equals_two_class(self):
    rng = np.random.default_rng(1)
    p = rng.uniform(size=(3, 7))
    y = rng.integers(0, 2, size=(3, 7))
    two = np.stack([1 - p, p], -1)
    self.assertAlmostEqual(
        calibration.binary_negative_log_likelihood(p, y),
        calibration.negative_log_likelihood(two, y), places=12)
    ref = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    self.assertAlmostEqual(
        calibration.binary_negative_log_likelihood(p, y.astype(bool)), ref,
        places=12)
    with self.assertRaises(ValueError):
      calibration.binary_negative_log_likelihood(p, y + 1)


class ECETest(chex.TestCase, parameterized.TestCase):

  def test_hand_computed(self):
    # confidences 0.9 (correct), 0.8 (wrong), 0.65 (correct), 0.55 (wrong)
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.65, 0.35], [0.45, 0.55]])
    labels = np.array([0, 0, 0, 0])
    # 2 bins (0, .5], (.5, 1]: all in bin 1, acc 0.5, conf 0.725.
    self.assertAlmostEqual(
        calibration.expected_calibration_error(probs, labels, num_bins=2),
        abs(0.5 - 0.725))
    # 10 bins: {0.55} {0.65} {0.8} {0.9} one per bin:
    # (|0 - .55| + |1 - .65| + |0 - .8| + |1 - .9|) / 4
    self.assertAlmostEqual(
        calibration.expected_calibration_error(probs, labels, num_bins=10),
        (0.55 + 0.35 + 0.8 + 0.1) / 4)
    # 4 bins: {0.55, 0.65} share (.5, .75] (acc .5, conf .6); {.8, .9} share
    # (.75, 1] (acc .5, conf .85).
    self.assertAlmostEqual(
        calibration.expected_calibration_error(probs, labels, num_bins=4),
        0.5 * 0.1 + 0.5 * 0.35)

  @parameterized.parameters(1, 5, 15)
  def test_random_against_reference(self, num_bins):
    rng = np.random.default_rng(num_bins)
    probs = _random_probs(rng, (4, 6, 5), 3)
    labels = rng.integers(0, 3, size=(4, 6, 5))
    conf = probs.max(-1)
    correct = probs.argmax(-1) == labels
    self.assertAlmostEqual(
        calibration.expected_calibration_error(probs, labels,
                                               num_bins=num_bins),
        _ece_reference(conf, correct, num_bins), places=12)

  def test_bin_edges_right_inclusive(self):
    # confidence exactly 0.75 belongs to (0.5, 0.75] with 4 bins, 1.0 to the
    # last bin.
    probs = np.array([[0.75, 0.25], [0.0, 1.0]])
    diag = calibration.reliability_diagram(probs, [0, 1], num_bins=4)
    np.testing.assert_array_equal(diag["counts"], [0, 0, 1, 1])

  def test_perfectly_calibrated_is_near_zero(self):
    rng = np.random.default_rng(0)
    n = 200_000
    p = rng.uniform(size=n)
    y = (rng.uniform(size=n) < p).astype(int)
    # Two-class map sampled from its own probabilities.
    probs = np.stack([1 - p, p], -1)
    self.assertLess(calibration.expected_calibration_error(probs, y), 0.01)
    self.assertLess(calibration.binary_expected_calibration_error(p, y), 0.01)
    # An over-confident map is not.
    sharp = np.clip((p - 0.5) * 3 + 0.5, 0, 1)
    self.assertGreater(
        calibration.binary_expected_calibration_error(sharp, y), 0.1)

  def test_reliability_diagram_fields(self):
    rng = np.random.default_rng(3)
    probs = _random_probs(rng, (50,), 4)
    labels = rng.integers(0, 4, size=50)
    diag = calibration.reliability_diagram(probs, labels, num_bins=15)
    self.assertEqual(diag["bin_edges"].shape, (16,))
    np.testing.assert_allclose(diag["bin_edges"], np.linspace(0, 1, 16))
    self.assertEqual(diag["counts"].sum(), 50)
    empty = diag["counts"] == 0
    self.assertTrue(empty.any())  # top-label conf >= 1/4: low bins empty
    self.assertTrue(np.isnan(diag["confidence"][empty]).all())
    self.assertTrue(np.isnan(diag["accuracy"][empty]).all())
    full = ~empty
    edges = diag["bin_edges"]
    self.assertTrue(np.all(diag["confidence"][full] > edges[:-1][full]))
    self.assertTrue(np.all(diag["confidence"][full] <= edges[1:][full]))
    ece = np.nansum(diag["counts"] * np.abs(
        diag["accuracy"] - diag["confidence"])) / 50
    self.assertAlmostEqual(
        calibration.expected_calibration_error(probs, labels), ece)

  def test_binary_definition_is_foreground_probability(self):
    # p = 0.2 on 5 voxels with 1 foreground: calibrated in the fg sense.
    p = np.array([0.2] * 5 + [0.9] * 2)
    y = np.array([1, 0, 0, 0, 0, 1, 0])
    diag = calibration.binary_reliability_diagram(p, y, num_bins=10)
    np.testing.assert_allclose(diag["confidence"][[1, 8]], [0.2, 0.9])
    np.testing.assert_allclose(diag["accuracy"][[1, 8]], [0.2, 0.5])
    self.assertAlmostEqual(
        calibration.binary_expected_calibration_error(p, y, num_bins=10),
        2 / 7 * 0.4)
    # p = 0 lands in the first bin.
    diag = calibration.binary_reliability_diagram([0.0, 1.0], [0, 1],
                                                  num_bins=4)
    np.testing.assert_array_equal(diag["counts"], [1, 0, 0, 1])

  def test_large_volume_is_fast_and_float32_ok(self):
    rng = np.random.default_rng(0)
    probs = _random_probs(rng, (64, 64, 16), 3).astype(np.float32)
    labels = rng.integers(0, 3, size=(64, 64, 16))
    ece = calibration.expected_calibration_error(probs, labels)
    self.assertTrue(0.0 <= ece <= 1.0)

  def test_bad_num_bins(self):
    with self.assertRaises(ValueError):
      calibration.expected_calibration_error(np.full((1, 2), 0.5), [0],
                                             num_bins=0)
    with self.assertRaises(ValueError):
      calibration.binary_expected_calibration_error([0.5], [0], num_bins=2.5)



class PooledDiagramTest(chex.TestCase):

  def test_pooled_diagram_equals_diagram_of_concatenated_voxels(self):
    rng = np.random.default_rng(2)
    probs = [rng.dirichlet(np.ones(2) * 0.5, size=(6, 5)) for _ in range(3)]
    labels = [rng.integers(0, 2, (6, 5)) for _ in range(3)]
    diagrams = [calibration.reliability_diagram(p, y, num_bins=15)
                for p, y in zip(probs, labels)]
    pooled = calibration.pool_reliability_diagrams(diagrams)
    want = calibration.reliability_diagram(np.concatenate(probs), np.concatenate(labels),
                                           num_bins=15)
    np.testing.assert_array_equal(pooled["counts"], want["counts"])
    self.assertEqual(pooled["counts"].sum(), 90)
    for key in ("confidence", "accuracy"):
      np.testing.assert_allclose(pooled[key], want[key], rtol=1e-12)  # NaN where both empty
    self.assertAlmostEqual(
        calibration.ece_from_diagram(pooled),
        calibration.expected_calibration_error(np.concatenate(probs), np.concatenate(labels),
                                               num_bins=15), places=12)

  def test_ece_from_hand_diagram_and_errors(self):
    # Two bins: 3 voxels at confidence 0.9 with accuracy 2/3, 1 voxel at 0.6, correct.
    diagram = {"bin_edges": np.array([0.0, 0.5, 1.0]), "counts": np.array([0, 4]),
               "confidence": np.array([np.nan, 0.825]), "accuracy": np.array([np.nan, 0.75])}
    self.assertAlmostEqual(calibration.ece_from_diagram(diagram), 0.075)
    with self.assertRaisesRegex(ValueError, "at least one"):
      calibration.pool_reliability_diagrams([])
    other = dict(diagram, bin_edges=np.array([0.0, 0.4, 1.0]))
    with self.assertRaisesRegex(ValueError, "different bins"):
      calibration.pool_reliability_diagrams([diagram, other])
    with self.assertRaisesRegex(ValueError, "no voxels"):
      calibration.ece_from_diagram(dict(diagram, counts=np.array([0, 0])))


class Bfloat16Test(absltest.TestCase):
  """bf16 probabilities (a mixed-precision model's output) are read in float64."""

  def test_bf16_probabilities(self):
    import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, (4, 50)).astype(np.float32)
    y = rng.integers(0, 2, (4, 50))
    low = jnp.asarray(p, jnp.bfloat16)
    as_read = np.asarray(low.astype(jnp.float32), np.float64)  # the bf16 values themselves
    for fn in (calibration.binary_negative_log_likelihood,
               calibration.binary_expected_calibration_error):
      got = fn(low, y)
      self.assertIsInstance(got, float)
      self.assertAlmostEqual(got, fn(as_read, y), places=12)


if __name__ == "__main__":
  absltest.main()
