"""The one SimpleITK reader of the builders: MetaImage (``.mha``, ``.mhd`` + data file) volumes.

SimpleITK is an optional dependency (the ``itk`` extra, ``pip install -e ".[itk]"``), imported
only when a file is read, so listing a release's files never needs it. Used by ``promise12``
(config ``original``: ``CaseNN.mhd``) and ``prostatex_bpmri`` (config ``picai``: the PI-CAI
``.mha`` images).

Orientation. `read_image` returns the project's NIfTI voxel order ``(x, y, z)``, i.e. ITK's index
order (``GetArrayFromImage(...)`` is ``(z, y, x)`` and is transposed), and a RAS voxel-to-world
affine as nibabel gives for a NIfTI file: ITK maps voxel index ``i`` to the LPS point
``o + D diag(s) i``, so ``A[:3, :3] = F D diag(s)`` and ``A[:3, 3] = F o`` with
``F = diag(-1, -1, 1)`` (`lps_to_ras_affine`). A volume written by SimpleITK as ``.mha`` and as
``.nii.gz`` therefore reads back with the same array and affine through `read_image` and
`jaxseg.data.preprocess.load_nifti`, and resampling through the affines works across formats.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["INSTALL_HINT", "ITK_SUFFIXES", "is_itk_file", "lps_to_ras_affine", "read_image"]

INSTALL_HINT = 'pip install -e ".[itk]" (or pip install SimpleITK)'
"""How to install the optional reader (the ``itk`` extra of pyproject.toml)."""
ITK_SUFFIXES = (".mha", ".mhd")
"""File name endings read with SimpleITK (`is_itk_file`); everything else is NIfTI."""

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def is_itk_file(path: str | os.PathLike[str]) -> bool:
  """Whether ``path`` is a MetaImage file (``.mha`` / ``.mhd``, any case)."""
  return os.fspath(path).lower().endswith(ITK_SUFFIXES)


def lps_to_ras_affine(
    spacing: Any, direction: Any = None, origin: Any = None
) -> np.ndarray:
  """The RAS voxel-to-world affine of an ITK (LPS) image.

  ITK maps voxel index ``i`` to the LPS point ``o + D diag(s) i``; NIfTI / nibabel affines are
  RAS, so ``A[:3, :3] = F D diag(s)`` and ``A[:3, 3] = F o`` with ``F = diag(-1, -1, 1)``.

  Args:
    spacing: ``(sx, sy, sz)`` in mm.
    direction: 3x3 direction cosines (columns = index axes), or 9 numbers row-major as
      SimpleITK's ``GetDirection()`` returns them; None: identity.
    origin: LPS position of voxel ``(0, 0, 0)`` in mm; None: 0.

  Returns:
    The 4x4 float64 affine.
  """
  s = np.asarray(spacing, dtype=np.float64)
  d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
  o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
  if s.shape != (3,) or o.shape != (3,) or d.size != 9:
    raise ValueError(
        f"spacing and origin need 3 entries and direction 9, got {s.shape}, {o.shape}, "
        f"{d.shape}."
    )
  d = d.reshape(3, 3)
  affine = np.eye(4)
  affine[:3, :3] = _LPS_TO_RAS @ d @ np.diag(s)
  affine[:3, 3] = _LPS_TO_RAS @ o
  return affine


def _simpleitk(reader: str):
  """The SimpleITK module, or a one-line ImportError that names ``reader`` and the extra."""
  try:
    import SimpleITK as sitk  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f"{reader} with SimpleITK, an optional dependency that is not installed: "
        f"{INSTALL_HINT}."
    ) from e
  return sitk


def read_image(
    path: str | os.PathLike[str], *, reader: str = "jaxseg reads MetaImage (.mha/.mhd) files"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads a 3D scalar MetaImage (``.mha``, or ``.mhd`` + data file) with SimpleITK.

  Args:
    path: the ``.mha`` / ``.mhd`` file.
    reader: who reads what, for the ImportError when SimpleITK is missing (e.g.
      ``"prostatex_bpmri (config 'picai') reads the PI-CAI .mha images"``).

  Returns:
    ``(array, spacing, affine)``: the ``(x, y, z)`` array in its stored dtype (ITK index
    order, i.e. ``GetArrayFromImage(...).transpose(2, 1, 0)``), the spacing (float64 ``(3,)``,
    mm) and the RAS 4x4 affine (`lps_to_ras_affine`).

  Raises:
    ImportError: SimpleITK is not installed (the message names the ``itk`` extra).
    FileNotFoundError: the file does not exist.
    ValueError: unreadable file, not a 3D scalar image, or a bad spacing or affine.
  """
  sitk = _simpleitk(reader)
  p = os.fspath(path)
  if not os.path.isfile(p):
    raise FileNotFoundError(f"MetaImage file not found: {p}")
  try:
    img = sitk.ReadImage(p)
  except RuntimeError as e:
    raise ValueError(
        f"Cannot read MetaImage file {p} (missing data file, truncated or corrupt?): "
        f"{str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"
    ) from e
  if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
    raise ValueError(
        f"MetaImage file {p} is not a 3D scalar volume (dimension {img.GetDimension()}, "
        f"{img.GetNumberOfComponentsPerPixel()} component(s))."
    )
  spacing = np.asarray(img.GetSpacing(), dtype=np.float64)
  if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
    raise ValueError(f"MetaImage file {p} has an invalid spacing {tuple(spacing.tolist())}.")
  affine = lps_to_ras_affine(spacing, img.GetDirection(), img.GetOrigin())
  if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
    raise ValueError(f"MetaImage file {p} has a non-finite or singular direction / origin.")
  array = np.ascontiguousarray(sitk.GetArrayFromImage(img).transpose(2, 1, 0))
  return array, spacing, affine
