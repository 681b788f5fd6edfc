"""Tests for jaxseg.losses.region (soft / generalized Dice, (focal) Tversky)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg.losses import region


def _softmax_np(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _sigmoid_np(x):
  return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def _counts_np(p, t, batch):
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  tp = (p * t).sum(axes)
  fp = (p * (1 - t)).sum(axes)
  fn = ((1 - p) * t).sum(axes)
  return tp, fp, fn


def _dice_np(p, t, *, smooth_nr, smooth_dr, batch, include_background):
  """Float64 reference: 1 - (2 sum(pt) + s_nr) / (sum p + sum t + s_dr)."""
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  inter = (p * t).sum(axes)
  denom = p.sum(axes) + t.sum(axes)
  loss = 1.0 - (2.0 * inter + smooth_nr) / (denom + smooth_dr)
  if not include_background:
    loss = loss[..., 1:]
  if batch:
    loss = np.broadcast_to(loss, (p.shape[0],) + loss.shape)
  return loss


def _tversky_np(p, t, *, alpha, beta, smooth, batch):
  tp, fp, fn = _counts_np(p, t, batch)
  loss = 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
  if batch:
    loss = np.broadcast_to(loss, (p.shape[0],) + loss.shape)
  return loss


def _generalized_dice_np(p, t, *, weight_type, smooth_nr, smooth_dr, batch,
                         include_background):
  """Float64 reference of Sudre et al. with MONAI's empty-class weights."""
  if not include_background:
    p, t = p[..., 1:], t[..., 1:]
  axes = tuple(range(0 if batch else 1, p.ndim - 1))
  inter = (p * t).sum(axes)
  denom = p.sum(axes) + t.sum(axes)
  volume = t.sum(axes)
  with np.errstate(divide="ignore"):
    w = {"square": 1.0 / volume ** 2, "simple": 1.0 / volume,
         "uniform": np.ones_like(volume)}[weight_type]
  w = np.atleast_2d(w).copy()
  for row in w:  # One row per example (or the one pooled row).
    empty = ~np.isfinite(row)
    row[empty] = 0.0
    row[empty] = row.max()
  w = w.reshape(np.shape(volume))
  loss = 1.0 - ((2.0 * (w * inter).sum(-1) + smooth_nr)
                / ((w * denom).sum(-1) + smooth_dr))
  return np.broadcast_to(loss, (p.shape[0],))


def _focal_tversky_np(p, t, *, alpha, beta, gamma, smooth, batch):
  return _tversky_np(p, t, alpha=alpha, beta=beta, smooth=smooth,
                     batch=batch) ** (1.0 / gamma)


def _data(seed=0, shape=(2, 5, 4), classes=3, scale=2.0):
  rng = np.random.default_rng(seed)
  logits = (scale * rng.normal(size=shape + (classes,))).astype(np.float32)
  labels = rng.integers(0, classes, size=shape)
  return logits, labels


class SoftDiceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
      include_background=(True, False),
      batch=(True, False),
      reduction=("mean", "sum", "none"),
  )
  def test_softmax_matches_numpy(self, include_background, batch, reduction):
    logits, labels = _data()
    fn = self.variant(functools.partial(
        region.soft_dice_loss, activation="softmax",
        include_background=include_background, smooth_nr=0.3, smooth_dr=0.7,
        batch=batch, reduction=reduction))
    got = fn(logits, labels)
    ref = _dice_np(_softmax_np(logits), np.eye(3)[labels], smooth_nr=0.3,
                   smooth_dr=0.7, batch=batch,
                   include_background=include_background)
    if reduction == "mean":
      ref = ref.mean(-1)
    elif reduction == "sum":
      ref = ref.sum(-1)
    chex.assert_shape(got, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sigmoid_binary_mask_matches_numpy(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 4, 4))
    fn = self.variant(functools.partial(
        region.soft_dice_loss, activation="sigmoid"))
    got = fn(logits, mask)
    ref = _dice_np(_sigmoid_np(logits), mask[..., None].astype(np.float64),
                   smooth_nr=1e-5, smooth_dr=1e-5, batch=False,
                   include_background=True).mean(-1)
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    # Same result with the channel axis on the mask.
    np.testing.assert_allclose(fn(logits, mask[..., None]), got, rtol=1e-6)

  @parameterized.parameters(True, False)
  def test_matches_optax_dice(self, include_background):
    # optax's smooth s enters as s in (I + s)/(0.5 (P + T) + s): ours 2s.
    logits, labels = _data(seed=2)
    onehot = jax.nn.one_hot(labels, 3)
    ours = region.soft_dice_loss(
        logits, labels, include_background=include_background,
        smooth_nr=2.0, smooth_dr=2.0)
    theirs = optax.losses.dice_loss(
        jnp.asarray(logits), onehot, smooth=1.0,
        ignore_background=not include_background)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)

  def test_matches_optax_binary(self):
    rng = np.random.default_rng(3)
    logits = jnp.asarray(rng.normal(size=(2, 6, 5, 1)), jnp.float32)
    mask = jnp.asarray(rng.integers(0, 2, size=(2, 6, 5, 1)), jnp.float32)
    ours = region.soft_dice_loss(
        logits, mask, activation="sigmoid", smooth_nr=0.2, smooth_dr=0.2)
    theirs = optax.losses.dice_loss(logits, mask, smooth=0.1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)

  def test_hand_computed(self):
    # p = [1, 1, 0, 0], t = [1, 0, 1, 0]: 2 TP / (P + T) = 2 / 4.
    p = jnp.array([1.0, 1.0, 0.0, 0.0]).reshape(1, 4, 1, 1)
    t = jnp.array([1.0, 0.0, 1.0, 0.0]).reshape(1, 4, 1, 1)
    loss = region.soft_dice_loss(
        p, t, activation="none", smooth_nr=0.0, smooth_dr=0.0)
    np.testing.assert_allclose(loss, [0.5], rtol=1e-6)
    # Smoothing: (2 + 1) / (4 + 1).
    loss = region.soft_dice_loss(
        p, t, activation="none", smooth_nr=1.0, smooth_dr=1.0)
    np.testing.assert_allclose(loss, [1.0 - 3.0 / 5.0], rtol=1e-6)

  def test_perfect_and_worst_prediction(self):
    labels = jnp.array([[[0, 1], [2, 1]]])
    perfect = 1e4 * jax.nn.one_hot(labels, 3)
    loss = region.soft_dice_loss(perfect, labels, smooth_nr=0, smooth_dr=1e-6)
    np.testing.assert_allclose(loss, [0.0], atol=1e-6)
    worst = 1e4 * jax.nn.one_hot((labels + 1) % 3, 3)
    loss = region.soft_dice_loss(worst, labels, smooth_nr=0, smooth_dr=1e-6)
    np.testing.assert_allclose(loss, [1.0], atol=1e-6)

  def test_absent_class_with_smoothing_scores_zero(self):
    # Class 2 absent from labels and prediction: (0 + s) / (0 + s) = 1.
    labels = jnp.zeros((1, 3, 3), jnp.int32).at[0, 1, 1].set(1)
    logits = 1e4 * jax.nn.one_hot(labels, 3)
    per_class = region.soft_dice_loss(logits, labels, reduction="none")
    np.testing.assert_allclose(per_class, [[0.0, 0.0, 0.0]], atol=1e-6)

  def test_batch_pooling_broadcasts_one_value(self):
    logits, labels = _data(seed=4)
    pooled = region.soft_dice_loss(logits, labels, batch=True)
    chex.assert_shape(pooled, (2,))
    np.testing.assert_allclose(pooled[0], pooled[1])
    per_example = region.soft_dice_loss(logits, labels, batch=False)
    self.assertFalse(np.allclose(per_example[0], per_example[1]))

  def test_3d_shapes(self):
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(2, 3, 4, 2, 4)).astype(np.float32)
    labels = rng.integers(0, 4, size=(2, 3, 4, 2))
    chex.assert_shape(region.soft_dice_loss(logits, labels), (2,))
    chex.assert_shape(
        region.soft_dice_loss(logits, labels, reduction="none"), (2, 4))
    chex.assert_shape(
        region.soft_dice_loss(
            logits, labels, reduction="none", include_background=False),
        (2, 3))

  @parameterized.product(
      activation=("softmax", "sigmoid"), sign=(1.0, -1.0),
      all_background=(True, False))
  def test_finite_value_and_grad_at_extreme_logits(
      self, activation, sign, all_background):
    rng = np.random.default_rng(6)
    logits = sign * 1e4 * np.sign(rng.normal(size=(2, 4, 4, 3)))
    logits = jnp.asarray(logits, jnp.float32)
    labels = (jnp.zeros((2, 4, 4), jnp.int32) if all_background
              else jnp.asarray(rng.integers(0, 3, size=(2, 4, 4))))
    for fn in (region.soft_dice_loss, region.tversky_loss,
               region.generalized_dice_loss, region.focal_tversky_loss):
      f = lambda x, fn=fn: jnp.sum(fn(x, labels, activation=activation))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    logits, labels = _data()
    with self.assertRaisesRegex(ValueError, "activation"):
      region.soft_dice_loss(logits, labels, activation="relu")
    with self.assertRaisesRegex(ValueError, "reduction"):
      region.soft_dice_loss(logits, labels, reduction="max")
    with self.assertRaisesRegex(ValueError, "labels must have shape"):
      region.soft_dice_loss(logits, labels[:, :-1])
    with self.assertRaisesRegex(ValueError, "softmax over a single"):
      region.soft_dice_loss(logits[..., :1], labels)
    with self.assertRaisesRegex(ValueError, "include_background"):
      region.soft_dice_loss(logits[..., :1], labels % 2, activation="sigmoid",
                            include_background=False)
    with self.assertRaisesRegex(ValueError, "smooth_dr"):
      region.soft_dice_loss(logits, labels, smooth_dr=-1.0)
    with self.assertRaisesRegex(ValueError, "floating"):
      region.soft_dice_loss(labels[..., None].repeat(3, -1), labels)


class TverskyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(batch=(True, False), alpha=(0.25, 0.75))
  def test_matches_numpy_sigmoid(self, batch, alpha):
    rng = np.random.default_rng(7)
    logits = (2 * rng.normal(size=(3, 5, 4, 1))).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 5, 4))
    fn = self.variant(functools.partial(
        region.tversky_loss, alpha=alpha, batch=batch))
    got = fn(logits, mask)
    ref = _tversky_np(_sigmoid_np(logits), mask[..., None].astype(float),
                      alpha=alpha, beta=1 - alpha, smooth=1.0,
                      batch=batch)[..., 0]
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  def test_default_pools_over_batch(self):
    rng = np.random.default_rng(8)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(2, 4, 4))
    got = region.tversky_loss(logits, mask, alpha=0.7)
    p = _sigmoid_np(logits).ravel()
    t = mask.ravel().astype(float)
    tp, fp, fn = (p * t).sum(), (p * (1 - t)).sum(), ((1 - p) * t).sum()
    ref = 1 - (tp + 1) / (tp + 0.7 * fp + 0.3 * fn + 1)
    np.testing.assert_allclose(got, [ref, ref], rtol=1e-5)

  @parameterized.parameters(True, False)
  def test_half_half_equals_soft_dice(self, batch):
    logits, labels = _data(seed=9)
    tv = region.tversky_loss(logits, labels, alpha=0.5, beta=0.5, smooth=0.4,
                             activation="softmax", batch=batch)
    dice = region.soft_dice_loss(logits, labels, smooth_nr=0.8,
                                 smooth_dr=0.8, batch=batch)
    np.testing.assert_allclose(tv, dice, rtol=1e-5)

  @parameterized.parameters((0.3, 0.7), (0.7, 0.3), (0.5, 0.5))
  def test_matches_optax_per_example(self, alpha, beta):
    logits, labels = _data(seed=10)
    ours = region.tversky_loss(logits, labels, alpha=alpha, beta=beta,
                               activation="softmax", batch=False)
    theirs = optax.losses.dice_loss(
        jnp.asarray(logits), jax.nn.one_hot(labels, 3), alpha=alpha,
        beta=beta, smooth=1.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5)

  def test_alpha_weights_false_positives(self):
    # Truth: 4 foreground pixels of 8.
    t = jnp.array([1, 1, 1, 1, 0, 0, 0, 0], jnp.float32).reshape(1, 8, 1, 1)
    extra_fg = jnp.array([1, 1, 1, 1, 1, 1, 0, 0],
                         jnp.float32).reshape(1, 8, 1, 1)  # 2 FP, 0 FN
    missed_fg = jnp.array([1, 1, 0, 0, 0, 0, 0, 0],
                          jnp.float32).reshape(1, 8, 1, 1)  # 0 FP, 2 FN
    loss = functools.partial(region.tversky_loss, activation="none",
                             smooth=0.0)
    # Hand-computed: TP 4, FP 2 -> 1 - 4 / (4 + 2 alpha).
    np.testing.assert_allclose(
        loss(extra_fg, t, alpha=0.75), [1 - 4 / 5.5], rtol=1e-6)
    np.testing.assert_allclose(
        loss(missed_fg, t, alpha=0.75), [1 - 2 / 2.5], rtol=1e-6)
    # Raising alpha penalises the extra foreground more...
    self.assertGreater(float(loss(extra_fg, t, alpha=0.75)[0]),
                       float(loss(extra_fg, t, alpha=0.25)[0]))
    # ... and the missed foreground less (beta = 1 - alpha falls).
    self.assertLess(float(loss(missed_fg, t, alpha=0.75)[0]),
                    float(loss(missed_fg, t, alpha=0.25)[0]))
    # With beta held fixed, alpha does not touch a prediction without FP.
    np.testing.assert_allclose(loss(missed_fg, t, alpha=0.9, beta=0.5),
                               loss(missed_fg, t, alpha=0.1, beta=0.5))

  def test_beta_defaults_to_one_minus_alpha(self):
    logits, labels = _data(seed=11, classes=1)
    mask = labels * 0 + (logits[..., 0] > 0)
    np.testing.assert_allclose(
        region.tversky_loss(logits, mask, alpha=0.35),
        region.tversky_loss(logits, mask, alpha=0.35, beta=0.65))

  def test_vmap_over_alpha(self):
    # A sweep may vmap over traced alpha values.
    logits, labels = _data(seed=12, classes=1)
    mask = (logits[..., 0] > 0.5).astype(np.int32)
    alphas = jnp.array([0.25, 0.5, 0.75])
    swept = jax.vmap(lambda a: region.tversky_loss(logits, mask, alpha=a))(
        alphas)
    chex.assert_shape(swept, (3, 2))
    for i, a in enumerate([0.25, 0.5, 0.75]):
      np.testing.assert_allclose(
          swept[i], region.tversky_loss(logits, mask, alpha=a), rtol=1e-6)

  def test_errors(self):
    logits, labels = _data(classes=1)
    with self.assertRaisesRegex(ValueError, "alpha"):
      region.tversky_loss(logits, labels, alpha=-0.1)
    with self.assertRaisesRegex(ValueError, "beta"):
      region.tversky_loss(logits, labels, alpha=1.5)
    with self.assertRaisesRegex(ValueError, "non-empty|empty"):
      region.tversky_loss(np.zeros((0, 2, 2, 1), np.float32),
                          np.zeros((0, 2, 2)))


def _column(values):
  """(1, n, 1, 1) probabilities / targets of one example with one channel."""
  return jnp.asarray(values, jnp.float32).reshape(1, -1, 1, 1)


def _channels(*columns):
  """(1, n, 1, C) map of one example from per-channel columns."""
  return jnp.asarray(np.stack(columns, -1), jnp.float32).reshape(
      1, len(columns[0]), 1, len(columns))


class GeneralizedDiceTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(
      weight_type=("square", "simple", "uniform"),
      include_background=(True, False),
      batch=(True, False),
  )
  def test_softmax_matches_numpy(self, weight_type, include_background, batch):
    logits, labels = _data(seed=20, shape=(3, 5, 4), classes=4)
    labels[0][labels[0] == 3] = 0  # Class 3 absent from example 0.
    labels[1][labels[1] == 2] = 1  # Class 2 absent from example 1.
    fn = self.variant(functools.partial(
        region.generalized_dice_loss, weight_type=weight_type,
        include_background=include_background, smooth_nr=1e-3,
        smooth_dr=2e-3, batch=batch))
    got = fn(logits, labels)
    ref = _generalized_dice_np(
        _softmax_np(logits), np.eye(4)[labels], weight_type=weight_type,
        smooth_nr=1e-3, smooth_dr=2e-3, batch=batch,
        include_background=include_background)
    chex.assert_shape(got, (3,))
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  def test_sigmoid_with_empty_mask_matches_numpy(self):
    rng = np.random.default_rng(21)
    logits = rng.normal(size=(3, 4, 4, 1)).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 4, 4))
    mask[2] = 0
    got = self.variant(functools.partial(
        region.generalized_dice_loss, activation="sigmoid"))(logits, mask)
    ref = _generalized_dice_np(
        _sigmoid_np(logits), mask[..., None].astype(np.float64),
        weight_type="square", smooth_nr=1e-5, smooth_dr=1e-5, batch=False,
        include_background=True)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    # All weights 0 for the empty example: 1 - s_nr / s_dr = 0.
    np.testing.assert_allclose(got[2], 0.0, atol=1e-7)

  @parameterized.parameters(("square", 1 - 22 / 32), ("simple", 1 - 10 / 14),
                            ("uniform", 1 - 6 / 8))
  def test_hand_computed(self, weight_type, expected):
    # Class 0: t = [1, 1, 1, 0] (G = 3), p = [1, 1, 0, 0]: TP 2, P + T = 5.
    # Class 1: t = [0, 0, 0, 1] (G = 1), p = [0, 0, 1, 1]: TP 1, P + T = 3.
    # square: w = (1/9, 1): 1 - 2 (2/9 + 1) / (5/9 + 3) = 1 - 22/32.
    t = _channels([1, 1, 1, 0], [0, 0, 0, 1])
    p = _channels([1, 1, 0, 0], [0, 0, 1, 1])
    loss = region.generalized_dice_loss(
        p, t, activation="none", weight_type=weight_type, smooth_nr=0.0,
        smooth_dr=0.0)
    np.testing.assert_allclose(loss, [expected], rtol=1e-6)

  def test_absent_class_gets_the_largest_weight(self):
    # Class 2 absent from the truth but predicted once: its weight 1/0 is
    # replaced by max(1/9, 1/1) = 1 (MONAI), so the false positive counts:
    # 1 - 2 (2/9 + 1) / (5/9 + 2 + 1) = 1 - 22/32 (it would be 1/23 with 0).
    t = _channels([1, 1, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0])
    p = _channels([1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0])
    loss = region.generalized_dice_loss(
        p, t, activation="none", smooth_nr=0.0, smooth_dr=0.0)
    np.testing.assert_allclose(loss, [1 - 22 / 32], rtol=1e-6)
    # Pooled over a batch, the rule uses the pooled volumes.
    pooled = region.generalized_dice_loss(
        jnp.concatenate([p, p]), jnp.concatenate([t, t]), activation="none",
        smooth_nr=0.0, smooth_dr=0.0, batch=True)
    np.testing.assert_allclose(pooled, [1 - 22 / 32] * 2, rtol=1e-6)

  def test_empty_example_scores_zero_with_zero_gradient(self):
    labels = jnp.zeros((2, 4, 4), jnp.int32).at[1, :2].set(1)
    logits = jnp.asarray(
        np.random.default_rng(22).normal(size=(2, 4, 4, 1)), jnp.float32)
    f = lambda x: region.generalized_dice_loss(x, labels, activation="sigmoid")
    loss = f(logits)
    grad = jax.grad(lambda x: f(x)[0])(logits)
    np.testing.assert_allclose(loss[0], 0.0, atol=1e-7)
    np.testing.assert_allclose(grad, 0.0, atol=1e-7)
    self.assertGreater(float(loss[1]), 0.0)

  def test_perfect_prediction(self):
    labels = jnp.array([[[0, 1], [2, 1]]])
    loss = region.generalized_dice_loss(
        1e4 * jax.nn.one_hot(labels, 3), labels, smooth_nr=0.0,
        smooth_dr=1e-6)
    np.testing.assert_allclose(loss, [0.0], atol=1e-6)

  def test_reductions(self):
    logits, labels = _data(seed=23)
    mean = region.generalized_dice_loss(logits, labels)
    none = region.generalized_dice_loss(logits, labels, reduction="none")
    chex.assert_shape(none, (2,))
    np.testing.assert_array_equal(mean, none)
    with self.assertRaisesRegex(ValueError, "sum"):
      region.generalized_dice_loss(logits, labels, reduction="sum")

  def test_errors(self):
    logits, labels = _data()
    with self.assertRaisesRegex(ValueError, "weight_type"):
      region.generalized_dice_loss(logits, labels, weight_type="cube")
    with self.assertRaisesRegex(ValueError, "smooth_dr"):
      region.generalized_dice_loss(logits, labels, smooth_dr=-1.0)
    with self.assertRaisesRegex(ValueError, "activation"):
      region.generalized_dice_loss(logits, labels, activation="relu")
    with self.assertRaisesRegex(ValueError, "labels must have shape"):
      region.generalized_dice_loss(logits, labels[:, :-1])


class FocalTverskyTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(batch=(True, False), gamma=(1.0, 4.0 / 3.0, 3.0))
  def test_matches_numpy_sigmoid(self, batch, gamma):
    rng = np.random.default_rng(30)
    logits = (2 * rng.normal(size=(3, 5, 4, 1))).astype(np.float32)
    mask = rng.integers(0, 2, size=(3, 5, 4))
    fn = self.variant(functools.partial(
        region.focal_tversky_loss, alpha=0.3, gamma=gamma, batch=batch))
    got = fn(logits, mask)
    ref = _focal_tversky_np(
        _sigmoid_np(logits), mask[..., None].astype(float), alpha=0.3,
        beta=0.7, gamma=gamma, smooth=1.0, batch=batch)[..., 0]
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(reduction=("mean", "sum", "none"),
                         include_background=(True, False))
  def test_matches_numpy_softmax(self, reduction, include_background):
    logits, labels = _data(seed=31)
    fn = self.variant(functools.partial(
        region.focal_tversky_loss, alpha=0.6, beta=0.2, gamma=2.0,
        smooth=0.5, activation="softmax", batch=False,
        include_background=include_background, reduction=reduction))
    got = fn(logits, labels)
    ref = _focal_tversky_np(_softmax_np(logits), np.eye(3)[labels], alpha=0.6,
                            beta=0.2, gamma=2.0, smooth=0.5, batch=False)
    if not include_background:
      ref = ref[..., 1:]
    if reduction == "mean":
      ref = ref.mean(-1)
    elif reduction == "sum":
      ref = ref.sum(-1)
    chex.assert_shape(got, ref.shape)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7)

  def test_hand_computed_and_alpha_weights_false_positives(self):
    t = _column([1, 1, 1, 1, 0, 0, 0, 0])
    extra_fg = _column([1, 1, 1, 1, 1, 1, 0, 0])  # TP 4, FP 2, FN 0
    missed_fg = _column([1, 1, 0, 0, 0, 0, 0, 0])  # TP 2, FP 0, FN 2
    loss = functools.partial(region.focal_tversky_loss, activation="none",
                             smooth=0.0)
    # Defaults alpha 0.3 (FP), beta 0.7 (FN), exponent 1 / (4/3) = 0.75.
    np.testing.assert_allclose(
        loss(extra_fg, t), [(0.6 / 4.6) ** 0.75], rtol=1e-6)
    np.testing.assert_allclose(
        loss(missed_fg, t), [(1.4 / 3.4) ** 0.75], rtol=1e-6)
    self.assertGreater(float(loss(extra_fg, t, alpha=0.75)[0]),
                       float(loss(extra_fg, t, alpha=0.25)[0]))
    np.testing.assert_allclose(loss(missed_fg, t, alpha=0.9, beta=0.5),
                               loss(missed_fg, t, alpha=0.1, beta=0.5))

  @parameterized.parameters(True, False)
  def test_gamma_one_is_tversky(self, batch):
    logits, labels = _data(seed=32)
    kw = dict(alpha=0.4, beta=0.8, smooth=0.3, activation="softmax",
              batch=batch, reduction="none")
    np.testing.assert_allclose(
        region.focal_tversky_loss(logits, labels, gamma=1.0, **kw),
        region.tversky_loss(logits, labels, **kw), rtol=1e-6)

  def test_defaults_are_the_papers_best_setting(self):
    # Paper: alpha_paper = 0.7 on FN, beta_paper = 0.3 on FP, gamma = 4/3.
    logits, labels = _data(seed=33, classes=1)
    mask = (logits[..., 0] > 0.3).astype(np.int32)
    logits = logits + 0.5
    np.testing.assert_allclose(
        region.focal_tversky_loss(logits, mask),
        region.focal_tversky_loss(logits, mask, alpha=0.3, beta=0.7,
                                  gamma=4.0 / 3.0, smooth=1.0, batch=True))
    tv = region.tversky_loss(logits, mask, alpha=0.3, beta=0.7)
    np.testing.assert_allclose(
        region.focal_tversky_loss(logits, mask), tv ** 0.75, rtol=1e-6)

  @parameterized.parameters(0.0, 1.0)
  def test_finite_gradient_at_perfect_prediction(self, smooth):
    # p = t exactly: FP = FN = 0, T = 1, and d(1 - T)^0.75 is infinite there.
    t = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]).reshape(1, 3, 1, 2)
    f = lambda p: jnp.sum(region.focal_tversky_loss(
        p, t, activation="none", smooth=smooth))
    value, grad = jax.value_and_grad(f)(t)
    np.testing.assert_allclose(value, 0.0, atol=1e-7)
    self.assertTrue(np.all(np.isfinite(grad)))
    # Just off the optimum the (large) gradient is still finite.
    value, grad = jax.value_and_grad(f)(t * (1 - 1e-6) + 1e-6 * (1 - t))
    self.assertTrue(np.isfinite(value) and np.all(np.isfinite(grad)))
    # Saturated logits of the right sign (sigmoid(1e4) = 1): finite too.
    grad = jax.grad(lambda x: jnp.sum(region.focal_tversky_loss(
        x, t, smooth=smooth)))(1e4 * (2 * t - 1))
    self.assertTrue(np.all(np.isfinite(grad)))

  def test_vmap_over_gamma(self):
    logits, labels = _data(seed=34, classes=1)
    mask = (logits[..., 0] > 0.5).astype(np.int32)
    gammas = jnp.array([1.0, 4.0 / 3.0, 2.0])
    swept = jax.vmap(
        lambda g: region.focal_tversky_loss(logits, mask, gamma=g))(gammas)
    chex.assert_shape(swept, (3, 2))
    for i, g in enumerate([1.0, 4.0 / 3.0, 2.0]):
      np.testing.assert_allclose(
          swept[i], region.focal_tversky_loss(logits, mask, gamma=g),
          rtol=1e-6)

  def test_errors(self):
    logits, labels = _data(classes=1)
    with self.assertRaisesRegex(ValueError, "gamma"):
      region.focal_tversky_loss(logits, labels, gamma=0.0)
    with self.assertRaisesRegex(ValueError, "beta"):
      region.focal_tversky_loss(logits, labels, alpha=1.5)
    with self.assertRaisesRegex(ValueError, "reduction"):
      region.focal_tversky_loss(logits, labels, reduction="max")


class Bfloat16Test(chex.TestCase):

  @parameterized.named_parameters(
      ("soft_dice", region.soft_dice_loss, {}),
      ("generalized_dice", region.generalized_dice_loss, {}),
      ("tversky", region.tversky_loss, {"activation": "softmax"}),
      ("focal_tversky", region.focal_tversky_loss, {"activation": "softmax"}),
  )
  def test_bf16_logits_compute_in_float32(self, fn, kwargs):
    logits, labels = _data(seed=40)
    low = jnp.asarray(logits, jnp.bfloat16)
    got = jax.jit(lambda x: fn(x, labels, **kwargs))(low)
    self.assertEqual(got.dtype, jnp.float32)
    np.testing.assert_allclose(
        got, fn(low.astype(jnp.float32), labels, **kwargs), rtol=1e-6)
    grad = jax.grad(lambda x: jnp.sum(fn(x, labels, **kwargs)))(low)
    self.assertEqual(grad.dtype, jnp.bfloat16)
