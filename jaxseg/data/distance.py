"""Signed distance maps of label boundaries, for the boundary loss (host side).

For a binary mask :math:`G` the map is (Kervadec et al., seed 001):

.. math::
  \\phi(q) = \\begin{cases}
    \\operatorname{edt}_{out}(q) & q \\notin G \\\\
    -(\\operatorname{edt}_{in}(q) - o) & q \\in G
  \\end{cases}

i.e. ``phi = edt(outside) * outside - (edt(inside) - o) * inside``, where
:math:`\\operatorname{edt}_{out}(q)` is the Euclidean distance (in the units
of ``spacing``, usually mm) from an outside voxel to the nearest object voxel,
:math:`\\operatorname{edt}_{in}(q)` the distance from an object voxel to the
nearest outside voxel, and :math:`o` an offset that puts the object's own
boundary voxels at 0.  The map is positive outside and <= 0 inside the object.

Computed with SciPy's exact EDT (``scipy.ndimage.distance_transform_edt``) on
whole volumes, in NumPy, once per label, in the input pipeline: the maps are
an input to :func:`jaxseg.losses.boundary.boundary_loss`, never computed in
the loss.

Edge cases:

* empty mask (class absent): all-zero map (no boundary, no signal);
* mask with no background voxel: SciPy's EDT is wrong there (with no zero in
  its input it measures the distance to a phantom zero just outside the
  array corner), so the object has no boundary inside the field of view and
  the map is all zero as well.

The offset :math:`o`: Kervadec's code subtracts a literal 1, which is one
voxel only for unit spacing; with a physical ``sampling`` below 1 mm it makes
the inner boundary band positive.  Here the default offset is the smallest
voxel spacing (1 for unit spacing, identical to Kervadec), so every object
voxel gets a value <= 0; ``inside_offset=1.0`` reproduces the literal formula.

Reference:
  Kervadec et al., "Boundary loss for highly unbalanced segmentation",
  MIDL 2019 (``one_hot2dist`` in the reference code).
"""

from typing import Optional, Sequence, Union

import numpy as np
from scipy import ndimage

from jaxseg.data.preprocess import validate_spacing

_Spacing = Optional[Union[float, Sequence[float]]]


def _check_spacing(spacing: _Spacing, ndim: int) -> tuple[float, ...]:
  """``None`` is unit spacing and a scalar is shared by all axes; then `validate_spacing`."""
  if spacing is None:
    return (1.0,) * ndim
  if np.isscalar(spacing):
    spacing = (spacing,) * ndim
  return tuple(validate_spacing(spacing, ndim=ndim).tolist())


def _as_binary(mask: np.ndarray) -> np.ndarray:
  if mask.dtype == bool:
    return mask
  values = np.unique(mask)
  if not np.all(np.isin(values, (0, 1))):
    raise ValueError(
        "mask must be binary (bool or 0/1); got values "
        f"{values[:10].tolist()}. For an integer label map use "
        "signed_distance_maps(label, num_classes).")
  return mask.astype(bool)


def _single_map(
    mask: np.ndarray, spacing: tuple[float, ...], offset: float,
    dtype) -> np.ndarray:
  """Signed distance map of one boolean mask (all axes spatial)."""
  if not mask.any() or mask.all():
    return np.zeros(mask.shape, dtype)
  outside = ~mask
  dist_out = ndimage.distance_transform_edt(outside, sampling=spacing)
  dist_in = ndimage.distance_transform_edt(mask, sampling=spacing)
  phi = dist_out * outside - (dist_in - offset) * mask
  return phi.astype(dtype)


def signed_distance_map(
    mask: np.ndarray,
    *,
    spacing: _Spacing = None,
    one_hot: bool = False,
    inside_offset: Optional[float] = None,
    dtype=np.float32,
) -> np.ndarray:
  """Signed distance map of a binary mask, or of each channel of a one-hot map.

  ``phi = edt(outside) * outside - (edt(inside) - o) * inside`` (see the
  module docstring), negative inside the object, zero for an empty or an
  all-foreground mask.

  Args:
    mask: binary (bool or 0/1) array ``(*spatial)``; with ``one_hot=True`` a
      channels-last ``(*spatial, channels)`` one-hot / multi-hot array, each
      channel mapped on its own.
    spacing: voxel size per spatial axis (e.g. mm, NIfTI order), a scalar for
      isotropic voxels, or None for unit spacing.
    one_hot: whether the last axis holds channels.
    inside_offset: the offset ``o``; None means ``min(spacing)`` (1 for unit
      spacing, as Kervadec).  ``1.0`` reproduces the literal formula.
    dtype: output dtype.

  Returns:
    Array of the input's shape and ``dtype``.

  Raises:
    ValueError: empty input, non-binary mask, bad spacing.
  """
  mask = np.asarray(mask)
  if mask.size == 0 or mask.ndim < (2 if one_hot else 1):
    raise ValueError(f"mask must be non-empty; got shape {mask.shape}.")
  mask = _as_binary(mask)
  ndim = mask.ndim - 1 if one_hot else mask.ndim
  spacing = _check_spacing(spacing, ndim)
  offset = min(spacing) if inside_offset is None else float(inside_offset)
  if not one_hot:
    return _single_map(mask, spacing, offset, dtype)
  return np.stack(
      [_single_map(mask[..., c], spacing, offset, dtype)
       for c in range(mask.shape[-1])], axis=-1)


def signed_distance_maps(
    label: np.ndarray,
    num_classes: int,
    *,
    spacing: _Spacing = None,
    include_background: bool = False,
    inside_offset: Optional[float] = None,
    dtype=np.float32,
) -> np.ndarray:
  """Per-class signed distance maps of an integer label map, channels-last.

  Channel ``k`` holds the map of ``label == c`` for the classes ``c`` kept
  (``1 .. num_classes - 1`` without the background, the default, matching
  :func:`jaxseg.losses.boundary.boundary_loss`).  A class absent from the
  volume gets an all-zero channel.  Compute it on the full volume (a
  background-only patch cut afterwards simply holds positive distances, and
  a patch cut from a volume without the class holds zeros).

  Args:
    label: integer label map ``(*spatial)`` of one case, values in
      ``[0, num_classes)``.
    num_classes: number of classes including the background.
    spacing: voxel size per spatial axis, scalar, or None (unit).
    include_background: also return the map of class 0 as channel 0.
    inside_offset: see :func:`signed_distance_map`.
    dtype: output dtype.

  Returns:
    ``(*spatial, num_classes - 1)`` (or ``num_classes`` with the background).

  Raises:
    ValueError: empty or non-integer label, values out of range, bad spacing.
  """
  label = np.asarray(label)
  if label.size == 0 or label.ndim < 1:
    raise ValueError(f"label must be non-empty; got shape {label.shape}.")
  if not (np.issubdtype(label.dtype, np.integer) or label.dtype == bool):
    raise ValueError(f"label must be an integer map, got {label.dtype}.")
  if num_classes < 2:
    raise ValueError(f"num_classes must be >= 2, got {num_classes}.")
  if label.min() < 0 or label.max() >= num_classes:
    raise ValueError(
        f"label values must lie in [0, {num_classes}); got "
        f"[{label.min()}, {label.max()}].")
  spacing = _check_spacing(spacing, label.ndim)
  offset = min(spacing) if inside_offset is None else float(inside_offset)
  first = 0 if include_background else 1
  return np.stack(
      [_single_map(label == c, spacing, offset, dtype)
       for c in range(first, num_classes)], axis=-1)
