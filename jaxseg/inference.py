"""Whole-volume inference, one home for every model kind of jaxseg.

* :func:`predict_slices`: a 2D model on every axial slice of a volume (optionally 2.5D: the
  neighbouring slices as extra channels, :func:`stack_slice_context`);
* :func:`predict_volumes`: a 3D model on whole volumes (of any shapes);
* :func:`mc_probabilities`: Monte-Carlo mean and variance of a probabilistic 3D model
  (:func:`jaxseg.models.prob_unet3d.mc_predict`);
* :func:`probabilities`: logits -> probabilities of a sigmoid or softmax model;
* :func:`keep_largest_component`: nnU-Net's post-processing of a label map (each foreground
  class keeps only its largest connected component);
* :func:`predict_probabilities`: the whole pipeline for one normalised volume, as a
  :class:`~jaxseg.model_card.ModelCard` says (used by ``python -m jaxseg.predict``).

Every model call gets a batch of the same size (the last chunk is padded by repeating its last
row), so a jitted model compiles once per input shape; inputs are padded at the end of their
spatial axes to the model's size multiple with the volume's minimum, and the logits are cropped
back. With a ``mesh``, batches are sharded over its devices
(:func:`jaxseg.data.pipeline.shard_batch`; the batch size must then be a multiple of the number of
devices).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import ndimage, special

from jaxseg.data.pipeline import shard_batch

if TYPE_CHECKING:
  from jaxseg.model_card import ModelCard

__all__ = [
    "final_logits",
    "keep_largest_component",
    "mc_probabilities",
    "pad_to_multiple",
    "predict_probabilities",
    "predict_slices",
    "predict_volumes",
    "probabilities",
    "size_multiples",
    "stack_slice_context",
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


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: Any, variables: Any, images: jax.Array) -> Any:
  return model.apply(variables, images, train=False)


def predict_probabilities(
    model: Any,
    variables: Any,
    image: np.ndarray,
    card: ModelCard,
    *,
    batch_size: int = 8,
    mesh: Mesh | None = None,
) -> np.ndarray:
  """Probabilities of one already-normalised volume, as ``card`` says.

  ``card.inference == "slices"``: the model sees the axial slices ``(B, x, y, C)``
  (:func:`predict_slices`, padded to ``model.size_multiple``; with ``card.slice_context = k``,
  ``C * (2k + 1)`` channels: each slice with its neighbours); ``"volume"``: the whole volume
  ``(1, x, y, z, C)`` (:func:`predict_volumes`). The model is called as ``model.apply(variables,
  images, train=False)`` (jitted, one compile per input shape) and its :func:`final_logits` go
  through :func:`probabilities` with ``card.activation``.

  Args:
    model: a Flax module; its ``size_multiple`` attribute (1 if absent; an int, or ``(mx, my,
      mz)`` for a 3D model) is what the inputs are padded to.
    variables: the model's variables.
    image: ``(x, y, z, C)`` (or ``(x, y, z)`` for one channel) intensities, normalised as in
      training (:meth:`ModelCard.normalize`).
    card: the model's card.
    batch_size: slices per call for a 2D model (fewer when the volume has fewer slices); a 3D
      model gets one volume per call. With a mesh, rounded up to a multiple of its devices.
    mesh: optional device mesh: the variables are replicated and the batches sharded over it.

  Returns:
    float32 ``(x, y, z)`` foreground probabilities (sigmoid) or ``(x, y, z, K)`` class
    probabilities (softmax).

  Raises:
    ValueError: wrong image shape or channel count, bad batch size, or model outputs that do
      not fit the card.
  """
  image = channels_last_volume(image)
  if image.shape[-1] != card.num_channels:
    raise ValueError(f"the model takes {card.num_channels}-channel images {card.channels} but "
                     f"the volume has {image.shape[-1]} channel(s)")
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  items = image.shape[2] if card.inference == "slices" else 1
  batch = min(int(batch_size), items)
  if mesh is not None:
    n_dev = mesh.devices.size
    batch = -(-batch // n_dev) * n_dev
    variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
  else:
    variables = jax.device_put(variables)
  logits_fn = lambda x: _apply(model, variables, x)
  multiple = getattr(model, "size_multiple", 1)
  if card.inference == "slices":
    (m_x, m_y) = size_multiples(multiple, 2)
    if m_x != m_y:
      raise ValueError(f"a slice model needs one size multiple, got {multiple!r}")
    logits = predict_slices(logits_fn, image, batch_size=batch, size_multiple=m_x, mesh=mesh,
                            context=card.slice_context)
  else:
    logits = predict_volumes(logits_fn, [image], batch_size=batch, size_multiple=multiple,
                             mesh=mesh)[0]
  if logits.shape[-1] != card.num_outputs:
    raise ValueError(f"the model gives {logits.shape[-1]} output channel(s) but its card says "
                     f"{card.num_outputs} ({card.activation}, classes {card.class_names})")
  return probabilities(logits, card.activation)
