"""Tests for jaxseg.losses.compound (Dice + CE, Dice + focal)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import compound


def _log_softmax_np(x):
  x = np.asarray(x, np.float64)
  m = x.max(-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def _log_sigmoid_np(x):
  return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def _dice_np(p, t, *, smooth_nr, smooth_dr, batch, include_background):
  """Mean over kept classes of 1 - (2 TP + s_nr) / (sum p + sum t + s_dr)."""
  if not include_background:
    p, t = p[..., 1:], t[..., 1:]
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  loss = 1.0 - ((2.0 * (p * t).sum(axes) + smooth_nr)
                / (p.sum(axes) + t.sum(axes) + smooth_dr))
  return np.broadcast_to(loss.mean(-1), (p.shape[0],))


def _spatial_mean(x):
  return x.reshape(x.shape[0], -1).mean(-1)


def _softmax_ce_np(x, t, w):
  """mean_i sum_c w_c t_ic (-log p_ic); w_0 = 0 drops the background."""
  return _spatial_mean((w * t * -_log_softmax_np(x)).sum(-1))


def _bce_np(x, t, w):
  """Mean over pixels and channels of the (pos-weighted) BCE."""
  return _spatial_mean(-(w * t * _log_sigmoid_np(x)
                         + (1 - t) * _log_sigmoid_np(-x)))


def _softmax_focal_np(x, t, w, gamma):
  log_p = _log_softmax_np(x)
  return _spatial_mean(
      (w * t * (1 - np.exp(log_p)) ** gamma * -log_p).sum(-1))


def _sigmoid_focal_np(x, t, alpha, gamma):
  p = 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
  ce = -t * _log_sigmoid_np(x) - (1 - t) * _log_sigmoid_np(-x)
  loss = (t * (1 - p) + (1 - t) * p) ** gamma * ce
  if alpha is not None:
    loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
  return _spatial_mean(loss)


def _softmax_np(x):
  return np.exp(_log_softmax_np(x))


def _sigmoid_np(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _data(seed=0, shape=(2, 5, 4), classes=3, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.normal(size=shape + (classes,))).astype(np.float32)
  labels = rng.integers(0, classes, size=shape)
  return logits, labels


_WEIGHTS = np.array([0.2, 1.0, 2.5], np.float32)


class DiceCETest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(include_background=(True, False), batch=(True, False),
                         weighted=(True, False))
  def test_softmax_matches_numpy(self, include_background, batch, weighted):
    logits, labels = _data()
    weights = _WEIGHTS if weighted else None
    fn = self.variant(functools.partial(
        compound.dice_ce_loss, include_background=include_background,
        lambda_dice=0.7, lambda_ce=1.3, class_weights=weights, batch=batch))
    got = fn(logits, labels)
    t = np.eye(3)[labels]
    w = np.ones(3) if weights is None else weights.astype(np.float64)
    if not include_background:
      w = np.concatenate([[0.0], w[1:]])
    ref = (0.7 * _dice_np(_softmax_np(logits), t, smooth_nr=1e-5,
                          smooth_dr=1e-5, batch=batch,
                          include_background=include_background)
           + 1.3 * _softmax_ce_np(logits, t, w))
    chex.assert_shape(got, (2,))
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # One-hot targets give the same value.
    np.testing.assert_allclose(fn(logits, t.astype(np.float32)), got,
                               rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(include_background=(True, False),
                         weighted=(True, False))
  def test_sigmoid_multichannel_matches_numpy(self, include_background,
                                              weighted):
    logits, labels = _data(seed=1)
    weights = _WEIGHTS if weighted else None
    fn = self.variant(functools.partial(
        compound.dice_ce_loss, activation="sigmoid",
        include_background=include_background, class_weights=weights))
    got = fn(logits, labels)
    t = np.eye(3)[labels]
    w = np.ones(3) if weights is None else weights.astype(np.float64)
    x = logits
    if not include_background:
      x, tt, w = x[..., 1:], t[..., 1:], w[1:]
    else:
      tt = t
    ref = (_dice_np(_sigmoid_np(logits), t, smooth_nr=1e-5, smooth_dr=1e-5,
                    batch=False, include_background=include_background)
           + _bce_np(x, tt, w))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  def test_sigmoid_single_channel(self):
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 4, 4))
    got = compound.dice_ce_loss(logits, mask, activation="sigmoid")
    t = mask[..., None].astype(np.float64)
    ref = (_dice_np(_sigmoid_np(logits), t, smooth_nr=1e-5, smooth_dr=1e-5,
                    batch=False, include_background=True)
           + _bce_np(logits, t, 1.0))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    np.testing.assert_allclose(
        compound.dice_ce_loss(logits, mask[..., None], activation="sigmoid"),
        got, rtol=1e-6)

  def test_hand_computed_background_dropped_from_ce(self):
    # Two pixels, zero logits (p = 1/2): true classes 0 and 1.  With the
    # background CE is mean(log 2, log 2); without it the class-0 pixel
    # contributes 0: (0 + log 2) / 2.
    logits = jnp.zeros((1, 2, 1, 2))
    labels = jnp.array([[[0], [1]]])
    ce = functools.partial(compound.dice_ce_loss, lambda_dice=0.0)
    np.testing.assert_allclose(ce(logits, labels), [np.log(2)], rtol=1e-6)
    np.testing.assert_allclose(
        ce(logits, labels, include_background=False), [np.log(2) / 2],
        rtol=1e-6)
    # Dice term alone, foreground channel: 1 - (2 * 0.5 + s) / (1 + 1 + s).
    dice = compound.dice_ce_loss(logits, labels, lambda_ce=0.0,
                                 include_background=False, smooth_nr=0.0,
                                 smooth_dr=0.0)
    np.testing.assert_allclose(dice, [0.5], rtol=1e-6)

  def test_traced_lambdas(self):
    logits, labels = _data(seed=3)
    f = jax.jit(lambda a, b: compound.dice_ce_loss(
        logits, labels, lambda_dice=a, lambda_ce=b))
    np.testing.assert_allclose(
        f(0.5, 2.0), compound.dice_ce_loss(logits, labels, lambda_dice=0.5,
                                           lambda_ce=2.0), rtol=1e-6)

  def test_errors(self):
    logits, labels = _data()
    with self.assertRaisesRegex(ValueError, "activation"):
      compound.dice_ce_loss(logits, labels, activation="none")
    with self.assertRaisesRegex(ValueError, "lambda_ce"):
      compound.dice_ce_loss(logits, labels, lambda_ce=-1.0)
    with self.assertRaisesRegex(ValueError, "class_weights"):
      compound.dice_ce_loss(logits, labels, class_weights=[1.0, 2.0])
    with self.assertRaisesRegex(ValueError, "include_background"):
      compound.dice_ce_loss(logits[..., :1], labels % 2, activation="sigmoid",
                            include_background=False)
    with self.assertRaisesRegex(ValueError, r"\[0, 3\)"):
      compound.dice_ce_loss(logits, labels + 1)


class DiceFocalTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(include_background=(True, False),
                         alpha=(None, 0.25, "vector"))
  def test_softmax_matches_numpy(self, include_background, alpha):
    logits, labels = _data(seed=4)
    alpha_arg = _WEIGHTS if alpha == "vector" else alpha
    fn = self.variant(functools.partial(
        compound.dice_focal_loss, include_background=include_background,
        gamma=1.5, alpha=alpha_arg, lambda_dice=0.6, lambda_focal=1.4))
    got = fn(logits, labels)
    t = np.eye(3)[labels]
    if alpha is None:
      w = np.ones(3)
    elif alpha == "vector":
      w = _WEIGHTS.astype(np.float64)
    else:
      w = np.array([0.75, 0.25, 0.25])
    if not include_background:
      w = np.concatenate([[0.0], w[1:]])
    ref = (0.6 * _dice_np(_softmax_np(logits), t, smooth_nr=1e-5,
                          smooth_dr=1e-5, batch=False,
                          include_background=include_background)
           + 1.4 * _softmax_focal_np(logits, t, w, 1.5))
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(include_background=(True, False),
                         alpha=(None, 0.25), batch=(True, False))
  def test_sigmoid_matches_numpy(self, include_background, alpha, batch):
    logits, labels = _data(seed=5)
    fn = self.variant(functools.partial(
        compound.dice_focal_loss, activation="sigmoid", gamma=2.0,
        include_background=include_background, alpha=alpha, batch=batch))
    got = fn(logits, labels)
    t = np.eye(3)[labels]
    x, tt = (logits, t) if include_background else (logits[..., 1:],
                                                     t[..., 1:])
    ref = (_dice_np(_sigmoid_np(logits), t, smooth_nr=1e-5, smooth_dr=1e-5,
                    batch=batch, include_background=include_background)
           + _sigmoid_focal_np(x, tt, alpha, 2.0))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  @parameterized.product(activation=("softmax", "sigmoid"),
                         include_background=(True, False))
  def test_gamma_zero_is_dice_ce(self, activation, include_background):
    logits, labels = _data(seed=6)
    kw = dict(activation=activation, include_background=include_background)
    np.testing.assert_allclose(
        compound.dice_focal_loss(logits, labels, gamma=0.0, **kw),
        compound.dice_ce_loss(logits, labels, **kw), rtol=1e-5)

  def test_errors(self):
    logits, labels = _data()
    with self.assertRaisesRegex(ValueError, "lambda_focal"):
      compound.dice_focal_loss(logits, labels, lambda_focal=-0.1)
    with self.assertRaisesRegex(ValueError, "alpha"):
      compound.dice_focal_loss(logits, labels, alpha=[1.0, 2.0])
    with self.assertRaisesRegex(ValueError, "scalar"):
      compound.dice_focal_loss(logits, labels, activation="sigmoid",
                               alpha=_WEIGHTS)
    with self.assertRaisesRegex(ValueError, "gamma"):
      compound.dice_focal_loss(logits, labels, gamma=-1.0)


class CompoundCommonTest(chex.TestCase):

  @parameterized.product(
      fn=(compound.dice_ce_loss, compound.dice_focal_loss),
      activation=("softmax", "sigmoid"), sign=(1.0, -1.0),
      include_background=(True, False))
  def test_finite_value_and_grad_at_extreme_logits(
      self, fn, activation, sign, include_background):
    rng = np.random.default_rng(7)
    logits = jnp.asarray(
        sign * 1e4 * np.sign(rng.normal(size=(2, 4, 4, 3))), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, size=(2, 4, 4)))
    f = lambda x: jnp.sum(fn(x, labels, activation=activation,
                             include_background=include_background))
    value, grad = jax.jit(jax.value_and_grad(f))(logits)
    self.assertTrue(np.isfinite(value))
    self.assertTrue(np.all(np.isfinite(grad)))

  @parameterized.product(
      fn=(compound.dice_ce_loss, compound.dice_focal_loss),
      activation=("softmax", "sigmoid"))
  def test_bf16_logits_compute_in_float32(self, fn, activation):
    logits, labels = _data(seed=8)
    low = jnp.asarray(logits, jnp.bfloat16)
    got = jax.jit(lambda x: fn(x, labels, activation=activation))(low)
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(
        got, fn(low.astype(jnp.float32), labels, activation=activation),
        rtol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(fn(x, labels, activation=activation)))(
        low)
    self.assertEqual(grad.dtype, jnp.bfloat16)
