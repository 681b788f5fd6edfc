"""Probabilistic 3D attention U-Net of the seed-001 study (Saha et al.), with MC-dropout inference.

A deep attentive 3D U-Net (SE-residual encoder, attention-gated skips, nested dense decoder,
deep supervision) made probabilistic in two ways: (i) a hierarchical latent-variable part in the
style of the (hierarchical) probabilistic U-Net -- a *prior net* sees the image, a *posterior
net* sees the image and the one-hot label, both give diagonal Gaussians over latent maps at the
coarsest ``latent_levels`` resolutions, and the decoder is conditioned on one sample of them;
(ii) Monte-Carlo dropout kept on at inference. Training minimises the negative ELBO
``L_seg(y, f(x, z ~ q(z | x, y))) + beta * KL(q || p)`` (:func:`jaxseg.losses.supervision.elbo_loss`,
beta = 10 in the paper); inference averages :func:`mc_predict` over 100 stochastic passes, each
with a prior sample and a fresh dropout mask.

Array layout and axis order
---------------------------
Channels-last ``(batch, x, y, z, channels)``, i.e. NIfTI voxel order with the slice (depth) axis
**last**. The paper's code is TensorFlow with ``(batch, z, y, x, channels)`` volumes (20 x 160 x
160), so its per-level strides and kernels are written slice-axis first: stride ``(1, 2, 2)``
means "keep the slice axis, halve in-plane". :meth:`ProbUNet3DConfig.paper` takes the paper's
``(z, y, x)`` tuples and reverses each of them into our ``(x, y, z)`` order: strides
``((1,1,1), (2,2,1), (2,2,1), (2,2,2), (2,2,2))`` and kernels ``((3,3,1), (3,3,1), (3,3,3) x 3)``.
A 160 x 160 x 20 crop then has levels 160x160x20, 80x80x20, 40x40x20, 20x20x10 and 10x10x5. The
config fields themselves are always in our ``(x, y, z)`` order.

Architecture (``L = len(filters)`` levels, level 0 full resolution)
-------------------------------------------------------------------
* **SE-residual block** (:class:`SEResidualBlock`): ``conv(k, stride s) -> IN -> LeakyReLU(0.1)
  -> conv(k) -> IN -> squeeze-and-excitation``, plus a residual branch (identity, or
  ``1x1x1 conv(stride s) -> IN`` when the stride or the channel count changes), added and passed
  through LeakyReLU(0.1). IN is instance normalisation (per example and channel over the spatial
  axes, learned scale and bias). SE: global average pool -> dense(C / r) -> LeakyReLU(0.1) ->
  dense(C) -> sigmoid -> channel-wise rescaling (Hu et al.), r = ``se_reduction``. The squeeze
  (global average pool) reads the second convolution's output *before* its instance norm: after
  IN the spatial mean of every channel is exactly IN's bias, so squeezing there would make the
  channel attention a learned constant that ignores the input (with batch norm, as in SE-ResNet,
  the question does not arise). The excitation rescales the normalised branch.
* **Encoder**: level ``i`` is one SE-residual block with ``filters[i]``, ``kernel_sizes[i]`` and
  ``strides[i]`` (``strides[0]`` must be 1, so level 0 is full resolution), followed by dropout
  (``dropout_rate``) on levels ``1 .. L-1``. Level ``L-1`` is the bottleneck.
* **Attention gate** (:class:`AttentionGate`, Oktay et al., additive attention) on the skip
  ``x`` of level ``i`` with the gating signal ``g`` = decoder features of level ``i+1`` (the next
  coarser level, latent sample included): ``alpha = sigmoid(psi(LeakyReLU(theta(x) + up(phi(g)))))``
  with 1x1x1 convolutions theta, phi (``filters[i]`` channels) and psi (1 channel), ``up`` nearest
  upsampling by the stride between the levels; output ``IN(W(alpha * x))`` with a 1x1x1 conv W.
  (The paper's code gates every skip with the bottleneck; we use the next coarser decoder level,
  as in Oktay et al.'s Attention U-Net.)
* **Nested dense decoder** (what the paper's code calls its "Nested U-Net" decoder; the dense
  decoder-to-decoder skips of UNet++ without UNet++'s intermediate encoder-side nodes): the
  decoder node ``D_i`` of level ``i`` (``D_{L-1}`` = bottleneck) receives, concatenated on
  channels, (a) ``up(D_{i+1})``, (b) every upsampled tensor that reached level ``i+1`` from
  coarser nodes, upsampled once more -- so ``D_i`` sees all coarser nodes ``D_{i+1} .. D_{L-1}``
  through their own chains of transposed convolutions -- and (c) the attention-gated skip of level
  ``i``; then one SE-residual block (``filters[i]``, ``kernel_sizes[i]``, stride 1) and dropout
  (``dropout_rate``; ``final_dropout_rate`` at level 0). Every ``up`` from level ``j+1`` to ``j``
  is a transposed convolution with ``filters[j]`` outputs, kernel ``kernel_sizes[j+1]`` and stride
  ``strides[j+1]`` (each chain has its own weights). The paper's code overwrote the concatenation
  of its last stage by mistake (its level-0 node saw only ``up(D_1)``); we keep the intended
  dense concatenation at every level.
* **Latent conditioning**: for each latent level ``l`` (``L-1`` down to ``L - latent_levels``) the
  sample ``z_l`` (``latent_dim`` channels, one Gaussian per voxel of that level, as in the
  hierarchical probabilistic U-Net) is concatenated to ``D_l`` before it feeds finer levels, its
  gate and its deep-supervision head.
* **Prior / posterior nets** (:class:`GaussianEncoder`): separate SE-residual encoders with the
  same strides and kernels (``latent_filters`` channels, default ``filters``) over the image
  (prior) or the image concatenated with the one-hot label (posterior); a 1x1x1 convolution on
  their level-``l`` features gives ``(mu_l, logvar_l)`` in float32. The levels' latents are
  conditionally independent given the input (no top-down path inside the prior as in Kohl et al.'s
  hierarchical model). ``KL(q || p)`` is summed over levels, voxels and latent channels
  (:func:`jaxseg.losses.supervision.kl_diagonal_gaussians`).
* **Heads**: a 1x1x1 convolution to ``num_classes`` logits on ``D_0`` (full resolution) and, with
  ``deep_supervision``, on ``D_1 .. D_{L-2}`` at their own resolutions (nnU-Net style; the labels
  are max-pooled to them by :func:`jaxseg.losses.supervision.deep_supervision_loss`).

Which latent and which randomness (one rng stream, ``"dropout"``)
-----------------------------------------------------------------
* Decoded distribution: the posterior when ``labels_onehot`` is given and ``train=True``,
  otherwise the prior; ``sample_prior=True`` / ``False`` forces the prior / the posterior.
* Stochastic forward pass (``train=True``, or ``mc_dropout``): dropout is on and the latent is
  sampled, ``z = mu + exp(logvar / 2) * eps``; ``eps`` and the dropout masks both come from the
  ``"dropout"`` rng stream (``rngs={"dropout": key}``), so :mod:`jaxseg.train.loop` works
  unchanged. Deterministic pass (``train=False`` and no MC dropout): no dropout, ``z = mu``, and no
  rng is needed.
* ``mc_dropout`` (config field, overridable per call) keeps dropout and latent sampling on at
  ``train=False``. Both presets default to ``False`` so that a plain evaluation
  (``model.apply(variables, images, train=False)``) stays deterministic; the paper's inference is
  :func:`mc_predict`, which switches it on.

Output of ``__call__``: a dict with ``"logits"`` (float32, ``(batch, x, y, z, num_classes)``),
``"deep_supervision"`` (tuple of coarser float32 logits ordered **fine -> coarse**, the order of
:func:`~jaxseg.losses.supervision.deep_supervision_loss`: pass ``(out["logits"],
*out["deep_supervision"])``), ``"kl"`` (``(batch,)`` float32, zeros without labels), ``"prior"``
and ``"posterior"`` (tuples of ``(mu, logvar)`` per latent level, coarse -> fine; ``posterior``
is ``None`` without labels).

Parameters: initialise with labels (``model.init(rngs, images, labels_onehot, train=True)``) or
without -- while initialising, the posterior net is always built (on a zero label when none is
given), so the variables serve both paths.

References:
  Saha et al., "Anatomical and Diagnostic Bayesian Segmentation in Prostate MRI -- Should
  Different Clinical Objectives Mandate Different Loss Functions?", NeurIPS workshop 2021.
  Saha et al., "End-to-end prostate cancer detection in bpMRI via 3D CNNs", MedIA 2021.
  Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images", NeurIPS 2018;
  Kohl et al., "A Hierarchical Probabilistic U-Net for Modeling Multi-Scale Ambiguities", 2019.
  Oktay et al., "Attention U-Net", MIDL 2018. Hu et al., "Squeeze-and-Excitation Networks", 2018.
  Zhou et al., "UNet++", IEEE TMI 2019. Gal & Ghahramani, "Dropout as a Bayesian
  Approximation", ICML 2016.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses.supervision import kl_diagonal_gaussians
from jaxseg.models.layers import CONV_IMPLS, ConvTranspose, conv_general_dilated

_Triple = tuple[int, int, int]
_LEAK = 0.1


def _leaky(x: jax.Array) -> jax.Array:
  return nn.leaky_relu(x, negative_slope=_LEAK)


def _triples(value: Any, name: str) -> tuple[_Triple, ...]:
  """Normalises a sequence of 3-int sequences (lists from JSON included) to nested tuples."""
  try:
    out = tuple(tuple(int(v) for v in t) for t in value)
  except TypeError as e:
    raise ValueError(f"{name} must be a sequence of (x, y, z) int triples, got {value!r}") from e
  if any(len(t) != 3 or min(t) < 1 for t in out):
    raise ValueError(f"{name} must hold positive (x, y, z) int triples, got {value!r}")
  return out


def zyx_to_xyz(triples: Sequence[Sequence[int]]) -> tuple[_Triple, ...]:
  """Reverses per-level ``(z, y, x)`` triples (slice axis first, TF/PyTorch) to our ``(x, y, z)``."""
  return tuple(tuple(int(v) for v in reversed(tuple(t))) for t in triples)


@dataclasses.dataclass(frozen=True)
class ProbUNet3DConfig:
  """Architecture of a :class:`ProbAttentionUNet3D`; per-axis fields are in ``(x, y, z)`` order.

  Attributes:
    num_classes: output channels (softmax classes; also the channels of ``labels_onehot``).
    in_channels: image channels (1 for T2W, 3 for T2W + DWI + ADC).
    filters: channels of the encoder / decoder levels, finest first (level 0 = full resolution).
    strides: per-level ``(x, y, z)`` stride of the encoder block; ``strides[0]`` must be 1s.
    kernel_sizes: per-level ``(x, y, z)`` convolution kernels.
    se_reduction: squeeze-and-excitation reduction ratio r (hidden width ``max(1, C // r)``).
    latent_levels: number of coarsest levels with a latent map (0: a deterministic attention
      U-Net, ``kl`` is then always zero); at most ``len(filters) - 1``.
    latent_dim: latent channels per voxel of a latent level.
    latent_filters: channels of the prior / posterior encoders (None: ``filters``).
    dropout_rate: dropout after encoder levels ``1 .. L-1`` and decoder levels ``1 .. L-2``.
    final_dropout_rate: dropout after the full-resolution decoder node (paper: rate / 2).
    mc_dropout: keep dropout and latent sampling on at ``train=False`` (needs the ``"dropout"``
      rng); can be overridden per call. Off in the presets, see the module docstring.
    deep_supervision: add logit heads on decoder levels ``1 .. L-2``.
    dtype: computation dtype (parameters, latent statistics and outputs stay float32).
    conv_impl: how convolutions run: ``"xla"`` (``lax.conv_general_dilated``; GPUs, wide
      models) or ``"im2col"`` (one matrix product per convolution,
      :func:`jaxseg.models.layers.im2col_conv_general_dilated`; several times faster for the
      small CPU models). Same parameters and the same values to float rounding.
  """

  num_classes: int = 3
  in_channels: int = 1
  filters: Sequence[int] = (8, 16, 32)
  strides: Sequence[Sequence[int]] = ((1, 1, 1), (2, 2, 1), (2, 2, 2))
  kernel_sizes: Sequence[Sequence[int]] = ((3, 3, 1), (3, 3, 3), (3, 3, 3))
  se_reduction: int = 8
  latent_levels: int = 2
  latent_dim: int = 2
  latent_filters: Sequence[int] | None = None
  dropout_rate: float = 0.5
  final_dropout_rate: float = 0.25
  mc_dropout: bool = False
  deep_supervision: bool = True
  dtype: str = "float32"
  conv_impl: str = "xla"

  def __post_init__(self):
    # Normalise sequences (JSON round trips give lists) so the config stays hashable, then check.
    set_ = lambda k, v: object.__setattr__(self, k, v)
    set_("filters", tuple(int(f) for f in self.filters))
    set_("strides", _triples(self.strides, "strides"))
    set_("kernel_sizes", _triples(self.kernel_sizes, "kernel_sizes"))
    if self.latent_filters is not None:
      set_("latent_filters", tuple(int(f) for f in self.latent_filters))
    n = len(self.filters)
    if n < 2 or min(self.filters) < 1:
      raise ValueError(f"filters needs >= 2 positive entries, got {self.filters}")
    if len(self.strides) != n or len(self.kernel_sizes) != n:
      raise ValueError(f"filters, strides and kernel_sizes need one entry per level ({n}); got "
                       f"{len(self.strides)} strides and {len(self.kernel_sizes)} kernels")
    if self.strides[0] != (1, 1, 1):
      raise ValueError(f"strides[0] must be (1, 1, 1) (level 0 is full resolution), got "
                       f"{self.strides[0]}")
    if self.latent_filters is not None and (len(self.latent_filters) != n
                                            or min(self.latent_filters) < 1):
      raise ValueError(f"latent_filters needs {n} positive entries, got {self.latent_filters}")
    for name in ("num_classes", "in_channels", "se_reduction", "latent_levels", "latent_dim"):
      value = getattr(self, name)
      if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not 0 <= self.latent_levels <= n - 1:
      raise ValueError(f"latent_levels must be in [0, {n - 1}], got {self.latent_levels}")
    if self.latent_dim < 1 or self.num_classes < 1 or self.in_channels < 1:
      raise ValueError("latent_dim, num_classes and in_channels must be >= 1; got "
                       f"{self.latent_dim}, {self.num_classes}, {self.in_channels}")
    if self.se_reduction < 1:
      raise ValueError(f"se_reduction must be >= 1, got {self.se_reduction}")
    for name in ("dropout_rate", "final_dropout_rate"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
    if self.conv_impl not in CONV_IMPLS:
      raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
    try:
      dtype = jnp.dtype(self.dtype)
    except TypeError as e:
      raise ValueError(f"unknown dtype {self.dtype!r}") from e
    if not jnp.issubdtype(dtype, jnp.floating):
      raise ValueError(f"dtype must be a floating dtype, got {self.dtype!r}")

  @classmethod
  def paper(cls, num_classes: int = 3, in_channels: int = 1, **overrides) -> "ProbUNet3DConfig":
    """Seed 001 (REFERENCE §2): filters 32..512; the paper's ``(z, y, x)`` strides / kernels.

    Strides ``((1,1,1), (1,2,2), (1,2,2), (2,2,2), (2,2,2))`` and kernels ``((1,3,3), (1,3,3),
    (3,3,3) x 3)`` are given slice-axis first as in the paper and reversed to ``(x, y, z)``.
    Latents: 2 levels (10x10x5 and 20x20x10 for a 160x160x20 crop), 6 channels each (Kohl et
    al.'s latent size; the paper does not state one). Dropout 0.5, last stage 0.25, SE r = 8.
    Anatomical task: ``paper(3, 1)``; diagnostic task: ``paper(2, 3)``.
    """
    base = cls(num_classes=num_classes, in_channels=in_channels,
               filters=(32, 64, 128, 256, 512),
               strides=zyx_to_xyz(((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))),
               kernel_sizes=zyx_to_xyz(((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))),
               se_reduction=8, latent_levels=2, latent_dim=6, dropout_rate=0.5,
               final_dropout_rate=0.25)
    return dataclasses.replace(base, **overrides)

  @classmethod
  def cpu(cls, num_classes: int = 3, in_channels: int = 1, **overrides) -> "ProbUNet3DConfig":
    """Tiny CPU model: filters (8, 16, 32); fits crops whose sides are multiples of (4, 4, 2).

    Strides ``((1,1,1), (2,2,1), (2,2,2))`` in ``(x, y, z)`` (in-plane first, like the paper),
    so a 32x32x8 crop has levels 32x32x8, 16x16x8, 8x8x4 (64x64x12: ..., 16x16x6); two latent
    levels with 2 channels; SE r = 4; one deep-supervision head; convolutions as patch matrices
    (``conv_impl="im2col"``, several times faster on CPU).
    """
    base = cls(num_classes=num_classes, in_channels=in_channels, filters=(8, 16, 32),
               strides=((1, 1, 1), (2, 2, 1), (2, 2, 2)),
               kernel_sizes=((3, 3, 1), (3, 3, 3), (3, 3, 3)), se_reduction=4,
               latent_levels=2, latent_dim=2, conv_impl="im2col")
    return dataclasses.replace(base, **overrides)

  @property
  def size_multiple(self) -> _Triple:
    """Per-axis ``(x, y, z)`` factor the input's spatial sides must be multiples of."""
    return tuple(int(np.prod([s[a] for s in self.strides])) for a in range(3))

  def level_shapes(self, spatial: Sequence[int]) -> tuple[_Triple, ...]:
    """Spatial shape of every level for an input of spatial shape ``(x, y, z)``."""
    shapes, shape = [], tuple(int(s) for s in spatial)
    for s in self.strides:
      shape = tuple(a // b for a, b in zip(shape, s))
      shapes.append(shape)
    return tuple(shapes)


def _flat_normal(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """Standard normal samples drawn as a flat vector and reshaped.

  Same distribution as ``jax.random.normal(key, shape)``. With the default
  ``jax_threefry_partitionable=True``, XLA:CPU takes seconds (up to ~10 s) to compile random bits
  of a multi-axis shape but milliseconds for a flat one, so every random draw of this module
  (initialisers, dropout masks, latent noise) is flat.
  """
  return jax.random.normal(key, (math.prod(shape),), dtype).reshape(shape)


def lecun_normal_flat(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
  """flax's default kernel initialiser (LeCun normal: truncated normal, variance 1 / fan_in,
  ``fan_in = prod(shape[:-1])``) drawn flat (see :func:`_flat_normal`)."""
  fan_in = math.prod(shape[:-1])
  std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of N(0, 1) truncated to [-2, 2]
  sample = jax.random.truncated_normal(key, -2.0, 2.0, (math.prod(shape),), dtype)
  return (sample * std).reshape(shape).astype(dtype)


def _dropout(module: nn.Module, x: jax.Array, rate: float, deterministic: bool) -> jax.Array:
  """Inverted dropout with a flat Bernoulli mask from ``module.make_rng("dropout")``."""
  if deterministic or rate == 0.0:
    return x
  keep = jax.random.bernoulli(module.make_rng("dropout"), 1.0 - rate, (x.size,))
  return jnp.where(keep.reshape(x.shape), x / (1.0 - rate), 0.0).astype(x.dtype)


def _conv(features: int, kernel: Sequence[int], dtype, strides: Sequence[int] = (1, 1, 1),
          use_bias: bool = False, name: str | None = None, impl: str = "xla") -> nn.Conv:
  return nn.Conv(features, tuple(kernel), strides=tuple(strides), padding="SAME",
                 use_bias=use_bias, dtype=dtype, kernel_init=lecun_normal_flat, name=name,
                 conv_general_dilated=conv_general_dilated(impl))


def _dense(features: int, dtype) -> nn.Dense:
  return nn.Dense(features, dtype=dtype, kernel_init=lecun_normal_flat)


def _instance_norm(dtype) -> nn.InstanceNorm:
  return nn.InstanceNorm(epsilon=1e-5, dtype=dtype)


class SqueezeExcite(nn.Module):
  """Channel attention ``x * sigmoid(W2 LeakyReLU(W1 mean_xyz(x)))`` (Hu et al.)."""

  reduction: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, squeeze_from: jax.Array | None = None) -> jax.Array:
    """Rescales ``x``; the squeeze reads ``squeeze_from`` (same shape) when given, else ``x``."""
    channels = x.shape[-1]
    source = x if squeeze_from is None else squeeze_from
    s = jnp.mean(source, axis=tuple(range(1, x.ndim - 1)), keepdims=True)
    s = _leaky(_dense(max(1, channels // self.reduction), self.dtype)(s))
    s = nn.sigmoid(_dense(channels, self.dtype)(s))
    return x * s


class SEResidualBlock(nn.Module):
  """conv(k, s)-IN-LeakyReLU-conv(k)-IN-SE plus a (projected) residual, then LeakyReLU(0.1).

  The SE squeeze reads the second convolution's output before its instance norm (module
  docstring).
  """

  features: int
  kernel_size: _Triple
  strides: _Triple = (1, 1, 1)
  se_reduction: int = 8
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    residual = x
    y = _conv(self.features, self.kernel_size, self.dtype, self.strides, impl=self.conv_impl)(x)
    y = _leaky(_instance_norm(self.dtype)(y))
    z = _conv(self.features, self.kernel_size, self.dtype, impl=self.conv_impl)(y)
    y = _instance_norm(self.dtype)(z)
    y = SqueezeExcite(self.se_reduction, self.dtype)(y, squeeze_from=z)  # see module docstring
    if tuple(self.strides) != (1, 1, 1) or x.shape[-1] != self.features:
      residual = _conv(self.features, (1, 1, 1), self.dtype, self.strides,
                       impl=self.conv_impl)(x)
      residual = _instance_norm(self.dtype)(residual)
    return _leaky(y + residual)


def _upsample_nearest(x: jax.Array, factors: Sequence[int]) -> jax.Array:
  for axis, f in enumerate(factors, start=1):
    if f > 1:
      x = jnp.repeat(x, f, axis=axis)
  return x


class AttentionGate(nn.Module):
  """Additive attention gate (Oktay et al.) on a skip ``x`` with a coarser gating signal ``g``.

  ``alpha = sigmoid(psi(LeakyReLU(theta(x) + up(phi(g)))))``, output ``IN(W(alpha * x))``;
  theta, phi: 1x1x1 convs to ``inter_channels``; psi: 1x1x1 conv to one channel; ``up``: nearest
  upsampling to the skip's grid (integer factors).
  """

  inter_channels: int
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array, g: jax.Array) -> jax.Array:
    factors = tuple(a // b for a, b in zip(x.shape[1:-1], g.shape[1:-1]))
    conv = functools.partial(_conv, kernel=(1, 1, 1), dtype=self.dtype, impl=self.conv_impl)
    theta = conv(self.inter_channels)(x)
    phi = conv(self.inter_channels, use_bias=True)(g)
    f = _leaky(theta + _upsample_nearest(phi, factors))
    alpha = nn.sigmoid(conv(1, use_bias=True)(f))
    y = conv(x.shape[-1])(alpha * x)
    return _instance_norm(self.dtype)(y)


class GaussianEncoder(nn.Module):
  """SE-residual encoder giving diagonal Gaussians ``(mu, logvar)`` at its coarsest levels.

  Returns a tuple, coarse -> fine, of ``(mu, logvar)`` pairs of shape
  ``(batch, *level_shape, latent_dim)`` in float32, for levels ``L-1 .. L-latent_levels``.
  """

  filters: tuple[int, ...]
  strides: tuple[_Triple, ...]
  kernel_sizes: tuple[_Triple, ...]
  se_reduction: int
  latent_levels: int
  latent_dim: int
  dtype: Any = jnp.float32
  conv_impl: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[tuple[jax.Array, jax.Array], ...]:
    features = []
    for n, k, s in zip(self.filters, self.kernel_sizes, self.strides):
      x = SEResidualBlock(n, k, s, self.se_reduction, self.dtype, self.conv_impl)(x)
      features.append(x)
    out = []
    num = len(self.filters)
    for level in range(num - 1, num - 1 - self.latent_levels, -1):
      stats = _conv(2 * self.latent_dim, (1, 1, 1), jnp.float32, use_bias=True,
                    name=f"latent_{level}", impl=self.conv_impl)(
                        features[level].astype(jnp.float32))
      out.append((stats[..., :self.latent_dim], stats[..., self.latent_dim:]))
    return tuple(out)


def _kl(posterior, prior) -> jax.Array:
  """``sum_levels KL(q_l || p_l)`` per example, summed over voxels and latent channels."""
  return sum(kl_diagonal_gaussians(mu_q, lv_q, mu_p, lv_p)
             for (mu_q, lv_q), (mu_p, lv_p) in zip(posterior, prior))


class ProbAttentionUNet3D(nn.Module):
  """Probabilistic 3D attention U-Net (seed 001); see the module docstring for the design."""

  config: ProbUNet3DConfig = ProbUNet3DConfig()

  @property
  def size_multiple(self) -> _Triple:
    return self.config.size_multiple

  def _check_inputs(self, images: jax.Array, labels_onehot: jax.Array | None) -> None:
    cfg = self.config
    if images.ndim != 5:
      raise ValueError(f"images must be (batch, x, y, z, channels), got {images.shape}")
    if images.shape[-1] != cfg.in_channels:
      raise ValueError(f"images have {images.shape[-1]} channels, config.in_channels is "
                       f"{cfg.in_channels}")
    if 0 in images.shape:
      raise ValueError(f"images must be non-empty, got {images.shape}")
    mult = cfg.size_multiple
    if any(s % m for s, m in zip(images.shape[1:4], mult)):
      raise ValueError(f"spatial shape {images.shape[1:4]} must be a multiple of {mult} (the "
                       "product of the strides per axis); pad or crop the input")
    if labels_onehot is not None:
      expected = images.shape[:4] + (cfg.num_classes,)
      if labels_onehot.shape != expected:
        raise ValueError(f"labels_onehot must be {expected} (one-hot, channels-last), got "
                         f"{labels_onehot.shape}")

  @nn.compact
  def __call__(self, images: jax.Array, labels_onehot: jax.Array | None = None, *,
               train: bool = False, sample_prior: bool | None = None,
               mc_dropout: bool | None = None) -> dict[str, Any]:
    """Forward pass.

    Args:
      images: ``(batch, x, y, z, in_channels)``; spatial sides multiples of ``size_multiple``.
      labels_onehot: optional ``(batch, x, y, z, num_classes)`` one-hot (or soft) labels for the
        posterior net.
      train: training mode (dropout on, latents sampled).
      sample_prior: None: decode the posterior iff labels are given and ``train``; True: decode
        the prior; False: decode the posterior (labels required).
      mc_dropout: overrides ``config.mc_dropout`` (stochastic pass at ``train=False``).

    Returns:
      ``{"logits", "deep_supervision", "kl", "prior", "posterior"}`` (see module docstring).
    """
    cfg = self.config
    images = jnp.asarray(images)
    if labels_onehot is not None:
      labels_onehot = jnp.asarray(labels_onehot)
    self._check_inputs(images, labels_onehot)
    if sample_prior is False and labels_onehot is None:
      raise ValueError("sample_prior=False decodes the posterior, which needs labels_onehot")
    use_posterior = (labels_onehot is not None and train) if sample_prior is None else (
        not sample_prior)
    stochastic = bool(train) or bool(cfg.mc_dropout if mc_dropout is None else mc_dropout)
    dtype = jnp.dtype(cfg.dtype)
    num = len(cfg.filters)
    x = images.astype(dtype)

    # Prior / posterior nets (coarse -> fine latent levels L-1 .. L-latent_levels).
    prior = posterior = None
    if cfg.latent_levels:
      net = lambda name: GaussianEncoder(cfg.latent_filters or cfg.filters, cfg.strides,
                                         cfg.kernel_sizes, cfg.se_reduction, cfg.latent_levels,
                                         cfg.latent_dim, dtype, cfg.conv_impl, name=name)
      prior = net("prior_net")(x)
      if labels_onehot is not None:
        posterior = net("posterior_net")(
            jnp.concatenate([x, labels_onehot.astype(dtype)], axis=-1))
      elif self.is_initializing():  # build the posterior's parameters even without labels
        net("posterior_net")(jnp.concatenate(
            [x, jnp.zeros(images.shape[:4] + (cfg.num_classes,), dtype)], axis=-1))
    latents = {}
    if cfg.latent_levels:
      chosen = posterior if use_posterior else prior
      for j, (mu, logvar) in enumerate(chosen):
        level = num - 1 - j
        z = mu
        if stochastic:
          eps = _flat_normal(self.make_rng("dropout"), mu.shape)
          z = mu + jnp.exp(0.5 * logvar) * eps
        latents[level] = z.astype(dtype)

    # Encoder.
    skips = []
    for i, (n, k, s) in enumerate(zip(cfg.filters, cfg.kernel_sizes, cfg.strides)):
      x = SEResidualBlock(n, k, s, cfg.se_reduction, dtype, cfg.conv_impl,
                          name=f"encoder_{i}")(x)
      if i > 0:
        x = _dropout(self, x, cfg.dropout_rate, not stochastic)
      skips.append(x)

    # Nested dense decoder; x holds D_{i+1} (latent included) when level i starts.
    if num - 1 in latents:
      x = jnp.concatenate([x, latents[num - 1]], axis=-1)
    chains: list[jax.Array] = []  # tensors upsampled from coarser nodes, at the current level
    heads = []
    for i in range(num - 2, -1, -1):
      up = lambda t, j: ConvTranspose(cfg.filters[i], cfg.kernel_sizes[i + 1],
                                      cfg.strides[i + 1], padding="SAME", dtype=dtype,
                                      kernel_init=lecun_normal_flat, conv_impl=cfg.conv_impl,
                                      name=f"up_{i}_{j}")(t)
      chains = [up(x, 0)] + [up(t, j + 1) for j, t in enumerate(chains)]
      gated = AttentionGate(cfg.filters[i], dtype, cfg.conv_impl, name=f"gate_{i}")(skips[i], x)
      h = jnp.concatenate(chains + [gated], axis=-1)
      h = SEResidualBlock(cfg.filters[i], cfg.kernel_sizes[i], (1, 1, 1), cfg.se_reduction, dtype,
                          cfg.conv_impl, name=f"decoder_{i}")(h)
      rate = cfg.final_dropout_rate if i == 0 else cfg.dropout_rate
      h = _dropout(self, h, rate, not stochastic)
      if i in latents:
        h = jnp.concatenate([h, latents[i]], axis=-1)
      if i > 0 and cfg.deep_supervision:
        heads.append(_conv(cfg.num_classes, (1, 1, 1), dtype, use_bias=True, name=f"head_{i}",
                           impl=cfg.conv_impl)(h))
      x = h
    logits = _conv(cfg.num_classes, (1, 1, 1), dtype, use_bias=True, name="head_0",
                   impl=cfg.conv_impl)(x)

    batch = images.shape[0]
    kl = (_kl(posterior, prior) if posterior is not None
          else jnp.zeros((batch,), jnp.float32))
    return {
        "logits": logits.astype(jnp.float32),
        "deep_supervision": tuple(h.astype(jnp.float32) for h in reversed(heads)),
        "kl": kl.astype(jnp.float32),
        "prior": prior,
        "posterior": posterior,
    }


def mc_predict(model: ProbAttentionUNet3D, variables: Any, images: jax.Array, key: jax.Array, *,
               num_samples: int = 100, activation: str = "softmax",
               ) -> tuple[jax.Array, jax.Array]:
  r"""Monte-Carlo predictive mean and variance of the class probabilities.

  Runs ``num_samples`` stochastic forward passes at ``train=False`` with ``mc_dropout=True`` --
  each with a fresh prior sample and fresh dropout masks, from ``jax.random.split(key,
  num_samples)`` -- and returns, per voxel and class,

  .. math::
    \bar p = \frac1N \sum_{n=1}^N p^{(n)}, \qquad
    \mathrm{Var}(p) = \frac1N \sum_{n=1}^N (p^{(n)} - \bar p)^2

  (population variance), accumulated in one ``lax.scan`` with Welford's update (memory of one
  pass, numerically stable). Pure and jit-able: ``jax.jit(functools.partial(mc_predict, model,
  num_samples=100))``.

  Args:
    model: a :class:`ProbAttentionUNet3D`.
    variables: its variables (``{"params": ...}``).
    images: ``(batch, x, y, z, in_channels)``.
    key: PRNG key; the same key gives the same result.
    num_samples: N >= 1 (100 in the paper).
    activation: ``"softmax"`` (probabilities sum to 1 over classes) or ``"sigmoid"``.

  Returns:
    ``(mean_probs, variance)``, both ``(batch, x, y, z, num_classes)`` float32.
  """
  if not isinstance(num_samples, numbers.Integral) or num_samples < 1:
    raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
  if activation not in ("softmax", "sigmoid"):
    raise ValueError(f"activation must be 'softmax' or 'sigmoid', got {activation!r}")
  act = jax.nn.softmax if activation == "softmax" else jax.nn.sigmoid

  def probs(k):
    out = model.apply(variables, images, train=False, mc_dropout=True, rngs={"dropout": k})
    return act(out["logits"].astype(jnp.float32))

  out_shape = jax.eval_shape(probs, key)
  zeros = jnp.zeros(out_shape.shape, jnp.float32)

  def step(carry, xs):
    mean, m2 = carry
    k, count = xs
    p = probs(k)
    delta = p - mean
    mean = mean + delta / count
    m2 = m2 + delta * (p - mean)
    return (mean, m2), None

  keys = jax.random.split(key, num_samples)
  counts = jnp.arange(1, num_samples + 1, dtype=jnp.float32)
  (mean, m2), _ = jax.lax.scan(step, (zeros, zeros), (keys, counts))
  return mean, jnp.maximum(m2 / num_samples, 0.0)


__all__ = ["AttentionGate", "GaussianEncoder", "ProbAttentionUNet3D", "ProbUNet3DConfig",
           "SEResidualBlock", "SqueezeExcite", "lecun_normal_flat", "mc_predict", "zyx_to_xyz"]
