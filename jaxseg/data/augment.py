"""Host-side augmentation of samples, driven by a passed NumPy generator.

An augmentation is a callable ``(rng, sample) -> sample`` on one sample dict as
:func:`jaxseg.data.pipeline.sample_patch` makes it: ``image`` ``(*spatial, C)``, ``label``
``(*spatial)`` and any dense extra map ``(*spatial, ...)`` (a second annotation, signed distance
maps, ...), so it plugs into :func:`jaxseg.data.pipeline.patch_batches`. Every augmentation draws
its random numbers from ``rng`` only, in a fixed order, so a sample is a pure function of the
generator's state.

What happens to the extra maps follows from the transform:

* :class:`Mirror` flips are exact symmetries of the voxel grid. They move every map with the
  image, and a signed distance map of a flipped label is the flipped map (the Euclidean distance is
  invariant under reflections), so distance maps computed once per volume stay exact.
* :class:`FlipRotate` rotates by arbitrary angles and zooms; that changes a distance map in a way
  no resampling reproduces exactly, so it refuses samples with extra maps (flips alone are fine).
* :class:`IntensityJitter` changes the image only.
* :class:`Compose` applies several in order.

Images are interpolated linearly, labels by nearest neighbour, and points rotated or zoomed in
from outside take the image's minimum (background).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage

Sample = dict[str, np.ndarray]
Augment = Callable[[np.random.Generator, Mapping[str, np.ndarray]], Sample]


def _check_sample(sample: Mapping[str, np.ndarray]) -> None:
  if "image" not in sample or "label" not in sample:
    raise ValueError(f"a sample needs 'image' and 'label', got keys {sorted(sample)}")
  image, label = sample["image"], sample["label"]
  if image.shape[:label.ndim] != label.shape or image.ndim != label.ndim + 1:
    raise ValueError(f"expected image (*spatial, C) and label (*spatial), got image "
                     f"{image.shape} and label {label.shape}")
  for key, value in sample.items():
    if value.shape[:label.ndim] != label.shape:
      raise ValueError(f"map {key!r} {value.shape} does not start with the label's shape "
                       f"{label.shape}")


def _check_prob(name: str, value: float) -> None:
  if not 0.0 <= value <= 1.0:
    raise ValueError(f"{name} must be in [0, 1], got {value}")


def _flip(sample: Mapping[str, np.ndarray], axis: int) -> Sample:
  return {k: np.flip(v, axis) for k, v in sample.items()}


@dataclasses.dataclass(frozen=True)
class Mirror:
  """Independent flips of spatial axes; every map of the sample moves with the image.

  Attributes:
    probs: probability of flipping each spatial axis, in axis order (``(x, y)`` or ``(x, y, z)``;
      fewer entries leave the remaining axes alone). A flip along x mirrors left and right.
  """

  probs: Sequence[float] = (0.5,)

  def __post_init__(self):
    for p in self.probs:
      _check_prob("a flip probability", p)

  def __call__(self, rng: np.random.Generator, sample: Mapping[str, np.ndarray]) -> Sample:
    _check_sample(sample)
    if len(self.probs) > sample["label"].ndim:
      raise ValueError(f"{len(self.probs)} flip probabilities for a "
                       f"{sample['label'].ndim}-D sample")
    out = dict(sample)
    for axis, p in enumerate(self.probs):
      if rng.random() < p:
        out = _flip(out, axis)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class IntensityJitter:
  """Per-channel intensity changes of the image (labels and extra maps untouched).

  ``image_c <- s_c * image_c + b_c + n``, ``s_c ~ N(1, scale_std)``, ``b_c ~ N(0, shift_std)``,
  ``n ~ N(0, noise_std)`` per voxel, each applied with probability ``prob`` per sample (one draw).
  For z-scored images: ``scale_std`` 0.1 and ``shift_std`` 0.1 mimic scanner gain and offset.

  Attributes:
    scale_std: standard deviation of the multiplicative factor around 1.
    shift_std: standard deviation of the additive offset.
    noise_std: standard deviation of the voxel-wise Gaussian noise.
    prob: probability of jittering a sample at all.
  """

  scale_std: float = 0.1
  shift_std: float = 0.1
  noise_std: float = 0.0
  prob: float = 1.0

  def __post_init__(self):
    _check_prob("prob", self.prob)
    for name in ("scale_std", "shift_std", "noise_std"):
      if getattr(self, name) < 0:
        raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

  def __call__(self, rng: np.random.Generator, sample: Mapping[str, np.ndarray]) -> Sample:
    _check_sample(sample)
    if rng.random() >= self.prob:
      return dict(sample)
    image = sample["image"]
    channels = image.shape[-1]
    scale = 1.0 + self.scale_std * rng.standard_normal(channels)
    shift = self.shift_std * rng.standard_normal(channels)
    out = image * scale.astype(image.dtype) + shift.astype(image.dtype)
    if self.noise_std:
      out = out + (self.noise_std * rng.standard_normal(image.shape)).astype(image.dtype)
    return {**sample, "image": out.astype(image.dtype)}


@dataclasses.dataclass(frozen=True)
class FlipRotate:
  """2D: random in-plane rotation and zoom about the slice centre, then left-right and AP flips.

  The rotation and the zoom are one affine resampling: output pixel ``o`` reads the input at
  ``c + R(-theta) (o - c) / s``, with ``c`` the centre of the slice, ``theta`` the angle and ``s``
  the zoom (``s > 1`` enlarges the anatomy, ``s < 1`` shrinks it and brings in background).

  Attributes:
    max_degrees: rotation angle drawn uniformly from ``[-max_degrees, max_degrees]`` (0: none).
    horizontal_prob: probability of flipping left-right (axis 0 of the slice).
    vertical_prob: probability of flipping antero-posteriorly (axis 1).
    scale: ``(low, high)``: zoom factor drawn uniformly from ``[low, high]`` (``(1, 1)``: none;
      nnU-Net draws from ``(0.7, 1.4)``). Drawn after the angle, so a zoom-free transform draws
      the same numbers as before zooms existed.
  """

  max_degrees: float = 0.0
  horizontal_prob: float = 0.5
  vertical_prob: float = 0.0
  scale: tuple[float, float] = (1.0, 1.0)

  def __post_init__(self):
    lo, hi = self.scale
    if not 0 < lo <= hi:
      raise ValueError(f"scale must be (low, high) with 0 < low <= high, got {self.scale}")

  def __call__(self, rng: np.random.Generator, sample: Mapping[str, np.ndarray]) -> Sample:
    _check_sample(sample)
    image, label = sample["image"], sample["label"]
    if label.ndim != 2:
      raise ValueError(f"expected a 2D sample, got image {image.shape} and label {label.shape}")
    out = dict(sample)
    zooms = tuple(self.scale) != (1.0, 1.0)
    if self.max_degrees or zooms:
      extras = sorted(set(sample) - {"image", "label"})
      if extras:
        raise ValueError(f"rotations and zooms would make the extra maps {extras} inexact; use "
                         "Mirror for samples that carry them")
      angle = rng.uniform(-self.max_degrees, self.max_degrees) if self.max_degrees else 0.0
      zoom = rng.uniform(*self.scale) if zooms else 1.0
      t = np.deg2rad(angle)
      # Output -> input map of the voxel coordinates (ndimage.affine_transform's convention).
      inverse = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]]) / zoom
      centre = (np.asarray(label.shape, float) - 1) / 2
      offset = centre - inverse @ centre
      channels = [0.0] * (image.ndim - 2)
      out["image"] = ndimage.affine_transform(
          image, _with_channels(inverse, image.ndim), offset=np.r_[offset, channels], order=1,
          mode="constant", cval=float(image.min()))
      out["label"] = ndimage.affine_transform(label, inverse, offset=offset, order=0,
                                              mode="constant", cval=0)
    if rng.random() < self.horizontal_prob:
      out = _flip(out, 0)
    if rng.random() < self.vertical_prob:
      out = _flip(out, 1)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _with_channels(matrix: np.ndarray, ndim: int) -> np.ndarray:
  """``matrix`` on the spatial axes, identity on the trailing channel axes."""
  full = np.eye(ndim)
  full[:2, :2] = matrix
  return full


@dataclasses.dataclass(frozen=True)
class Compose:
  """Applies ``transforms`` in order, all drawing from the same generator."""

  transforms: Sequence[Augment]

  def __call__(self, rng: np.random.Generator, sample: Mapping[str, np.ndarray]) -> Sample:
    out = dict(sample)
    for transform in self.transforms:
      out = transform(rng, out)
    return out
