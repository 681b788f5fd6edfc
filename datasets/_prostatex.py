"""What ``prostatex_gland`` and ``prostatex_bpmri`` share: reading the PROSTATEx_masks repository.

Both builders read the annotations of PROSTATEx_masks (Cuocolo et al., CC BY 4.0, `MASKS_URL`)
with the images of TCIA PROSTATEx (`TCIA_URL`). The repository's file names are not fully
consistent (``ProstateX-080.nii.gz``, ``ProstateX-0191_t2_tse_tra_Grappa3_2.nii.gz``), so ids
are parsed leniently (`canonical_case_id`), folders are matched case-insensitively
(`find_child`), and `prostate_folder` finds ``Files/prostate`` wherever the repository was put.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "MASKS_URL",
    "NIFTI",
    "TCIA_URL",
    "canonical_case_id",
    "find_child",
    "nifti_stem",
    "prostate_folder",
]

MASKS_URL = "https://github.com/rcuocolo/PROSTATEx_masks"
TCIA_URL = "https://doi.org/10.7937/K9TCIA.2017.MURS5CL"

NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)
"""Matches the extension of a NIfTI file name (``.nii`` or ``.nii.gz``, any case)."""

_PROSTATEX_ID = re.compile(r"prostatex[-_ ]?(\d{1,4})(?!\d)", re.IGNORECASE)


def canonical_case_id(name: str) -> str | None:
  """``ProstateX-%04d`` for a file name or series name holding a PROSTATEx id, else None.

  The id is ``ProstateX`` + 1-4 digits, any case, with ``-``, ``_``, a space or nothing in
  between: ``"ProstateX-080.nii.gz"`` -> ``"ProstateX-0080"``;
  ``"prostatex_0191_t2_tse_tra_Grappa3_2"`` -> ``"ProstateX-0191"``; ``"image_list.csv"`` ->
  None.
  """
  m = _PROSTATEX_ID.search(os.path.basename(name))
  return f"ProstateX-{int(m.group(1)):04d}" if m else None


def nifti_stem(path: str) -> str:
  """The file name without its folder and its ``.nii`` / ``.nii.gz`` extension."""
  return NIFTI.sub("", os.path.basename(path))


def find_child(directory: str, name: str) -> str | None:
  """``directory/name`` matched case-insensitively (exact spelling first), or None."""
  exact = os.path.join(directory, name)
  if os.path.exists(exact):
    return exact
  if not os.path.isdir(directory):
    return None
  for entry in sorted(os.listdir(directory)):
    if entry.lower() == name.lower():
      return os.path.join(directory, entry)
  return None


def prostate_folder(manual_dir: str, *folders: str) -> str | None:
  """The folder holding all of ``folders`` (e.g. ``mask_prostate``), or None.

  Looked for, in this order: ``<manual_dir>/Files/prostate`` (the repository's layout),
  ``<manual_dir>`` itself, ``<manual_dir>/prostate``, and ``<manual_dir>/*/Files/prostate``
  (e.g. ``PROSTATEx_masks-master/`` from GitHub's zip).
  """
  candidates = [os.path.join(manual_dir, "Files", "prostate"), manual_dir,
                os.path.join(manual_dir, "prostate")]
  if os.path.isdir(manual_dir):
    for entry in sorted(os.listdir(manual_dir)):
      candidates.append(os.path.join(manual_dir, entry, "Files", "prostate"))
  for candidate in candidates:
    found = [find_child(candidate, folder) for folder in folders]
    if all(f is not None and os.path.isdir(f) for f in found):
      return candidate
  return None
