"""Tests for jaxseg.losses.boundary (Kervadec boundary loss, DB, schedule)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.data import distance
from jaxseg.losses import boundary
from jaxseg.losses import region
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32


def _softmax_np(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _case(seed=0, classes=3):
  rng = np.random.default_rng(seed)
  labels = np.zeros((2, 6, 5), np.int64)
  labels[0, 0:4, 0:3] = 1
  labels[0, 4:6, 3:5] = 2
  labels[1, 2:5, 2:4] = 2  # Class 1 absent from case 1.
  maps = np.stack([distance.signed_distance_maps(l, classes) for l in labels])
  logits = (2 * rng.normal(size=(2, 6, 5, classes))).astype(np.float32)
  return logits, labels, maps


class BoundaryLossTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_matches_numpy(self):
    logits, _, maps = _case()
    got = self.variant(boundary.boundary_loss)(logits, maps)
    p = _softmax_np(logits)[..., 1:]
    ref = (p * maps).sum(-1).reshape(2, -1).mean(-1)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)

  def test_hand_computed(self):
    # 1 x 4 image, one foreground channel, probabilities given directly.
    probs = jnp.array([0.0, 1.0, 0.5, 0.25]).reshape(1, 1, 4, 1)
    phi = jnp.array([1.0, 0.0, -1.0, 2.0]).reshape(1, 1, 4, 1)
    got = boundary.boundary_loss(probs, phi, activation="none",
                                 include_background=True)
    np.testing.assert_allclose(got, [(0 + 0 - 0.5 + 0.5) / 4], atol=1e-7)

  def test_ground_truth_minimises_and_is_negative(self):
    _, labels, maps = _case()
    onehot = np.eye(3)[labels]
    at_truth = boundary.boundary_loss(onehot, maps, activation="none")
    shifted = np.roll(onehot, 1, axis=2)
    at_shifted = boundary.boundary_loss(shifted, maps, activation="none")
    self.assertTrue(np.all(at_truth <= 0))
    self.assertTrue(np.all(at_truth < at_shifted))
    # Predicting nothing costs 0; adding foreground inside the object lowers
    # the loss, adding it outside raises it.
    empty = np.zeros_like(onehot)
    np.testing.assert_allclose(
        boundary.boundary_loss(empty, maps, activation="none"), [0, 0])
    inside = empty.copy()
    inside[0, 2, 1, 1] = 1.0  # Inside the class-1 object (not its border).
    outside = empty.copy()
    outside[0, 0, 4, 1] = 1.0  # Far from it.
    self.assertLess(
        float(boundary.boundary_loss(inside, maps, activation="none")[0]), 0)
    self.assertGreater(
        float(boundary.boundary_loss(outside, maps, activation="none")[0]), 0)

  def test_zero_maps_give_zero_loss_and_grad(self):
    logits, _, _ = _case()
    zero = np.zeros(logits.shape[:-1] + (2,), np.float32)
    value, grad = jax.value_and_grad(
        lambda x: jnp.sum(boundary.boundary_loss(x, zero)))(logits)
    np.testing.assert_allclose(value, 0.0)
    np.testing.assert_allclose(grad, 0.0)

  def test_sigmoid_single_channel(self):
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(1, 4, 4, 1)).astype(np.float32)
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    phi = distance.signed_distance_map(mask)[None, ..., None]
    got = boundary.boundary_loss(logits, phi, activation="sigmoid",
                                 include_background=True)
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    np.testing.assert_allclose(got, [(p * phi).mean()], rtol=1e-5)

  @parameterized.parameters(1e4, -1e4)
  def test_finite_at_extreme_logits(self, scale):
    _, labels, maps = _case()
    logits = scale * jax.nn.one_hot(labels, 3)
    for y, m in ((labels, maps), (np.zeros_like(labels), 0 * maps)):
      f = lambda x, y=y, m=m: jnp.sum(boundary.dice_boundary_loss(
          x, y, m, w_region=1.0, w_boundary=0.5))
      value, grad = jax.jit(jax.value_and_grad(f))(logits)
      self.assertTrue(np.isfinite(value))
      self.assertTrue(np.all(np.isfinite(grad)))

  def test_errors(self):
    logits, _, maps = _case()
    with self.assertRaisesRegex(ValueError, "dist_maps must have shape"):
      boundary.boundary_loss(logits, maps[..., :1])
    with self.assertRaisesRegex(ValueError, "dist_maps must have shape"):
      boundary.boundary_loss(logits, maps, include_background=True)
    with self.assertRaisesRegex(ValueError, "No channel left"):
      boundary.boundary_loss(logits[..., :1], maps[..., :1],
                             activation="sigmoid")
    with self.assertRaisesRegex(ValueError, "activation"):
      boundary.boundary_loss(logits, maps, activation="tanh")


class DiceBoundaryTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_is_weighted_sum(self):
    logits, labels, maps = _case(seed=2)
    fn = self.variant(functools.partial(
        boundary.dice_boundary_loss, w_region=0.7, w_boundary=0.3))
    got = fn(logits, labels, maps)
    dice = region.soft_dice_loss(logits, labels, include_background=False)
    surface = boundary.boundary_loss(logits, maps)
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, 0.7 * dice + 0.3 * surface, rtol=1e-5)

  def test_traced_weights(self):
    # Scheduled weights fed as arrays do not need a recompile per epoch.
    logits, labels, maps = _case(seed=3)
    fn = jax.jit(lambda wr, wb: boundary.dice_boundary_loss(
        logits, labels, maps, w_region=wr, w_boundary=wb))
    wr, wb = boundary.kervadec_schedule(jnp.asarray(5))
    np.testing.assert_allclose(
        fn(wr, wb),
        boundary.dice_boundary_loss(logits, labels, maps, w_region=0.95,
                                    w_boundary=0.06), rtol=1e-5)


class KervadecScheduleTest(parameterized.TestCase):

  @parameterized.parameters(
      (0, 1.0, 0.01), (1, 0.99, 0.02), (10, 0.9, 0.11), (50, 0.5, 0.51),
      (89, 0.11, 0.90), (90, 0.1, 0.91), (200, 0.1, 2.01))
  def test_values(self, epoch, w_region, w_boundary):
    got = boundary.kervadec_schedule(epoch)
    np.testing.assert_allclose(got, (w_region, w_boundary), atol=1e-12)
    self.assertIsInstance(got[0], float)
    arr = boundary.kervadec_schedule(jnp.asarray(epoch))
    np.testing.assert_allclose(arr, (w_region, w_boundary), rtol=1e-6)

  def test_matches_iterated_steal_weight(self):
    # The reference code applies [max(0.1, a - 0.01), b + 0.01] after every
    # epoch, starting from [1, 0.01].
    a, b = 1.0, 0.01
    for epoch in range(120):
      np.testing.assert_allclose(boundary.kervadec_schedule(epoch), (a, b),
                                 atol=1e-9)
      a, b = max(0.1, a - 0.01), b + 0.01

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "epoch"):
      boundary.kervadec_schedule(-1)




class Bfloat16Test(chex.TestCase):

  def test_bf16_logits_compute_in_float32(self):
    logits, labels, maps = _case(seed=50)
    fg_maps = maps  # Foreground classes only.
    _assert_bf16_like_float32(self, boundary.boundary_loss, logits, fg_maps)
    _assert_bf16_like_float32(
        self, lambda x, y, m: boundary.dice_boundary_loss(
            x, y, m, w_region=1.0, w_boundary=0.5), logits, labels, fg_maps)
    # bf16 distance maps are computed in float32 too.
    got = boundary.boundary_loss(logits, jnp.asarray(fg_maps, jnp.bfloat16))
    self.assertEqual(got.dtype, jnp.float32)
