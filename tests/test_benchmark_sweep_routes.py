"""The ``folded`` route of ``benchmarks.sweep_routes`` computes what the library's U-Net does."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks._folded_unet import block_diagonal, folded_apply
from jaxseg.models.unet2d import UNet2D, UNet2DConfig


def test_block_diagonal_places_each_kernel_on_the_diagonal():
  w = jnp.arange(2 * 3 * 2 * 3, dtype=jnp.float32).reshape(2, 3, 2, 3) + 1  # K=2, 3 taps, 2 -> 3
  bd = np.asarray(block_diagonal(w))
  assert bd.shape == (3, 4, 6)
  np.testing.assert_array_equal(bd[:, :2, :3], w[0])
  np.testing.assert_array_equal(bd[:, 2:, 3:], w[1])
  assert not bd[:, :2, 3:].any() and not bd[:, 2:, :3].any()


@pytest.mark.parametrize("fold_max", [0, 4, 1000])  # per-configuration, mixed, all block-diagonal
def test_folded_apply_equals_each_configuration_alone(fold_max):
  model = UNet2D(UNet2DConfig.tversky(width=1 / 16))
  images = jax.random.normal(jax.random.key(0), (2, 32, 32, 1))
  configs = [model.init(jax.random.key(seed), images) for seed in (1, 2, 3)]
  # distinct BatchNorm affine parameters and running statistics per configuration
  configs = [jax.tree.map(lambda a, s=s: a + 0.1 * s, v) for s, v in enumerate(configs)]
  stacked = jax.tree.map(lambda *a: jnp.stack(a), *configs)
  logits, stats = jax.jit(lambda p, s, x: folded_apply(p, s, x, fold_max=fold_max))(
      stacked["params"], stacked["batch_stats"], images)
  chex.assert_shape(logits, (3, 2, 32, 32, 1))
  for k, variables in enumerate(configs):
    want, new = model.apply(variables, images, train=True, mutable=["batch_stats"])
    np.testing.assert_allclose(logits[k], want, rtol=1e-4, atol=1e-4)
    got_stats = jax.tree.map(lambda a, k=k: a[k], stats)
    chex.assert_trees_all_close(got_stats, new["batch_stats"], rtol=1e-4, atol=1e-5)
