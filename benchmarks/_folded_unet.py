"""The seed-002 U-Net of K configurations as one model, the configurations folded into channels.

A route of ``benchmarks.sweep_routes`` (``folded``), written for measurement, not for training:
the ``K`` stacked parameter sets of ``jaxseg.models.unet2d.UNet2D`` (``UNet2DConfig.tversky``:
BatchNorm, no convolution bias, 2x2 transposed up-convolutions) run as one network whose
activations are ``(N, H, W, K * C)``, configuration-major along the channels. Every per-channel
operation (BatchNorm, ReLU, max-pooling) is then one operation on all configurations. A 3x3
convolution of ``C -> O`` channels per configuration runs as one dense convolution with a
block-diagonal ``(3, 3, K * C, K * O)`` kernel (``K`` times the FLOPs, no feature groups) when
``max(C, O) <= fold_max``, otherwise as ``K`` convolutions on channel slices; the first layer,
whose input all configurations share, is one convolution to ``K * O`` channels. The
up-convolutions and the 1x1 output layer are block-diagonal matrix products.

Same values as ``UNet2D.apply`` of each configuration (``tests/test_benchmark_sweep_routes.py``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxseg.models.layers import _depth_to_space_transpose, max_pool_blocks

_NUMBERS = ("NHWC", "HWIO", "NHWC")


def block_diagonal(w: jax.Array) -> jax.Array:
  """``(K, *taps, I, O)`` -> ``(*taps, K * I, K * O)`` with configuration ``k``'s kernel in
  block ``(k, k)`` and zeros elsewhere."""
  k, i, o = w.shape[0], w.shape[-2], w.shape[-1]
  blocks = jnp.einsum("k...io,kl->...kilo", w, jnp.eye(k, dtype=w.dtype))
  return blocks.reshape(w.shape[1:-2] + (k * i, k * o))


def _conv(x, w):
  return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=_NUMBERS)


def folded_conv(x: jax.Array, w: jax.Array, *, shared: bool, fold_max: int) -> jax.Array:
  """3x3 "SAME" convolution of every configuration; ``x`` is ``(N, H, W, K * C)`` (or
  ``(N, H, W, C)`` when ``shared``), ``w`` the stacked ``(K, 3, 3, C, O)`` kernels."""
  k, c, o = w.shape[0], w.shape[-2], w.shape[-1]
  if shared:
    return _conv(x, jnp.moveaxis(w, 0, -2).reshape(w.shape[1:-1] + (k * o,)))
  if max(c, o) <= fold_max:
    return _conv(x, block_diagonal(w))
  return jnp.concatenate([_conv(x[..., i * c:(i + 1) * c], w[i]) for i in range(k)], axis=-1)


def _batch_norm(x, params, stats, momentum=0.9, eps=1e-5):
  """flax's ``nn.BatchNorm`` in training mode (fast variance), per folded channel."""
  mean = x.mean((0, 1, 2))
  var = jnp.maximum(0.0, jnp.square(x).mean((0, 1, 2)) - jnp.square(mean))
  y = (x - mean) * jax.lax.rsqrt(var + eps) * params["scale"].reshape(-1) + (
      params["bias"].reshape(-1))
  shape = stats["mean"].shape
  new = {"mean": momentum * stats["mean"] + (1 - momentum) * mean.reshape(shape),
         "var": momentum * stats["var"] + (1 - momentum) * var.reshape(shape)}
  return y, new


def _interleave(a, b, k):
  """Per-configuration channel concatenation ``[a_k, b_k]`` of two folded arrays."""
  n, h, w, _ = a.shape
  return jnp.concatenate([a.reshape(n, h, w, k, -1), b.reshape(n, h, w, k, -1)],
                         axis=-1).reshape(n, h, w, -1)


def folded_apply(params: Any, batch_stats: Any, images: jax.Array, *,
                 fold_max: int) -> tuple[jax.Array, Any]:
  """Training-mode forward pass of ``K`` stacked ``UNet2DConfig.tversky`` U-Nets.

  Args:
    params, batch_stats: ``UNet2D`` variables with a leading configuration axis of size ``K``.
    images: ``(N, H, W, 1)``, shared by the configurations.
    fold_max: block-diagonal convolutions up to this many channels per configuration.

  Returns:
    ``(K, N, H, W, 1)`` logits and the updated ``batch_stats`` (stacked like the input).
  """
  k = jax.tree.leaves(params)[0].shape[0]
  levels = sum(name.startswith("ConvTranspose_") for name in params)
  new_stats = {}

  def block(x, index, shared=False):
    name = f"ConvBlock_{index}"
    new_stats[name] = {}
    for j in range(2):
      x = folded_conv(x, params[name][f"Conv_{j}"]["kernel"], shared=shared and j == 0,
                      fold_max=fold_max)
      x, new_stats[name][f"BatchNorm_{j}"] = _batch_norm(
          x, params[name][f"BatchNorm_{j}"], batch_stats[name][f"BatchNorm_{j}"])
      x = jax.nn.relu(x)
    return x

  x, skips = images, []
  for level in range(levels):
    x = block(x, level, shared=level == 0)
    skips.append(x)
    x = max_pool_blocks(x, (2, 2))
  x = block(x, levels)
  for i, skip in enumerate(reversed(skips)):
    up = params[f"ConvTranspose_{i}"]
    x = _depth_to_space_transpose(x, block_diagonal(up["kernel"])) + up["bias"].reshape(-1)
    x = block(_interleave(x, skip, k), levels + 1 + i)
  out = params["Conv_0"]
  n, h, w, _ = x.shape
  logits = _conv(x, block_diagonal(out["kernel"])) + out["bias"].reshape(-1)
  return jnp.moveaxis(logits.reshape(n, h, w, k, -1), 3, 0), new_stats
