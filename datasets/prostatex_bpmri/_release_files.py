"""What the ProstateX and PI-CAI readers of ``prostatex_bpmri`` share: files, cases, grids.

`_prostatex_reader` and `_picai_reader` find a release's patients under the manual directory
(`walk`, `find_path`, `read_csv`, `column`) as `Case` records, drop or report the incomplete
ones (`finish`), and read a case's files (`load`: NIfTI, or ``.mha`` / ``.mhd`` with
SimpleITK) onto its T2W grid (`image_on_grid`), returning it as `OnT2wGrid` for the builder's
`preprocess_case`. Nothing here imports the builder module: the readers get the build's config
and its `datasets._common.ManualRelease` (for the error messages) as arguments.
"""

from __future__ import annotations

import csv
import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from absl import logging
import numpy as np

from datasets import _common
from datasets import _itk
from datasets import _prostatex
from jaxseg.data import preprocess

if TYPE_CHECKING:
  from datasets.prostatex_bpmri.prostatex_bpmri import ProstatexBpmriConfig

__all__ = [
    "ADC",
    "Case",
    "DWI",
    "OnT2wGrid",
    "T2W",
    "column",
    "find_path",
    "finish",
    "image_on_grid",
    "load",
    "read_csv",
    "walk",
]

T2W, DWI, ADC = "t2w", "dwi", "adc"
"""Keys of the three bpMRI sequences (`Case` fields, messages)."""


@dataclasses.dataclass(frozen=True)
class Case:
  """One real patient: file paths (None: absent) and what is known of its label."""

  case_id: str
  t2w: str
  adc: str
  dwi: str | None
  zonal: tuple[str, ...]        # prostatex: (pz, tz); picai: (zonal label,)
  lesions: tuple[str, ...]      # prostatex: csPCa finding masks; picai: () or (label,)
  lesion_kind: str = "none"     # picai: "isup" (0 / 2-5), "binary" (Pooch25, AI) or "none"
  patient_label: int | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class OnT2wGrid:
  """One patient read onto its T2W grid: the arguments of ``preprocess_case``.

  Attributes:
    t2w: ``(x, y, z)`` T2W intensities.
    dwi: ``(x, y, z)`` high-b DWI on the T2W grid (zeros when absent).
    adc: ``(x, y, z)`` ADC on the T2W grid.
    zones: ``(x, y, z)`` uint8 zonal labels 0 / 1 TZ / 2 PZ.
    lesions: ``(x, y, z)`` uint8 csPCa mask 0 / 1.
    spacing: T2W voxel spacing (mm).
    affine: T2W 4x4 voxel-to-world matrix.
    case_id: the case id.
    patient_label: 0 / 1.
  """

  t2w: np.ndarray
  dwi: np.ndarray
  adc: np.ndarray
  zones: np.ndarray
  lesions: np.ndarray
  spacing: np.ndarray
  affine: np.ndarray
  case_id: str
  patient_label: int


def walk(root: str) -> list[str]:
  """Every file under ``root`` (following links), sorted, hidden entries skipped."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
  return sorted(out)


def find_path(directory: str, *parts: str) -> str | None:
  """``directory/part/...`` with every part matched by `_prostatex.find_child`, or None."""
  for part in parts:
    found = _prostatex.find_child(directory, part)
    if found is None:
      return None
    directory = found
  return directory


def read_csv(path: str) -> list[dict[str, str]]:
  """The rows of a CSV file (BOM-tolerant) with stripped keys and values."""
  with open(path, encoding="utf-8-sig", newline="") as f:
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(f)]


def column(row: Mapping[str, str], *names: str) -> str | None:
  """The first of ``names`` in ``row`` (keys compared lower-case, ``_`` as a space), or None."""
  lowered = {k.lower().replace("_", " "): v for k, v in row.items()}
  for name in names:
    if name in lowered:
      return lowered[name]
  return None


def load(path: str, hint: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(array, spacing, RAS affine)`` of a NIfTI file, or of a ``.mha`` / ``.mhd`` (SimpleITK)."""
  with _common.append_to_errors(f" {hint}"):
    if _itk.is_itk_file(path):
      return _itk.read_image(
          path, reader="prostatex_bpmri (config 'picai') reads the PI-CAI .mha images")
    return preprocess.load_nifti(path)


def image_on_grid(path: str | None, shape: Sequence[int], affine: np.ndarray,
                  hint: str) -> np.ndarray:
  """The image at ``path`` resampled (linear) onto the grid ``(shape, affine)``; None: zeros."""
  if path is None:
    return np.zeros(shape, np.float32)
  data, _, aff = load(path, hint)
  return preprocess.resample_to_reference(data, aff, reference_shape=shape,
                                          reference_affine=affine, order=1)


def finish(release: _common.ManualRelease, manual_dir: str, cases: list[Case],
           incomplete: list[str], total: int, cfg: ProstatexBpmriConfig) -> list[Case]:
  """Raises for incomplete patients (or logs and drops them with ``skip_incomplete``)."""
  if incomplete and (not cfg.skip_incomplete or not cases):
    raise release.error(
        manual_dir, missing=incomplete,
        problem=(
            f"{len(incomplete)} of {total} patients in {manual_dir} are incomplete"
            + (" (and none is complete)" if not cases else "")
            + ". Add the missing files (or pass skip_incomplete=True to leave those patients "
            "out" + ("; require_dwi=False accepts a missing DWI" if cfg.require_dwi else "")
            + ")."
        ),
    )
  if incomplete:
    logging.warning("prostatex_bpmri: leaving out %d of %d incomplete patients: %s",
                    len(incomplete), total, incomplete[:20])
  return cases
