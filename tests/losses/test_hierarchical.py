"""Tests of the hierarchical cross-entropy losses (REFERENCE §1)."""

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import hierarchy
from jaxseg.losses import cross_entropy, hierarchical
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32

D = hierarchy.PAPER_PENALTY_MATRIX


def np_log_softmax(logits):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_hierarchical_ce(logits, labels, penalty, alpha):
  log_p = np_log_softmax(logits)
  ce = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  weight = 1 + alpha * penalty[labels, logits.argmax(-1)]
  return (ce * weight).reshape(len(ce), -1).mean(-1)


def np_expected_cost_ce(logits, labels, cost, lam):
  log_p = np_log_softmax(logits)
  ce = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  expected = (cost[labels] * np.exp(log_p)).sum(-1)
  return ce.reshape(len(ce), -1).mean(-1) + lam * expected.reshape(len(ce), -1).mean(-1)


class HierarchicalCrossEntropyTest(chex.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.logits = (rng.normal(size=(2, 6, 5, 9)) * 2).astype(np.float32)
    self.labels = rng.integers(0, 9, size=(2, 6, 5))

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 1.0, 10.0)
  def test_matches_numpy_reference(self, alpha):
    fn = self.variant(lambda l, y: hierarchical.hierarchical_cross_entropy(l, y, penalty=D,
                                                                            alpha=alpha))
    out = fn(self.logits, self.labels)
    chex.assert_shape(out, (2,))
    np.testing.assert_allclose(out, np_hierarchical_ce(self.logits, self.labels, D, alpha),
                               rtol=1e-5)

  def test_alpha_zero_is_cross_entropy(self):
    np.testing.assert_allclose(
        hierarchical.hierarchical_cross_entropy(self.logits, self.labels, penalty=D, alpha=0.0),
        cross_entropy.softmax_cross_entropy(self.logits, self.labels), rtol=1e-6)

  def test_hand_computed(self):
    # Truth bladder (1); prediction bone (2) with probability 1/2, bladder 1/4: D[1, 2] = 0.91.
    logits = np.full((1, 1, 9), -np.inf, np.float32)
    logits[0, 0, [1, 2, 3]] = np.log([1.0, 2.0, 1.0])
    logits = np.where(np.isinf(logits), -1e9, logits).astype(np.float32)
    out = hierarchical.hierarchical_cross_entropy(logits, np.array([[1]]), penalty=D, alpha=3.0)
    np.testing.assert_allclose(out, [np.log(4.0) * (1 + 3.0 * 0.91)], rtol=1e-5)

  def test_penalty_weight_has_no_gradient(self):
    # The gradient equals that of CE scaled by the (constant) weight at the arg-max.
    logits = jnp.asarray(self.logits)
    labels = jnp.asarray(self.labels)
    weight = 1 + 2.0 * D[self.labels, self.logits.argmax(-1)]
    grad_h = jax.grad(lambda l: hierarchical.hierarchical_cross_entropy(
        l, labels, penalty=D, alpha=2.0).sum())(logits)
    grad_ce = jax.grad(lambda l: (cross_entropy.pixelwise_softmax_cross_entropy(l, labels)
                                  * weight).reshape(2, -1).mean(-1).sum())(logits)
    np.testing.assert_allclose(grad_h, grad_ce, rtol=1e-5, atol=1e-7)

  def test_traced_alpha(self):
    fn = jax.jit(lambda a: hierarchical.hierarchical_cross_entropy(self.logits, self.labels,
                                                                   penalty=D, alpha=a))
    np.testing.assert_allclose(fn(5.0), np_hierarchical_ce(self.logits, self.labels, D, 5.0),
                               rtol=1e-5)

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, scale):
    logits = jnp.zeros((1, 4, 4, 9)).at[..., 2].set(scale)
    labels = jnp.ones((1, 4, 4), jnp.int32)
    for fn in (lambda l: hierarchical.hierarchical_cross_entropy(l, labels, penalty=D, alpha=10.),
               lambda l: hierarchical.expected_cost_cross_entropy(l, labels, cost=D)):
      value, grad = jax.value_and_grad(lambda l: fn(l).sum())(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_all_background_batch(self):
    labels = np.zeros((2, 6, 5), np.int64)
    out = hierarchical.hierarchical_cross_entropy(self.logits, labels, penalty=D, alpha=5.0)
    # The background row of D is zero: no penalty at all.
    np.testing.assert_allclose(out, cross_entropy.softmax_cross_entropy(self.logits, labels),
                               rtol=1e-6)

  def test_bad_penalty_shape(self):
    with self.assertRaisesRegex(ValueError, "penalty"):
      hierarchical.hierarchical_cross_entropy(self.logits, self.labels, penalty=np.eye(3), alpha=1.)


class ExpectedCostTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, 4, 4, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=(3, 4, 4))
    cost = hierarchy.ordinal_cost_matrix(5)
    fn = self.variant(lambda l, y: hierarchical.expected_cost_cross_entropy(l, y, cost=cost,
                                                                             lam=10.0))
    np.testing.assert_allclose(fn(logits, labels), np_expected_cost_ce(logits, labels, cost, 10.0),
                               rtol=1e-5)

  def test_hand_computed_expected_cost(self):
    # Uniform prediction over 3 classes, truth 0, M = |i-j|^2/4: (0 + 1/4 + 1) / 3.
    logits = np.zeros((1, 1, 3), np.float32)
    out = hierarchical.expected_cost(logits, np.array([[0]]), cost=hierarchy.ordinal_cost_matrix(3))
    np.testing.assert_allclose(out, [(0 + 0.25 + 1.0) / 3], rtol=1e-6)

  def test_gradient_pushes_towards_cheaper_mistakes(self):
    # With CE fixed, the regulariser prefers the near class (1) to the far one (2) for truth 0.
    logits = jnp.zeros((1, 1, 3))
    grad = jax.grad(lambda l: hierarchical.expected_cost(
        l, jnp.zeros((1, 1), jnp.int32), cost=hierarchy.ordinal_cost_matrix(3)).sum())(logits)
    self.assertLess(float(grad[0, 0, 1]), float(grad[0, 0, 2]))




class Bfloat16Test(chex.TestCase):

  def test_bf16_logits_compute_in_float32(self):
    rng = np.random.default_rng(50)
    logits = (2 * rng.normal(size=(2, 4, 3, 9))).astype(np.float32)
    labels = rng.integers(0, 9, size=(2, 4, 3))
    _assert_bf16_like_float32(
        self, lambda x, y: hierarchical.hierarchical_cross_entropy(
            x, y, penalty=D, alpha=0.5), logits, labels)
    _assert_bf16_like_float32(
        self, lambda x, y: hierarchical.expected_cost(x, y, cost=D),
        logits, labels)
    _assert_bf16_like_float32(
        self, lambda x, y: hierarchical.expected_cost_cross_entropy(
            x, y, cost=D, lam=2.0), logits, labels)


if __name__ == "__main__":
  absltest.main()
