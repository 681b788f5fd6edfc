"""Whole-volume inference with 2D models: slice by slice, padded to the model's size multiple."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np
from jax.sharding import Mesh

from jaxseg.data.pipeline import shard_batch


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


def pad_to_multiple(array: np.ndarray, multiple: int, axes: tuple[int, ...], fill: float):
  """Pads ``axes`` of ``array`` at the end up to a multiple of ``multiple``; returns the crop."""
  pad = [(0, 0)] * array.ndim
  crop = [slice(None)] * array.ndim
  for axis in axes:
    size = array.shape[axis]
    pad[axis] = (0, (-size) % multiple)
    crop[axis] = slice(0, size)
  return np.pad(array, pad, constant_values=fill), tuple(crop)


def predict_slices(
    logits_fn: Callable[[jax.Array], jax.Array],
    image: np.ndarray,
    *,
    batch_size: int,
    size_multiple: int,
    mesh: Mesh | None = None,
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

  Returns:
    ``(x, y, z, K)`` float32 logits.
  """
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4:
    raise ValueError(f"expected an (x, y, z[, channels]) volume, got shape {image.shape}")
  fill = float(image.min()) if image.size else 0.0
  padded, crop = pad_to_multiple(image, size_multiple, (0, 1), fill)
  slices = np.moveaxis(padded, 2, 0).astype(np.float32)  # (z, x, y, C)
  outputs = []
  for start in range(0, slices.shape[0], batch_size):
    chunk = slices[start:start + batch_size]
    n = chunk.shape[0]
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    batch = {"image": chunk}
    inputs = shard_batch(batch, mesh)["image"] if mesh is not None else chunk
    outputs.append(np.asarray(final_logits(logits_fn(inputs)))[:n])
  logits = np.moveaxis(np.concatenate(outputs), 0, 2)  # (x, y, z, K)
  return logits[crop[0], crop[1]]
