"""Tests for jaxseg.losses._stable (the exact log-sigmoid pair of the sigmoid losses)."""

from absl.testing import absltest
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import _stable

# Zero, both signs, the float32 rounding edges of exp(-|x|), and extremes.
_LOGITS = np.array([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 17.0, -17.0, 40.0, -40.0,
                    88.0, -88.0, 104.0, -104.0, 1e4, -1e4, 3.4e38, -3.4e38], np.float32)


def _log_sigmoid_np(x):
  """Float64 log(sigmoid(x)) = -log(1 + exp(-x)), from the formula."""
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


class LogSigmoidsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_values_match_float64_and_jax(self):
    log_p, log_q = self.variant(_stable.log_sigmoids)(jnp.asarray(_LOGITS))
    chex.assert_shape((log_p, log_q), _LOGITS.shape)
    chex.assert_type((log_p, log_q), jnp.float32)
    for got, ref in ((log_p, _log_sigmoid_np(_LOGITS)), (log_q, _log_sigmoid_np(-_LOGITS))):
      got = np.asarray(got, np.float64)
      self.assertTrue(np.all(np.isfinite(got)))
      np.testing.assert_allclose(got, ref, rtol=2e-7, atol=1e-30)
    # The same values as jax.nn.log_sigmoid (which they replace), to float32 rounding.
    np.testing.assert_allclose(log_p, jax.nn.log_sigmoid(jnp.asarray(_LOGITS)), rtol=2e-7)
    np.testing.assert_allclose(log_q, jax.nn.log_sigmoid(-jnp.asarray(_LOGITS)), rtol=2e-7)

  def test_hand_computed(self):
    log_p, log_q = _stable.log_sigmoids(jnp.asarray([0.0, np.log(3.0)], jnp.float32))
    # sigmoid(0) = 1/2; sigmoid(log 3) = 3/4, sigmoid(-log 3) = 1/4.
    np.testing.assert_allclose(log_p, [np.log(0.5), np.log(0.75)], rtol=1e-6)
    np.testing.assert_allclose(log_q, [np.log(0.5), np.log(0.25)], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_gradients_are_the_sigmoids(self):
    # d log sigmoid(x) / dx = sigmoid(-x) and d log sigmoid(-x) / dx = -sigmoid(x), including
    # x = 0 (where max and |x| have kinks) and the extremes (0 or 1, never NaN).
    x = jnp.asarray(_LOGITS[np.abs(_LOGITS) < 1e5])
    grad_p = self.variant(jax.grad(lambda v: jnp.sum(_stable.log_sigmoids(v)[0])))(x)
    grad_q = self.variant(jax.grad(lambda v: jnp.sum(_stable.log_sigmoids(v)[1])))(x)
    x64 = np.asarray(x, np.float64)
    np.testing.assert_allclose(grad_p, 1.0 / (1.0 + np.exp(x64)), rtol=1e-6, atol=1e-30)
    np.testing.assert_allclose(grad_q, -1.0 / (1.0 + np.exp(-x64)), rtol=1e-6, atol=1e-30)

  def test_vmap_matches_batch(self):
    x = jnp.asarray(np.random.default_rng(0).normal(scale=20.0, size=(3, 5)), jnp.float32)
    batched = jax.vmap(_stable.log_sigmoids)(x)
    whole = _stable.log_sigmoids(x)
    for a, b in zip(batched, whole):
      np.testing.assert_array_equal(a, b)


if __name__ == "__main__":
  absltest.main()
