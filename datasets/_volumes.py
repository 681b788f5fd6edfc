"""Per-case checks and the resample + clip/z-score path shared by the MR builders.

`normalized_example` is the second half of ``preprocess_case`` in ``male_pelvic_mr``,
``promise12`` and ``prostatex_gland`` (REFERENCE §1, §3; `jaxseg.data.preprocess`): once a
builder has checked its image and turned its label into class indices, the case is

1. checked: spacing finite and positive, affine 4x4;
2. optionally resampled to ``target_spacing`` (`preprocess.resample_case`: linear image,
   nearest label, affine updated so that the field of view is unchanged);
3. clipped to the ``clip_percentiles`` of its own intensities and z-scored
   (`preprocess.normalize_intensity`),

and returned as the features every one of these builders has: ``image`` float32, ``label``
uint8, ``case_id``, ``spacing`` float32 ``(3,)`` and ``affine`` float64 ``(4, 4)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxseg.data import preprocess

__all__ = ["check_finite", "check_real", "normalized_example"]


def check_finite(array: Any, what: str, case_id: str) -> None:
  """Raises ``"case {case_id}: {what} has N non-finite voxel(s)."`` for NaN / Inf values."""
  bad = int(np.count_nonzero(~np.isfinite(np.asarray(array, np.float64))))
  if bad:
    raise ValueError(f"case {case_id}: {what} has {bad} non-finite voxel(s).")


def check_real(image: np.ndarray, case_id: str) -> None:
  """Raises unless ``image`` has a real numeric dtype (bool, object, text, complex are not)."""
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise ValueError(f"case {case_id}: image must be real-valued, got dtype {image.dtype}.")


def normalized_example(
    image: np.ndarray,
    label: np.ndarray,
    spacing: Any,
    affine: Any,
    *,
    case_id: str,
    target_spacing: Any | None,
    clip_percentiles: tuple[float, float],
) -> dict[str, Any]:
  """Resamples (optionally), clips and z-scores one checked case (module docstring).

  Args:
    image: ``(x, y, z)`` intensities (checked by the caller).
    label: ``(x, y, z)`` class indices on the image grid (checked by the caller).
    spacing: voxel spacing ``(sx, sy, sz)`` in mm.
    affine: 4x4 voxel-to-world affine.
    case_id: case identifier (error messages start with ``case {case_id}:``).
    target_spacing: spacing to resample to (mm), or None to keep the grid.
    clip_percentiles: ``(lower, upper)`` percentiles.

  Returns:
    ``{"image", "label", "case_id", "spacing", "affine"}``.
  """
  spacing = preprocess.validate_spacing(spacing, name=f"case {case_id}: spacing")
  affine = np.asarray(affine, dtype=np.float64)
  if affine.shape != (4, 4):
    raise ValueError(f"case {case_id}: affine must be 4x4, got shape {affine.shape}.")
  if target_spacing is not None:
    image, label, spacing, affine = preprocess.resample_case(
        image, label, spacing, affine, target_spacing
    )
  lo, hi = clip_percentiles
  try:
    normalized = preprocess.normalize_intensity(image, lower=lo, upper=hi)
  except ValueError as e:
    raise ValueError(f"case {case_id}: {e}") from e
  return {
      "image": normalized,
      "label": np.asarray(label).astype(np.uint8),
      "case_id": case_id,
      "spacing": np.asarray(spacing, np.float32),
      "affine": np.asarray(affine, np.float64),
  }
