"""Whole-volume inference, one home for every model kind of jaxseg.

Building blocks:

* :func:`sliding_window_logits`: a model on images larger than its window -- overlapping windows
  of the training patch, blended with Gaussian (:func:`importance_map`) or constant weights,
  nnU-Net's inference (MONAI ``sliding_window_inference``); one jitted program per shape;
* :func:`predict_slices`: a 2D model on every whole axial slice of a volume (optionally 2.5D: the
  neighbouring slices as extra channels, :func:`stack_slice_context`);
* :func:`predict_volumes`: a 3D model on whole volumes (of any shapes);
* :func:`mc_probabilities`: Monte-Carlo mean and variance of a probabilistic 3D model on whole
  volumes (:func:`jaxseg.models.prob_unet3d.mc_predict`);
* :func:`probabilities`: logits -> probabilities of a sigmoid or softmax model;
* :func:`keep_largest_component`: nnU-Net's post-processing of a label map (each foreground
  class keeps only its largest connected component).

The path every prediction takes (``python -m jaxseg.predict`` and the comparison runner alike):

* :func:`volume_logits`: one volume through a model (:class:`ModelApply`), whole or in sliding
  windows, deterministic or with a key for a stochastic pass;
* :func:`predict_distribution`: one normalised volume through one model or an ensemble, as their
  :class:`~jaxseg.model_card.ModelCard` s say, averaged in probability space over members,
  test-time mirrorings (:func:`flip_sets`) and Monte-Carlo samples (mean and variance,
  :class:`Moments`); :func:`predict_probabilities` is its one-model mean.

Every whole-input model call gets a batch of the same size (the last chunk is padded by
repeating its last row), so a jitted model compiles once per input shape; inputs are padded at the
end of their spatial axes to the model's size multiple with the volume's minimum, and the logits
are cropped back. With a ``mesh``, batches are sharded over its devices
(:func:`jaxseg.data.pipeline.shard_batch`; the batch size must then be a multiple of the number of
devices).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import itertools
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import ndimage, special

from jaxseg.data.pipeline import DATA_AXIS, shard_batch
from jaxseg.model_card import ModelCard


__all__ = [
    "BLENDS",
    "CARD",
    "DEFAULT_OVERLAP",
    "DEFAULT_SIGMA_SCALE",
    "ModelApply",
    "Moments",
    "Prediction",
    "check_ensemble",
    "check_stochastic",
    "final_logits",
    "flip_sets",
    "importance_map",
    "keep_largest_component",
    "mc_probabilities",
    "pad_to_multiple",
    "predict_distribution",
    "predict_probabilities",
    "predict_slices",
    "predict_volumes",
    "probabilities",
    "size_multiples",
    "sliding_window_logits",
    "stack_slice_context",
    "volume_logits",
    "window_starts",
]


def channels_last_volume(image: Any, *, name: str = "image") -> np.ndarray:
  """``image`` as a non-empty ``(x, y, z, C)`` array (a channel axis added to ``(x, y, z)``).

  Raises:
    ValueError: naming ``name``, for any other shape.
  """
  image = np.asarray(image)
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4 or image.size == 0:
    raise ValueError(f"{name}: expected a non-empty (x, y, z[, channels]) volume, got shape "
                     f"{image.shape}")
  return image


def final_logits(outputs):
  """The full-resolution logits of a model's outputs.

  Conventions of jaxseg's models: a plain array is the logits; a tuple or list of deep-supervision
  heads is ordered coarse -> fine, so the last one is final; a dict holds them under ``"logits"``.
  """
  if isinstance(outputs, dict):
    return outputs["logits"]
  if isinstance(outputs, (tuple, list)):
    return outputs[-1]
  return outputs


def pad_to_multiple(array: np.ndarray, multiple: int | Sequence[int], axes: tuple[int, ...],
                    fill: float):
  """Pads ``axes`` of ``array`` at the end up to a multiple of ``multiple``; returns the crop.

  ``multiple`` is one int for every axis or one per entry of ``axes``.
  """
  multiples = size_multiples(multiple, len(axes))
  pad = [(0, 0)] * array.ndim
  crop = [slice(None)] * array.ndim
  for axis, m in zip(axes, multiples):
    size = array.shape[axis]
    pad[axis] = (0, (-size) % m)
    crop[axis] = slice(0, size)
  return np.pad(array, pad, constant_values=fill), tuple(crop)


def size_multiples(multiple: int | Sequence[int], ndim: int) -> tuple[int, ...]:
  """``multiple`` (an int, or ``ndim`` ints such as a 3D model's ``size_multiple``) per axis.

  Raises:
    ValueError: not positive integers, or a sequence of the wrong length.
  """
  if isinstance(multiple, (int, np.integer)) and not isinstance(multiple, bool):
    values = (int(multiple),) * ndim
  else:
    try:
      values = tuple(int(m) for m in multiple)  # type: ignore[union-attr]
    except TypeError as e:
      raise ValueError(f"size_multiple must be an int or {ndim} ints, got {multiple!r}") from e
    if len(values) != ndim:
      raise ValueError(f"size_multiple must be an int or {ndim} ints (one per spatial axis), "
                       f"got {multiple!r}")
  if min(values) < 1:
    raise ValueError(f"size_multiple must be positive, got {multiple!r}")
  return values


def _chunks(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Fixed-size chunks (the last one padded by repetition) and their number of real rows."""
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    yield chunk, n


def _check_batch_size(batch_size: Any, mesh: Mesh | None) -> int:
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if mesh is not None and batch_size % mesh.devices.size:
    raise ValueError(f"batch_size {batch_size} is not a multiple of the {mesh.devices.size} "
                     f"devices of the mesh; round it up to a multiple")
  return int(batch_size)


def _place(chunk: np.ndarray, mesh: Mesh | None):
  return shard_batch({"image": chunk}, mesh)["image"] if mesh is not None else chunk


def stack_slice_context(image: np.ndarray, context: int) -> np.ndarray:
  """2.5D input: every axial slice with its ``context`` neighbours on each side as channels.

  Channel ``d * C + c`` of slice ``z`` is channel ``c`` of slice ``z + d - context`` for
  ``d = 0 .. 2 * context`` (offset-major, so the middle block is the slice itself); slices beyond
  the volume repeat the first / last one.

  Args:
    image: ``(x, y, z)`` or ``(x, y, z, C)`` volume.
    context: neighbouring slices on each side (0: the image as ``(x, y, z, C)``).

  Returns:
    ``(x, y, z, C * (2 * context + 1))``, the input's dtype.
  """
  image = channels_last_volume(image)
  if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
    raise ValueError(f"slice context must be an integer >= 0, got {context!r}")
  if not context:
    return image
  z = np.arange(image.shape[2])
  return np.concatenate([image[:, :, np.clip(z + d, 0, z.size - 1)]
                         for d in range(-context, context + 1)], axis=-1)


def predict_slices(
    logits_fn: Callable[[jax.Array], jax.Array],
    image: np.ndarray,
    *,
    batch_size: int,
    size_multiple: int,
    mesh: Mesh | None = None,
    context: int = 0,
) -> np.ndarray:
  """Logits of a 2D model for every axial slice of a volume.

  Args:
    logits_fn: jitted ``images (B, h, w, C) -> outputs`` whose :func:`final_logits` are
      ``(B, h, w, K)``; it is always called with the
      same batch size (the last batch is padded) so it compiles once per slice size.
    image: ``(x, y, z)`` or ``(x, y, z, C)`` volume.
    batch_size: slices per call (a multiple of the mesh size when ``mesh`` is given).
    size_multiple: the model's required multiple of height and width; slices are padded with the
      volume's minimum and the logits cropped back.
    mesh: optional device mesh; slices are sharded over it.
    context: neighbouring slices on each side given to the model as extra channels
      (:func:`stack_slice_context`; a 2.5D model's ``ModelCard.slice_context``).

  Returns:
    ``(x, y, z, K)`` float32 logits.
  """
  if image.ndim not in (3, 4):
    raise ValueError(f"expected an (x, y, z[, channels]) volume, got shape {image.shape}")
  image = stack_slice_context(image, context)
  fill = float(image.min()) if image.size else 0.0
  padded, crop = pad_to_multiple(image, size_multiple, (0, 1), fill)
  slices = np.moveaxis(padded, 2, 0).astype(np.float32)  # (z, x, y, C)
  outputs = []
  for chunk, n in _chunks(slices, batch_size):
    outputs.append(np.asarray(final_logits(logits_fn(_place(chunk, mesh))))[:n])
  logits = np.moveaxis(np.concatenate(outputs), 0, 2)  # (x, y, z, K)
  return logits[crop[0], crop[1]].astype(np.float32, copy=False)


def predict_volumes(
    logits_fn: Callable[[jax.Array], Any],
    images: Sequence[np.ndarray],
    *,
    batch_size: int,
    size_multiple: int | Sequence[int] = 1,
    mesh: Mesh | None = None,
) -> list[np.ndarray]:
  """Logits of a 3D model for whole volumes, which may all differ in shape.

  Every volume is padded at the end of each spatial axis to a multiple of ``size_multiple`` with
  its own minimum; volumes of the same padded shape are batched together, ``batch_size`` per
  call, the last chunk of each shape padded by repetition (so ``logits_fn`` compiles once per
  padded shape); the logits are cropped back to each volume's grid.

  Args:
    logits_fn: jitted ``images (B, X, Y, Z, C) -> outputs`` whose :func:`final_logits` are
      ``(B, X, Y, Z, K)``.
    images: ``(x, y, z, C)`` (or ``(x, y, z)``) volumes, all with the same number of channels.
    batch_size: volumes per call (a multiple of the mesh size when ``mesh`` is given).
    size_multiple: the model's required multiple of every spatial side: an int, or ``(mx, my,
      mz)`` (``ProbAttentionUNet3D.size_multiple``).
    mesh: optional device mesh; every batch is sharded over it.

  Returns:
    One ``(x, y, z, K)`` float32 logits array per volume, in the order of ``images``.

  Raises:
    ValueError: a volume that is not 3D (plus channels) or is empty, differing channel counts, a
      bad batch size or size multiple.
  """
  batch_size = _check_batch_size(batch_size, mesh)
  multiples = size_multiples(size_multiple, 3)
  padded, crops = [], []
  for i, image in enumerate(images):
    image = channels_last_volume(image, name=f"volume {i}")
    pad, crop = pad_to_multiple(image.astype(np.float32), multiples, (0, 1, 2),
                                float(image.min()))
    padded.append(pad)
    crops.append(crop)
  if len({p.shape[-1] for p in padded}) > 1:
    raise ValueError(f"volumes must all have the same number of channels, got "
                     f"{sorted({p.shape[-1] for p in padded})}")
  groups: dict[tuple[int, ...], list[int]] = {}
  for i, p in enumerate(padded):
    groups.setdefault(p.shape, []).append(i)
  out: list[np.ndarray | None] = [None] * len(padded)
  for indices in groups.values():
    stacked = np.stack([padded[i] for i in indices])
    start = 0
    for chunk, n in _chunks(stacked, batch_size):
      logits = np.asarray(final_logits(logits_fn(_place(chunk, mesh))), np.float32)
      for j in range(n):
        i = indices[start + j]
        out[i] = logits[j][crops[i]]
      start += n
  return out  # type: ignore[return-value]


def mc_probabilities(
    mc_fn: Callable[..., tuple[jax.Array, jax.Array]],
    variables: Any,
    images: np.ndarray | Sequence[np.ndarray],
    *,
    key: jax.Array,
    batch_size: int,
    mesh: Mesh | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """MC mean probabilities and variances ``(x, y, z, K)`` of whole volumes.

  Args:
    mc_fn: ``mc_fn(variables, images, key) -> (mean, variance)``, a jitted
      :func:`jaxseg.models.prob_unet3d.mc_predict` (e.g. ``jax.jit(functools.partial(mc_predict,
      model, num_samples=100))``).
    variables: the model's variables.
    images: ``(N, x, y, z, C)`` array, or a sequence of ``(x, y, z, C)`` volumes of one shape
      (spatial sides multiples of the model's size multiple).
    key: PRNG key; chunk ``i`` uses ``jax.random.fold_in(key, i)``, so the same key gives every
      model the same samples of noise.
    batch_size: volumes per call (a multiple of the mesh size when ``mesh`` is given); the last
      chunk is padded by repetition.
    mesh: optional device mesh; every chunk is sharded over it.

  Returns:
    ``(means, variances)``: lists of one float32 ``(x, y, z, K)`` array per volume.
  """
  batch_size = _check_batch_size(batch_size, mesh)
  images = np.stack([np.asarray(v) for v in images]).astype(np.float32)
  means, variances = [], []
  for i, (chunk, n) in enumerate(_chunks(images, batch_size)):
    mean, var = mc_fn(variables, _place(chunk, mesh), jax.random.fold_in(key, i))
    means.extend(np.asarray(mean, np.float32)[:n])
    variances.extend(np.asarray(var, np.float32)[:n])
  return means, variances


def probabilities(logits: np.ndarray, activation: str) -> np.ndarray:
  """Probabilities of ``(..., K)`` logits.

  Args:
    logits: ``(x, y, z, K)`` (any leading shape) logits.
    activation: ``"sigmoid"`` (``K`` must be 1): the foreground probability ``sigmoid`` of
      channel 0, shape ``(x, y, z)``; ``"softmax"`` (``K >= 2``): softmax over the last axis,
      shape ``(x, y, z, K)``.

  Returns:
    float32 probabilities.

  Raises:
    ValueError: an unknown activation, or a channel count that does not fit it.
  """
  logits = np.asarray(logits)
  k = logits.shape[-1] if logits.ndim else 0
  if activation == "sigmoid":
    if k != 1:
      raise ValueError(f"activation 'sigmoid' needs 1 logit channel, got {k} (shape "
                       f"{logits.shape}); use 'softmax' for several classes")
    return special.expit(logits[..., 0]).astype(np.float32)
  if activation == "softmax":
    if k < 2:
      raise ValueError(f"activation 'softmax' needs >= 2 logit channels, got {k} (shape "
                       f"{logits.shape}); use 'sigmoid' for one channel")
    return special.softmax(logits, axis=-1).astype(np.float32)
  raise ValueError(f"activation must be 'sigmoid' or 'softmax', got {activation!r}")


def keep_largest_component(labels: Any) -> np.ndarray:
  """``labels`` with every foreground class reduced to its largest connected component.

  nnU-Net's "remove all but the largest component" post-processing, applied to each class
  ``c > 0`` separately: voxels of class ``c`` outside its largest component become background
  (0). Components are connected through faces, edges and corners (8-connectivity in 2D,
  26-connectivity in 3D); of equally large components the first in C order is kept. A class
  that is absent stays absent.

  Args:
    labels: integer label map of any dimensionality (0 = background).

  Returns:
    The filtered label map, same shape and dtype.
  """
  labels = np.asarray(labels)
  if labels.dtype.kind not in "iub":
    raise ValueError(f"keep_largest_component: expected an integer or boolean label map, got "
                     f"dtype {labels.dtype}")
  out = labels.copy()
  structure = ndimage.generate_binary_structure(labels.ndim, labels.ndim)
  for c in np.unique(labels):
    if c == 0:
      continue
    components, count = ndimage.label(labels == c, structure=structure)
    if count > 1:
      sizes = np.bincount(components.ravel())[1:]
      out[(components > 0) & (components != 1 + int(np.argmax(sizes)))] = 0
  return out


# --------------------------------------------------------------------------------------------
# Sliding windows.
# --------------------------------------------------------------------------------------------

BLENDS = ("gaussian", "constant")
"""Window weightings of :func:`sliding_window_logits`."""

DEFAULT_OVERLAP = 0.5
"""nnU-Net's default: neighbouring windows share half their side."""

DEFAULT_SIGMA_SCALE = 0.125
"""Gaussian sigma as a fraction of the window side (nnU-Net, MONAI: 1/8)."""

_MIN_WEIGHT = 1e-3


def _window(window: Any, ndim: int | None = None) -> tuple[int, ...]:
  if isinstance(window, np.ndarray):
    window = window.tolist()
  if (isinstance(window, (str, bytes)) or not isinstance(window, Sequence) or not window
      or not all(isinstance(w, (int, np.integer)) and not isinstance(w, bool) and w >= 1
                 for w in window)):
    raise ValueError(f"window must be a sequence of positive ints, got {window!r}")
  values = tuple(int(w) for w in window)
  if ndim is not None and len(values) != ndim:
    raise ValueError(f"window {values} has {len(values)} sides but the images have {ndim} "
                     f"spatial axes")
  return values


def _sigmas(sigma_scale: float | Sequence[float], ndim: int) -> tuple[float, ...]:
  scales = ((sigma_scale,) * ndim if isinstance(sigma_scale, (int, float, np.floating))
            else tuple(sigma_scale))
  if len(scales) != ndim or not all(
      isinstance(s, (int, float, np.floating)) and not isinstance(s, bool)
      and math.isfinite(s) and s > 0 for s in scales):
    raise ValueError(f"sigma_scale must be a positive number or {ndim} of them, got "
                     f"{sigma_scale!r}")
  return tuple(float(s) for s in scales)


def importance_map(window: Sequence[int], blend: str = "gaussian",
                   sigma_scale: float | Sequence[float] = DEFAULT_SIGMA_SCALE) -> np.ndarray:
  r"""Weights of the voxels of one window when overlapping windows are blended.

  ``"constant"``: all ones (a plain mean of the windows that cover a voxel). ``"gaussian"``
  (nnU-Net, Isensee et al. 2021; MONAI ``compute_importance_map``): the separable

  .. math:: w(\mathbf{x}) = \prod_d \exp\!\Big(-\frac{x_d^2}{2 \sigma_d^2}\Big), \qquad
     x_d \in \{-\tfrac{n_d - 1}{2}, \dots, \tfrac{n_d - 1}{2}\},\ \sigma_d = s_d\, n_d,

  with ``n_d`` the window side and ``s_d`` the ``sigma_scale`` (1/8), clamped below at
  ``max(min w, 1e-3)`` so that no voxel of a window has weight 0. Predictions near a window's
  border, which sees less context, count less than those at its centre.

  Returns:
    float32 array of shape ``window``.
  """
  window = _window(window)
  if blend == "constant":
    return np.ones(window, np.float32)
  if blend != "gaussian":
    raise ValueError(f"blend must be one of {BLENDS}, got {blend!r}")
  sigmas = [s * n for s, n in zip(_sigmas(sigma_scale, len(window)), window)]
  weights = np.ones((), np.float64)
  for n, sigma in zip(window, sigmas):
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    weights = np.multiply.outer(weights, np.exp(-x ** 2 / (2.0 * sigma ** 2)))
  weights = weights.astype(np.float32)
  return np.maximum(weights, max(float(weights.min()), _MIN_WEIGHT)).astype(np.float32)


def window_starts(size: int, window: int, overlap: float = DEFAULT_OVERLAP) -> list[int]:
  """Start offsets of the windows along one axis of ``size`` voxels (``size >= window``).

  The step is ``int(window * (1 - overlap))`` (at least 1; the window itself when it spans the
  axis); windows start at ``0, step, 2 step, ...`` until one reaches the end, and that last one
  is moved back to end exactly at ``size`` (MONAI ``dense_patch_slices``; nnU-Net spreads its
  starts evenly instead, which differs only in where the overlaps fall).
  """
  if not 0.0 <= overlap < 1.0:
    raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
  if size < window:
    raise ValueError(f"axis of {size} voxels is smaller than the window side {window}; pad it")
  step = window if size == window else max(int(window * (1.0 - overlap)), 1)
  count = -(-(size - window) // step) + 1
  return [min(i * step, size - window) for i in range(count)]


def _pad_to_window(images: np.ndarray, window: tuple[int, ...], fill: float):
  """Symmetric padding of the spatial axes shorter than the window (the larger half after)."""
  pad, crop = [(0, 0)], [slice(None)]
  for size, w in zip(images.shape[1:-1], window):
    diff = max(w - size, 0)
    pad.append((diff // 2, diff - diff // 2))
    crop.append(slice(diff // 2, diff // 2 + size))
  pad.append((0, 0))
  crop.append(slice(None))
  if any(p != (0, 0) for p in pad):
    images = np.pad(images, pad, constant_values=fill)
  return images, tuple(crop)


class _Plan(NamedTuple):
  """The static part of one sliding-window computation (a jit cache key)."""

  window: tuple[int, ...]
  jobs: tuple[tuple[int, ...], ...]  # (image, start_0, ..., start_d) of every window
  batch_size: int
  weights_key: tuple[str, tuple[float, ...]]
  mesh: Mesh | None


def _call(fn: Callable[..., Any], args: tuple[Any, ...], windows: jax.Array,
          key: jax.Array | None) -> jax.Array:
  extra = () if key is None else (key,)
  return final_logits(fn(*args, windows, *extra)).astype(jnp.float32)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _sliding(fn, plan: _Plan, args, images, count, key):
  """Blended logits of every window of ``images``: one program for a fixed window count."""
  window, size = plan.window, plan.batch_size
  channels = images.shape[-1]
  jobs = list(plan.jobs)
  real = len(jobs)
  jobs += [jobs[-1]] * (-real % size)
  nb = len(jobs) // size
  idx = jnp.asarray(np.asarray(jobs, np.int32).reshape(nb, size, -1))
  valid = jnp.asarray((np.arange(len(jobs)) < real).astype(np.float32).reshape(nb, size))
  weights = jnp.asarray(importance_map(window, plan.weights_key[0], plan.weights_key[1]))
  probe = jax.ShapeDtypeStruct((size, *window, channels), images.dtype)
  k = jax.eval_shape(lambda x: _call(fn, args, x, key), probe).shape[-1]

  def cut(ix):
    return lax.dynamic_slice(images, (ix[0], *ix[1:], 0), (1, *window, channels))[0]

  def batch(acc, xs):
    b, ix, v = xs
    windows = jax.vmap(cut)(ix)
    if plan.mesh is not None:
      windows = lax.with_sharding_constraint(
          windows, NamedSharding(plan.mesh, PartitionSpec(DATA_AXIS)))
    logits = _call(fn, args, windows, None if key is None else jax.random.fold_in(key, b))

    def add(acc, item):
      ij, lj, vj = item
      start = (ij[0], *ij[1:], 0)
      cur = lax.dynamic_slice(acc, start, (1, *window, k))
      return lax.dynamic_update_slice(acc, cur + (vj * weights)[None, ..., None] * lj[None],
                                      start), None

    return lax.scan(add, acc, (ix, logits, v))[0], None

  acc = jnp.zeros((*images.shape[:-1], k), jnp.float32)
  acc = lax.scan(batch, acc, (jnp.arange(nb), idx, valid))[0]
  return acc / count[None, ..., None]


def sliding_window_logits(
    logits_fn: Callable[..., Any],
    images: np.ndarray,
    *,
    window: Sequence[int],
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    sigma_scale: float | Sequence[float] = DEFAULT_SIGMA_SCALE,
    batch_size: int = 8,
    mesh: Mesh | None = None,
    fill: float | None = None,
    args: tuple[Any, ...] = (),
    key: jax.Array | None = None,
) -> np.ndarray:
  r"""Logits of images larger than a model's window, blended from overlapping windows.

  The images are cut into windows of the model's training patch size that overlap by
  ``overlap`` (:func:`window_starts` on each axis); the model's logits on every window are
  weighted by :func:`importance_map` and summed into the image, then divided by the summed
  weights:

  .. math:: \hat z(\mathbf{x}) = \frac{\sum_{w \ni \mathbf{x}} g(\mathbf{x} - \mathbf{o}_w)\,
     z_w(\mathbf{x} - \mathbf{o}_w)}{\sum_{w \ni \mathbf{x}} g(\mathbf{x} - \mathbf{o}_w)}

  (nnU-Net's inference, Isensee et al. 2021; MONAI ``sliding_window_inference``: logits are
  blended, probabilities are taken afterwards). Axes shorter than the window are padded
  symmetrically with ``fill`` (the larger half after) and the padding is cropped off the
  result. The whole loop -- cutting, ``batch_size`` windows per model call, weighting and
  accumulation -- is one jitted program per (``logits_fn``, image shape, window, batch size); with
  a ``mesh``, every batch of windows is sharded over its devices.

  Args:
    logits_fn: ``logits_fn(*args, windows[, key]) -> outputs``, jax-traceable, hashable (it is a
      static argument of ``jax.jit``: pass the same function object, e.g. a module-level
      function or a bound method, and give the changing arrays -- the model's variables --
      through ``args`` so that nothing recompiles); ``windows`` is ``(B, *window, C)`` and the
      outputs' :func:`final_logits` are ``(B, *window, K)``.
    images: ``(N, *spatial, C)``: ``N`` independent images (2D slices or 3D volumes) with their
      channels last.
    window: the window side per spatial axis (the training patch size; multiples of the
      model's size multiple).
    overlap: fraction of a window shared with its neighbour, in ``[0, 1)`` (nnU-Net: 0.5).
    blend: ``"gaussian"`` (sigma = ``sigma_scale`` x window side) or ``"constant"``.
    sigma_scale: a float or one per axis (1/8).
    batch_size: windows per model call (a multiple of the mesh's devices when ``mesh`` is given).
    mesh: optional device mesh; windows are sharded over it.
    fill: value of the padding of axes shorter than the window; None: the images' minimum.
    args: leading arguments of ``logits_fn`` (traced; e.g. ``(variables,)``).
    key: optional PRNG key for a stochastic model: window batch ``b`` gets
      ``jax.random.fold_in(key, b)`` as ``logits_fn``'s last argument.

  Returns:
    ``(N, *spatial, K)`` float32 blended logits.

  Raises:
    ValueError: bad shapes, window, overlap, blend or batch size.
  """
  images = np.asarray(images)
  if images.ndim < 3 or images.size == 0:
    raise ValueError(f"images must be a non-empty (N, *spatial, C) array, got shape "
                     f"{images.shape}")
  window = _window(window, images.ndim - 2)
  batch_size = _check_batch_size(batch_size, mesh)
  if not (isinstance(overlap, (int, float, np.floating)) and 0.0 <= overlap < 1.0):
    raise ValueError(f"overlap must be in [0, 1), got {overlap!r}")
  weights_key = (blend, _sigmas(sigma_scale, len(window)))
  weights = importance_map(window, blend, sigma_scale)
  images = images.astype(np.float32, copy=False)
  fill = float(images.min()) if fill is None else float(fill)
  padded, crop = _pad_to_window(images, window, fill)
  spatial = padded.shape[1:-1]
  starts = [window_starts(s, w, float(overlap)) for s, w in zip(spatial, window)]
  positions = list(itertools.product(*starts))
  jobs = tuple((i, *p) for i in range(len(padded)) for p in positions)
  if len(jobs) < batch_size:  # fewer windows than a batch: one call of just those
    per = mesh.devices.size if mesh is not None else 1
    batch_size = -(-len(jobs) // per) * per
  count = np.zeros(spatial, np.float32)
  for p in positions:
    count[tuple(slice(o, o + w) for o, w in zip(p, window))] += weights
  plan = _Plan(window, jobs, batch_size, weights_key, mesh)
  if mesh is not None:
    padded = jax.device_put(padded, NamedSharding(mesh, PartitionSpec()))
  out = _sliding(logits_fn, plan, tuple(args), padded, jnp.asarray(count), key)
  return np.asarray(out, np.float32)[crop]


# --------------------------------------------------------------------------------------------
# One volume through a model: whole or in windows, deterministic or Monte Carlo.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _jit_call(fn, args, images, key):
  return _call(fn, args, images, key)


def volume_logits(
    apply_fn: Callable[..., Any],
    variables: Any,
    image: np.ndarray,
    *,
    inference: str = "volume",
    size_multiple: int | Sequence[int] = 1,
    window: Sequence[int] | None = None,
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    batch_size: int = 8,
    mesh: Mesh | None = None,
    context: int = 0,
    key: jax.Array | None = None,
) -> np.ndarray:
  """Logits ``(x, y, z, K)`` of one volume: the one place every jaxseg prediction goes through.

  Args:
    apply_fn: ``apply_fn(variables, images[, key]) -> outputs`` (hashable and stable, e.g. a
      bound method or :class:`ModelApply`, so that repeated calls reuse the compiled program).
    variables: the model's variables (traced).
    image: ``(x, y, z)`` or ``(x, y, z, C)``, normalised as in training.
    inference: ``"slices"``: a 2D model on every axial slice (``(B, x, y, C)`` inputs, with
      ``context`` neighbouring slices as extra channels); ``"volume"``: a 3D model.
    size_multiple: the model's required multiple of every spatial side (whole-input mode only).
    window: None: the whole slice / volume in one call, padded at the end to ``size_multiple``
      with the volume's minimum (:func:`predict_slices`, :func:`predict_volumes`); a window
      (2 sides for slices, 3 for a volume; multiples of ``size_multiple``): Gaussian- or
      constant-weighted sliding windows (:func:`sliding_window_logits`), the way nnU-Net
      predicts a volume larger than its training patch.
    overlap, blend: of the sliding windows.
    batch_size: slices or windows per model call (rounded up to the mesh's devices).
    mesh: optional device mesh; every batch is sharded over it.
    context: neighbouring slices per side of a 2.5D model (``inference="slices"``).
    key: PRNG key of a stochastic pass (``apply_fn`` then takes it as its last argument).

  Returns:
    float32 ``(x, y, z, K)`` logits on the image's grid.
  """
  image = channels_last_volume(image)
  if inference not in ("slices", "volume"):
    raise ValueError(f"inference must be 'slices' or 'volume', got {inference!r}")
  ndim = 2 if inference == "slices" else 3
  multiples = size_multiples(size_multiple, ndim)
  _check_batch_size(batch_size, None)
  if mesh is not None:
    batch_size = -(-int(batch_size) // mesh.devices.size) * mesh.devices.size
  if window is None:
    fn = lambda x: _jit_call(apply_fn, (variables,), x, key)
    if inference == "slices":
      if multiples[0] != multiples[1]:
        raise ValueError(f"a slice model needs one size multiple, got {size_multiple!r}")
      batch = min(int(batch_size), image.shape[2])
      if mesh is not None:
        batch = -(-batch // mesh.devices.size) * mesh.devices.size
      return predict_slices(fn, image, batch_size=batch, size_multiple=multiples[0], mesh=mesh,
                            context=context)
    return predict_volumes(fn, [image], batch_size=mesh.devices.size if mesh else 1,
                           size_multiple=multiples, mesh=mesh)[0]
  window = _window(window, ndim)
  if any(w % m for w, m in zip(window, multiples)):
    raise ValueError(f"window {window} must be a multiple of the model's size multiple "
                     f"{multiples} on every axis")
  if inference == "slices":
    images = np.moveaxis(stack_slice_context(image, context), 2, 0)
  else:
    images = image[None]
  logits = sliding_window_logits(apply_fn, images, window=window, overlap=overlap, blend=blend,
                                 batch_size=batch_size, mesh=mesh, args=(variables,), key=key)
  return np.moveaxis(logits, 0, 2) if inference == "slices" else logits[0]


class Moments:
  """Running mean and population variance of arrays (Welford's update, float64)."""

  def __init__(self):
    self.count = 0
    self._mean: np.ndarray | None = None
    self._m2: np.ndarray | None = None

  def add(self, value: np.ndarray) -> None:
    value = np.asarray(value, np.float64)
    self.count += 1
    if self._mean is None:
      self._mean, self._m2 = value.copy(), np.zeros_like(value)
      return
    delta = value - self._mean
    self._mean += delta / self.count
    self._m2 += delta * (value - self._mean)

  @property
  def mean(self) -> np.ndarray:
    if self._mean is None:
      raise ValueError("no value was added")
    return self._mean.astype(np.float32)

  @property
  def variance(self) -> np.ndarray:
    if self._m2 is None:
      raise ValueError("no value was added")
    return np.maximum(self._m2 / self.count, 0.0).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ModelApply:
  """``model.apply`` in inference mode, hashable by its model (a stable jit static argument).

  ``ModelApply(model)(variables, images)``: deterministic pass (``train=False``).
  ``ModelApply(model, stochastic=True)(variables, images, key)``: a Monte-Carlo pass with
  dropout on (and, for :class:`jaxseg.models.ProbAttentionUNet3D`, a prior sample):
  ``mc_dropout=True`` where the model has that switch, else ``train=True`` -- the latter only for
  models whose training mode differs from inference by dropout alone (no ``batch_stats``; see
  :func:`check_stochastic`).
  """

  model: Any
  stochastic: bool = False

  def __call__(self, variables, images, key=None):
    if not self.stochastic:
      return self.model.apply(variables, images, train=False)
    if _has_mc_switch(self.model):
      return self.model.apply(variables, images, train=False, mc_dropout=True,
                              rngs={"dropout": key})
    return self.model.apply(variables, images, train=True, rngs={"dropout": key})


def _has_mc_switch(model: Any) -> bool:
  return "mc_dropout" in inspect.signature(type(model).__call__).parameters


def check_stochastic(model: Any, variables: Any) -> None:
  """Raises ValueError unless ``model`` has a Monte-Carlo pass (:class:`ModelApply`)."""
  if _has_mc_switch(model):
    return
  config = getattr(model, "config", None)
  rates = [getattr(config, name, 0.0) or 0.0 for name in
           ("dropout_rate", "attention_dropout_rate", "final_dropout_rate")]
  name = type(model).__name__
  if not any(r > 0 for r in rates):
    raise ValueError(f"{name} has no dropout, so Monte-Carlo samples would all be equal; "
                     f"drop --mc-samples")
  if isinstance(variables, Mapping) and variables.get("batch_stats"):
    raise ValueError(f"{name} uses batch statistics, so its training-mode pass is not a "
                     f"dropout sample; drop --mc-samples")


CARD = "card"
"""``window=CARD``: the window the model's card names (its training patch, or the whole input)."""


def flip_sets(axes: Sequence[int]) -> list[tuple[int, ...]]:
  """Every subset of ``axes`` (the identity first): the mirrorings of test-time augmentation.

  Three axes give the 8 mirrorings nnU-Net averages for a 3D model; two give 4.
  """
  axes = tuple(axes)
  if len(set(axes)) != len(axes) or not all(
      isinstance(a, (int, np.integer)) and not isinstance(a, bool) and 0 <= a <= 2
      for a in axes):
    raise ValueError(f"flip axes must be distinct spatial axes in 0, 1, 2 (x, y, z), got "
                     f"{axes!r}")
  return [tuple(c) for r in range(len(axes) + 1) for c in itertools.combinations(axes, r)]


_SHARED_CARD_FIELDS = ("activation", "class_names", "channels", "spacing", "normalization",
                       "inference", "layout", "slice_context")


def check_ensemble(cards: Sequence[ModelCard]) -> None:
  """Raises ValueError unless the models take the same inputs and give the same outputs.

  Members may differ in their ``window``, ``flip_axes`` and ``info`` only (e.g. the K fold models
  of a study); test-time mirroring of an ensemble uses the axes every member was trained on.
  """
  for i, card in enumerate(cards[1:], start=1):
    for field in _SHARED_CARD_FIELDS:
      if getattr(card, field) != getattr(cards[0], field):
        raise ValueError(f"ensemble members differ in ModelCard.{field}: model 0 has "
                         f"{getattr(cards[0], field)!r}, model {i} has {getattr(card, field)!r}; "
                         f"ensemble models of one study and task only")


class Prediction(NamedTuple):
  """Probabilities of one volume averaged over every pass (members x mirrorings x MC samples).

  ``mean``: ``(x, y, z)`` (sigmoid) or ``(x, y, z, K)`` (softmax) float32 probabilities;
  ``variance``: the per-voxel population variance of the passes' probabilities (same shape), or
  None for deterministic passes; ``passes``: how many passes were averaged.
  """

  mean: np.ndarray
  variance: np.ndarray | None
  passes: int


def predict_distribution(
    members: Sequence[tuple[Any, Any, ModelCard]],
    image: np.ndarray,
    *,
    batch_size: int = 8,
    mesh: Mesh | None = None,
    window: Any = CARD,
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    flips: Sequence[int] = (),
    mc_samples: int = 0,
    key: jax.Array | None = None,
) -> Prediction:
  """Probabilities of one normalised volume from one model or an ensemble, as the cards say.

  Every pass is :func:`volume_logits` (the card's ``inference``, ``slice_context`` and
  ``window``, or ``window`` when given) followed by :func:`probabilities`
  (``card.activation``). The passes are averaged *in probability space* (sigmoid or softmax
  probabilities, never logits): one per ensemble member, per mirroring (:func:`flip_sets` of
  ``flips``; the input is mirrored, the probabilities mirrored back), and per Monte-Carlo sample
  (``mc_samples > 0``: stochastic passes of :class:`ModelApply`, member ``m`` and sample ``s``
  with ``fold_in(fold_in(key, m), s)``). With MC samples the variance over all passes is
  returned too: the spread of the ensemble-and-dropout predictive distribution.

  Args:
    members: ``(model, variables, card)`` of each model; their cards must agree
      (:func:`check_ensemble`).
    image: ``(x, y, z, C)`` (or ``(x, y, z)`` for one channel) intensities, normalised as in
      training (:meth:`ModelCard.normalize`).
    batch_size: slices or windows per model call (rounded up to a multiple of the mesh's
      devices).
    mesh: optional device mesh: the variables are replicated and the batches sharded over it.
    window: :data:`CARD`, None (the whole input in one call) or a window (2 or 3 sides).
    overlap, blend: of the sliding windows (:func:`sliding_window_logits`).
    flips: spatial axes (0, 1, 2 = x, y, z) to mirror at test time; ``()``: none.
    mc_samples: Monte-Carlo passes per member and mirroring (0: deterministic).
    key: PRNG key of the MC passes (default ``jax.random.key(0)``).

  Returns:
    A :class:`Prediction`.

  Raises:
    ValueError: wrong image shape or channel count, disagreeing cards, a model without a
      stochastic pass asked for MC samples, bad settings, or outputs that do not fit the card.
  """
  if not members:
    raise ValueError("no model to predict with")
  cards = [card for _, _, card in members]
  check_ensemble(cards)
  card0 = cards[0]
  image = channels_last_volume(image)
  if image.shape[-1] != card0.num_channels:
    raise ValueError(f"the model takes {card0.num_channels}-channel images {card0.channels} but "
                     f"the volume has {image.shape[-1]} channel(s)")
  _check_batch_size(batch_size, None)
  if isinstance(mc_samples, bool) or not isinstance(mc_samples, (int, np.integer)) or (
      mc_samples < 0):
    raise ValueError(f"mc_samples must be an integer >= 0, got {mc_samples!r}")
  mirrorings = flip_sets(flips)
  key = jax.random.key(0) if key is None else key
  moments = Moments()
  for m, (model, variables, card) in enumerate(members):
    if mc_samples:
      check_stochastic(model, variables)
    if mesh is not None:
      variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
    else:
      variables = jax.device_put(variables)
    kwargs = dict(inference=card.inference, size_multiple=getattr(model, "size_multiple", 1),
                  window=card.window if isinstance(window, str) and window == CARD else window,
                  overlap=overlap, blend=blend, batch_size=int(batch_size), mesh=mesh,
                  context=card.slice_context)
    for axes in mirrorings:
      x = np.flip(image, axes) if axes else image
      keys = ([jax.random.fold_in(jax.random.fold_in(key, m), s) for s in range(mc_samples)]
              if mc_samples else [None])
      for k in keys:
        logits = volume_logits(ModelApply(model, stochastic=k is not None), variables, x, key=k,
                               **kwargs)
        if logits.shape[-1] != card.num_outputs:
          raise ValueError(f"the model gives {logits.shape[-1]} output channel(s) but its card "
                           f"says {card.num_outputs} ({card.activation}, classes "
                           f"{card.class_names})")
        p = probabilities(logits, card.activation)
        moments.add(np.flip(p, axes) if axes else p)
  return Prediction(moments.mean, moments.variance if mc_samples else None, moments.count)


def predict_probabilities(
    model: Any,
    variables: Any,
    image: np.ndarray,
    card: ModelCard,
    **kwargs: Any,
) -> np.ndarray:
  """Probabilities of one already-normalised volume with one model, as ``card`` says.

  :func:`predict_distribution` with one member: ``card.inference == "slices"``: the model sees
  the axial slices ``(B, x, y, C)`` (``C * (2k + 1)`` channels with ``card.slice_context = k``);
  ``"volume"``: ``(B, x, y, z, C)``; in both, the whole slice / volume padded to
  ``model.size_multiple`` (``card.window`` None) or Gaussian-weighted sliding windows of
  ``card.window``. Keyword arguments as :func:`predict_distribution` (``batch_size``, ``mesh``,
  ``window``, ``overlap``, ``blend``, ``flips``).

  Returns:
    float32 ``(x, y, z)`` foreground probabilities (sigmoid) or ``(x, y, z, K)`` class
    probabilities (softmax).
  """
  return predict_distribution([(model, variables, card)], image, **kwargs).mean
