"""TransUNet (Chen et al., 2021) with MicroSegNet's four deep-supervision heads (seed 003).

Architecture (channels-last, ``(batch, height, width, channels)`` in, logits out):

* **CNN encoder** -- a ResNetV2-style hybrid stem as in TransUNet's R50-ViT-B/16:
  root ``7x7/2`` convolution (``root_width`` channels, 1/2 resolution) -> GroupNorm -> ReLU ->
  ``3x3/2`` max-pool, then three stages of bottleneck units (``block_units``; the first unit of
  stages 2 and 3 has stride 2) with ``4, 8, 16 x root_width`` output channels at 1/4, 1/8 and 1/16
  resolution. Every convolution is a weight-standardised convolution (``std_conv``) followed by
  GroupNorm, exactly the BiT/TransUNet recipe. Skip features: root (1/2), stage 1 (1/4),
  stage 2 (1/8).
* **ViT encoder** over the 1/16 feature map: a 1x1 convolution embeds every position as one token
  (TransUNet's hybrid "patch size 1"), learned position embeddings are added (made for an
  ``image_size x image_size`` input and bilinearly interpolated, align-corners, to the token grid of
  any other input size), dropout, ``num_layers`` pre-LayerNorm blocks
  ``x = x + MHSA(LN(x)); x = x + MLP(LN(x))`` (MLP: Dense-GELU-Dropout-Dense-Dropout) and a final
  LayerNorm.
* **Cascaded upsampler** -- tokens are reshaped back to the 1/16 grid, a ``3x3`` conv-norm-ReLU
  maps them to ``head_channels``, then four decoder blocks ``2x bilinear upsampling
  (align-corners, as PyTorch's UpsamplingBilinear2d) -> concat skip -> (3x3 conv-norm-ReLU) x 2``
  produce ``decoder_channels`` at 1/8, 1/4, 1/2 and full resolution; the first three blocks take
  the 1/8, 1/4 and 1/2 skips (TransUNet's ``n_skip = 3``), the last one has no skip.
* **Heads** -- MicroSegNet (Jiang et al., 2024) attaches a ``head_kernel x head_kernel``
  convolution with ``num_classes`` outputs to every decoder block: logit maps at 1/8, 1/4, 1/2
  and 1/1 of the input (28, 56, 112 and 224 px for a 224 input).

Output: with ``deep_supervision=True`` a tuple of four float32 logit maps ordered **coarse ->
fine** ``(1/8, 1/4, 1/2, 1/1)``, the last one full resolution; otherwise only the full-resolution
map. Note that :func:`jaxseg.losses.supervision.deep_supervision_loss` expects **fine -> coarse**:
pass ``outputs[::-1]``. The heads are named ``Head_0`` .. ``Head_3`` (coarse -> fine), so the
parameters of a ``deep_supervision=False`` model are a subset of those of the deep-supervised one.

Normalisation: GroupNorm everywhere by default, so ``train=True`` and ``train=False`` compute the
same function except for dropout, and there is no ``batch_stats`` collection. The original
TransUNet decoder used BatchNorm; ``decoder_norm="batch"`` restores that (then pass
``mutable=["batch_stats"]`` when training, as :mod:`jaxseg.train.loop` does). GroupNorm uses the
largest divisor of the channel count that is at most ``min(gn_groups, channels // 2)`` groups (32
groups for wide layers as in TransUNet, at least two channels per group for narrow ones).

No pretrained weights: the paper initialises the R50 and ViT-B/16 from ImageNet-21k checkpoints,
which are not available offline; :meth:`TransUNetConfig.paper` reproduces the architecture only and
trains from scratch (``nn.initializers`` defaults; ViT dense layers Xavier-uniform, position
embeddings N(0, 0.02)).

References:
  Chen et al., "TransUNet: Transformers Make Strong Encoders for Medical Image Segmentation",
  arXiv:2102.04306, 2021.
  Jiang et al., "MicroSegNet: A deep learning approach for prostate segmentation on
  micro-ultrasound images", Computerized Medical Imaging and Graphics, 2024.
  Kolesnikov et al., "Big Transfer (BiT)", ECCV 2020 (ResNetV2 with weight standardisation + GN).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxseg.models.layers import resize_bilinear_align_corners

_WS_EPS = 1e-5  # weight-standardisation epsilon of TransUNet's StdConv2d.


@dataclasses.dataclass(frozen=True)
class TransUNetConfig:
  """Architecture of a :class:`TransUNet`.

  Attributes:
    image_size: side of the square input the position embeddings are made for; other sizes
      (multiples of 16) work through interpolation of the embeddings.
    num_classes: output channels of every head (1: a sigmoid foreground map).
    root_width: channels of the root convolution (1/2 resolution skip); the three CNN stages
      have ``4, 8, 16 x root_width`` output channels (bottleneck widths ``1, 2, 4 x root_width``).
    block_units: bottleneck units of the three CNN stages ((3, 4, 9) in R50-ViT-B/16).
    std_conv: weight-standardise the CNN encoder's convolutions (BiT / TransUNet).
    hidden_size: ViT token width.
    num_layers: transformer blocks.
    num_heads: attention heads (must divide ``hidden_size``).
    mlp_dim: hidden width of the transformer MLP.
    dropout_rate: dropout after the position embeddings and inside the MLPs.
    attention_dropout_rate: dropout of the attention weights.
    head_channels: channels of the convolution that maps the tokens back to an image.
    decoder_channels: channels of the four decoder blocks at 1/8, 1/4, 1/2 and 1/1 resolution.
    decoder_norm: ``"group"`` (default; train and eval identical) or ``"batch"`` (the original
      TransUNet decoder; creates a ``batch_stats`` collection).
    gn_groups: maximum number of GroupNorm groups.
    head_kernel: kernel size of the segmentation heads (3 in TransUNet / MicroSegNet).
    deep_supervision: return the four head outputs (coarse -> fine) instead of only the last.
    dtype: computation dtype (parameters stay float32), e.g. ``"bfloat16"`` on accelerators.
  """

  image_size: int = 224
  num_classes: int = 1
  root_width: int = 64
  block_units: Sequence[int] = (3, 4, 9)
  std_conv: bool = True
  hidden_size: int = 768
  num_layers: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.0
  head_channels: int = 512
  decoder_channels: Sequence[int] = (256, 128, 64, 16)
  decoder_norm: str = "group"
  gn_groups: int = 32
  head_kernel: int = 3
  deep_supervision: bool = True
  dtype: str = "float32"

  @classmethod
  def paper(cls, **overrides) -> "TransUNetConfig":
    """Seed 003 / MicroSegNet: R50-ViT-B/16 sizes (hidden 768, 12 layers, 12 heads, MLP 3072,
    R50 stages (3, 4, 9)), decoder 256/128/64/16, 224 x 224 input, one sigmoid output, four heads.
    Trained from scratch: the ImageNet-21k weights of the paper are not available offline."""
    return dataclasses.replace(cls(), **overrides)

  @classmethod
  def cpu(cls, **overrides) -> "TransUNetConfig":
    """Tiny model for CPU runs at 64 x 64 (or 96 x 96): one unit per stage, root width 8
    (CNN 8/32/64/128 channels), hidden 64, 2 layers, 4 heads, MLP 128, decoder 32/16/8/8."""
    base = cls(image_size=64, root_width=8, block_units=(1, 1, 1), hidden_size=64, num_layers=2,
               num_heads=4, mlp_dim=128, head_channels=64, decoder_channels=(32, 16, 8, 8),
               gn_groups=8)
    return dataclasses.replace(base, **overrides)


def _num_groups(channels: int, max_groups: int) -> int:
  """Largest divisor of ``channels`` that is at most ``min(max_groups, channels // 2)`` (>= 1)."""
  bound = max(1, min(max_groups, channels // 2))
  return max(d for d in range(1, bound + 1) if channels % d == 0)


class StdConv(nn.Module):
  """Convolution with weight standardisation (Qiao et al., 2019), no bias, symmetric padding.

  ``w' = (w - mean(w)) / sqrt(var(w) + 1e-5)`` per output channel over ``(kh, kw, c_in)``;
  padding ``k // 2`` on each side (PyTorch's ``padding=k//2``), so stride ``s`` maps an even size
  ``n`` to ``n / s``.
  """

  features: int
  kernel_size: int
  strides: int = 1
  standardize: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", nn.initializers.he_normal(), (k, k, x.shape[-1], self.features),
                        jnp.float32)
    if self.standardize:
      mean = jnp.mean(kernel, axis=(0, 1, 2), keepdims=True)
      var = jnp.var(kernel, axis=(0, 1, 2), keepdims=True)
      # The barrier keeps XLA from fusing the standardisation into the convolution's operand,
      # which on CPU makes the gradient compile ~1.5x slower.
      kernel = jax.lax.optimization_barrier((kernel - mean) * jax.lax.rsqrt(var + _WS_EPS))
    pad = k // 2
    return jax.lax.conv_general_dilated(
        x, kernel.astype(self.dtype), (self.strides, self.strides), ((pad, pad), (pad, pad)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))


class Bottleneck(nn.Module):
  """ResNetV2 bottleneck unit of TransUNet (post-activation, GN after every conv).

  ``y = relu(GN(conv1x1(x))); y = relu(GN(conv3x3/s(y))); y = GN(conv1x1(y))``;
  ``out = relu(y + shortcut)`` with ``shortcut = GN(conv1x1/s(x))`` when the stride or width
  changes, ``x`` otherwise.
  """

  features: int
  mid_features: int
  strides: int
  standardize: bool
  gn_groups: int
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    conv = lambda n, k, s=1: StdConv(n, k, s, self.standardize, self.dtype)
    norm = lambda n: nn.GroupNorm(_num_groups(n, self.gn_groups), dtype=self.dtype)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = norm(self.features)(conv(self.features, 1, self.strides)(x))
    y = nn.relu(norm(self.mid_features)(conv(self.mid_features, 1)(x)))
    y = nn.relu(norm(self.mid_features)(conv(self.mid_features, 3, self.strides)(y)))
    y = norm(self.features)(conv(self.features, 1)(y))
    return nn.relu(y + shortcut)


class ResNetEncoder(nn.Module):
  """Root + three bottleneck stages; returns the 1/16 map and the (1/8, 1/4, 1/2) skips."""

  config: TransUNetConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    width = cfg.root_width
    x = StdConv(width, 7, 2, cfg.std_conv, dtype, name="root_conv")(x)
    x = nn.relu(nn.GroupNorm(_num_groups(width, cfg.gn_groups), dtype=dtype, name="root_norm")(x))
    features = [x]  # 1/2
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    for stage, (units, mult) in enumerate(zip(cfg.block_units, (1, 2, 4))):
      for unit in range(units):
        strides = 2 if stage > 0 and unit == 0 else 1
        x = Bottleneck(4 * mult * width, mult * width, strides, cfg.std_conv, cfg.gn_groups,
                       dtype, name=f"stage{stage + 1}_unit{unit + 1}")(x)
      features.append(x)  # 1/4, 1/8, 1/16
    return features[3], (features[2], features[1], features[0])


class TransformerBlock(nn.Module):
  """Pre-LayerNorm transformer block: ``x + MHSA(LN(x))`` then ``x + MLP(LN(x))``."""

  config: TransUNetConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    dense_init = nn.initializers.xavier_uniform()
    y = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="attention_norm")(x)
    y = nn.MultiHeadDotProductAttention(
        num_heads=cfg.num_heads, dtype=dtype, dropout_rate=cfg.attention_dropout_rate,
        kernel_init=dense_init, deterministic=not train, name="attention")(y, y)
    x = x + y
    y = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="mlp_norm")(x)
    y = nn.Dense(cfg.mlp_dim, dtype=dtype, kernel_init=dense_init,
                 bias_init=nn.initializers.normal(1e-6), name="fc1")(y)
    y = nn.Dropout(cfg.dropout_rate)(nn.gelu(y, approximate=False), deterministic=not train)
    y = nn.Dense(cfg.hidden_size, dtype=dtype, kernel_init=dense_init,
                 bias_init=nn.initializers.normal(1e-6), name="fc2")(y)
    y = nn.Dropout(cfg.dropout_rate)(y, deterministic=not train)
    return x + y


class ViTEncoder(nn.Module):
  """Token embedding of the 1/16 map, (interpolated) position embeddings, transformer blocks."""

  config: TransUNetConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    batch, height, width, _ = x.shape
    x = nn.Conv(cfg.hidden_size, (1, 1), dtype=dtype, name="patch_embedding")(x)
    grid = cfg.image_size // 16
    pos = self.param("position_embedding", nn.initializers.normal(0.02),
                     (1, grid * grid, cfg.hidden_size), jnp.float32)
    if (height, width) != (grid, grid):
      pos = resize_bilinear_align_corners(pos.reshape(1, grid, grid, -1), (height, width))
    x = x.reshape(batch, height * width, -1) + pos.reshape(1, height * width, -1).astype(dtype)
    x = nn.Dropout(cfg.dropout_rate)(x, deterministic=not train)
    for i in range(cfg.num_layers):
      x = TransformerBlock(cfg, name=f"block{i + 1}")(x, train)
    x = nn.LayerNorm(epsilon=1e-6, dtype=dtype, name="encoder_norm")(x)
    return x.reshape(batch, height, width, -1)


class ConvNormReLU(nn.Module):
  """``3x3 conv (no bias) -> GroupNorm or BatchNorm -> ReLU`` (TransUNet's Conv2dReLU)."""

  features: int
  config: TransUNetConfig

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x = nn.Conv(self.features, (3, 3), padding="SAME", use_bias=False, dtype=dtype)(x)
    if cfg.decoder_norm == "batch":
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9, dtype=dtype)(x)
    else:
      x = nn.GroupNorm(_num_groups(self.features, cfg.gn_groups), dtype=dtype)(x)
    return nn.relu(x)


class TransUNet(nn.Module):
  """TransUNet with four deep-supervision heads; see the module docstring and
  :class:`TransUNetConfig`.

  ``__call__(images, *, train)`` takes ``(batch, height, width, channels)`` images with height and
  width multiples of 16 and returns a tuple of four ``(batch, h_i, w_i, num_classes)`` float32
  logit maps at 1/8, 1/4, 1/2 and 1/1 resolution (coarse -> fine), or only the last one when
  ``config.deep_supervision`` is False. Dropout is active only with ``train=True`` (then pass
  ``rngs={"dropout": key}`` if a dropout rate is positive).
  """

  config: TransUNetConfig = TransUNetConfig()

  @property
  def size_multiple(self) -> int:
    return 16

  def _check(self, images: jax.Array) -> None:
    cfg = self.config
    if images.ndim != 4:
      raise ValueError(f"TransUNet expects (batch, height, width, channels), got {images.shape}")
    if images.shape[1] % 16 or images.shape[2] % 16 or 0 in images.shape[1:3]:
      raise ValueError(f"height and width must be positive multiples of 16, got "
                       f"{images.shape[1:3]}; pad the input (jaxseg.inference pads for you)")
    if cfg.image_size <= 0 or cfg.image_size % 16:
      raise ValueError(f"image_size must be a positive multiple of 16, got {cfg.image_size}")
    if len(cfg.block_units) != 3 or min(cfg.block_units) < 1:
      raise ValueError(f"block_units must be 3 positive ints, got {cfg.block_units}")
    if len(cfg.decoder_channels) != 4:
      raise ValueError(f"decoder_channels must have 4 entries (1/8, 1/4, 1/2, 1/1), got "
                       f"{cfg.decoder_channels}")
    if cfg.hidden_size % cfg.num_heads:
      raise ValueError(f"num_heads ({cfg.num_heads}) must divide hidden_size ({cfg.hidden_size})")
    if cfg.decoder_norm not in ("group", "batch"):
      raise ValueError(f"decoder_norm must be 'group' or 'batch', got {cfg.decoder_norm!r}")
    for name in ("dropout_rate", "attention_dropout_rate"):
      if not 0.0 <= getattr(cfg, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(cfg, name)}")

  @nn.compact
  def __call__(self, images: jax.Array, *, train: bool = False
               ) -> tuple[jax.Array, ...] | jax.Array:
    self._check(images)
    cfg = self.config
    dtype = jnp.dtype(cfg.dtype)
    x, skips = ResNetEncoder(cfg, name="cnn")(images.astype(dtype))
    x = ViTEncoder(cfg, name="vit")(x, train)
    x = ConvNormReLU(cfg.head_channels, cfg, name="conv_more")(x, train)
    decoded = []
    for i, channels in enumerate(cfg.decoder_channels):
      x = resize_bilinear_align_corners(x, (2 * x.shape[1], 2 * x.shape[2]))
      if i < len(skips):
        x = jnp.concatenate([x, skips[i]], axis=-1)
      x = ConvNormReLU(channels, cfg, name=f"decoder{i + 1}_conv1")(x, train)
      x = ConvNormReLU(channels, cfg, name=f"decoder{i + 1}_conv2")(x, train)
      decoded.append(x)
    head = lambda i: nn.Conv(cfg.num_classes, (cfg.head_kernel, cfg.head_kernel), padding="SAME",
                             dtype=dtype, name=f"Head_{i}")
    if not cfg.deep_supervision:
      return head(3)(decoded[3]).astype(jnp.float32)
    return tuple(head(i)(d).astype(jnp.float32) for i, d in enumerate(decoded))
