"""Tests for jaxseg.losses.topology (soft skeleton, clDice, Dice + clDice)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import region
from jaxseg.losses import topology


def _softmax_np(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _shifted(x, axis, fill):
  """The three neighbours (-1, 0, +1) of every pixel along ``axis``."""
  pad = [(0, 0)] * x.ndim
  pad[axis] = (1, 1)
  xp = np.pad(x, pad, constant_values=fill)
  n = x.shape[axis]
  return [np.take(xp, np.arange(k, k + n), axis=axis) for k in range(3)]


def _erode_np(x):
  """Cross-shaped min: minimum of 3-wide min-pools along each spatial axis."""
  out = np.full_like(x, np.inf)
  for axis in range(1, x.ndim - 1):
    out = np.minimum(out, np.minimum.reduce(_shifted(x, axis, np.inf)))
  return out


def _dilate_np(x):
  """Full 3^n max-pool (separable: a max over a box is a max of axis maxes)."""
  for axis in range(1, x.ndim - 1):
    x = np.maximum.reduce(_shifted(x, axis, -np.inf))
  return x


def _skel_np(x, iterations):
  """Shit et al., Algorithm 1, float64."""
  x = np.asarray(x, np.float64)
  relu = lambda v: np.maximum(v, 0.0)
  opened = lambda v: _dilate_np(_erode_np(v))
  skel = relu(x - opened(x))
  for _ in range(iterations):
    x = _erode_np(x)
    delta = relu(x - opened(x))
    skel = skel + relu(delta - skel * delta)
  return skel


def _cldice_np(p, t, *, iterations, smooth, batch, pool_classes,
               include_background, alpha=None):
  """Float64 reference; per-class (batch, C') values (broadcast if batch)."""
  if not include_background:
    p, t = p[..., 1:], t[..., 1:]
  sp, st = _skel_np(p, iterations), _skel_np(t, iterations)
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  if pool_classes:
    axes = axes + (p.ndim - 1,)

  def total(v):
    out = v.sum(axes)
    if pool_classes:
      out = out[..., None]
    return out

  tprec = (total(sp * t) + smooth) / (total(sp) + smooth)
  tsens = (total(st * p) + smooth) / (total(st) + smooth)
  loss = 1.0 - 2.0 * tprec * tsens / (tprec + tsens)
  if alpha is not None:
    dice = 1.0 - (2.0 * total(p * t) + smooth) / (total(p) + total(t) + smooth)
    loss = (1.0 - alpha) * dice + alpha * loss
  return np.broadcast_to(loss, (p.shape[0], loss.shape[-1]))


def _monai_np(y_pred, y_true, *, iter_, smooth, alpha=None):
  """MONAI SoftclDiceLoss / SoftDiceclDiceLoss, written out (channels-last)."""
  sp, st = _skel_np(y_pred, iter_), _skel_np(y_true, iter_)
  fg = lambda v: v[..., 1:]
  tprec = (fg(sp * y_true).sum() + smooth) / (fg(sp).sum() + smooth)
  tsens = (fg(st * y_pred).sum() + smooth) / (fg(st).sum() + smooth)
  cl = 1.0 - 2.0 * tprec * tsens / (tprec + tsens)
  if alpha is None:
    return cl
  dice = 1.0 - (2.0 * fg(y_true * y_pred).sum() + smooth) / (
      fg(y_true).sum() + fg(y_pred).sum() + smooth)
  return (1.0 - alpha) * dice + alpha * cl


def _blobs(seed, shape, classes):
  """Smooth-ish random logits and labels with thick structures."""
  rng = np.random.default_rng(seed)
  logits = (3.0 * rng.normal(size=shape + (classes,))).astype(np.float32)
  labels = np.zeros(shape, np.int64)
  for c in range(1, classes):
    lo = [int(rng.integers(0, max(1, s - 3))) for s in shape[1:]]
    sl = (slice(None),) + tuple(slice(a, a + 3) for a in lo)
    labels[sl] = c
  labels[0].flat[rng.integers(0, labels[0].size, size=3)] = 1
  return logits, labels


class SoftSkeletonTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(ndim=(2, 3), iterations=(0, 1, 3))
  def test_matches_numpy(self, ndim, iterations):
    shape = (2, 7, 6) if ndim == 2 else (2, 5, 4, 6)
    rng = np.random.default_rng(ndim + 10 * iterations)
    x = rng.uniform(size=shape + (2,)).astype(np.float32)
    got = self.variant(functools.partial(
        topology.soft_skeleton, iterations=iterations))(x)
    chex.assert_shape(got, x.shape)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, _skel_np(x, iterations), atol=1e-6)

  def test_thick_bar_2d_is_centre_line(self):
    # A 3-pixel-thick bar: erosion leaves the centre row (minus its two end
    # pixels, eroded by the horizontal arm of the cross), which opening
    # removes and the first loop step adds to the skeleton.
    x = np.zeros((1, 7, 11, 1), np.float32)
    x[0, 2:5, 1:10] = 1.0
    skel = np.asarray(topology.soft_skeleton(x, iterations=3))[0, ..., 0]
    expected = np.zeros((7, 11))
    expected[3, 2:9] = 1.0
    np.testing.assert_array_equal(skel, expected)
    # Opening keeps the (opening-invariant) bar, so 0 iterations give nothing.
    np.testing.assert_array_equal(topology.soft_skeleton(x, iterations=0), 0.0)

  def test_thick_rod_3d_is_centre_line(self):
    x = np.zeros((1, 5, 5, 9, 1), np.float32)
    x[0, 1:4, 1:4, 1:8] = 1.0
    skel = np.asarray(topology.soft_skeleton(x, iterations=3))[0, ..., 0]
    expected = np.zeros((5, 5, 9))
    expected[2, 2, 2:7] = 1.0
    np.testing.assert_array_equal(skel, expected)

  def test_one_pixel_line_is_its_own_skeleton(self):
    x = np.zeros((1, 3, 7, 1), np.float32)
    x[0, 1, 1:6] = 0.5
    np.testing.assert_allclose(topology.soft_skeleton(x, iterations=2), x)

  def test_bf16_and_errors(self):
    x = np.random.default_rng(0).uniform(size=(1, 5, 5, 1)).astype(np.float32)
    got = topology.soft_skeleton(jnp.asarray(x, jnp.bfloat16))
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, topology.soft_skeleton(x), atol=1e-2)
    with self.assertRaisesRegex(ValueError, "iterations"):
      topology.soft_skeleton(x, iterations=-1)
    with self.assertRaisesRegex(ValueError, "iterations"):
      topology.soft_skeleton(x, iterations=1.5)
    with self.assertRaisesRegex(ValueError, "channels-last"):
      topology.soft_skeleton(x[0, 0])


class SoftClDiceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
      batch=(True, False), pool_classes=(True, False),
      include_background=(True, False), reduction=("mean", "sum", "none"))
  def test_matches_numpy_2d(self, batch, pool_classes, include_background,
                            reduction):
    logits, labels = _blobs(0, (2, 8, 7), 3)
    fn = self.variant(functools.partial(
        topology.soft_cldice_loss, iterations=2, smooth=0.5, batch=batch,
        pool_classes=pool_classes, include_background=include_background,
        reduction=reduction))
    got = fn(logits, labels)
    ref = _cldice_np(_softmax_np(logits), np.eye(3)[labels], iterations=2,
                     smooth=0.5, batch=batch, pool_classes=pool_classes,
                     include_background=include_background)
    if reduction == "mean":
      ref = ref.mean(-1)
    elif reduction == "sum":
      ref = ref.sum(-1)
    chex.assert_shape(got, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy_3d_sigmoid(self):
    rng = np.random.default_rng(1)
    logits = (2 * rng.normal(size=(2, 5, 6, 4, 1))).astype(np.float32)
    mask = np.zeros((2, 5, 6, 4), np.int64)
    mask[:, 1:4, 1:5, 1:3] = 1
    got = self.variant(functools.partial(
        topology.soft_cldice_loss, activation="sigmoid",
        include_background=True, iterations=3))(logits, mask)
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    ref = _cldice_np(p, mask[..., None].astype(np.float64), iterations=3,
                     smooth=1.0, batch=False, pool_classes=False,
                     include_background=True).mean(-1)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(2, 3)
  def test_monai_setting(self, ndim):
    # MONAI's SoftclDiceLoss written out: channel 0 dropped, one ratio over
    # the batch and all foreground channels, probabilities in.
    shape = (2, 8, 7) if ndim == 2 else (2, 5, 6, 5)
    logits, labels = _blobs(2, shape, 3)
    p, t = _softmax_np(logits), np.eye(3)[labels]
    kwargs = dict(activation="none", iterations=3, smooth=1.0,
                  include_background=False, batch=True, pool_classes=True)
    got = topology.soft_cldice_loss(p.astype(np.float32), t, **kwargs)
    np.testing.assert_allclose(
        jnp.mean(got), _monai_np(p, t, iter_=3, smooth=1.0), rtol=1e-5)
    got = topology.dice_cldice_loss(p.astype(np.float32), t, alpha=0.3,
                                    **kwargs)
    np.testing.assert_allclose(
        jnp.mean(got), _monai_np(p, t, iter_=3, smooth=1.0, alpha=0.3),
        rtol=1e-5)
    # Same from the logits with the softmax applied here.
    kwargs["activation"] = "softmax"
    np.testing.assert_allclose(
        jnp.mean(topology.soft_cldice_loss(logits, labels, **kwargs)),
        _monai_np(p, t, iter_=3, smooth=1.0), rtol=1e-5)

  def test_hand_computed(self):
    # Label: a 1-pixel line of 5 (its own skeleton); prediction: the line at
    # 0.5 (also its own skeleton).  Tprec = (2.5 + s) / (2.5 + s) = 1,
    # Tsens = (2.5 + s) / (5 + s); s = 0: clDice = 2 * 0.5 / 1.5 = 2/3.
    t = np.zeros((1, 3, 7, 1), np.float32)
    t[0, 1, 1:6] = 1.0
    loss = functools.partial(topology.soft_cldice_loss, activation="none",
                             include_background=True)
    np.testing.assert_allclose(loss(0.5 * t, t, smooth=0.0), [1.0 / 3.0],
                               rtol=1e-6)
    # s = 1: Tsens = 3.5 / 6, clDice = 2 Tsens / (1 + Tsens).
    ts = 3.5 / 6.0
    np.testing.assert_allclose(loss(0.5 * t, t, smooth=1.0),
                               [1.0 - 2 * ts / (1 + ts)], rtol=1e-6)

  @parameterized.parameters(2, 3)
  def test_perfect_prediction_is_zero(self, ndim):
    shape = (2, 8, 7) if ndim == 2 else (2, 5, 6, 5)
    _, labels = _blobs(3, shape, 3)
    logits = 1e4 * jax.nn.one_hot(labels, 3)
    for fn in (topology.soft_cldice_loss, topology.dice_cldice_loss):
      np.testing.assert_allclose(fn(logits, labels), [0.0, 0.0], atol=1e-6)

  def test_bf16_matches_float32(self):
    logits, labels = _blobs(4, (2, 6, 6), 3)
    for fn in (topology.soft_cldice_loss, topology.dice_cldice_loss):
      got = fn(jnp.asarray(logits, jnp.bfloat16), labels)
      chex.assert_type(got, jnp.float32)
      np.testing.assert_allclose(got, fn(logits, labels), atol=2e-2)

  def test_batch_broadcasts_one_value(self):
    logits, labels = _blobs(5, (2, 6, 6), 3)
    pooled = topology.soft_cldice_loss(logits, labels, batch=True)
    np.testing.assert_allclose(pooled[0], pooled[1])
    chex.assert_shape(
        topology.soft_cldice_loss(logits, labels, pool_classes=True,
                                  reduction="none"), (2, 1))

  def test_vmap(self):
    logits, labels = _blobs(6, (2, 6, 5), 3)
    vmapped = jax.vmap(lambda x, y: topology.soft_cldice_loss(
        x[None], y[None])[0])(logits, labels)
    np.testing.assert_allclose(
        vmapped, topology.soft_cldice_loss(logits, labels), rtol=1e-6)

  @parameterized.product(
      activation=("softmax", "sigmoid"), sign=(1.0, -1.0), ndim=(2, 3))
  def test_finite_value_and_grad_at_extreme_logits(self, activation, sign,
                                                   ndim):
    shape = (2, 5, 5) if ndim == 2 else (2, 4, 4, 3)
    rng = np.random.default_rng(7)
    logits = jnp.asarray(
        sign * 1e4 * np.sign(rng.normal(size=shape + (3,))), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 3, size=shape))
    for fn in (topology.soft_cldice_loss, topology.dice_cldice_loss):
      f = lambda x, fn=fn: jnp.sum(fn(x, labels, activation=activation))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_gradient_is_nonzero(self):
    logits, labels = _blobs(8, (1, 7, 7), 2)
    grad = jax.grad(lambda x: jnp.sum(topology.soft_cldice_loss(x, labels)))(
        jnp.asarray(logits))
    self.assertGreater(float(jnp.max(jnp.abs(grad))), 0.0)

  def test_errors(self):
    logits, labels = _blobs(9, (1, 5, 5), 3)
    with self.assertRaisesRegex(ValueError, "reduction"):
      topology.soft_cldice_loss(logits, labels, reduction="max")
    with self.assertRaisesRegex(ValueError, "smooth"):
      topology.soft_cldice_loss(logits, labels, smooth=-1.0)
    with self.assertRaisesRegex(ValueError, "iterations"):
      topology.soft_cldice_loss(logits, labels, iterations=-2)
    with self.assertRaisesRegex(ValueError, "include_background"):
      topology.soft_cldice_loss(logits[..., :1], labels % 2,
                                activation="sigmoid")
    with self.assertRaisesRegex(ValueError, "alpha"):
      topology.dice_cldice_loss(logits, labels, alpha=1.5)
    with self.assertRaisesRegex(ValueError, "labels must have shape"):
      topology.soft_cldice_loss(logits, labels[:, :-1])


class DiceClDiceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(batch=(True, False), pool_classes=(True, False))
  def test_matches_numpy(self, batch, pool_classes):
    logits, labels = _blobs(10, (2, 7, 8), 3)
    got = self.variant(functools.partial(
        topology.dice_cldice_loss, alpha=0.3, iterations=2, smooth=0.7,
        batch=batch, pool_classes=pool_classes))(logits, labels)
    ref = _cldice_np(_softmax_np(logits), np.eye(3)[labels], iterations=2,
                     smooth=0.7, batch=batch, pool_classes=pool_classes,
                     include_background=False, alpha=0.3).mean(-1)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @parameterized.parameters(True, False)
  def test_dice_part_is_soft_dice_loss(self, batch):
    logits, labels = _blobs(11, (2, 6, 7), 3)
    kwargs = dict(include_background=False, batch=batch)
    combined = topology.dice_cldice_loss(logits, labels, alpha=0.25,
                                         smooth=0.5, **kwargs)
    dice = region.soft_dice_loss(logits, labels, smooth_nr=0.5,
                                 smooth_dr=0.5, **kwargs)
    cl = topology.soft_cldice_loss(logits, labels, smooth=0.5, **kwargs)
    np.testing.assert_allclose(combined, 0.75 * dice + 0.25 * cl, rtol=1e-5)
    np.testing.assert_allclose(
        topology.dice_cldice_loss(logits, labels, alpha=1.0, **kwargs),
        topology.soft_cldice_loss(logits, labels, **kwargs), rtol=1e-6)

  def test_vmap_over_alpha(self):
    logits, labels = _blobs(12, (2, 6, 6), 2)
    alphas = jnp.array([0.0, 0.5])
    swept = jax.vmap(lambda a: topology.dice_cldice_loss(
        logits, labels, alpha=a))(alphas)
    chex.assert_shape(swept, (2, 2))
    np.testing.assert_allclose(
        swept[1], topology.dice_cldice_loss(logits, labels, alpha=0.5),
        rtol=1e-6)
