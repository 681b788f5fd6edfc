"""The ``picai`` config's reader: the PI-CAI public images with the ``picai_labels`` repository.

`find_cases` pairs, per ``<patient>_<study>``, the T2W / ADC / ``hbv`` images found anywhere
under the manual directory with the zonal labels of one AI model, the lesion labels of one
annotation (`lesion_kind`: ISUP grades or binary; the AI delineation when a case has none) and
the marksheet's ``case_csPCa``, optionally leaving out the ProstateX exams listed in a mapping
file (`prostatex_mapping`); `read_case` reads one exam onto its T2W grid. The layout and the
rules are those of the module docstring of `datasets.prostatex_bpmri.prostatex_bpmri`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from absl import logging
import numpy as np

from datasets import _common
from datasets import _exclude
from datasets import _volumes
from datasets.prostatex_bpmri import _release_files
from datasets.prostatex_bpmri._release_files import ADC, DWI, T2W, Case
from jaxseg.data import preprocess

if TYPE_CHECKING:
  from datasets.prostatex_bpmri.prostatex_bpmri import ProstatexBpmriConfig

__all__ = [
    "find_cases",
    "known_label",
    "labels_root",
    "lesion_from_file",
    "lesion_kind",
    "prostatex_mapping",
    "read_case",
    "read_marksheet",
]

_PICAI_IMAGE = re.compile(r"^(\d+_\d+)(?:_.*)?_(t2w|adc|hbv)\.(?:nii(?:\.gz)?|mha|mhd)$",
                          re.IGNORECASE)
_PICAI_ID = re.compile(r"^\d+_\d+$")
_LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha")
_ISUP_ANNOTATIONS = ("human_expert/original", "human_expert/resampled")


def lesion_kind(annotation: str) -> str:
  """The kind of a PI-CAI lesion annotation's files, from its folder name (module docstring).

  Args:
    annotation: the folder under ``csPCa_lesion_delineations/``, e.g.
      ``"human_expert/resampled"``.

  Returns:
    ``"isup"`` for ``human_expert/original`` and ``human_expert/resampled`` (0 = no csPCa,
    2-5 = ISUP grade; csPCa = ``>= 2``), ``"binary"`` for every other one (non-zero = csPCa:
    ``human_expert/Pooch25``, ``AI/Bosma22a``, ...). Case-insensitive.
  """
  name = "/".join(p for p in annotation.replace("\\", "/").lower().split("/") if p)
  return "isup" if name in _ISUP_ANNOTATIONS else "binary"


def lesion_from_file(path: str, kind: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
  """``(mask, affine)``: csPCa (bool) from a lesion file, ISUP labels >= 2 or binary > 0.

  An ISUP file holding the value 1 is an error: delineated lesions are ISUP 2-5, while 1 is the
  lesion value of binary masks (e.g. human_expert/Pooch25), which ``>= 2`` would empty.
  """
  data, _, affine = _release_files.load(path, f"(lesion label of case {case_id})")
  if kind == "isup":
    lab = preprocess.validate_label(data, 6, name=f"{path} (ISUP 0-5)")
    if np.any(lab == 1):
      raise ValueError(
          f"Lesion label {path} (case {case_id}) contains the value 1, which ISUP lesion labels "
          "(0, 2-5) never use: it looks like a binary mask; set lesion_annotation to the binary "
          "annotation it belongs to (e.g. lesion_annotation='human_expert/Pooch25' or "
          "'AI/Bosma22a'), or move it out of the ISUP folder.")
    return lab >= 2, affine
  _volumes.check_finite(data, f"lesion mask {path}", case_id)
  return np.asarray(data) > 0, affine


def known_label(case: Case) -> int:
  """The patient label for stratification (reads the lesion file when it is not known).

  A ProstateX case always carries its label; a PI-CAI case does when the marksheet lists it.
  """
  if case.patient_label is not None:
    return case.patient_label
  return int(any(lesion_from_file(p, case.lesion_kind, case.case_id)[0].any()
                 for p in case.lesions))


def labels_root(files: list[str], manual_dir: str) -> str | None:
  """The folder holding ``anatomical_delineations/`` / ``csPCa_lesion_delineations/``."""
  roots = set()
  for path in files:
    parts = os.path.relpath(path, manual_dir).split(os.sep)
    for i, part in enumerate(parts[:-1]):
      if part.lower() in ("anatomical_delineations", "cspca_lesion_delineations"):
        roots.add(os.path.join(manual_dir, *parts[:i]))
        break
  if not roots:
    return None
  return min(roots, key=lambda r: (r.count(os.sep), r))


def read_marksheet(files: list[str]) -> dict[str, int]:
  """``{patient_study: case_csPCa}`` from every ``marksheet*.csv`` found."""
  out: dict[str, int] = {}
  for path in files:
    name = os.path.basename(path).lower()
    if not (name.startswith("marksheet") and name.endswith(".csv")):
      continue
    for row in _release_files.read_csv(path):
      pid = _release_files.column(row, "patient id")
      sid = _release_files.column(row, "study id")
      value = (_release_files.column(row, "case cspca") or "").upper()
      if pid and sid and value in ("YES", "NO"):
        out[f"{pid}_{sid}"] = int(value == "YES")
  return out


def prostatex_mapping(files: list[str]) -> tuple[set[str], list[str]]:
  """PI-CAI patient ids in every ``*prostatex*mapping*.json`` / ``.csv``, and those files.

  JSON: every key or value (at any depth) that is a PI-CAI ``<patient>_<study>`` id, as in
  ``ProstateX-mapping.json`` (``{"ProstateX-0000_07-07-2011": "11373_1001396", ...}``). CSV:
  every such cell, and the ``patient_id`` column.
  """
  patients: set[str] = set()
  used = []
  for path in files:
    name = os.path.basename(path).lower()
    if not ("prostatex" in name and "mapping" in name and name.endswith((".json", ".csv"))):
      continue
    used.append(path)
    found: list[str] = []
    if name.endswith(".json"):
      try:
        with open(path, encoding="utf-8-sig") as f:
          data = json.load(f)
      except (OSError, ValueError) as e:
        raise ValueError(f"Cannot read the ProstateX mapping {path} (not JSON?): {e}; fix or "
                         "remove it, or set exclude_prostatex=False.") from e
      stack = [data]
      while stack:
        item = stack.pop()
        if isinstance(item, dict):
          found.extend(str(k) for k in item)
          stack.extend(item.values())
        elif isinstance(item, list):
          stack.extend(item)
        elif isinstance(item, (str, int)):
          found.append(str(item))
    else:
      for row in _release_files.read_csv(path):
        found.extend(row.values())
        pid = _release_files.column(row, "patient id")
        if pid and pid.isdigit():
          patients.add(pid)
    patients.update(v.strip().split("_")[0] for v in found if _PICAI_ID.match(v.strip()))
  if used and not patients:
    raise ValueError(f"The ProstateX mapping file(s) {used} name no PI-CAI <patient>_<study> id; "
                     "fix them, or set exclude_prostatex=False.")
  return patients, used


def find_cases(manual_dir: str, cfg: ProstatexBpmriConfig,
               release: _common.ManualRelease) -> list[Case]:
  """Pairs PI-CAI images, zonal and lesion labels and the marksheet (builder module docstring).

  Args:
    manual_dir: the manual directory.
    cfg: the build's config (``zonal_model``, ``lesion_annotation``, ``exclude_ids``,
      ``exclude_prostatex``, ``require_dwi``, ``skip_incomplete``).
    release: the ``picai`` release, for the missing-data errors.

  Returns:
    The complete exams, sorted by case id.

  Raises:
    FileNotFoundError: no images, labels, zonal model or lesion annotation folder, no mapping
      for ``exclude_prostatex``, or incomplete exams (unless ``skip_incomplete``).
    ValueError: ``exclude_prostatex`` leaves no exam, or an unreadable mapping file.
  """
  files = _release_files.walk(manual_dir)
  images: dict[str, dict[str, str]] = {}
  duplicates: dict[tuple[str, str], list[str]] = {}
  for path in files:
    m = _PICAI_IMAGE.match(os.path.basename(path))
    if m is not None:
      modality = {"t2w": T2W, "adc": ADC, "hbv": DWI}[m.group(2).lower()]
      chosen = images.setdefault(m.group(1), {}).setdefault(modality, path)
      if chosen != path:
        duplicates.setdefault((m.group(1), modality), [chosen]).append(path)
  if not images:
    raise release.error(
        manual_dir,
        missing=[os.path.join(manual_dir, "picai_public_images_fold0", "<patient>",
                              "<patient>_<study>_t2w.mha")],
        problem=(f"No <patient>_<study>_{{t2w,adc,hbv}}.mha (or .nii / .nii.gz) image found "
                 f"under {manual_dir}; unzip the PI-CAI picai_public_images_fold*.zip there."),
    )
  for (case_id, modality), paths in sorted(duplicates.items()):
    logging.warning("case %s: %d %s files %s; using the first, %s.", case_id, len(paths),
                    modality.upper(), paths, paths[0])
  labels = labels_root(files, manual_dir)
  if labels is None:
    raise release.error(
        manual_dir,
        missing=[os.path.join(manual_dir, "picai_labels", "anatomical_delineations") + os.sep,
                 os.path.join(manual_dir, "picai_labels", "csPCa_lesion_delineations") + os.sep],
        problem=f"No PI-CAI labels (anatomical_delineations/, csPCa_lesion_delineations/) "
                f"found under {manual_dir}.",
    )
  find_path = _release_files.find_path
  zonal_ai = find_path(labels, "anatomical_delineations", "zonal_pz_tz", "AI")
  zonal_dir = find_path(zonal_ai, *cfg.zonal_model.split("/")) if zonal_ai else None
  if zonal_dir is None or not os.path.isdir(zonal_dir):
    available = sorted(os.listdir(zonal_ai)) if zonal_ai and os.path.isdir(zonal_ai) else []
    raise release.error(
        manual_dir,
        missing=[os.path.join(labels, "anatomical_delineations", "zonal_pz_tz", "AI",
                              cfg.zonal_model) + os.sep],
        problem=(f"No zonal labels of model {cfg.zonal_model!r} under {labels} (available: "
                 f"{available or 'none'}; choose one with zonal_model=...)."),
    )
  lesion_root = find_path(labels, "csPCa_lesion_delineations")
  lesion_dir = find_path(lesion_root, *cfg.lesion_annotation.split("/")) if lesion_root else None
  if lesion_root is not None and (lesion_dir is None or not os.path.isdir(lesion_dir)):
    available = sorted(
        f"{a}/{b}" for a in os.listdir(lesion_root) if os.path.isdir(os.path.join(lesion_root, a))
        for b in os.listdir(os.path.join(lesion_root, a))
        if os.path.isdir(os.path.join(lesion_root, a, b)))
    raise release.error(
        manual_dir,
        missing=[os.path.join(lesion_root, cfg.lesion_annotation) + os.sep],
        problem=(f"No lesion annotation {cfg.lesion_annotation!r} under {lesion_root} "
                 f"(available: {available or 'none'}; choose one with lesion_annotation=..., "
                 "or update picai_labels: human_expert/Pooch25 was added in 2025)."),
    )
  ai_dir = find_path(lesion_root, "AI", "Bosma22a") if lesion_root else None
  kind_of_annotation = lesion_kind(cfg.lesion_annotation)
  marksheet = read_marksheet(files)

  def patient_of(case_id: str) -> tuple[str]:
    return (case_id.split("_")[0],)

  dataset = "prostatex_bpmri (picai)"
  images = _exclude.exclude_cases(images, cfg.exclude_ids, dataset=dataset, aliases=patient_of)
  if cfg.exclude_prostatex:
    patients, mapping_files = prostatex_mapping(files)
    if not mapping_files:
      raise release.error(
          manual_dir, missing=[os.path.join(manual_dir, "ProstateX-mapping.json")],
          problem=(f"exclude_prostatex=True needs a ProstateX mapping (a *prostatex*mapping*.json"
                   f" or .csv naming PI-CAI <patient>_<study> ids) under {manual_dir}; add one, "
                   "or list the cases in exclude_ids instead."),
      )
    n_before = len(images)
    images = {c: v for c, v in images.items() if patient_of(c)[0] not in patients}
    logging.info("%s: exclude_prostatex leaves out %d of %d cases (ProstateX patients in %s).",
                 dataset, n_before - len(images), n_before, mapping_files)
    if not images:
      raise ValueError(f"exclude_prostatex=True leaves none of the {n_before} cases of {dataset} "
                       f"in {manual_dir} (all are ProstateX patients listed in {mapping_files}).")

  def label_file(folder: str | None, case_id: str) -> str | None:
    if folder is None:
      return None
    for ext in _LABEL_SUFFIXES:
      path = os.path.join(folder, case_id + ext)
      if os.path.isfile(path):
        return path
    return None

  cases, incomplete = [], []
  for case_id in sorted(images):
    problems = []
    found = images[case_id]
    for modality, suffix in ((T2W, "t2w"), (ADC, "adc"), (DWI, "hbv")):
      if modality not in found and (modality != DWI or cfg.require_dwi):
        problems.append(f"{case_id}: no image **/{case_id}_{suffix}.mha (or .nii.gz)")
    zonal = label_file(zonal_dir, case_id)
    if zonal is None:
      problems.append(f"{case_id}: no zonal label {os.path.join(zonal_dir, case_id)}.nii.gz")
    lesion, kind = label_file(lesion_dir, case_id), kind_of_annotation
    known = marksheet.get(case_id)
    if lesion is None and known != 0:
      lesion, kind = label_file(ai_dir, case_id), "binary"
      if lesion is None:
        problems.append(
            f"{case_id}: no lesion label "
            f"{os.path.join(lesion_root or labels, cfg.lesion_annotation, case_id)}.nii.gz "
            "(and no AI/Bosma22a one, and the marksheet does not say case_csPCa = NO)")
      else:
        logging.warning("case %s: no %s lesion label; using the AI delineation %s.", case_id,
                        cfg.lesion_annotation, lesion)
    if problems:
      incomplete.extend(problems)
      continue
    cases.append(Case(
        case_id=case_id, t2w=found[T2W], adc=found[ADC], dwi=found.get(DWI),
        zonal=(zonal,), lesions=() if lesion is None else (lesion,),
        lesion_kind="none" if lesion is None else kind, patient_label=known,
    ))
  n_bad = len({p.split(":")[0] for p in incomplete})
  return _release_files.finish(release, manual_dir, cases, incomplete, len(cases) + n_bad, cfg)


def read_case(case: Case, hint: str, *,
              remap_zones: Callable[..., np.ndarray]) -> _release_files.OnT2wGrid:
  """One exam of `find_cases` on its T2W grid (nearest for the labels, linear for images).

  Args:
    case: the exam.
    hint: appended to the errors of reading the images (names the case and the releases).
    remap_zones: the builder's map of the PI-CAI zone values (0, 1 = PZ, 2 = TZ) to its own
      (``remap_picai_zones(label, name=...)``), applied on the zonal file's grid, before it is
      resampled.

  Returns:
    The exam's volumes; the patient label is the marksheet's, else whether the csPCa mask is
    non-empty (a marksheet that disagrees with the mask is logged).

  Raises:
    ValueError: unreadable or non-finite files, zone values outside 0..2, or an ISUP lesion
      file holding the value 1 (`lesion_from_file`).
  """
  load = _release_files.load
  t2w, spacing, affine = load(case.t2w, hint)
  adc = _release_files.image_on_grid(case.adc, t2w.shape, affine, hint)
  dwi = _release_files.image_on_grid(case.dwi, t2w.shape, affine, hint)
  zonal, _, zonal_affine = load(case.zonal[0], hint)
  zones = remap_zones(zonal, name=f"{case.zonal[0]} (PI-CAI zones 0 / 1 PZ / 2 TZ)")
  zones = preprocess.resample_to_reference(zones, zonal_affine, reference_shape=t2w.shape,
                                           reference_affine=affine, order=0)
  lesions = np.zeros(t2w.shape, bool)
  for path in case.lesions:
    mask, lesion_affine = lesion_from_file(path, case.lesion_kind, case.case_id)
    lesions |= preprocess.resample_to_reference(mask.astype(np.uint8), lesion_affine,
                                                reference_shape=t2w.shape,
                                                reference_affine=affine, order=0).astype(bool)
  label = case.patient_label
  if label is None:
    label = int(lesions.any())
  elif label != int(lesions.any()):
    logging.warning("case %s: marksheet case_csPCa = %s but the csPCa mask is %s.",
                    case.case_id, "YES" if label else "NO",
                    "empty" if label else "not empty")
  return _release_files.OnT2wGrid(
      t2w=t2w, dwi=dwi, adc=adc, zones=zones, lesions=lesions.astype(np.uint8),
      spacing=spacing, affine=affine, case_id=case.case_id, patient_label=int(label))
