"""Tests of jaxseg.losses.cross_entropy against float64 NumPy references."""

from absl.testing import absltest, parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import cross_entropy
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32


def np_softmax_ce(logits, labels, weights=None):
  logits = np.asarray(logits, np.float64)
  shifted = logits - logits.max(-1, keepdims=True)
  log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  ce = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
  if weights is not None:
    ce = ce * np.asarray(weights)[labels]
  return ce.reshape(ce.shape[0], -1).mean(-1)


def np_bce(logits, labels, pos_weight=1.0):
  z = np.asarray(logits, np.float64)
  log_sig = -np.logaddexp(0.0, -z)
  log_one_minus = -np.logaddexp(0.0, z)
  loss = -(pos_weight * labels * log_sig + (1 - labels) * log_one_minus)
  return loss.reshape(loss.shape[0], -1).mean(-1)


class SoftmaxCrossEntropyTest(chex.TestCase, parameterized.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.logits = rng.normal(size=(3, 5, 4, 6)).astype(np.float32) * 3
    self.labels = rng.integers(0, 6, size=(3, 5, 4))

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    out = self.variant(cross_entropy.softmax_cross_entropy)(self.logits, self.labels)
    chex.assert_shape(out, (3,))
    chex.assert_type(out, jnp.float32)
    np.testing.assert_allclose(out, np_softmax_ce(self.logits, self.labels), rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  def test_class_weights(self):
    weights = np.array([0.05, 0.3, 0.65, 1.0, 2.0, 0.0], np.float32)
    fn = self.variant(lambda l, y: cross_entropy.softmax_cross_entropy(l, y, class_weights=weights))
    np.testing.assert_allclose(fn(self.logits, self.labels),
                               np_softmax_ce(self.logits, self.labels, weights), rtol=1e-5)

  def test_hand_computed(self):
    # Two classes, logits (0, 0): CE = log 2 everywhere; logits (log 3, 0) with label 0: log(4/3).
    logits = np.array([[[0.0, 0.0], [np.log(3.0), 0.0]]], np.float32)
    labels = np.array([[1, 0]])
    expected = (np.log(2.0) + np.log(4.0 / 3.0)) / 2
    np.testing.assert_allclose(cross_entropy.softmax_cross_entropy(logits, labels), [expected],
                               rtol=1e-6)

  def test_agrees_with_optax(self):
    import optax
    ref = optax.losses.softmax_cross_entropy_with_integer_labels(self.logits, self.labels)
    np.testing.assert_allclose(cross_entropy.softmax_cross_entropy(self.logits, self.labels),
                               ref.reshape(3, -1).mean(-1), rtol=1e-6)

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, scale):
    logits = np.zeros((2, 3, 3, 4), np.float32)
    logits[..., 0] = scale
    labels = np.full((2, 3, 3), 2)
    value, grad = jax.value_and_grad(lambda l: cross_entropy.softmax_cross_entropy(l, labels).sum())(
        jnp.asarray(logits))
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_bad_shapes(self):
    with self.assertRaisesRegex(ValueError, "labels"):
      cross_entropy.softmax_cross_entropy(self.logits, self.labels[:, :2])
    with self.assertRaisesRegex(ValueError, "class_weights"):
      cross_entropy.softmax_cross_entropy(self.logits, self.labels, class_weights=np.ones(3))


class SigmoidBinaryCrossEntropyTest(chex.TestCase, parameterized.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_reference(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 6, 5)).astype(np.float32) * 4
    labels = (rng.random((4, 6, 5)) > 0.7).astype(np.float32)
    out = self.variant(cross_entropy.sigmoid_binary_cross_entropy)(logits, labels)
    chex.assert_shape(out, (4,))
    np.testing.assert_allclose(out, np_bce(logits, labels), rtol=1e-5)
    out = self.variant(lambda a, b: cross_entropy.sigmoid_binary_cross_entropy(a, b, pos_weight=3.0))(
        logits, labels)
    np.testing.assert_allclose(out, np_bce(logits, labels, 3.0), rtol=1e-5)

  def test_channel_axis_and_hand_value(self):
    logits = np.zeros((1, 2, 2, 1), np.float32)
    labels = np.array([[[1, 0], [0, 1]]], np.float32)
    np.testing.assert_allclose(cross_entropy.sigmoid_binary_cross_entropy(logits, labels),
                               [np.log(2.0)], rtol=1e-6)

  def test_agrees_with_optax(self):
    import optax
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 8)).astype(np.float32)
    labels = (rng.random((2, 8)) > 0.5).astype(np.float32)
    np.testing.assert_allclose(cross_entropy.sigmoid_binary_cross_entropy(logits, labels),
                               optax.sigmoid_binary_cross_entropy(logits, labels).mean(-1),
                               rtol=1e-6)

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, value):
    logits = jnp.full((2, 3, 3), value)
    labels = jnp.asarray(np.indices((2, 3, 3)).sum(0) % 2, jnp.float32)
    loss, grad = jax.value_and_grad(
        lambda l: cross_entropy.sigmoid_binary_cross_entropy(l, labels).sum())(logits)
    self.assertTrue(np.isfinite(loss))
    self.assertTrue(np.all(np.isfinite(grad)))




class Bfloat16Test(chex.TestCase):

  def test_bf16_logits_compute_in_float32(self):
    rng = np.random.default_rng(50)
    logits = (2 * rng.normal(size=(2, 4, 3, 3))).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4, 3))
    _assert_bf16_like_float32(
        self, lambda x, y: cross_entropy.softmax_cross_entropy(
            x, y, class_weights=[0.2, 1.0, 2.0]), logits, labels)
    _assert_bf16_like_float32(
        self, cross_entropy.pixelwise_softmax_cross_entropy, logits, labels)
    mask = (labels > 0).astype(np.float32)
    _assert_bf16_like_float32(
        self, lambda x, y: cross_entropy.sigmoid_binary_cross_entropy(
            x, y, pos_weight=2.0), logits[..., :1], mask)


if __name__ == "__main__":
  absltest.main()
