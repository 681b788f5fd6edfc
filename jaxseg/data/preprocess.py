"""Preprocessing shared by every dataset: resampling, intensity normalisation, splits, NIfTI I/O.

Pure NumPy / SciPy on host volumes in NIfTI voxel order ``(x, y, z)`` with ``spacing = (sx, sy,
sz)`` in millimetres and a 4x4 voxel-to-world ``affine`` (docs/developing.md). No function keeps
state; the only randomness (``split_cases``) comes from the seed that is passed.

The recipe of the hierarchical-loss study (seed ``000``, REFERENCE §1): resample to
0.75 x 0.75 x 3 mm (linear for images, nearest for labels), clip intensities to the 0.5-99.5
percentiles, z-score, and split the cases 80/10/10 at random with seed 42.

Resampling grid. The output grid keeps the *centre of the field of view* and has exactly the
target spacing: along each axis with input size ``n``, spacing ``s`` and target spacing ``t``,

.. math::

  m = \\lfloor n s / t + 1/2 \\rfloor, \\qquad
  x_\\mathrm{in}(j) = (j + 1/2)\\, t / s - 1/2, \\quad j = 0, \\dots, m - 1,

where ``x_in(j)`` is the (continuous) input voxel index sampled by output voxel ``j``. This is the
half-voxel ("align corners = False") convention of ``skimage.transform.resize`` and
``torch.nn.functional.interpolate``, except that the spacing is exact and the field of view
changes by less than half a target voxel on each side. ``resample_affine`` applies the same map
to the affine, so the world position of every output voxel centre is the world position of the
input point it was sampled from. Samples outside the input take the value of the nearest edge
voxel.

Grids in world space. Scans of one exam on different grids (e.g. a 2 x 2 x 3 mm ADC map and a
0.5 x 0.5 x 3 mm T2W) are brought onto one grid through their affines by
`resample_to_reference` (the same interpolation as `resample`, zero outside the moved scan's
field of view), and `center_crop_or_pad` cuts a fixed shape around the centre of a volume,
moving its affine with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Hashable, Sequence
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

__all__ = [
    "center_crop_or_pad",
    "finite_image",
    "load_nifti",
    "make_folds",
    "normalize_intensity",
    "read_nifti",
    "resample",
    "resample_affine",
    "resample_case",
    "resample_to_reference",
    "resampled_shape",
    "split_cases",
    "split_validation",
    "validate_label",
    "validate_spacing",
]

SPLITS: tuple[str, str, str] = ("train", "validation", "test")
"""Names of the splits returned by `split_cases`, in the order of its ``fractions``."""


# --------------------------------------------------------------------------------------------
# Resampling.
# --------------------------------------------------------------------------------------------


def validate_spacing(spacing: Any, *, name: str = "spacing", ndim: int = 3) -> np.ndarray:
  """Checks a voxel spacing: ``ndim`` finite, positive numbers (mm).

  The one spacing check of the package: every function that takes a spacing calls it (callers
  that accept ``None`` or a scalar handle those before calling).

  Args:
    spacing: the spacing, one value per spatial axis.
    name: what to call it in the error message (e.g. ``"case 001000: spacing"``).
    ndim: number of spatial axes.

  Returns:
    The spacing as a float64 ``(ndim,)`` array.

  Raises:
    ValueError: wrong length, non-numeric, zero, negative, NaN or infinite entries.
  """
  try:
    arr = np.asarray(spacing, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be {ndim} numbers, got {spacing!r}.") from e
  if arr.shape != (ndim,):
    raise ValueError(f"{name} must have {ndim} entries (one per axis), got {spacing!r}.")
  if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be finite and positive, got {tuple(arr.tolist())}.")
  return arr


def resampled_shape(
    shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float]
) -> tuple[int, ...]:
  """Output shape of `resample`: ``floor(shape * spacing / target + 1/2)``, at least 1.

  Halves round up (not to even), so the result does not depend on NumPy's rounding mode.

  Args:
    shape: input shape, one entry per spatial axis.
    spacing: input voxel spacing (mm).
    target_spacing: output voxel spacing (mm).

  Returns:
    The output shape as a tuple of ints.
  """
  shape_arr = np.asarray(shape, dtype=np.int64)
  ndim = shape_arr.size
  s = validate_spacing(spacing, name="spacing", ndim=ndim)
  t = validate_spacing(target_spacing, name="target_spacing", ndim=ndim)
  if np.any(shape_arr < 1):
    raise ValueError(f"shape must be positive, got {tuple(shape)}.")
  out = np.floor(shape_arr * s / t + 0.5).astype(np.int64)
  return tuple(int(v) for v in np.maximum(out, 1))


def _input_coordinates(m: int, ratio: float) -> np.ndarray:
  """Input voxel indices sampled by output voxels ``0..m-1``: ``(j + 1/2) ratio - 1/2``."""
  return (np.arange(m, dtype=np.float64) + 0.5) * ratio - 0.5


def resample(
    volume: np.ndarray,
    spacing: Sequence[float],
    target_spacing: Sequence[float],
    *,
    order: int,
    shape: Sequence[int] | None = None,
) -> np.ndarray:
  """Resamples a volume onto a grid of spacing ``target_spacing`` (same field-of-view centre).

  Output voxel ``j`` (per axis) samples the input at voxel index ``(j + 1/2) t / s - 1/2``
  (module docstring); the output shape is ``floor(shape * s / t + 1/2)`` unless ``shape`` is
  given. ``order=0`` is nearest neighbour by direct indexing (index ``floor(x + 1/2)``, clipped
  to the volume): it copies input values, keeps the dtype, and so never creates a label that
  was not there. ``order >= 1`` is spline interpolation of that order
  (``scipy.ndimage.affine_transform``, ``mode="nearest"``); ``order=1`` is (tri)linear, exact
  on a linear ramp. Interpolated output is float32 (float64 input stays float64).

  Args:
    volume: array of shape ``(x, y, z)`` (any number of spatial axes works).
    spacing: input voxel spacing in mm, one per axis.
    target_spacing: output voxel spacing in mm, one per axis.
    order: 0 (nearest, for labels), 1 (linear, for images), up to 5 (spline).
    shape: optional explicit output shape (e.g. to match another resampled volume).

  Returns:
    The resampled volume.
  """
  volume = np.asarray(volume)
  if volume.ndim < 1 or volume.size == 0:
    raise ValueError(f"volume must be a non-empty array, got shape {volume.shape}.")
  s = validate_spacing(spacing, name="spacing", ndim=volume.ndim)
  t = validate_spacing(target_spacing, name="target_spacing", ndim=volume.ndim)
  if not isinstance(order, (int, np.integer)) or not 0 <= order <= 5:
    raise ValueError(f"order must be an integer in 0..5, got {order!r}.")
  if shape is None:
    out_shape = resampled_shape(volume.shape, s, t)
  else:
    out_shape = tuple(int(v) for v in shape)
    if len(out_shape) != volume.ndim or any(v < 1 for v in out_shape):
      raise ValueError(
          f"shape must have {volume.ndim} positive entries, got {tuple(shape)}."
      )
  ratio = t / s
  if out_shape == volume.shape and np.all(ratio == 1.0):
    return volume.copy() if order == 0 else volume.astype(_float_dtype(volume.dtype))

  if order == 0:
    index = []
    for n, m, r in zip(volume.shape, out_shape, ratio):
      idx = np.floor(_input_coordinates(m, r) + 0.5).astype(np.int64)
      index.append(np.clip(idx, 0, n - 1))
    return volume[np.ix_(*index)]

  if not np.issubdtype(volume.dtype, np.number) or np.iscomplexobj(volume):
    raise ValueError(f"order >= 1 needs a real numeric volume, got dtype {volume.dtype}.")
  dtype = _float_dtype(volume.dtype)
  offset = 0.5 * ratio - 0.5  # x_in = ratio * j + offset.
  return _interpolate(volume.astype(dtype, copy=False), ratio, offset, out_shape,
                      order=int(order), mode="nearest", output=dtype)


def _float_dtype(dtype: np.dtype) -> type:
  return np.float64 if dtype == np.float64 else np.float32


def _interpolate(
    volume: np.ndarray,
    matrix: np.ndarray,
    offset: np.ndarray,
    shape: Sequence[int],
    *,
    order: int,
    mode: str,
    cval: float = 0.0,
    output: Any = None,
) -> np.ndarray:
  """Output voxel ``j`` takes ``volume`` at input index ``matrix @ j + offset`` (spline ``order``).

  The one interpolation of `resample` (diagonal ``matrix``, ``mode="nearest"``: edge values
  outside) and `resample_to_reference` (any ``matrix``, ``mode="constant"``: ``cval`` outside):
  `scipy.ndimage.affine_transform`, prefiltered only for ``order > 1`` (orders 0 and 1 need no
  prefilter). ``output`` is the output dtype (None: the input's).
  """
  return ndimage.affine_transform(
      volume,
      matrix,
      offset=offset,
      output_shape=tuple(shape),
      output=output,
      order=order,
      mode=mode,
      cval=cval,
      prefilter=order > 1,
  )


def resample_affine(
    affine: np.ndarray, spacing: Sequence[float], target_spacing: Sequence[float]
) -> np.ndarray:
  """The affine of the grid produced by `resample` (same world position of voxel centres).

  With input voxel index ``x_in = D j + c`` for output index ``j``, ``D = diag(t / s)`` and
  ``c = (t / s - 1) / 2``, the output affine is ``A_out = A_in [[D, c], [0, 1]]``: its columns
  are scaled by ``t / s`` (so their lengths become the target spacing when the input columns
  have length ``s``) and its origin moves to the world position of ``x_in(0)``.

  Args:
    affine: input 4x4 voxel-to-world matrix.
    spacing: input voxel spacing in mm.
    target_spacing: output voxel spacing in mm.

  Returns:
    The output 4x4 affine (float64).
  """
  a = np.asarray(affine, dtype=np.float64)
  if a.shape != (4, 4):
    raise ValueError(f"affine must be 4x4, got shape {a.shape}.")
  if not np.all(np.isfinite(a)):
    raise ValueError("affine has non-finite entries.")
  s = validate_spacing(spacing, name="spacing")
  t = validate_spacing(target_spacing, name="target_spacing")
  ratio = t / s
  index_map = np.eye(4)
  index_map[:3, :3] = np.diag(ratio)
  index_map[:3, 3] = 0.5 * ratio - 0.5
  return a @ index_map


def resample_case(
    image: np.ndarray,
    label: np.ndarray | None,
    spacing: Sequence[float],
    affine: np.ndarray,
    target_spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
  """Resamples an image (linear) and its label map (nearest) onto the same target grid.

  Args:
    image: ``(x, y, z)`` intensities.
    label: ``(x, y, z)`` integer labels on the image grid, or None.
    spacing: image voxel spacing in mm.
    affine: image 4x4 affine.
    target_spacing: output voxel spacing in mm.

  Returns:
    ``(image, label, spacing, affine)`` on the new grid: float32 image, label with its dtype
    (None if none was given), the target spacing as float64 ``(3,)``, and the new affine.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"image must be 3D (x, y, z), got shape {image.shape}.")
  if label is not None:
    label = np.asarray(label)
    if label.shape != image.shape:
      raise ValueError(
          f"label shape {label.shape} differs from image shape {image.shape}."
      )
  t = validate_spacing(target_spacing, name="target_spacing")
  new_image = resample(image, spacing, t, order=1).astype(np.float32, copy=False)
  new_label = None
  if label is not None:
    new_label = resample(label, spacing, t, order=0, shape=new_image.shape)
  return new_image, new_label, t.copy(), resample_affine(affine, spacing, t)


# --------------------------------------------------------------------------------------------
# Grids in world space: resampling onto another scan's grid, centre crop / pad.
# --------------------------------------------------------------------------------------------


def resample_to_reference(
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    reference_shape: Sequence[int],
    reference_affine: np.ndarray,
    order: int,
    cval: float = 0.0,
) -> np.ndarray:
  """Resamples a volume onto another grid of the same world (scanner) space.

  Output voxel ``j`` of the reference grid takes the input at the continuous voxel index

  .. math::

    i = M j, \\qquad M = A_\\mathrm{src}^{-1} A_\\mathrm{ref}

  (homogeneous coordinates; both affines map voxel centres to world mm), interpolated as in
  `resample` (``order=1`` linear for images, ``order=0`` nearest for labels: it copies input
  values, so no new label appears), except that ``M`` is any affine map and points outside the
  input take ``cval`` (`resample` is the case of a diagonal ``M`` that extends edge values).
  When the grids coincide (same shape, ``M`` = identity within 1e-3 voxel) the volume is
  returned unchanged (a copy). Used to bring e.g. the 2 x 2 x 3 mm ADC / DWI of a bpMRI exam
  onto its 0.5 x 0.5 x 3 mm T2W grid.

  Args:
    volume: ``(x, y, z)`` array on the grid of ``affine``.
    affine: its 4x4 voxel-to-world matrix.
    reference_shape: shape of the target grid.
    reference_affine: 4x4 voxel-to-world matrix of the target grid.
    order: spline order, 0 (nearest) or 1 (linear).
    cval: value outside the input's field of view.

  Returns:
    The volume on the reference grid (float32 for ``order=1``, the input dtype for 0).

  Raises:
    ValueError: a volume that is not 3D, affines that are not finite 4x4 matrices, a singular
      ``affine``, a bad ``reference_shape`` or an ``order`` other than 0 and 1.
  """
  volume = np.asarray(volume)
  if volume.ndim != 3:
    raise ValueError(f"volume must be 3D, got shape {volume.shape}.")
  a = np.asarray(affine, np.float64)
  r = np.asarray(reference_affine, np.float64)
  if a.shape != (4, 4) or r.shape != (4, 4):
    raise ValueError("affines must be 4x4.")
  if not (np.all(np.isfinite(a)) and np.all(np.isfinite(r))):
    raise ValueError("affines must be finite.")
  ref_shape = tuple(int(n) for n in reference_shape)
  if len(ref_shape) != 3 or min(ref_shape) < 1:
    raise ValueError(f"reference_shape must be 3 positive ints, got {reference_shape}.")
  if order not in (0, 1):
    raise ValueError(f"order must be 0 or 1, got {order!r}.")
  try:
    m = np.linalg.solve(a, r)
  except np.linalg.LinAlgError as e:
    raise ValueError("affine is singular.") from e
  if volume.shape == ref_shape and np.allclose(m, np.eye(4), atol=1e-3):
    return volume.copy() if order == 0 else volume.astype(np.float32)
  src = volume if order == 0 else volume.astype(np.float32)
  return _interpolate(src, m[:3, :3], m[:3, 3], ref_shape, order=order, mode="constant",
                      cval=cval)


def center_crop_or_pad(
    volume: np.ndarray, shape: Sequence[int], *, fill: float = 0, affine: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
  """Centre crop (or pad with ``fill``) the three leading axes of ``volume`` to ``shape``.

  Along an axis of size ``n`` and target ``c`` the output covers input indices
  ``start .. start + c - 1`` with ``start = floor((n - c) / 2)``: an odd excess is cropped one
  voxel more after than before, an odd deficit padded one voxel more before than after
  (``-start`` voxels before). The affine's origin moves to input voxel ``start``:
  ``A_out = A T(start)``, so every kept voxel keeps its world position.

  Args:
    volume: array whose three leading axes are spatial (trailing axes, e.g. channels, are
      kept).
    shape: the ``(x, y, z)`` output shape.
    fill: value of the padded voxels.
    affine: optional 4x4 voxel-to-world matrix of ``volume``.

  Returns:
    ``(volume, affine)`` (affine None when none was given).

  Raises:
    ValueError: ``shape`` is not 3 positive ints, or ``volume`` has fewer than 3 axes.
  """
  shape = tuple(int(c) for c in shape)
  if len(shape) != 3 or min(shape) < 1 or volume.ndim < 3:
    raise ValueError(f"bad crop shape {shape} for a volume of shape {volume.shape}.")
  start = [(n - c) // 2 for n, c in zip(volume.shape[:3], shape)]
  out = np.full(shape + volume.shape[3:], fill, dtype=volume.dtype)
  src, dst = [], []
  for s, c, n in zip(start, shape, volume.shape[:3]):
    lo, hi = max(s, 0), min(s + c, n)
    src.append(slice(lo, hi))
    dst.append(slice(lo - s, hi - s))
  out[tuple(dst)] = volume[tuple(src)]
  if affine is None:
    return out, None
  t = np.eye(4)
  t[:3, 3] = start
  return out, np.asarray(affine, np.float64) @ t


# --------------------------------------------------------------------------------------------
# Intensities.
# --------------------------------------------------------------------------------------------


def finite_image(image: Any) -> np.ndarray:
  """``image`` as float64 after checking it is non-empty, real-valued and finite.

  Raises:
    ValueError: empty or non-numeric image, or NaN/Inf voxels (the message gives their count).
  """
  x = np.asarray(image)
  if x.size == 0:
    raise ValueError("image is empty.")
  if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
    raise ValueError(f"image must be real-valued, got dtype {x.dtype}.")
  x = x.astype(np.float64)
  bad = int(np.count_nonzero(~np.isfinite(x)))
  if bad:
    raise ValueError(f"image has {bad} non-finite (NaN or Inf) voxel(s) of {x.size}.")
  return x


def normalize_intensity(
    image: np.ndarray,
    *,
    lower: float = 0.5,
    upper: float = 99.5,
    mask: np.ndarray | None = None,
) -> np.ndarray:
  """Clips intensities to percentiles, then z-scores them.

  .. math::

    \\tilde x = \\mathrm{clip}(x, P_\\mathrm{lower}, P_\\mathrm{upper}), \\qquad
    z = (\\tilde x - \\mu) / \\sigma,

  where the percentiles (linear interpolation, ``np.percentile``'s default), the mean ``mu``
  and the (population) standard deviation ``sigma`` of ``x~`` are computed over the voxels of
  ``mask`` (all voxels when None) and applied to the whole image. Computed in float64. A
  constant image (``sigma = 0``) maps to zeros rather than NaN. The seed-000 recipe is
  ``lower=0.5, upper=99.5`` over the whole volume.

  Args:
    image: array of intensities (any shape).
    lower: lower percentile in [0, 100].
    upper: upper percentile in [0, 100], ``upper >= lower``.
    mask: optional boolean array of the same shape selecting the voxels whose statistics are
      used (e.g. a body mask); must select at least one voxel.

  Returns:
    The normalised image as float32, same shape.

  Raises:
    ValueError: empty or non-numeric image, NaN/Inf voxels (the message gives their count),
      bad percentiles, or a mask of the wrong shape or with no voxel.
  """
  x = finite_image(image)
  if not (0.0 <= lower <= upper <= 100.0):
    raise ValueError(f"need 0 <= lower <= upper <= 100, got lower={lower}, upper={upper}.")
  if mask is None:
    selected = x.ravel()
  else:
    m = np.asarray(mask)
    if m.shape != x.shape:
      raise ValueError(f"mask shape {m.shape} differs from image shape {x.shape}.")
    m = m.astype(bool)
    if not m.any():
      raise ValueError("mask selects no voxel.")
    selected = x[m]
  lo, hi = np.percentile(selected, [lower, upper])
  clipped = np.clip(x, lo, hi)
  values = np.clip(selected, lo, hi)
  mean = values.mean()
  std = values.std()
  centred = clipped - mean
  if not std > 0.0:
    return np.zeros(x.shape, np.float32)
  return (centred / std).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Splits.
# --------------------------------------------------------------------------------------------


def _split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
  """Largest-remainder (Hamilton) apportionment of ``n`` cases to ``fractions``.

  Ties between equal remainders go to the earlier split.
  """
  quota = fractions * n
  counts = np.floor(quota + 1e-9).astype(np.int64)
  remainder = quota - counts
  left = n - int(counts.sum())
  order = sorted(range(len(fractions)), key=lambda s: (-remainder[s], s))
  for s in order[:left]:
    counts[s] += 1
  return counts


def _min_cases(fractions: np.ndarray) -> int:
  """Smallest number of cases for which every split with a positive fraction is non-empty."""
  needed = int(np.count_nonzero(fractions > 0))
  n = max(needed, 1)
  while True:
    counts = _split_counts(n, fractions)
    if np.all(counts[fractions > 0] > 0):
      return n
    n += 1


def split_cases(
    case_ids: Sequence[str],
    *,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 42,
    groups: Sequence[Hashable] | None = None,
) -> dict[str, list[str]]:
  """Random split of cases into train / validation / test, deterministic for a given seed.

  Totals: split ``s`` gets ``T_s`` cases by largest-remainder apportionment of ``n f_s``
  (e.g. 589 cases at 80/10/10 -> 471 / 59 / 59). Assignment: the cases are sorted (so the input
  order does not matter), shuffled with ``np.random.default_rng(seed)`` and laid out in one
  sequence — with ``groups``, group after group (groups in a seeded random order, cases shuffled
  within each group). Position ``k`` of the sequence goes to the split with the largest deficit
  ``(k + 1) T_s / n - a_s`` (``a_s`` = cases given so far; ties to the earlier split). The
  deficit stays within (-1, 1), so the totals are exactly ``T_s`` and every contiguous run of
  the sequence — every group — gets its share to within one case per split: a split stratified
  by group (e.g. institution). Without groups this is a plain random split.

  Args:
    case_ids: unique case identifiers.
    fractions: fractions of (train, validation, test); non-negative, summing to 1.
    seed: random seed.
    groups: optional group label per case (same length as ``case_ids``) to stratify by.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``, each list sorted; the lists are
    disjoint and together hold every case.

  Raises:
    ValueError: duplicate ids, bad fractions, ``groups`` of the wrong length, or too few cases
      for every split with a positive fraction to be non-empty (the message says how many are
      needed).
  """
  ids = [str(c) for c in case_ids]
  n = len(ids)
  if len(set(ids)) != n:
    dup = sorted({c for c in ids if ids.count(c) > 1})
    raise ValueError(f"case_ids must be unique; duplicated: {dup[:10]}.")
  f = np.asarray(fractions, dtype=np.float64)
  if f.shape != (3,) or not np.all(np.isfinite(f)) or np.any(f < 0):
    raise ValueError(
        f"fractions must be 3 non-negative numbers (train, validation, test), got {fractions!r}."
    )
  if not math.isclose(float(f.sum()), 1.0, abs_tol=1e-6):
    raise ValueError(f"fractions must sum to 1, got {fractions!r} (sum {f.sum():.6g}).")
  f = f / f.sum()
  needed = _min_cases(f)
  totals = _split_counts(n, f)
  if n < needed or np.any(totals[f > 0] == 0):
    raise ValueError(
        f"Too few cases for a non-empty split with fractions {tuple(fractions)}: got {n}, "
        f"need at least {needed}."
    )
  if groups is not None:
    group_list = list(groups)
    if len(group_list) != n:
      raise ValueError(
          f"groups must have one entry per case: {len(group_list)} groups for {n} cases."
      )
  else:
    group_list = [0] * n

  rng = np.random.default_rng(seed)
  by_group: dict[str, list[str]] = {}
  for case, group in zip(ids, group_list):
    by_group.setdefault(str(group), []).append(case)
  group_names = sorted(by_group)
  sequence: list[str] = []
  for gi in rng.permutation(len(group_names)):
    members = sorted(by_group[group_names[gi]])
    sequence.extend(members[i] for i in rng.permutation(len(members)))

  assigned = np.zeros(3, dtype=np.int64)
  out: dict[str, list[str]] = {name: [] for name in SPLITS}
  for k, case in enumerate(sequence):
    deficit = (k + 1) * totals / n - assigned
    s = int(np.argmax(deficit))
    assigned[s] += 1
    out[SPLITS[s]].append(case)
  return {name: sorted(cases) for name, cases in out.items()}


# --------------------------------------------------------------------------------------------
# NIfTI input and label checks.
# --------------------------------------------------------------------------------------------


def read_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, Any]:
  """Reads a NIfTI file of any dimension: ``(array, spacing, image)``.

  The array is read through the header's scaling (``img.dataobj``); ``spacing`` is the first
  three ``pixdim`` values, float64 mm, read from the *unchecked* header (nibabel's check silently
  replaces zero spacings by 1 and negative ones by their absolute value, so such files would
  pass); ``image`` is the nibabel image (affine, header).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is unreadable, truncated or corrupt, has fewer than 3 axes, or has a
      zero, negative or non-finite spacing; the message names the file.
  """
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"NIfTI file not found: {p}")
  try:
    img = nib.load(p)
    data = np.asarray(img.dataobj)
    holder = img.file_map.get("header") or img.file_map.get("image")
    header_file = (holder.filename if holder is not None else None) or p
    with nib.openers.ImageOpener(header_file) as fobj:
      zooms = img.header_class.from_fileobj(fobj, check=False).get_zooms()
  except Exception as e:  # nibabel raises many types for corrupt input (EOFError, zlib...).
    if isinstance(e, (MemoryError, KeyboardInterrupt)):
      raise
    raise ValueError(
        f"Cannot read NIfTI file {p} (unreadable, truncated or corrupt): "
        f"{type(e).__name__}: {e}"
    ) from e
  if data.ndim < 3:
    raise ValueError(f"NIfTI file {p} is not a 3D volume: shape {data.shape}.")
  spacing = validate_spacing(zooms[:3], name=f"NIfTI file {p}: voxel spacing")
  return data, spacing, img


def load_nifti(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads a 3D NIfTI volume with nibabel.

  The array is read through the header's scaling (``img.dataobj``): stored integers without
  scaling keep their dtype, scaled data become floats. Trailing singleton axes beyond the third
  (``(x, y, z, 1)``) are dropped.

  Args:
    path: ``.nii`` or ``.nii.gz`` file.

  Returns:
    ``(array, spacing, affine)``: the ``(x, y, z)`` array, the voxel spacing from the header
    (``pixdim``, float64 ``(3,)``, mm), and the 4x4 voxel-to-world affine (float64).

  Raises:
    FileNotFoundError: the file does not exist.
    ValueError: the file is unreadable, truncated or corrupt, is not 3D, or has a zero,
      negative or non-finite spacing; the message names the file.
  """
  p = os.fspath(path)
  data, spacing, img = read_nifti(p)
  affine = np.asarray(img.affine, dtype=np.float64)
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise ValueError(f"NIfTI file {p} is not a 3D volume: shape {data.shape}.")
  if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
    raise ValueError(f"NIfTI file {p} has a non-finite affine.")
  return data, spacing, affine


def validate_label(
    label: np.ndarray,
    num_classes: int,
    *,
    name: str = "label",
    shape: Sequence[int] | None = None,
) -> np.ndarray:
  """Checks a label map and returns it as uint8 (int32 when ``num_classes > 256``).

  Args:
    label: integer-valued label array (float storage with integral values is accepted, as
      written by some NIfTI tools).
    num_classes: labels must lie in ``[0, num_classes)``.
    name: what to call the label in error messages (e.g. a file name).
    shape: expected shape (the image's), if any.

  Returns:
    The label map with an integer dtype.

  Raises:
    ValueError: wrong shape, non-integral or non-finite values, or values out of range (the
      message lists the offending values).
  """
  arr = np.asarray(label)
  if num_classes < 1:
    raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
  if shape is not None and tuple(arr.shape) != tuple(shape):
    raise ValueError(
        f"{name}: label shape {tuple(arr.shape)} differs from image shape {tuple(shape)}."
    )
  if arr.dtype == bool:
    arr = arr.astype(np.uint8)
  if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ValueError(f"{name}: labels must be numeric, got dtype {arr.dtype}.")
  if np.issubdtype(arr.dtype, np.floating):
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
      raise ValueError(f"{name}: {bad} label voxel(s) are NaN or Inf.")
    frac = np.count_nonzero(arr != np.round(arr))
    if frac:
      raise ValueError(f"{name}: {frac} label voxel(s) are not integers.")
  values = np.unique(arr)
  outside = values[(values < 0) | (values >= num_classes)]
  if outside.size:
    shown = ", ".join(str(v) for v in outside[:10].tolist())
    raise ValueError(
        f"{name}: label values outside 0..{num_classes - 1}: {shown}"
        + (" ..." if outside.size > 10 else "")
        + "."
    )
  out_dtype = np.uint8 if num_classes <= 256 else np.int32
  return arr.astype(out_dtype)


def make_folds(labels: Sequence[int], num_folds: int, *, seed: int) -> list[np.ndarray]:
  """K folds of case indices, stratified by label (each label's cases dealt round-robin).

  Cases of each label are shuffled with ``np.random.default_rng(seed)`` and dealt to the folds in
  turn, continuing where the previous label stopped, so fold sizes differ by at most one and each
  fold gets its share of every label to within one case.

  Returns:
    ``num_folds`` sorted index arrays, disjoint, together covering ``range(len(labels))``.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
  if not 2 <= num_folds <= labels.size:
    raise ValueError(f"num_folds must be in [2, {labels.size}] (the number of cases), got "
                     f"{num_folds}")
  rng = np.random.default_rng(seed)
  folds: list[list[int]] = [[] for _ in range(num_folds)]
  position = 0
  for value in np.unique(labels):
    for index in rng.permutation(np.flatnonzero(labels == value)):
      folds[position % num_folds].append(int(index))
      position += 1
  return [np.sort(np.asarray(f, np.int64)) for f in folds]


def split_validation(train: np.ndarray, labels: Sequence[int], fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits a fold's training cases into (training, validation), stratified by label.

  The validation part is one of ``round(1 / fraction)`` stratified folds (:func:`make_folds`) of
  ``train``: about ``fraction`` of the cases, with each label's share.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
  train = np.asarray(train)
  parts = make_folds(np.asarray(labels)[train], min(len(train), max(2, round(1 / fraction))),
                     seed=seed)
  validation = np.sort(train[parts[0]])
  return np.setdiff1d(train, validation), validation
