"""Tests of the convolution helpers of jaxseg.models.layers (im2col convolutions)."""

import itertools

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import absltest
from absl.testing import parameterized

from jaxseg.models import layers


def np_conv(x, w, strides, pads):
  """Direct float64 convolution (cross-correlation), channels last, from the definition."""
  x = np.pad(np.asarray(x, np.float64), [(0, 0)] + list(pads) + [(0, 0)])
  k = w.shape[:-2]
  out = [(x.shape[1 + i] - k[i]) // strides[i] + 1 for i in range(len(k))]
  y = np.zeros((x.shape[0], *out, w.shape[-1]))
  for pos in itertools.product(*(range(n) for n in out)):
    window = tuple(slice(p * s, p * s + n) for p, s, n in zip(pos, strides, k))
    patch = x[(slice(None),) + window + (slice(None),)]
    y[(slice(None),) + pos + (slice(None),)] = np.tensordot(
        patch, np.asarray(w, np.float64), axes=(list(range(1, len(k) + 2)),
                                                list(range(len(k) + 1))))
  return y


class Im2colConvTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(
      ((3, 3, 3), (1, 1, 1), "SAME"), ((3, 3, 1), (2, 2, 1), "SAME"),
      ((2, 3, 3), (2, 1, 2), "VALID"), ((1, 1, 1), (1, 1, 1), "SAME"), ((3, 3), (2, 2), "SAME"))
  def test_matches_a_direct_float64_convolution(self, kernel, strides, padding):
    rng = np.random.default_rng(0)
    spatial = (7, 6, 5)[:len(kernel)]
    x = rng.normal(size=(2, *spatial, 3)).astype(np.float32)
    w = rng.normal(size=(*kernel, 3, 4)).astype(np.float32)
    got = self.variant(lambda a, b: layers.im2col_conv_general_dilated(a, b, strides, padding))(
        x, w)
    pads = jax.lax.padtype_to_pads(spatial, kernel, strides, padding)
    want = np_conv(x, w, strides, pads)
    chex.assert_shape(got, want.shape)
    chex.assert_type(got, jnp.float32)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # ... and lax agrees, value and gradient.
    lax_fn = lambda a, b: jax.lax.conv_general_dilated(
        a, b, strides, padding, dimension_numbers=jax.lax.conv_dimension_numbers(
            a.shape, b.shape, ("NDHWC", "DHWIO", "NDHWC") if len(kernel) == 3 else
            ("NHWC", "HWIO", "NHWC")))
    grad = lambda f: jax.grad(lambda a, b: jnp.sum(jnp.sin(f(a, b))), argnums=(0, 1))(x, w)
    for a, b in zip(grad(lambda a, b: layers.im2col_conv_general_dilated(a, b, strides, padding)),
                    grad(lax_fn)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)

  def test_flax_conv_with_im2col_has_the_same_parameters_and_values(self):
    x = jax.random.normal(jax.random.key(0), (2, 8, 6, 4, 5))
    native = nn.Conv(7, (3, 3, 3), strides=(2, 2, 1), padding="SAME")
    patch = nn.Conv(7, (3, 3, 3), strides=(2, 2, 1), padding="SAME",
                    conv_general_dilated=layers.conv_general_dilated("im2col"))
    variables = native.init(jax.random.key(1), x)
    chex.assert_trees_all_equal_shapes(variables, patch.init(jax.random.key(1), x))
    np.testing.assert_allclose(patch.apply(variables, x), native.apply(variables, x), atol=1e-5)

  def test_rejects_what_it_does_not_support(self):
    x, w = jnp.ones((1, 5, 5, 2)), jnp.ones((3, 3, 2, 2))
    with self.assertRaises(NotImplementedError):
      layers.im2col_conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
    with self.assertRaises(NotImplementedError):
      layers.im2col_conv_general_dilated(x, jnp.ones((3, 3, 1, 2)), (1, 1), "SAME",
                                         feature_group_count=2)
    with self.assertRaisesRegex(ValueError, "does not match"):
      layers.im2col_conv_general_dilated(x, jnp.ones((3, 3, 3, 2)), (1, 1), "SAME")
    with self.assertRaisesRegex(ValueError, "conv_impl"):
      layers.conv_general_dilated("cudnn")


class ConvTransposeTest(chex.TestCase):

  @parameterized.product(
      case=[((3, 3, 3), (2, 2, 2)), ((2, 2, 2), (2, 2, 2)), ((3, 3, 1), (2, 2, 1)),
            ((4, 3, 3), (2, 3, 1))],
      padding=("SAME", "VALID"), impl=layers.CONV_IMPLS)
  def test_equals_flax_conv_transpose(self, case, padding, impl):
    kernel, strides = case
    x = jax.random.normal(jax.random.key(0), (2, 5, 4, 3, 3))
    reference = nn.ConvTranspose(6, kernel, strides=strides, padding=padding)
    variables = reference.init(jax.random.key(1), x)
    mine = layers.ConvTranspose(6, kernel, strides, padding=padding, conv_impl=impl)
    chex.assert_trees_all_equal_shapes(variables, mine.init(jax.random.key(1), x))
    got, want = mine.apply(variables, x), reference.apply(variables, x)
    chex.assert_equal_shape((got, want))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(((2, 2),), ((2, 3),), ((2, 2, 2),))
  def test_kernel_equal_to_stride_matches_flax_values_and_gradients(self, kernel):
    # kernel == stride takes the matrix-product (depth-to-space) path of the U-Nets' up-convs.
    x = jax.random.normal(jax.random.key(0), (2,) + (3,) * len(kernel) + (5,))
    reference = nn.ConvTranspose(4, kernel, strides=kernel)
    variables = reference.init(jax.random.key(1), x)
    mine = layers.ConvTranspose(4, kernel, kernel)
    chex.assert_trees_all_equal(variables, mine.init(jax.random.key(1), x))  # same init too
    loss = lambda module: lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
    got = self.variant(jax.value_and_grad(loss(mine), argnums=(0, 1)))(variables, x)
    want = jax.value_and_grad(loss(reference), argnums=(0, 1))(variables, x)
    chex.assert_shape(mine.apply(variables, x),
                      (2,) + tuple(3 * k for k in kernel) + (4,))
    chex.assert_trees_all_close(got, want, rtol=1e-5, atol=1e-5)

  def test_kernel_equal_to_stride_by_hand(self):
    # One input pixel, two output channels: the 2x2 block is the kernel read in reverse.
    kernel = jnp.arange(8.0).reshape(2, 2, 1, 2)
    y = layers.ConvTranspose(2, (2, 2), (2, 2), use_bias=False).apply(
        {"params": {"kernel": kernel}}, jnp.full((1, 1, 1, 1), 2.0))
    np.testing.assert_array_equal(y[0, :, :, 0], 2.0 * np.array([[6.0, 4.0], [2.0, 0.0]]))
    np.testing.assert_array_equal(y[0, :, :, 1], 2.0 * np.array([[7.0, 5.0], [3.0, 1.0]]))

  def test_bad_arguments(self):
    x = jnp.ones((1, 4, 4, 4, 2))
    with self.assertRaisesRegex(ValueError, "one entry per spatial axis"):
      layers.ConvTranspose(3, (2, 2), (2, 2)).init(jax.random.key(0), x)
    with self.assertRaisesRegex(ValueError, "padding"):
      layers.ConvTranspose(3, (2, 2, 2), (2, 2, 2), padding="CIRCULAR").init(
          jax.random.key(0), x)


class MaxPoolBlocksTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters(((2, 2), (2, 8, 6, 3)), ((2, 1, 2), (1, 4, 3, 6, 2)))
  def test_matches_flax_max_pool_values_and_gradients(self, window, shape):
    # Distinct values (a permutation), so no block has tied maxima.
    x = jax.random.permutation(jax.random.key(0), np.prod(shape)).reshape(shape) / 7.0
    pool = lambda f: lambda x: jnp.sum(jnp.cos(f(x)))
    got = self.variant(jax.value_and_grad(pool(lambda x: layers.max_pool_blocks(x, window))))(x)
    want = jax.value_and_grad(pool(lambda x: nn.max_pool(x, window, strides=window)))(x)
    chex.assert_trees_all_close(got, want, rtol=1e-6)
    chex.assert_shape(layers.max_pool_blocks(x, window),
                      (shape[0],) + tuple(s // w for s, w in zip(shape[1:-1], window))
                      + (shape[-1],))

  def test_hand_values_and_tied_maxima(self):
    x = jnp.array([[1.0, 5.0, 0.0, 0.0], [3.0, 2.0, 0.0, 0.0]]).reshape(1, 2, 4, 1)
    np.testing.assert_array_equal(layers.max_pool_blocks(x, (2, 2))[0, :, :, 0], [[5.0, 0.0]])
    g = jax.grad(lambda x: layers.max_pool_blocks(x, (2, 2)).sum())(x)[0, :, :, 0]
    # The maximum takes the gradient; four tied zeros share it, as in jax's max reduction.
    np.testing.assert_array_equal(g, [[0.0, 1.0, 0.25, 0.25], [0.0, 0.0, 0.25, 0.25]])
    reduction = jax.grad(lambda x: x.reshape(1, 1, 2, 2, 2, 1).max(axis=(2, 4)).sum())(x)
    np.testing.assert_array_equal(g, reduction[0, :, :, 0])

  def test_gradient_of_a_block_without_its_maximum_is_zero_not_nan(self):
    # What XLA's recomputation can produce: residuals where no element equals the recorded
    # maximum (second block). jax's own rule would give 0 / 0 there.
    x = jnp.array([[1.0, 3.0], [5.0, 7.0]])
    y = jnp.array([3.0, 9.0])
    (g,) = layers._block_max_bwd((1,), (x, y), jnp.ones(2))  # pylint: disable=protected-access
    np.testing.assert_array_equal(g, [[0.0, 1.0], [0.0, 0.0]])

  def test_sizes_the_window_does_not_divide_fall_back_to_flax(self):
    x = jax.random.normal(jax.random.key(0), (1, 5, 4, 2))
    np.testing.assert_array_equal(layers.max_pool_blocks(x, (2, 2)),
                                  nn.max_pool(x, (2, 2), strides=(2, 2)))
    with self.assertRaisesRegex(ValueError, "one entry per spatial axis"):
      layers.max_pool_blocks(x, (2, 2, 2))


if __name__ == "__main__":
  absltest.main()
