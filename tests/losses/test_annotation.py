"""Tests for jaxseg.losses.annotation (hard regions, AG-BCE, adaptive focal)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
from scipy import ndimage

from jaxseg.losses import annotation
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32


def _log_sigmoid_np(x):
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def _masks(seed=0, shape=(2, 6, 7)):
  rng = np.random.default_rng(seed)
  expert = np.zeros(shape, np.float32)
  expert[:, 1:5, 2:6] = 1
  non_expert = expert.copy()
  non_expert[:, 1, 2:6] = 0  # Non-expert misses a row...
  non_expert[:, 5, 3] = 1  # ... and adds a pixel.
  non_expert[1] = np.roll(non_expert[1], 1, axis=1)
  logits = (2 * rng.normal(size=shape + (1,))).astype(np.float32)
  return logits, expert, non_expert


class HardRegionMaskTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(1, 2, 3, 4, 5)
  def test_matches_scipy_max_filter(self, kernel_size):
    # scipy's maximum_filter places even windows like cv2.dilate's default
    # anchor: input i - k//2 .. i + k - 1 - k//2.
    _, expert, non_expert = _masks()
    fn = self.variant(functools.partial(
        annotation.hard_region_mask, kernel_size=kernel_size))
    got = fn(expert, non_expert)
    xor = (expert > 0.5) != (non_expert > 0.5)
    ref = ndimage.maximum_filter(
        xor.astype(np.float64), size=(1, kernel_size, kernel_size),
        mode="constant", cval=0.0)
    chex.assert_shape(got, expert.shape)
    np.testing.assert_array_equal(got, ref)

  def test_hand_computed_alignment(self):
    e = np.zeros((1, 5, 5))
    e[0, 2, 2] = 1
    n = np.zeros((1, 5, 5))
    # k = 1: the XOR itself.
    np.testing.assert_array_equal(
        annotation.hard_region_mask(e, n, kernel_size=1), e)
    # k = 3: the 3 x 3 block centred on (2, 2).
    k3 = np.zeros((1, 5, 5))
    k3[0, 1:4, 1:4] = 1
    np.testing.assert_array_equal(
        annotation.hard_region_mask(e, n, kernel_size=3), k3)
    # k = 2 (cv2 anchor 1): grows towards higher indices, rows/cols 2..3.
    k2 = np.zeros((1, 5, 5))
    k2[0, 2:4, 2:4] = 1
    np.testing.assert_array_equal(
        annotation.hard_region_mask(e, n, kernel_size=2), k2)
    # k = 4 (anchor 2): rows/cols 1..4.
    k4 = np.zeros((1, 5, 5))
    k4[0, 1:5, 1:5] = 1
    np.testing.assert_array_equal(
        annotation.hard_region_mask(e, n, kernel_size=4), k4)

  def test_dtypes_and_channel_axis(self):
    _, expert, non_expert = _masks()
    ref = annotation.hard_region_mask(expert, non_expert, kernel_size=3)
    as_255 = annotation.hard_region_mask(
        (255 * expert).astype(np.uint8), (255 * non_expert).astype(np.uint8),
        kernel_size=3)
    as_bool = annotation.hard_region_mask(
        expert > 0, non_expert > 0, kernel_size=3)
    with_channel = annotation.hard_region_mask(
        expert[..., None], non_expert[..., None], kernel_size=3)
    np.testing.assert_array_equal(as_255, ref)
    np.testing.assert_array_equal(as_bool, ref)
    np.testing.assert_array_equal(with_channel[..., 0], ref)
    self.assertTrue(jnp.issubdtype(ref.dtype, jnp.floating))

  def test_errors(self):
    _, expert, non_expert = _masks()
    with self.assertRaisesRegex(ValueError, "same shape"):
      annotation.hard_region_mask(expert, non_expert[:, :3])
    with self.assertRaisesRegex(ValueError, "kernel_size"):
      annotation.hard_region_mask(expert, non_expert, kernel_size=0)


def _ag_bce_np(logits, y, hard, w):
  x = np.asarray(logits, np.float64)[..., 0]
  l = 0.5 * (-y * _log_sigmoid_np(x) - (1 - y) * _log_sigmoid_np(-x))
  easy = 1 - hard
  n = x[0].size
  return ((easy * l).reshape(len(x), -1).sum(-1)
          + w * (hard * l).reshape(len(x), -1).sum(-1)) / (1 + w) / n


class AgBceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(0.0, 1.0, 4.0)
  def test_matches_numpy(self, hard_weight):
    logits, expert, non_expert = _masks(seed=1)
    hard = np.asarray(annotation.hard_region_mask(expert, non_expert,
                                                  kernel_size=2))
    fn = self.variant(functools.partial(
        annotation.ag_bce_loss, hard_weight=hard_weight))
    got = fn(logits, expert, hard)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(
        got, _ag_bce_np(logits, expert, hard, hard_weight), rtol=1e-5)
    # Channel axis on the masks gives the same.
    np.testing.assert_allclose(
        fn(logits, expert[..., None], hard[..., None]), got, rtol=1e-6)

  def test_weight_one_is_uniform_scaled_bce(self):
    # w = 1: every pixel weighs 1 / (1 + w) = 1/2 of l = 0.5 BCE, so the
    # loss is 0.5 * mean(l) = 0.25 * mean(BCE) (MicroSegNet's normalisation).
    logits, expert, non_expert = _masks(seed=2)
    hard = annotation.hard_region_mask(expert, non_expert, kernel_size=3)
    got = annotation.ag_bce_loss(logits, expert, hard, hard_weight=1.0)
    x = logits[..., 0].astype(np.float64)
    bce = -expert * _log_sigmoid_np(x) - (1 - expert) * _log_sigmoid_np(-x)
    np.testing.assert_allclose(got, 0.25 * bce.reshape(2, -1).mean(-1),
                               rtol=1e-5)
    # Independent of where the hard region is.
    np.testing.assert_allclose(
        annotation.ag_bce_loss(logits, expert, 1.0 - hard, hard_weight=1.0),
        got, rtol=1e-6)

  def test_hand_computed(self):
    # Two pixels at logit 0 (l = 0.5 log 2 each); one is hard, w = 4:
    # (0.5 log2 + 4 * 0.5 log2) / 5 / 2.
    logits = jnp.zeros((1, 1, 2, 1))
    got = annotation.ag_bce_loss(logits, jnp.array([[[1.0, 0.0]]]),
                                 jnp.array([[[1.0, 0.0]]]))
    np.testing.assert_allclose(got, [0.5 * np.log(2) / 2], rtol=1e-6)

  def test_hard_pixels_weigh_more(self):
    logits = jnp.array([[[[3.0], [3.0]]]])  # Both predict foreground.
    labels = jnp.array([[[0.0, 1.0]]])  # Pixel 0 is wrong.
    wrong_is_hard = annotation.ag_bce_loss(logits, labels,
                                           jnp.array([[[1.0, 0.0]]]))
    wrong_is_easy = annotation.ag_bce_loss(logits, labels,
                                           jnp.array([[[0.0, 1.0]]]))
    self.assertGreater(float(wrong_is_hard[0]), float(wrong_is_easy[0]))

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, scale):
    _, expert, non_expert = _masks(seed=3)
    hard = annotation.hard_region_mask(expert, non_expert, kernel_size=2)
    logits = scale * jnp.ones(expert.shape + (1,))
    for labels in (expert, np.zeros_like(expert)):
      f = lambda x, y=labels: jnp.sum(annotation.ag_bce_loss(x, y, hard))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    logits, expert, _ = _masks()
    with self.assertRaisesRegex(ValueError, "hard_mask"):
      annotation.ag_bce_loss(logits, expert, expert[:, :2])
    with self.assertRaisesRegex(ValueError, "hard_weight"):
      annotation.ag_bce_loss(logits, expert, expert, hard_weight=-1.0)


def _adaptive_np(logits, y, hard, dis, per_example, min_gamma=1e-2,
                 exponent=None):
  x = np.asarray(logits, np.float64)[..., 0]
  b = len(x)
  p = 1 / (1 + np.exp(-x))
  if per_example:
    gamma = np.maximum(1 - p.reshape(b, -1).mean(-1)
                       + dis.reshape(b, -1).mean(-1), min_gamma)
  else:
    gamma = np.full(b, max(1 - p.mean() + dis.mean(), min_gamma))
  g = gamma[:, None, None] if exponent is None else exponent
  log_pt = y * _log_sigmoid_np(x) + (1 - y) * _log_sigmoid_np(-x)
  pt = np.exp(log_pt)
  f = -0.5 * (1 - pt) ** g * log_pt
  n = x[0].size
  hs = (hard * f).reshape(b, -1).sum(-1)
  es = ((1 - hard) * f).reshape(b, -1).sum(-1)
  return (gamma * hs + es / gamma) / n, gamma


class AdaptiveFocalTest(chex.TestCase):

  def _inputs(self, seed=4):
    logits, expert, non_expert = _masks(seed=seed)
    hard = np.asarray(annotation.hard_region_mask(expert, non_expert,
                                                  kernel_size=2))
    dis = (expert != non_expert).astype(np.float32)
    return logits, expert, hard, dis

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(False, True)
  def test_matches_numpy(self, per_example):
    logits, expert, hard, dis = self._inputs()
    fn = self.variant(functools.partial(
        annotation.adaptive_focal_loss, per_example=per_example))
    got = fn(logits, expert, hard, dis)
    ref, gamma = _adaptive_np(logits, expert, hard, dis, per_example)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    if per_example:
      self.assertNotAlmostEqual(gamma[0], gamma[1])

  def test_fixed_exponent(self):
    logits, expert, hard, dis = self._inputs(seed=5)
    got = annotation.adaptive_focal_loss(logits, expert, hard, dis,
                                         exponent=2.0)
    ref, _ = _adaptive_np(logits, expert, hard, dis, False, exponent=2.0)
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  def test_gamma_is_stop_gradient(self):
    logits, expert, hard, dis = self._inputs(seed=6)
    gamma = 1 - jax.nn.sigmoid(logits).mean() + dis.mean()

    def with_constant_gamma(x):
      # Same formula with gamma as a fixed number: no gradient through it.
      log_pt = expert[..., None] * jax.nn.log_sigmoid(x) + (
          1 - expert[..., None]) * jax.nn.log_sigmoid(-x)
      log_1mpt = expert[..., None] * jax.nn.log_sigmoid(-x) + (
          1 - expert[..., None]) * jax.nn.log_sigmoid(x)
      f = -0.5 * jnp.exp(gamma * log_1mpt) * log_pt
      h = hard[..., None]
      n = x[0].size
      return jnp.sum((gamma * jnp.sum(h * f, (1, 2, 3))
                      + jnp.sum((1 - h) * f, (1, 2, 3)) / gamma) / n)

    loss = lambda x: jnp.sum(
        annotation.adaptive_focal_loss(x, expert, hard, dis))
    np.testing.assert_allclose(loss(logits), with_constant_gamma(logits),
                               rtol=1e-5)
    np.testing.assert_allclose(jax.grad(loss)(logits),
                               jax.grad(with_constant_gamma)(logits),
                               rtol=1e-4, atol=1e-7)

  def test_gamma_floor(self):
    # All foreground predicted, annotators agree: gamma -> 0 is floored.
    logits = jnp.full((1, 3, 3, 1), 1e4)
    y = jnp.ones((1, 3, 3))
    hard = jnp.zeros((1, 3, 3))
    dis = jnp.zeros((1, 3, 3))
    value = annotation.adaptive_focal_loss(logits, y, hard, dis)
    self.assertTrue(np.all(np.isfinite(value)))
    # A wrong pixel in the easy region is divided by min_gamma.
    y_wrong = y.at[0, 0, 0].set(0.0)
    value = annotation.adaptive_focal_loss(logits, y_wrong, hard, dis,
                                           min_gamma=0.5)
    # gamma = max(0 + 0, 0.5); focal = 0.5 * 1e4 (factor (1 - 0)^0.5 = 1).
    np.testing.assert_allclose(value, [0.5 * 1e4 / 0.5 / 9], rtol=1e-5)

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, scale):
    logits, expert, hard, dis = self._inputs(seed=7)
    logits = scale * np.sign(logits)
    for labels in (expert, np.zeros_like(expert)):
      for per_example in (False, True):
        f = lambda x, y=labels, pe=per_example: jnp.sum(
            annotation.adaptive_focal_loss(x, y, hard, dis, per_example=pe))
        value, grad = jax.jit(jax.value_and_grad(f))(logits)
        self.assertTrue(np.isfinite(value))
        self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    logits, expert, hard, dis = self._inputs()
    with self.assertRaisesRegex(ValueError, "disagreement"):
      annotation.adaptive_focal_loss(logits, expert, hard, dis[:1])
    with self.assertRaisesRegex(ValueError, "min_gamma"):
      annotation.adaptive_focal_loss(logits, expert, hard, dis, min_gamma=0)




class Bfloat16Test(chex.TestCase):

  def test_bf16_logits_compute_in_float32(self):
    logits, expert, non_expert = _masks(seed=50)
    hard = annotation.hard_region_mask(expert, non_expert, kernel_size=2)
    disagreement = np.abs(expert - non_expert)
    _assert_bf16_like_float32(
        self, annotation.ag_bce_loss, logits, expert, hard)
    _assert_bf16_like_float32(
        self, annotation.adaptive_focal_loss, logits, expert, hard,
        disagreement)
