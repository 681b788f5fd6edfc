"""Tests for jaxseg.losses.focal (sigmoid and softmax focal losses)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.losses import focal
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32

# One compilation per configuration is much faster than op-by-op dispatch.
_softmax_focal = jax.jit(
    focal.softmax_focal_loss,
    static_argnames=("gamma", "clip_eps", "reduction"))
_sigmoid_focal = jax.jit(
    focal.sigmoid_focal_loss, static_argnames=("alpha", "reduction"))


def _log_sigmoid_np(x):
  x = np.asarray(x, np.float64)
  return -np.logaddexp(0.0, -x)


def _sigmoid_focal_np(x, y, alpha, gamma):
  """Float64 reference, per element, from the formula."""
  x = np.asarray(x, np.float64)
  y = np.asarray(y, np.float64)
  p = 1.0 / (1.0 + np.exp(-x))
  ce = -y * _log_sigmoid_np(x) - (1 - y) * _log_sigmoid_np(-x)
  one_minus_pt = y * (1 - p) + (1 - y) * p
  loss = one_minus_pt ** gamma * ce
  if alpha is not None:
    loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
  return loss


def _softmax_focal_np(x, onehot, alpha, gamma, clip=None):
  x = np.asarray(x, np.float64)
  log_p = x - x.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
  p = np.exp(log_p)
  if clip is not None:
    p = np.clip(p, clip, 1 - clip)
    log_p = np.log(p)
  per_pixel = (alpha * onehot * (1 - p) ** gamma * -log_p).sum(-1)
  return per_pixel


class SigmoidFocalTest(chex.TestCase):

  def _data(self, seed=0, shape=(2, 4, 5, 1)):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.normal(size=shape)).astype(np.float32)
    labels = rng.integers(0, 2, size=shape).astype(np.float32)
    return logits, labels

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters((0.25, 2.0), (None, 2.0), (0.6, 0.5), (0.25, 0.0))
  def test_per_pixel_matches_optax(self, alpha, gamma):
    logits, labels = self._data()
    fn = self.variant(functools.partial(
        focal.sigmoid_focal_loss, alpha=alpha, gamma=gamma, reduction="none"))
    got = fn(logits, labels)
    theirs = optax.sigmoid_focal_loss(
        jnp.asarray(logits), jnp.asarray(labels), alpha=alpha, gamma=gamma)
    chex.assert_shape(got, logits.shape)
    np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-7)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("mean", "sum")
  def test_reduction_matches_numpy(self, reduction):
    logits, labels = self._data(seed=1)
    fn = self.variant(functools.partial(
        focal.sigmoid_focal_loss, reduction=reduction))
    got = fn(logits, labels[..., 0])  # Mask without the channel axis.
    per = _sigmoid_focal_np(logits, labels, 0.25, 2.0)
    ref = getattr(per.reshape(2, -1), reduction)(-1)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  def test_soft_labels_match_numpy(self):
    rng = np.random.default_rng(2)
    logits = (3 * rng.normal(size=(2, 3, 3, 1))).astype(np.float32)
    labels = rng.uniform(size=(2, 3, 3, 1)).astype(np.float32)
    labels[0, 0, 0, 0] = 0.0
    labels[0, 0, 1, 0] = 1.0
    got = _sigmoid_focal(logits, labels, gamma=1.5,
                                   reduction="none")
    np.testing.assert_allclose(
        got, _sigmoid_focal_np(logits, labels, 0.25, 1.5), rtol=1e-5)

  def test_gamma_zero_is_alpha_weighted_bce(self):
    logits, labels = self._data(seed=3)
    got = _sigmoid_focal(logits, labels, alpha=0.3, gamma=0.0)
    x = logits.astype(np.float64)
    bce = -labels * _log_sigmoid_np(x) - (1 - labels) * _log_sigmoid_np(-x)
    weighted = (0.3 * labels + 0.7 * (1 - labels)) * bce
    np.testing.assert_allclose(got, weighted.reshape(2, -1).mean(-1),
                               rtol=1e-5)

  def test_hand_computed(self):
    # logit 0, y = 1: p_t = 1/2, CE = log 2, factor (1/2)^2, alpha_t = 1/4.
    got = _sigmoid_focal(jnp.zeros((1, 1, 1)), jnp.ones((1, 1, 1)))
    np.testing.assert_allclose(got, [0.25 * 0.25 * np.log(2)], rtol=1e-6)
    # y = 0 takes 1 - alpha.
    got = _sigmoid_focal(jnp.zeros((1, 1, 1)), jnp.zeros((1, 1, 1)))
    np.testing.assert_allclose(got, [0.75 * 0.25 * np.log(2)], rtol=1e-6)

  @parameterized.product(gamma=(0.0, 0.5, 2.0), soft=(False, True))
  def test_finite_at_extreme_logits(self, gamma, soft):
    logits = jnp.array([1e4, -1e4, 1e4, -1e4], jnp.float32).reshape(1, 4, 1)
    labels = jnp.array([1.0, 0.0, 0.0, 1.0]).reshape(1, 4, 1)
    if soft:
      labels = jnp.array([0.3, 0.7, 0.999, 0.001]).reshape(1, 4, 1)
    f = lambda x: jnp.sum(_sigmoid_focal(x, labels, gamma=gamma))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))
    if not soft:
      # Two confidently wrong pixels: CE = 1e4 each, factor 1.
      np.testing.assert_allclose(value, (0.75 + 0.25) * 1e4 / 4, rtol=1e-6)

  def test_all_background_finite(self):
    logits = jnp.full((2, 3, 3, 1), -1e4)
    f = lambda x: jnp.sum(_sigmoid_focal(x, jnp.zeros((2, 3, 3))))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    np.testing.assert_allclose(value, 0.0, atol=1e-6)
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_per_example_gamma_broadcasts(self):
    logits, labels = self._data(seed=4)
    gamma = jnp.array([1.0, 3.0]).reshape(2, 1, 1, 1)
    got = _sigmoid_focal(logits, labels, gamma=gamma)
    for i, g in enumerate([1.0, 3.0]):
      np.testing.assert_allclose(
          got[i], _sigmoid_focal(logits[i:i + 1], labels[i:i + 1],
                                           gamma=g)[0], rtol=1e-6)

  def test_errors(self):
    logits, labels = self._data()
    with self.assertRaisesRegex(ValueError, "labels"):
      focal.sigmoid_focal_loss(logits, labels[:, :2])
    with self.assertRaisesRegex(ValueError, "gamma"):
      focal.sigmoid_focal_loss(logits, labels, gamma=-1.0)
    with self.assertRaisesRegex(ValueError, "alpha"):
      focal.sigmoid_focal_loss(logits, labels, alpha=1.5)
    with self.assertRaisesRegex(ValueError, "reduction"):
      focal.sigmoid_focal_loss(logits, labels, reduction="max")


class SoftmaxFocalTest(chex.TestCase):

  def _data(self, seed=0, shape=(2, 4, 3), classes=3):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.normal(size=shape + (classes,))).astype(np.float32)
    labels = rng.integers(0, classes, size=shape)
    return logits, labels

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.5, 2.0)
  def test_matches_numpy(self, gamma):
    logits, labels = self._data()
    alpha = np.array([0.05, 0.30, 0.65])
    fn = self.variant(functools.partial(
        focal.softmax_focal_loss, alpha=alpha, gamma=gamma))
    got = fn(logits, labels)
    ref = _softmax_focal_np(logits, np.eye(3)[labels], alpha, gamma)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref.reshape(2, -1).mean(-1), rtol=1e-5)
    # One-hot labels give the same value as the integer map.
    np.testing.assert_allclose(fn(logits, np.eye(3)[labels]), got, rtol=1e-6)

  def test_gamma_zero_is_balanced_cross_entropy(self):
    logits, labels = self._data(seed=1, classes=2)
    alpha = np.array([0.75, 0.25])
    got = _softmax_focal(logits, labels, alpha=alpha, gamma=0.0)
    x = logits.astype(np.float64)
    log_p = x - np.log(np.exp(x).sum(-1, keepdims=True))
    balanced_ce = (alpha * np.eye(2)[labels] * -log_p).sum(-1)
    np.testing.assert_allclose(
        got, balanced_ce.reshape(2, -1).mean(-1), rtol=1e-5)

  def test_gamma_zero_no_alpha_is_optax_cross_entropy(self):
    logits, labels = self._data(seed=2)
    got = _softmax_focal(logits, labels, gamma=0.0)
    ce = optax.softmax_cross_entropy_with_integer_labels(
        jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(got, ce.reshape(2, -1).mean(-1), rtol=1e-5)

  def test_hand_computed(self):
    # Two equal logits: p = 1/2, loss = alpha_y (1/2)^2 log 2.
    got = _softmax_focal(
        jnp.zeros((1, 1, 2)), jnp.array([[1]]), alpha=[0.1, 0.9])
    np.testing.assert_allclose(got, [0.9 * 0.25 * np.log(2)], rtol=1e-6)

  def test_clip_eps_reproduces_keras_clipping(self):
    logits, labels = self._data(seed=3)
    logits[0, 0, 0] = [30.0, -30.0, -30.0]  # Confidently right or wrong.
    got = _softmax_focal(logits, labels, gamma=2.0, clip_eps=1e-7,
                                   reduction="none")
    ref = _softmax_focal_np(logits, np.eye(3)[labels], 1.0, 2.0, clip=1e-7)
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=1e-9)
    # Clipping caps a confidently wrong pixel at -log(1e-7).
    wrong = _softmax_focal(
        jnp.array([[[1e4, -1e4]]]), jnp.array([[1]]), gamma=0.0,
        clip_eps=1e-7)
    np.testing.assert_allclose(wrong, [-np.log(1e-7)], rtol=1e-3)
    exact = _softmax_focal(
        jnp.array([[[1e4, -1e4]]]), jnp.array([[1]]), gamma=0.0)
    np.testing.assert_allclose(exact, [2e4], rtol=1e-6)

  @parameterized.product(gamma=(0.0, 0.5, 2.0), clip=(None, 1e-7))
  def test_finite_at_extreme_logits(self, gamma, clip):
    logits = jnp.array([[[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4],
                         [0.0, 0.0, 1e4]]], jnp.float32)
    for labels in (jnp.array([[0, 0, 2]]), jnp.zeros((1, 3), jnp.int32)):
      f = lambda x, y=labels: jnp.sum(_softmax_focal(
          x, y, alpha=[0.2, 0.3, 0.5], gamma=gamma, clip_eps=clip))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_shapes(self):
    logits, labels = self._data(seed=4, shape=(2, 3, 2, 2))
    chex.assert_shape(_softmax_focal(logits, labels), (2,))
    chex.assert_shape(
        _softmax_focal(logits, labels, reduction="none"),
        (2, 3, 2, 2))

  def test_errors(self):
    logits, labels = self._data()
    with self.assertRaisesRegex(ValueError, "alpha"):
      focal.softmax_focal_loss(logits, labels, alpha=[0.5, 0.5])
    with self.assertRaisesRegex(ValueError, "two classes"):
      focal.softmax_focal_loss(logits[..., :1], labels)
    with self.assertRaisesRegex(ValueError, "labels"):
      focal.softmax_focal_loss(logits, labels[:, :1])
    with self.assertRaisesRegex(ValueError, "clip_eps"):
      focal.softmax_focal_loss(logits, labels, clip_eps=0.7)


def _log_one_minus_p_slow_np(x):
  """Float64 log(1 - p_c) the slow way: a (..., C, C) log-sum-exp over j != c."""
  x = np.asarray(x, np.float64)
  c = x.shape[-1]
  others = np.where(np.eye(c, dtype=bool), -np.inf, x[..., None, :])
  m = others.max(-1, keepdims=True)
  lse_others = m[..., 0] + np.log(np.exp(others - m).sum(-1))
  mx = x.max(-1, keepdims=True)
  lse = mx + np.log(np.exp(x - mx).sum(-1, keepdims=True))
  return lse_others - lse


def _softmax_focal_slow_np(x, labels, alpha, gamma):
  """Float64 per-pixel focal loss with the exact (slow) log(1 - p_c)."""
  x = np.asarray(x, np.float64)
  mx = x.max(-1, keepdims=True)
  log_p = x - mx - np.log(np.exp(x - mx).sum(-1, keepdims=True))
  onehot = np.eye(x.shape[-1])[labels]
  factor = np.exp(gamma * _log_one_minus_p_slow_np(x))
  return (alpha * onehot * factor * -log_p).sum(-1)


def _intermediate_sizes(jaxpr):
  """Element counts of every intermediate of a (closed) jaxpr, sub-jaxprs included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  sizes = []
  for eqn in jaxpr.eqns:
    sizes += [int(np.prod(v.aval.shape)) for v in eqn.outvars
              if hasattr(v.aval, "shape")]
    for param in eqn.params.values():
      subs = param if isinstance(param, (tuple, list)) else (param,)
      for sub in subs:
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
          sizes += _intermediate_sizes(sub)
  return sizes


class SoftmaxFocalManyClassesTest(chex.TestCase):
  """O(C) exact log(1 - p_c): many classes, extreme logits, gradients."""

  C = 9

  def _extreme(self, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.choice([-1e4, 0.0, 1e4], size=(2, 4, self.C))
    x[0, 0] = [1e4, -1e4, 0, 0, 0, 0, 0, 0, 0]  # p_0 = 1, others 0.
    x[0, 1] = 1e4                               # Nine-way tie at 1e4.
    x[0, 2] = -1e4
    x[0, 2, 3] = 1e4 - 2.0                      # One winner near 1 - 8 e^-2.
    x[0, 2, 5] = 1e4                            # ... and a tie for the top.
    x[1, 0] = 3.0 * rng.normal(size=self.C)     # Moderate logits.
    x[1, 1] = [20.0] + [0.0] * (self.C - 1)     # 1 - p_0 = 8 e^-20 ~ 1.6e-8.
    labels = rng.integers(0, self.C, size=(2, 4))
    labels[0, 0] = 0
    labels[1, 1] = 0
    return x.astype(np.float32), labels

  def test_log_one_minus_p_matches_slow_float64(self):
    x, _ = self._extreme()
    got = focal._log_one_minus_softmax(jax.nn.log_softmax(jnp.asarray(x)))
    ref = _log_one_minus_p_slow_np(x)
    self.assertTrue(np.all(np.isfinite(got)))
    # 1 - p_0 = 8 e^-20 is far below float32's epsilon: log(1 - p) would be
    # -inf, the exact form gives log 8 - 20.
    np.testing.assert_allclose(got[1, 1, 0], np.log(8.0) - 20.0, rtol=1e-6)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.5, 2.0)
  def test_extreme_logits_match_slow_float64(self, gamma):
    x, labels = self._extreme(seed=1)
    alpha = np.linspace(0.1, 0.9, self.C)
    fn = self.variant(functools.partial(
        focal.softmax_focal_loss, alpha=alpha, gamma=gamma, reduction="none"))
    got = fn(x, labels)
    ref = _softmax_focal_slow_np(x, labels, alpha, gamma)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(0.0, 0.5, 2.0, 3.3)
  def test_finite_value_and_gradient_at_extremes(self, gamma):
    x, labels = self._extreme(seed=2)
    f = lambda z: jnp.sum(_softmax_focal(z, labels, gamma=gamma))
    value, grad = jax.jit(jax.value_and_grad(f))(jnp.asarray(x))
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  @parameterized.parameters(0.0, 0.5, 2.0)
  def test_gradient_matches_finite_differences(self, gamma):
    rng = np.random.default_rng(3)
    x = 2.0 * rng.normal(size=(1, 3, 5))
    x[0, 0, 2] += 6.0  # A confident pixel (p near 1 for its arg-max).
    labels = np.array([[2, 0, 4]])
    alpha = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
    f = lambda z: jnp.sum(_softmax_focal(
        z, labels, alpha=alpha, gamma=gamma, reduction="sum"))
    grad = np.asarray(jax.grad(f)(jnp.asarray(x, jnp.float32)), np.float64)
    ref_f = lambda z: _softmax_focal_slow_np(z, labels, alpha, gamma).sum()
    eps = 1e-6
    numeric = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
      step = np.zeros_like(x)
      step[idx] = eps
      numeric[idx] = (ref_f(x + step) - ref_f(x - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=2e-4, atol=2e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 0.5, 2.0)
  def test_integer_map_path_equals_one_hot_path(self, gamma):
    # An integer map takes the true-class path (one masked log-sum-exp per pixel); its one-hot
    # array takes the general path (a term per class): the same values and gradients.
    x, labels = self._extreme(seed=4)
    x[1] = 4.0 * np.random.default_rng(5).normal(size=x[1].shape)
    alpha = np.linspace(0.1, 0.9, self.C)
    one_hot = np.eye(self.C, dtype=np.float32)[labels]

    def value_and_grad(y):
      return jax.value_and_grad(lambda z: jnp.sum(focal.softmax_focal_loss(
          z, y, alpha=alpha, gamma=gamma, reduction="sum")))

    v_map, g_map = self.variant(value_and_grad(labels))(jnp.asarray(x))
    v_hot, g_hot = self.variant(value_and_grad(one_hot))(jnp.asarray(x))
    chex.assert_trees_all_close((v_map, g_map), (v_hot, g_hot), rtol=1e-5, atol=1e-6)
    chex.assert_shape(g_map, x.shape)
    chex.assert_tree_all_finite(g_map)

  def test_no_quadratic_temporary(self):
    # Every intermediate (forward and backward) is at most the logits' size:
    # no (..., C, C) array.
    x = jnp.zeros((2, 3, self.C))
    labels = jnp.zeros((2, 3), jnp.int32)
    f = lambda z: jnp.sum(focal.softmax_focal_loss(z, labels, gamma=2.0))
    for fn in (f, jax.grad(f)):
      sizes = _intermediate_sizes(jax.make_jaxpr(fn)(x))
      self.assertLessEqual(max(sizes), x.size)




class Bfloat16Test(chex.TestCase):

  def test_bf16_logits_compute_in_float32(self):
    rng = np.random.default_rng(50)
    logits = (2 * rng.normal(size=(2, 4, 3, 3))).astype(np.float32)
    labels = rng.integers(0, 3, size=(2, 4, 3))
    _assert_bf16_like_float32(
        self, lambda x, y: focal.softmax_focal_loss(
            x, y, alpha=[0.2, 0.3, 0.5]), logits, labels)
    mask = (labels > 0).astype(np.float32)[..., None]
    _assert_bf16_like_float32(
        self, focal.sigmoid_focal_loss, logits[..., :1], mask)
