"""Tests for jaxseg.metrics.stats (bootstrap CIs, mean/std with NaN counts)."""

import dataclasses

from absl.testing import absltest
from absl.testing import parameterized
import chex
import numpy as np

from jaxseg.metrics import stats


def _reference_bootstrap(values, statistic, num_resamples, level, seed):
  """Plain loop over resamples, written from the definition."""
  rng = np.random.default_rng(seed)
  n = len(values)
  idx = rng.integers(0, n, size=(num_resamples, n))
  reps = np.array([statistic(values[i]) for i in idx])
  alpha = (1 - level) / 2 * 100
  return np.percentile(reps, alpha), np.percentile(reps, 100 - alpha)


class BootstrapCITest(chex.TestCase, parameterized.TestCase):

  def test_deterministic_per_seed(self):
    x = np.random.default_rng(1).normal(size=40)
    a = stats.bootstrap_ci(x, seed=3, num_resamples=500)
    b = stats.bootstrap_ci(x, seed=3, num_resamples=500)
    c = stats.bootstrap_ci(x, seed=4, num_resamples=500)
    self.assertEqual(a, b)
    self.assertNotEqual((a.low, a.high), (c.low, c.high))

  @parameterized.parameters(np.mean, np.median)
  def test_matches_loop_reference(self, statistic):
    x = np.random.default_rng(2).uniform(size=30)
    est = stats.bootstrap_ci(x, statistic=statistic, num_resamples=300,
                             level=0.9, seed=7)
    low, high = _reference_bootstrap(x, statistic, 300, 0.9, 7)
    np.testing.assert_allclose([est.low, est.high], [low, high], rtol=1e-12)
    self.assertAlmostEqual(est.value, float(statistic(x)))

  def test_non_vectorised_statistic_same_as_vectorised(self):
    x = np.random.default_rng(3).normal(size=25)
    vec = stats.bootstrap_ci(x, statistic=np.mean, num_resamples=200, seed=1)
    loop = stats.bootstrap_ci(x, statistic=lambda v: float(np.mean(v)),
                              num_resamples=200, seed=1)
    np.testing.assert_allclose([vec.low, vec.high], [loop.low, loop.high],
                               rtol=1e-12)

  def test_ci_contains_estimate_and_narrows_with_n(self):
    rng = np.random.default_rng(4)
    small = stats.bootstrap_ci(rng.normal(size=20), num_resamples=500)
    large = stats.bootstrap_ci(rng.normal(size=2000), num_resamples=500)
    for est in (small, large):
      self.assertLessEqual(est.low, est.value)
      self.assertGreaterEqual(est.high, est.value)
    self.assertLess(large.high - large.low, small.high - small.low)
    # Width of the mean's CI ~ 2 * 1.96 / sqrt(n) for unit variance.
    self.assertAlmostEqual(large.high - large.low, 2 * 1.96 / np.sqrt(2000),
                           delta=0.02)

  def test_nan_excluded_and_counted(self):
    x = np.array([0.5, np.nan, 0.7, 0.9, np.nan])
    est = stats.bootstrap_ci(x, num_resamples=100)
    self.assertEqual(est.n, 3)
    self.assertEqual(est.n_undefined, 2)
    self.assertAlmostEqual(est.value, 0.7)
    ref = stats.bootstrap_ci(np.array([0.5, 0.7, 0.9]), num_resamples=100)
    self.assertEqual((est.low, est.high), (ref.low, ref.high))

  def test_all_nan(self):
    est = stats.bootstrap_ci([np.nan, np.nan])
    self.assertTrue(np.isnan(est.value) and np.isnan(est.low))
    self.assertEqual((est.n, est.n_undefined), (0, 2))

  def test_constant_and_single_value(self):
    est = stats.bootstrap_ci([0.3] * 5, num_resamples=50)
    self.assertEqual((est.value, est.low, est.high), (0.3, 0.3, 0.3))
    est = stats.bootstrap_ci([0.8], num_resamples=50)
    self.assertEqual((est.low, est.high, est.n), (0.8, 0.8, 1))

  def test_format(self):
    est = stats.Estimate(0.8123, 0.79, 0.8334, 10, 0)
    self.assertEqual(est.format(3), "0.812 [0.790, 0.833]")
    self.assertEqual(est.format(1), "0.8 [0.8, 0.8]")
    self.assertEqual(str(est), "0.812 [0.790, 0.833]")
    with self.assertRaises(dataclasses.FrozenInstanceError):
      est.value = 1.0

  @parameterized.parameters(
      dict(values=[], kw={}),
      dict(values=[[1.0, 2.0]], kw={}),
      dict(values=[1.0, np.inf], kw={}),
      dict(values=[1.0, 2.0], kw=dict(level=1.0)),
      dict(values=[1.0, 2.0], kw=dict(num_resamples=0)),
  )
  def test_bad_input(self, values, kw):
    with self.assertRaises(ValueError):
      stats.bootstrap_ci(values, **kw)


class BootstrapPairedTest(chex.TestCase):

  def test_pairs_stay_aligned(self):
    # b == 2 * a row by row: any misalignment would break the identity.
    a = np.random.default_rng(0).normal(size=15)
    b = 2 * a
    seen = []

    def statistic(x, y):
      np.testing.assert_array_equal(y, 2 * x)
      seen.append(1)
      return float(np.mean(y - 2 * x))

    est = stats.bootstrap_ci_paired([a, b], statistic, num_resamples=50)
    self.assertEqual(len(seen), 51)
    self.assertEqual((est.value, est.low, est.high), (0.0, 0.0, 0.0))
    self.assertEqual(est.n, 15)

  def test_same_indices_as_unpaired(self):
    x = np.random.default_rng(5).uniform(size=20)
    single = stats.bootstrap_ci(x, num_resamples=200, seed=9)
    paired = stats.bootstrap_ci_paired([x], np.mean, num_resamples=200, seed=9)
    np.testing.assert_allclose([single.low, single.high],
                               [paired.low, paired.high], rtol=1e-12)

  def test_lists_and_2d_arrays(self):
    rows = np.arange(12.0).reshape(6, 2)
    names = [f"case{i}" for i in range(6)]

    def statistic(r, n):
      self.assertIsInstance(n, list)
      self.assertEqual([int(s[4:]) for s in n], [int(v[0]) // 2 for v in r])
      return float(r[:, 1].mean())

    est = stats.bootstrap_ci_paired([rows, names], statistic,
                                    num_resamples=30, seed=2)
    self.assertAlmostEqual(est.value, 6.0)
    self.assertLessEqual(est.low, est.value)
    self.assertGreaterEqual(est.high, est.value)

  def test_nan_resamples_dropped_and_counted(self):
    labels = np.array([1, 0, 0, 0, 0, 0])
    scores = np.linspace(0, 1, 6)

    def statistic(s, y):
      if y.min() == y.max():
        return np.nan
      return float(s[y == 1].mean() - s[y == 0].mean())

    est = stats.bootstrap_ci_paired([scores, labels], statistic,
                                    num_resamples=400, seed=0)
    # P(no positive among 6 draws) = (5/6)^6 ~ 0.33.
    self.assertGreater(est.n_resamples_undefined, 60)
    self.assertLess(est.n_resamples_undefined, 210)
    self.assertTrue(np.isfinite(est.low) and np.isfinite(est.high))

  def test_bad_input(self):
    with self.assertRaises(ValueError):
      stats.bootstrap_ci_paired([], np.mean)
    with self.assertRaises(ValueError):
      stats.bootstrap_ci_paired([np.ones(3), np.ones(4)], np.mean)
    with self.assertRaises(ValueError):
      stats.bootstrap_ci_paired([np.ones(0)], np.mean)
    with self.assertRaises(ValueError):
      stats.bootstrap_ci_paired([np.ones(3)], np.mean, level=0.0)


class MeanStdTest(chex.TestCase):

  def test_values_and_counts(self):
    res = stats.mean_std([1.0, np.nan, 3.0, 5.0])
    self.assertEqual(res.n, 3)
    self.assertEqual(res.n_undefined, 1)
    self.assertAlmostEqual(res.mean, 3.0)
    self.assertAlmostEqual(res.std, np.sqrt(8 / 3))
    self.assertAlmostEqual(stats.mean_std([1.0, 3.0, 5.0], ddof=1).std, 2.0)

  def test_undefined(self):
    res = stats.mean_std([np.nan])
    self.assertTrue(np.isnan(res.mean) and np.isnan(res.std))
    self.assertEqual((res.n, res.n_undefined), (0, 1))
    self.assertTrue(np.isnan(stats.mean_std([2.0], ddof=1).std))
    with self.assertRaises(ValueError):
      stats.mean_std([])



class BootstrapIndicesTest(chex.TestCase):

  def test_indices_are_shared_by_the_bootstraps(self):
    idx = stats.bootstrap_indices(7, num_resamples=50, seed=3)
    self.assertEqual(idx.shape, (50, 7))
    self.assertTrue(((idx >= 0) & (idx < 7)).all())
    values = np.arange(7, dtype=np.float64) ** 2
    want = np.percentile(values[idx].mean(axis=1), [2.5, 97.5])
    est = stats.bootstrap_ci(values, num_resamples=50, seed=3)
    np.testing.assert_allclose([est.low, est.high], want)
    paired = stats.bootstrap_ci_paired([values], np.mean, num_resamples=50, seed=3)
    np.testing.assert_allclose([paired.low, paired.high], want)
    with self.assertRaises(ValueError):
      stats.bootstrap_indices(0, num_resamples=5, seed=0)
    with self.assertRaises(ValueError):
      stats.bootstrap_indices(3, num_resamples=0, seed=0)


if __name__ == "__main__":
  absltest.main()
