"""Building blocks shared by jaxseg's convolutional models."""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
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


# -- convolutions as patch matrices (im2col) ---------------------------------------------------

CONV_IMPLS = ("xla", "im2col")


def _transpose_padding(kernel: int, stride: int, padding: str) -> tuple[int, int]:
  """Padding of the stride-1 convolution of the zero-dilated input that ``lax.conv_transpose``
  runs for a ``"SAME"`` or ``"VALID"`` transposed convolution (its documented semantics)."""
  if padding == "SAME":
    total = kernel + stride - 2
    before = kernel - 1 if stride > kernel - 1 else int(math.ceil(total / 2))
  elif padding == "VALID":
    total = kernel + stride - 2 + max(kernel - stride, 0)
    before = kernel - 1
  else:
    raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
  return before, total - before


def im2col_conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                                rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                                precision=None, preferred_element_type=None) -> jax.Array:
  """Drop-in for ``lax.conv_general_dilated`` on channels-last inputs, as one matrix product.

  Gathers the ``prod(kernel)`` shifted (strided) views of the padded input into a patch matrix
  ``(..., prod(kernel) * C_in)`` and multiplies it by the kernel reshaped to
  ``(prod(kernel) * C_in, C_out)``, the kernel offsets in row-major order as in the kernel array.
  The same sums as a direct convolution, in another order (float32 agreement ~1e-6 relative).

  Why: XLA:CPU runs small-channel 3D convolutions, and above all their gradients, far below the
  machine's speed (a 3x3x3 convolution of 8 channels on 2 x 24 x 24 x 8 voxels: ~150 ms for
  value and gradient, against ~20 ms as a patch matrix; strided ones 10x more). The patch matrix
  costs ``prod(kernel)`` times the input's memory, so this is for the small CPU models; GPUs and
  wide models should keep ``lax.conv_general_dilated`` (cuDNN).

  Supported: channels-last layouts (flax's default, ``N...C`` / ``...IO``), ``lhs_dilation``
  (zero insertion, for transposed convolutions), string or explicit padding. Not supported:
  ``rhs_dilation`` other than 1 and feature groups.
  """
  del dimension_numbers  # flax passes the channels-last numbers; the shapes below assume them
  nd = lhs.ndim - 2
  kernel = rhs.shape[:nd]
  if feature_group_count != 1 or (rhs_dilation is not None and any(d != 1 for d in rhs_dilation)):
    raise NotImplementedError("im2col convolutions support neither feature groups nor kernel "
                              "dilation")
  if rhs.ndim != nd + 2 or rhs.shape[nd] != lhs.shape[-1]:
    raise ValueError(f"kernel {rhs.shape} does not match channels-last input {lhs.shape}")
  if lhs_dilation is not None and any(d != 1 for d in lhs_dilation):
    lhs = jax.lax.pad(lhs, jnp.zeros((), lhs.dtype),
                      [(0, 0, 0)] + [(0, 0, d - 1) for d in lhs_dilation] + [(0, 0, 0)])
  if isinstance(padding, str):
    padding = jax.lax.padtype_to_pads(lhs.shape[1:-1], kernel, window_strides, padding)
  x = jnp.pad(lhs, [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)])
  out = [(x.shape[1 + i] - kernel[i]) // window_strides[i] + 1 for i in range(nd)]
  if min(out) < 1:
    raise ValueError(f"kernel {kernel} larger than the padded input {x.shape[1:-1]}")
  views = []
  for offset in itertools.product(*(range(k) for k in kernel)):
    index = tuple(slice(o, o + (n - 1) * s + 1, s) for o, n, s in zip(offset, out, window_strides))
    views.append(x[(slice(None),) + index + (slice(None),)])
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  return jnp.einsum("...k,kc->...c", patches, rhs.reshape(-1, rhs.shape[-1]),
                    precision=precision, preferred_element_type=preferred_element_type)


def _depth_to_space_transpose(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """Transposed convolution whose kernel equals its stride, as a matrix product.

  ``y[n, s_1 k_1 + a_1, ..., c_out] = sum_c x[n, s_1, ..., c] w[k_1 - 1 - a_1, ..., c, c_out]``:
  ``lax.conv_transpose`` (no ``transpose_kernel``) correlates the zero-dilated input with the
  kernel, which reads the kernel's taps in reverse order.
  """
  nd = x.ndim - 2
  k = kernel.shape[:nd]
  flipped = kernel[(slice(None, None, -1),) * nd]
  y = jnp.tensordot(x, flipped, axes=[[x.ndim - 1], [nd]])  # (n, *spatial, *k, c_out)
  order = [0] + [a for i in range(nd) for a in (1 + i, 1 + nd + i)] + [1 + 2 * nd]
  shape = (x.shape[0],) + tuple(s * f for s, f in zip(x.shape[1:-1], k)) + (kernel.shape[-1],)
  return y.transpose(order).reshape(shape)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _block_max(x: jax.Array, axes: tuple[int, ...]) -> jax.Array:
  return x.max(axis=axes)


def _block_max_fwd(x, axes):
  y = x.max(axis=axes)
  return y, (x, y)


def _block_max_bwd(axes, residuals, g):
  # jax's own rule for a max reduction, ``mask * g / count`` with ``count`` the number of
  # elements equal to the maximum, except that a count of 0 gives 0, not 0 / 0: XLA may
  # recompute the pooled activations here in another fusion, with another rounding, so that no
  # element equals the maximum it computed in the forward pass (a NaN gradient in the 4-device
  # tests of the tversky study).
  x, y = residuals
  mask = (x == jnp.expand_dims(y, axes)).astype(g.dtype)
  count = mask.sum(axis=axes)
  return (mask * jnp.expand_dims(g / jnp.maximum(count, 1), axes),)


_block_max.defvjp(_block_max_fwd, _block_max_bwd)


def max_pool_blocks(x: jax.Array, window: Sequence[int]) -> jax.Array:
  """Max over non-overlapping ``window`` blocks of a channels-last array (stride = window).

  The same values as ``nn.max_pool(x, window, strides=window)`` when the window divides every
  spatial size, computed as a reshape and a max reduction. Its gradient goes to the block's
  maximum (shared equally between tied maxima, where ``nn.max_pool`` gives it all to the first:
  the two differ only on ties, e.g. blocks of ReLU zeros, whose gradient the ReLU then zeroes),
  and is never NaN (see ``_block_max_bwd``). XLA:CPU runs the reduce-window / select-and-scatter
  pair of ``nn.max_pool`` as a generic window loop; this is a plain reduction. Other sizes fall
  back to ``nn.max_pool``.
  """
  window = tuple(window)
  nd = x.ndim - 2
  if len(window) != nd:
    raise ValueError(f"window {window} must have one entry per spatial axis of {x.shape}")
  if any(s % w for s, w in zip(x.shape[1:-1], window)):
    return nn.max_pool(x, window, strides=window)
  shape = [x.shape[0]]
  for s, w in zip(x.shape[1:-1], window):
    shape += [s // w, w]
  return _block_max(x.reshape(shape + [x.shape[-1]]), tuple(2 + 2 * i for i in range(nd)))


def conv_general_dilated(impl: str):
  """The convolution function of an implementation name (``"xla"`` or ``"im2col"``)."""
  if impl == "xla":
    return jax.lax.conv_general_dilated
  if impl == "im2col":
    return im2col_conv_general_dilated
  raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {impl!r}")


class ConvTranspose(nn.Module):
  """``flax.linen.ConvTranspose`` (no kernel flip, ``"SAME"``/``"VALID"`` padding) whose
  convolution can run as a patch matrix.

  Same parameters (``kernel`` ``(*kernel_size, C_in, features)``, ``bias``) and the same values
  as ``nn.ConvTranspose``: like ``lax.conv_transpose``, the input is dilated with ``strides - 1``
  zeros and convolved (stride 1) with the kernel, padded as ``lax.conv_transpose`` pads.

  When the kernel equals the stride (the U-Nets' 2x2 / 2x2x2 up-convolutions) the windows do not
  overlap: every output voxel is one input voxel times one kernel tap, so the layer runs as one
  matrix product and a depth-to-space reshape (:func:`_depth_to_space_transpose`), whatever
  ``conv_impl`` says. XLA:CPU ran the weight gradients of the dilated-convolution form of the
  seed-002 U-Net's four up-convolutions in 41% of the traced time of a train step
  (BENCHMARKS.md, "Where a CPU train step of the seed-002 U-Net goes").
  """

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int]
  padding: str = "SAME"
  use_bias: bool = True
  dtype: Any = None
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., jax.Array] = nn.initializers.zeros_init()
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    kernel_size = tuple(self.kernel_size)
    if len(kernel_size) != x.ndim - 2 or len(tuple(self.strides)) != len(kernel_size):
      raise ValueError(f"kernel_size {kernel_size} and strides {tuple(self.strides)} must have "
                       f"one entry per spatial axis of {x.shape}")
    kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", self.bias_init, (self.features,), jnp.float32) if (
        self.use_bias) else None
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    if len(kernel_size) > 3:
      raise ValueError(f"1-3 spatial axes are supported, got {len(kernel_size)}")
    if kernel_size == tuple(self.strides) and self.padding in ("SAME", "VALID"):
      y = _depth_to_space_transpose(x, kernel)
      return y if bias is None else y + bias
    pads = [_transpose_padding(k, s, self.padding) for k, s in zip(kernel_size, self.strides)]
    spatial = "DHW"[-len(kernel_size):]
    numbers = jax.lax.conv_dimension_numbers(x.shape, kernel.shape,
                                             (f"N{spatial}C", f"{spatial}IO", f"N{spatial}C"))
    y = conv_general_dilated(self.conv_impl)(
        x, kernel, (1,) * len(kernel_size), pads, lhs_dilation=tuple(self.strides),
        dimension_numbers=numbers)
    return y if bias is None else y + bias
