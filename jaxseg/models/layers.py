"""Building blocks shared by jaxseg's convolutional models."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np


@functools.lru_cache(maxsize=64)
def _align_corners_matrix(in_size: int, out_size: int) -> np.ndarray:
  """``(out, in)`` linear-interpolation weights with aligned corner pixels."""
  if in_size == 1 or out_size == 1:
    weights = np.zeros((out_size, in_size), np.float32)
    weights[:, 0] = 1.0
    return weights
  position = np.arange(out_size) * (in_size - 1) / (out_size - 1)
  low = np.clip(np.floor(position).astype(np.int64), 0, in_size - 2)
  frac = position - low
  weights = np.zeros((out_size, in_size), np.float64)
  weights[np.arange(out_size), low] = 1.0 - frac
  weights[np.arange(out_size), low + 1] += frac
  return weights.astype(np.float32)


def resize_bilinear_align_corners(x: jax.Array, spatial_shape: tuple[int, ...]) -> jax.Array:
  """Bilinear (multilinear) resize of a channels-last batch with ``align_corners=True``.

  Matches PyTorch's ``F.interpolate(..., mode="bilinear", align_corners=True)`` used by the
  seed-000 U-Net. ``jax.image.resize`` uses half-pixel centres instead, so this applies one small
  interpolation matrix per spatial axis (a matmul, which XLA fuses well on CPU and GPU).

  Args:
    x: ``(batch, *spatial, channels)``.
    spatial_shape: output spatial shape.
  """
  if len(spatial_shape) != x.ndim - 2:
    raise ValueError(f"spatial_shape {spatial_shape} does not match input {x.shape}")
  for axis, size in enumerate(spatial_shape, start=1):
    if x.shape[axis] == size:
      continue
    weights = jnp.asarray(_align_corners_matrix(x.shape[axis], size), dtype=x.dtype)
    x = jnp.moveaxis(jnp.tensordot(weights, jnp.moveaxis(x, axis, 0), axes=1), 0, axis)
  return x
