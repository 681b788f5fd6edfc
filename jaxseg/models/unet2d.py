"""2D U-Net (Ronneberger et al., 2015) with the presets of the seed-000 and seed-002 studies.

The model is a Flax linen module: parameters live outside it and ``model.apply(variables, images,
train=...)`` is a pure function. Images are channels-last ``(batch, height, width, channels)``; the
output is ``(batch, height, width, num_classes)`` logits. Height and width must be multiples of
``2 ** len(features)`` (:attr:`UNet2D.size_multiple`); :func:`jaxseg.inference.predict_slices` pads
whole slices for that.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import (CONV_IMPLS, ConvTranspose, conv_general_dilated, max_pool_blocks,
                                 resize_bilinear_align_corners)


@dataclasses.dataclass(frozen=True)
class UNet2DConfig:
  """Architecture of a :class:`UNet2D`.

  Attributes:
    features: channels of the encoder levels that have a skip connection, finest first.
    bottleneck: channels of the lowest level (no skip).
    num_classes: output channels (1 for a sigmoid foreground map).
    batch_norm: insert BatchNorm after every convolution (seed 002) or not (seed 000).
    conv_bias: give the 3x3 convolutions a bias (off when followed by BatchNorm).
    upsample: ``"bilinear"`` (align-corners, followed by the level's convolutions, seed 000) or
      ``"transpose"`` (2x2 stride-2 transposed convolution to the skip's width, seed 002).
    width: multiplier applied to every channel count (0.25 gives a CPU-sized model).
    dtype: computation dtype (parameters stay float32), e.g. ``jnp.bfloat16`` on accelerators.
    conv_impl: ``"xla"`` (``lax.conv_general_dilated``) or ``"im2col"`` (every 3x3 convolution
      as one patch-matrix product, :func:`jaxseg.models.layers.im2col_conv_general_dilated`):
      the same values; under ``vmap`` (a sweep of configurations) XLA turns convolutions into
      grouped ones, which XLA:CPU runs slowly, and patch matrices into batched matrix products,
      which it runs well (BENCHMARKS.md, "Sweep vs one after another").
  """

  features: Sequence[int] = (64, 128)
  bottleneck: int = 256
  num_classes: int = 9
  batch_norm: bool = False
  conv_bias: bool = True
  upsample: str = "bilinear"
  width: float = 1.0
  dtype: str = "float32"
  conv_impl: str = "xla"

  @classmethod
  def hierarchical(cls, **overrides) -> "UNet2DConfig":
    """Seed 000: 3 levels 64/128/256, two 3x3 conv + ReLU, no BN, bilinear up, 9 classes."""
    return dataclasses.replace(cls(), **overrides)

  @classmethod
  def tversky(cls, **overrides) -> "UNet2DConfig":
    """Seed 002: DoubleConv (conv-BN-ReLU x2) 64..512, 1024 bottleneck, transposed up, 1 output."""
    base = cls(features=(64, 128, 256, 512), bottleneck=1024, num_classes=1, batch_norm=True,
               conv_bias=False, upsample="transpose")
    return dataclasses.replace(base, **overrides)

  def channels(self, n: int) -> int:
    return max(1, int(round(n * self.width)))


class ConvBlock(nn.Module):
  """Two 3x3 convolutions, each followed by (optional BatchNorm and) ReLU."""

  features: int
  batch_norm: bool
  use_bias: bool
  dtype: jnp.dtype
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    for _ in range(2):
      x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=self.use_bias, dtype=self.dtype,
                  conv_general_dilated=conv_general_dilated(self.conv_impl))(x)
      if self.batch_norm:
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=self.dtype)(x)
      x = nn.relu(x)
    return x


class UNet2D(nn.Module):
  """2D U-Net; see :class:`UNet2DConfig` for the architecture switches."""

  config: UNet2DConfig = UNet2DConfig()

  @property
  def size_multiple(self) -> int:
    return 2 ** len(self.config.features)

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False) -> jax.Array:
    cfg = self.config
    if cfg.upsample not in ("bilinear", "transpose"):
      raise ValueError(f"upsample must be 'bilinear' or 'transpose', got {cfg.upsample!r}")
    if cfg.conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {cfg.conv_impl!r}")
    if images.ndim != 4:
      raise ValueError(f"UNet2D expects (batch, height, width, channels), got {images.shape}")
    if images.shape[1] % self.size_multiple or images.shape[2] % self.size_multiple:
      raise ValueError(f"height and width must be multiples of {self.size_multiple}, got "
                       f"{images.shape[1:3]}; pad the input (jaxseg.inference pads for you)")
    dtype = jnp.dtype(cfg.dtype)
    block = lambda n: ConvBlock(cfg.channels(n), cfg.batch_norm, cfg.conv_bias, dtype,
                                cfg.conv_impl)
    x = images.astype(dtype)
    skips = []
    for n in cfg.features:
      x = block(n)(x, train)
      skips.append(x)
      x = max_pool_blocks(x, (2, 2))
    x = block(cfg.bottleneck)(x, train)
    for n, skip in zip(reversed(cfg.features), reversed(skips)):
      if cfg.upsample == "bilinear":
        x = resize_bilinear_align_corners(x, skip.shape[1:3])
      else:
        x = ConvTranspose(cfg.channels(n), (2, 2), (2, 2), dtype=dtype)(x)
      x = jnp.concatenate([x, skip], axis=-1)
      x = block(n)(x, train)
    logits = nn.Conv(cfg.num_classes, (1, 1), dtype=dtype)(x)
    return logits.astype(jnp.float32)
