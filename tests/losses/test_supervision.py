"""Tests for jaxseg.losses.supervision (deep supervision, KL, ELBO)."""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import annotation
from jaxseg.losses import region
from jaxseg.losses import supervision
from tests.losses.bf16_check import assert_bf16_like_float32 as _assert_bf16_like_float32


def _max_pool_np(x, factors, spatial_dims):
  """Reference max-pool by reshaping (batch, *spatial[, C])."""
  shape = [x.shape[0]]
  for s, f in zip(x.shape[1:1 + spatial_dims], factors):
    shape += [s // f, f]
  shape += list(x.shape[1 + spatial_dims:])
  axes = tuple(2 + 2 * i for i in range(spatial_dims))
  return x.reshape(shape).max(axis=axes)


class WeightsTest(parameterized.TestCase):

  def test_nnunet_weights(self):
    np.testing.assert_allclose(supervision.nnunet_weights(1), [1.0])
    np.testing.assert_allclose(supervision.nnunet_weights(3),
                               [4 / 7, 2 / 7, 1 / 7])
    np.testing.assert_allclose(
        supervision.nnunet_weights(4, zero_coarsest=True),
        [4 / 7, 2 / 7, 1 / 7, 0.0])
    w = supervision.nnunet_weights(5)
    self.assertAlmostEqual(w.sum(), 1.0)
    self.assertTrue(np.all(np.diff(w) < 0))  # Finest first, largest.

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "n must be"):
      supervision.nnunet_weights(0)


class DownsampleLabelsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_single_foreground_pixel_survives(self):
    labels = jnp.zeros((1, 8, 8), jnp.int32).at[0, 5, 2].set(1)
    coarse = self.variant(
        functools.partial(supervision.downsample_labels, factor=4))(labels)
    expected = np.zeros((1, 2, 2), np.int32)
    expected[0, 1, 0] = 1
    np.testing.assert_array_equal(coarse, expected)
    self.assertEqual(coarse.dtype, labels.dtype)
    # Strided subsampling (nearest neighbour) would have lost it.
    self.assertEqual(int(labels[:, ::4, ::4].sum()), 0)

  @parameterized.parameters(
      (2, None), ((2, 1), None), ((1, 3), None), ((2, 3), 2))
  def test_matches_numpy_reference(self, factor, spatial_dims):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(2, 4, 6))
    got = supervision.downsample_labels(labels, factor,
                                        spatial_dims=spatial_dims)
    factors = (factor, factor) if isinstance(factor, int) else factor
    np.testing.assert_array_equal(got, _max_pool_np(labels, factors, 2))

  def test_one_hot_and_bool(self):
    rng = np.random.default_rng(1)
    onehot = np.eye(3, dtype=np.float32)[rng.integers(0, 3, size=(2, 4, 4))]
    got = supervision.downsample_labels(onehot, (2, 2))
    chex.assert_shape(got, (2, 2, 2, 3))
    np.testing.assert_array_equal(got, _max_pool_np(onehot, (2, 2), 2))
    mask = rng.integers(0, 2, size=(2, 4, 4, 2)).astype(bool)
    got = supervision.downsample_labels(mask, 2, spatial_dims=3)
    self.assertEqual(got.dtype, jnp.bool_)
    np.testing.assert_array_equal(got, _max_pool_np(mask, (2, 2, 2), 3))

  def test_factor_one_is_identity(self):
    labels = np.arange(12).reshape(1, 3, 4)
    np.testing.assert_array_equal(
        supervision.downsample_labels(labels, 1), labels)

  def test_errors(self):
    labels = np.zeros((1, 5, 4), np.int32)
    with self.assertRaisesRegex(ValueError, "divisible"):
      supervision.downsample_labels(labels, 2)
    with self.assertRaisesRegex(ValueError, "factor"):
      supervision.downsample_labels(labels, (0, 1))
    with self.assertRaisesRegex(ValueError, "spatial"):
      supervision.downsample_labels(labels, (1, 1, 1, 1))


class DeepSupervisionTest(chex.TestCase):

  def _outputs(self, seed=0, classes=3):
    rng = np.random.default_rng(seed)
    shapes = [(2, 8, 8, classes), (2, 4, 4, classes), (2, 2, 2, classes)]
    outputs = [rng.normal(size=s).astype(np.float32) for s in shapes]
    labels = rng.integers(0, classes, size=(2, 8, 8))
    return outputs, labels

  @chex.variants(with_jit=True, without_jit=True)
  def test_default_weights_sum(self):
    outputs, labels = self._outputs()
    loss_fn = functools.partial(region.soft_dice_loss, batch=False)
    got = self.variant(lambda o, l: supervision.deep_supervision_loss(
        o, l, loss_fn))(outputs, labels)
    w = [4 / 7, 2 / 7, 1 / 7]
    ref = sum(w[i] * loss_fn(o, _max_pool_np(labels, (2 ** i,) * 2, 2))
              for i, o in enumerate(outputs))
    chex.assert_shape(got, (2,))
    np.testing.assert_allclose(got, ref, rtol=1e-5)

  def test_equal_weights_and_zero_weight(self):
    outputs, labels = self._outputs(seed=1)
    per_scale = [region.soft_dice_loss(o, _max_pool_np(labels, (f, f), 2))
                 for o, f in zip(outputs, (1, 2, 4))]
    got = supervision.deep_supervision_loss(
        outputs, labels, region.soft_dice_loss, weights=[1.0, 1.0, 1.0])
    np.testing.assert_allclose(got, sum(per_scale), rtol=1e-5)
    # A zero weight skips that scale.
    got = supervision.deep_supervision_loss(
        outputs, labels, region.soft_dice_loss,
        weights=supervision.nnunet_weights(3, zero_coarsest=True))
    np.testing.assert_allclose(
        got, 2 / 3 * per_scale[0] + 1 / 3 * per_scale[1], rtol=1e-5)

  def test_microsegnet_pytree_labels_and_kernel_sizes(self):
    rng = np.random.default_rng(2)
    expert = np.zeros((2, 8, 8), np.float32)
    expert[:, 2:6, 2:7] = 1
    non_expert = np.roll(expert, 1, axis=1)
    outputs = [rng.normal(size=(2, s, s, 1)).astype(np.float32)
               for s in (8, 4, 2)]
    seen = []

    def ag_loss(logits, masks, *, kernel_size):
      e, n = masks
      seen.append((logits.shape[1], e.shape[1], kernel_size))
      hard = annotation.hard_region_mask(e, n, kernel_size=kernel_size)
      return annotation.ag_bce_loss(logits, e, hard)

    got = supervision.deep_supervision_loss(
        outputs, (expert, non_expert), ag_loss, weights=[1.0] * 3,
        kernel_sizes=(3, 2, 1))
    self.assertEqual(seen, [(8, 8, 3), (4, 4, 2), (2, 2, 1)])
    ref = 0.0
    for o, f, ks in zip(outputs, (1, 2, 4), (3, 2, 1)):
      e = _max_pool_np(expert, (f, f), 2)
      n = _max_pool_np(non_expert, (f, f), 2)
      ref = ref + annotation.ag_bce_loss(
          o, e, annotation.hard_region_mask(e, n, kernel_size=ks))
    np.testing.assert_allclose(got, ref, rtol=1e-6)

  def test_grad_is_finite(self):
    outputs, labels = self._outputs(seed=3)
    outputs = [1e4 * np.sign(o) for o in outputs]
    f = lambda o: jnp.sum(supervision.deep_supervision_loss(
        o, labels, region.soft_dice_loss))
    grads = jax.jit(jax.grad(f))(outputs)
    for g in grads:
      self.assertTrue(np.all(np.isfinite(g)))

  def test_errors(self):
    outputs, labels = self._outputs()
    with self.assertRaisesRegex(ValueError, "at least one scale"):
      supervision.deep_supervision_loss([], labels, region.soft_dice_loss)
    with self.assertRaisesRegex(ValueError, "weights"):
      supervision.deep_supervision_loss(outputs, labels,
                                        region.soft_dice_loss, weights=[1.0])
    with self.assertRaisesRegex(ValueError, "kernel_sizes"):
      supervision.deep_supervision_loss(outputs, labels,
                                        region.soft_dice_loss,
                                        kernel_sizes=[1])
    with self.assertRaisesRegex(ValueError, "integer multiple"):
      supervision.deep_supervision_loss(
          [np.zeros((2, 3, 3, 3), np.float32)], labels,
          region.soft_dice_loss)
    with self.assertRaisesRegex(ValueError, "all deep-supervision weights"):
      supervision.deep_supervision_loss(outputs, labels,
                                        region.soft_dice_loss,
                                        weights=[0.0, 0.0, 0.0])


def _kl_np(mq, lq, mp, lp):
  mq, lq, mp, lp = (np.asarray(a, np.float64) for a in (mq, lq, mp, lp))
  vq, vp = np.exp(lq), np.exp(lp)
  kl = 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1)
  return kl.reshape(len(kl), -1).sum(-1)


class KlElboTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_kl_matches_closed_form(self):
    rng = np.random.default_rng(4)
    args = [rng.normal(size=(3, 2, 2, 4)).astype(np.float32)
            for _ in range(4)]
    got = self.variant(supervision.kl_diagonal_gaussians)(*args)
    chex.assert_shape(got, (3,))
    np.testing.assert_allclose(got, _kl_np(*args), rtol=1e-5)

  def test_kl_hand_computed(self):
    # q = N(1, 1), p = N(0, e^2) in one dimension:
    # 0.5 * (2 - 0 + (1 + 1) / e^2 - 1).
    got = supervision.kl_diagonal_gaussians(
        jnp.array([[1.0]]), jnp.array([[0.0]]), jnp.array([[0.0]]),
        jnp.array([[2.0]]))
    np.testing.assert_allclose(got, [0.5 * (1 + 2 / np.e ** 2)], rtol=1e-6)
    same = supervision.kl_diagonal_gaussians(
        jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((2, 3)),
        jnp.ones((2, 3)))
    np.testing.assert_allclose(same, [0.0, 0.0], atol=1e-7)

  def test_kl_gradient_finite_and_correct(self):
    mq = jnp.array([[0.5, -1.0]])
    g = jax.grad(lambda m: jnp.sum(supervision.kl_diagonal_gaussians(
        m, jnp.zeros((1, 2)), jnp.zeros((1, 2)), jnp.zeros((1, 2)))))(mq)
    np.testing.assert_allclose(g, mq, rtol=1e-6)  # d/dmu 0.5 mu^2 = mu.

  def test_elbo(self):
    seg = jnp.array([0.5, 1.0])
    kl = jnp.array([0.1, 0.2])
    np.testing.assert_allclose(supervision.elbo_loss(seg, kl), [1.5, 3.0],
                               rtol=1e-6)
    np.testing.assert_allclose(supervision.elbo_loss(seg, kl, beta=1.0),
                               [0.6, 1.2], rtol=1e-6)

  def test_errors(self):
    with self.assertRaisesRegex(ValueError, "same shape"):
      supervision.elbo_loss(jnp.ones(2), jnp.ones(3))
    with self.assertRaisesRegex(ValueError, "beta"):
      supervision.elbo_loss(jnp.ones(2), jnp.ones(2), beta=-1.0)
    with self.assertRaisesRegex(ValueError, "share one shape"):
      supervision.kl_diagonal_gaussians(jnp.ones((2, 3)), jnp.ones((2, 3)),
                                        jnp.ones((2, 3)), jnp.ones((2, 2)))




class Bfloat16Test(chex.TestCase):

  def test_bf16_inputs_compute_in_float32(self):
    rng = np.random.default_rng(50)
    args = [rng.normal(size=(2, 3, 4)).astype(np.float32) for _ in range(4)]
    _assert_bf16_like_float32(self, supervision.kl_diagonal_gaussians, *args)
    # Every argument, not only the first, is promoted.
    low = [jnp.asarray(a, jnp.bfloat16) for a in args]
    self.assertEqual(supervision.kl_diagonal_gaussians(*low).dtype,
                     jnp.float32)
    seg, kl = (jnp.asarray([0.5, 1.0], jnp.bfloat16),
               jnp.asarray([0.1, 0.2], jnp.bfloat16))
    self.assertEqual(supervision.elbo_loss(seg, kl).dtype, jnp.float32)
    logits = rng.normal(size=(2, 4, 4, 1)).astype(np.float32)
    mask = (rng.random((2, 4, 4)) < 0.5).astype(np.int32)
    _assert_bf16_like_float32(
        self, lambda x, y: supervision.deep_supervision_loss(
            [x, x[:, ::2, ::2]], y, functools.partial(
                region.soft_dice_loss, activation="sigmoid")), logits, mask)
