"""The ``prostatex`` config's reader: PROSTATEx_masks annotations with the TCIA ProstateX images.

`find_cases` pairs, per patient, the zonal masks of ``Files/prostate/mask_{pz,tz}``, the rows
of ``PROSTATEx_Classes.csv``, the lesion masks of the clinically significant findings and the
T2W / ADC / DWI images found anywhere under the manual directory (the layout and the rules of
the module docstring of `datasets.prostatex_bpmri.prostatex_bpmri`); `read_case` reads one
patient onto its T2W grid.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from absl import logging
import numpy as np

from datasets import _common
from datasets import _exclude
from datasets import _prostatex
from datasets import _volumes
from datasets.prostatex_bpmri import _release_files
from datasets.prostatex_bpmri._release_files import ADC, DWI, T2W, Case
from jaxseg.data import preprocess

if TYPE_CHECKING:
  from datasets.prostatex_bpmri.prostatex_bpmri import ProstatexBpmriConfig

__all__ = ["find_cases", "read_case"]

_FINDING = re.compile(r"prostatex[-_ ]?(\d{1,4})[-_ ]?finding[-_ ]?(\d+)", re.IGNORECASE)
_NAME_HINT = {T2W: "t2", ADC: "adc", DWI: "bval"}
_TRUE = {"true", "1", "yes", "y", "t"}


def _modality(path: str, root: str) -> str | None:
  """T2W / DWI / ADC from the file name, else from the parent folders (None: not an image)."""
  name = _prostatex.nifti_stem(path).lower()
  if re.search(r"roi|mask|label|seg", name):
    return None
  if re.search(r"adc|diffusion_coefficient", name):
    return ADC
  if re.search(r"bval|hbv|dwi|trace|(?:^|[^a-z0-9])b\d{3,4}(?![0-9])", name):
    return DWI
  if "t2" in name:
    return T2W
  for folder in reversed(os.path.relpath(os.path.dirname(path), root).lower().split(os.sep)):
    if folder in ("adc",):
      return ADC
    if folder in ("dwi", "hbv", "bval", "highb", "high_b"):
      return DWI
    if folder in ("t2", "t2w"):
      return T2W
  return None


def _pick_series(case_id: str, modality: str, paths: list[str], preferred: set[str],
                 listed: set[str]) -> tuple[str | None, str | None]:
  """``(path, problem)``: the one series of a modality (one stem; or the listed one)."""
  by_stem: dict[str, str] = {}
  for p in paths:
    by_stem.setdefault(_prostatex.nifti_stem(p).lower(), p)
  if len(by_stem) == 1:
    return next(iter(by_stem.values())), None
  for names in (preferred, listed):
    chosen = [s for s in by_stem if s in names]
    if len(chosen) == 1:
      return by_stem[chosen[0]], None
  return None, (f"{case_id}: several {modality.upper()} series {sorted(by_stem.values())} and "
                "none is singled out by an image_list.csv; keep one of them")


def _image_lists(files: list[str], zonal_root: str) -> tuple[set[str], set[str]]:
  """Series named in the ``image_list.csv`` next to the zonal masks, and in any other one."""
  preferred, listed = set(), set()
  for path in files:
    if "image_list" not in os.path.basename(path).lower() or not path.lower().endswith(".csv"):
      continue
    with open(path, encoding="utf-8-sig") as f:
      cells = {_prostatex.nifti_stem(c.strip().strip('"')).lower() for line in f
               for c in re.split(r"[,;\t]", line) if c.strip()}
    here = os.path.normpath(os.path.dirname(path)) == os.path.normpath(zonal_root)
    (preferred if here else listed).update(cells)
  return preferred, listed


def _read_classes(path: str) -> dict[str, dict[int, bool]]:
  """``{patient: {finding: clinically significant}}`` from ``PROSTATEx_Classes.csv``."""
  out: dict[str, dict[int, bool]] = {}
  for row in _release_files.read_csv(path):
    ident = _release_files.column(row, "id", "proxid")
    m = _FINDING.search(ident or "")
    if m is None:
      continue
    case_id = f"ProstateX-{int(m.group(1)):04d}"
    sig = (_release_files.column(row, "clinically significant", "clinsig") or "").lower() in _TRUE
    ggg = _release_files.column(row, "gleason grade group", "ggg", "isup") or ""
    if ggg.isdigit() and int(ggg) >= 2:
      sig = True
    out.setdefault(case_id, {})[int(m.group(2))] = sig
  return out


def find_cases(manual_dir: str, cfg: ProstatexBpmriConfig,
               release: _common.ManualRelease) -> list[Case]:
  """Pairs zonal masks, classes, lesion masks and images (the builder's module docstring).

  Args:
    manual_dir: the manual directory.
    cfg: the build's config (``exclude_ids``, ``require_dwi``, ``skip_incomplete``).
    release: the ``prostatex`` release, for the missing-data errors.

  Returns:
    The complete patients, sorted by case id.

  Raises:
    FileNotFoundError: no zonal masks or classes file, or incomplete patients (unless
      ``skip_incomplete``).
  """
  root = _prostatex.prostate_folder(manual_dir, "mask_pz", "mask_tz")
  if root is None:
    raise release.error(
        manual_dir,
        missing=[os.path.join(manual_dir, "Files", "prostate", d) + os.sep
                 for d in ("mask_pz", "mask_tz")],
        problem=f"No Files/prostate/mask_pz/ and mask_tz/ folders found under {manual_dir}.",
    )
  files = _release_files.walk(manual_dir)
  zonal: dict[str, dict[str, str]] = {}
  for kind in ("pz", "tz"):
    folder = os.path.normpath(_prostatex.find_child(root, f"mask_{kind}"))
    for path in files:
      if os.path.normpath(os.path.dirname(path)) == folder and _prostatex.NIFTI.search(path):
        case_id = _prostatex.canonical_case_id(path)
        if case_id is not None:
          zonal.setdefault(case_id, {}).setdefault(kind, path)
  if not zonal:
    raise release.error(
        manual_dir,
        missing=[os.path.join(root, "mask_pz", "ProstateX-XXXX_pz.nii.gz")],
        problem=f"No ProstateX-XXXX_pz/_tz.nii.gz mask found in {root}/mask_pz, mask_tz.",
    )
  classes_path = next((p for p in files
                       if os.path.basename(p).lower() == "prostatex_classes.csv"), None)
  if classes_path is None:
    raise release.error(
        manual_dir,
        missing=[os.path.join(manual_dir, "Files", "lesions", "PROSTATEx_Classes.csv")],
        problem=f"PROSTATEx_Classes.csv not found under {manual_dir}.",
    )
  classes = _read_classes(classes_path)

  # Lesion masks per (patient, finding): T2 grid preferred, else ADC grid.
  finding_masks: dict[tuple[str, int], dict[str, str]] = {}
  images: dict[str, dict[str, list[str]]] = {}
  for path in files:
    if not _prostatex.NIFTI.search(path):
      continue
    parts = os.path.relpath(path, manual_dir).lower().split(os.sep)
    m = _FINDING.search(os.path.basename(path))
    if m is not None and "masks" in parts:
      key = (f"ProstateX-{int(m.group(1)):04d}", int(m.group(2)))
      grid = "adc" if "adc" in parts[:-1] else "t2"
      finding_masks.setdefault(key, {}).setdefault(grid, path)
      continue
    if any(p.startswith("mask") for p in parts[:-1]) or m is not None:
      continue
    case_id = _prostatex.canonical_case_id(path)
    modality = _modality(path, manual_dir)
    if case_id is not None and modality is not None:
      images.setdefault(case_id, {}).setdefault(modality, []).append(path)
  preferred, listed = _image_lists(files, root)
  zonal = _exclude.exclude_cases(dict(sorted(zonal.items())), cfg.exclude_ids,
                                 dataset="prostatex_bpmri (prostatex)")

  cases, incomplete = [], []
  for case_id in sorted(zonal):
    problems = []
    z = zonal[case_id]
    for kind in ("pz", "tz"):
      if kind not in z:
        problems.append(f"{case_id}: no {kind.upper()} mask "
                        f"{os.path.join(root, 'mask_' + kind, f'{case_id}_{kind}.nii.gz')}")
    chosen = {}
    for modality in (T2W, ADC, DWI):
      paths = images.get(case_id, {}).get(modality, [])
      if not paths:
        if modality != DWI or cfg.require_dwi:
          problems.append(f"{case_id}: no {modality.upper()} image "
                          f"(**/{case_id}*{_NAME_HINT[modality]}*.nii.gz)")
        chosen[modality] = None
        continue
      path, problem = _pick_series(case_id, modality, paths, preferred, listed)
      if problem:
        problems.append(problem)
      chosen[modality] = path
    findings = classes.get(case_id)
    masks = []
    if findings is None:
      problems.append(f"{case_id}: no row in {classes_path}")
    else:
      for finding, significant in sorted(findings.items()):
        if not significant:
          continue
        grids = finding_masks.get((case_id, finding), {})
        mask = grids.get("t2") or grids.get("adc")
        if mask is None:
          problems.append(f"{case_id}: no lesion mask for clinically significant finding "
                          f"{finding} (Files/lesions/Masks/T2/{case_id}-Finding{finding}-"
                          "*.nii.gz)")
        else:
          masks.append(mask)
    if problems:
      incomplete.extend(problems)
      continue
    cases.append(Case(
        case_id=case_id, t2w=chosen[T2W], adc=chosen[ADC], dwi=chosen[DWI],
        zonal=(z["pz"], z["tz"]), lesions=tuple(masks), lesion_kind="binary",
        patient_label=int(any(findings.values())),
    ))
  unused = sorted(set(images) - set(zonal) - set(cfg.exclude_ids))
  if unused:
    logging.info("prostatex_bpmri: %d patient(s) with images but no zonal masks ignored: %s",
                 len(unused), unused[:20])
  n_bad = len({p.split(":")[0] for p in incomplete})
  return _release_files.finish(release, manual_dir, cases, incomplete, len(cases) + n_bad, cfg)


def _binary_on_grid(path: str, shape, affine, case_id: str, hint: str) -> np.ndarray:
  data, _, aff = _release_files.load(path, hint)
  _volumes.check_finite(data, f"mask {path}", case_id)
  mask = (np.asarray(data) > 0).astype(np.uint8)
  return preprocess.resample_to_reference(mask, aff, reference_shape=shape,
                                          reference_affine=affine, order=0).astype(bool)


def read_case(case: Case, hint: str) -> _release_files.OnT2wGrid:
  """One patient of `find_cases` on its T2W grid (nearest for the masks, linear for images).

  The zones are 2 where the PZ mask is set and 1 (TZ) where the TZ mask is (overlapping voxels
  go to the TZ); the csPCa mask is the union of the finding masks.

  Args:
    case: the patient.
    hint: appended to the errors (names the case and where its files come from).

  Returns:
    The patient's volumes.

  Raises:
    ValueError: unreadable or non-finite files, or zonal masks empty on the T2W grid.
  """
  t2w, spacing, affine = _release_files.load(case.t2w, hint)
  adc = _release_files.image_on_grid(case.adc, t2w.shape, affine, hint)
  dwi = _release_files.image_on_grid(case.dwi, t2w.shape, affine, hint)
  pz = _binary_on_grid(case.zonal[0], t2w.shape, affine, case.case_id, hint)
  tz = _binary_on_grid(case.zonal[1], t2w.shape, affine, case.case_id, hint)
  if not (pz.any() or tz.any()):
    raise ValueError(f"case {case.case_id}: the zonal masks {case.zonal} are empty on the "
                     f"grid of T2W {case.t2w} (different scanner frame?). {hint}")
  zones = np.zeros(t2w.shape, np.uint8)
  zones[pz] = 2
  zones[tz] = 1  # Overlapping voxels (annotation noise) go to the TZ.
  lesions = np.zeros(t2w.shape, bool)
  for path in case.lesions:
    mask = _binary_on_grid(path, t2w.shape, affine, case.case_id, hint)
    if not mask.any():
      logging.warning("case %s: lesion mask %s is empty on the T2W grid.", case.case_id, path)
    lesions |= mask
  return _release_files.OnT2wGrid(
      t2w=t2w, dwi=dwi, adc=adc, zones=zones, lesions=lesions.astype(np.uint8),
      spacing=spacing, affine=affine, case_id=case.case_id,
      patient_label=int(case.patient_label))
