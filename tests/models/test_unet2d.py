"""Tests of the 2D U-Net and its building blocks."""

import dataclasses

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.layers import resize_bilinear_align_corners
from jaxseg.models.unet2d import UNet2D, UNet2DConfig


def _count(params):
  return sum(x.size for x in jax.tree.leaves(params))


def test_hierarchical_preset_shapes_and_parameter_count():
  cfg = UNet2DConfig.hierarchical()
  model = UNet2D(cfg)
  x = jnp.zeros((1, 16, 16, 1))
  params = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  # Conv parameter count of the seed-000 architecture written out by hand.
  def conv(cin, cout, k=3):
    return k * k * cin * cout + cout
  expected = (conv(1, 64) + conv(64, 64) + conv(64, 128) + conv(128, 128)
              + conv(128, 256) + conv(256, 256)
              + conv(256 + 128, 128) + conv(128, 128)
              + conv(128 + 64, 64) + conv(64, 64) + conv(64, 9, k=1))
  assert _count(params) == expected
  out = jax.eval_shape(model.apply, {"params": params}, x)
  assert out.shape == (1, 16, 16, 9) and out.dtype == jnp.float32


def test_tversky_preset_has_batch_norm_and_one_output():
  model = UNet2D(UNet2DConfig.tversky(width=0.0625))
  x = jnp.ones((2, 32, 32, 1))
  variables = model.init(jax.random.key(0), x)
  assert "batch_stats" in variables
  y, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
  chex.assert_shape(y, (2, 32, 32, 1))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), variables["batch_stats"],
                         updates["batch_stats"])
  assert any(jax.tree.leaves(changed))


def test_tversky_preset_parameter_names_are_flax_ones():
  # Checkpoints written before jaxseg's own ConvTranspose keep loading: same names and shapes.
  model = UNet2D(UNet2DConfig.tversky(width=0.0625))
  params = jax.eval_shape(model.init, jax.random.key(0), jnp.ones((1, 32, 32, 1)))["params"]
  ups = {k: v["kernel"].shape for k, v in params.items() if k.startswith("ConvTranspose")}
  assert ups == {"ConvTranspose_0": (2, 2, 64, 32), "ConvTranspose_1": (2, 2, 32, 16),
                 "ConvTranspose_2": (2, 2, 16, 8), "ConvTranspose_3": (2, 2, 8, 4)}


@pytest.mark.parametrize("preset", ["hierarchical", "tversky"])
def test_im2col_convolutions_give_the_same_values_and_gradients(preset):
  cfg = getattr(UNet2DConfig, preset)(width=0.0625)
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
  xla, im2col = UNet2D(cfg), UNet2D(dataclasses.replace(cfg, conv_impl="im2col"))
  variables = xla.init(jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes(variables, im2col.init(jax.random.key(0), x))
  loss = lambda model: lambda v: jnp.sum(jnp.tanh(model.apply(v, x)))
  got = jax.value_and_grad(loss(im2col))(variables)
  want = jax.value_and_grad(loss(xla))(variables)
  chex.assert_trees_all_close(got, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="conv_impl must be one of"):
    UNet2D(dataclasses.replace(cfg, conv_impl="cudnn")).init(jax.random.key(0), x)


def test_width_multiplier_and_determinism():
  model = UNet2D(UNet2DConfig.hierarchical(width=0.25))
  x = jax.random.normal(jax.random.key(1), (2, 16, 16, 1))
  v1 = model.init(jax.random.key(0), x)
  v2 = model.init(jax.random.key(0), x)
  chex.assert_trees_all_equal(v1, v2)
  assert v1["params"]["ConvBlock_0"]["Conv_0"]["kernel"].shape == (3, 3, 1, 16)
  v3 = model.init(jax.random.key(2), x)
  assert not np.allclose(v1["params"]["Conv_0"]["kernel"], v3["params"]["Conv_0"]["kernel"])


def test_rejects_bad_sizes():
  model = UNet2D(UNet2DConfig.hierarchical(width=0.125))
  with pytest.raises(ValueError, match="multiples of 4"):
    model.init(jax.random.key(0), jnp.zeros((1, 18, 16, 1)))
  with pytest.raises(ValueError, match="batch, height, width"):
    model.init(jax.random.key(0), jnp.zeros((16, 16, 1)))


def test_bilinear_align_corners_matches_hand_values():
  x = jnp.array([0.0, 3.0]).reshape(1, 2, 1, 1)
  y = resize_bilinear_align_corners(x, (4, 1))
  np.testing.assert_allclose(y[0, :, 0, 0], [0.0, 1.0, 2.0, 3.0], rtol=1e-6)
  # A linear ramp in 2D is reproduced exactly, corners included.
  ramp = (jnp.arange(3.0)[:, None] + 10 * jnp.arange(4.0)[None, :])[None, ..., None]
  out = resize_bilinear_align_corners(ramp, (5, 7))[0, ..., 0]
  gx, gy = np.meshgrid(np.linspace(0, 2, 5), np.linspace(0, 3, 7), indexing="ij")
  np.testing.assert_allclose(out, gx + 10 * gy, rtol=1e-5, atol=1e-5)
