"""tfds builder ``male_pelvic_mr``: T2w MR of the male pelvis with 9-class labels (seed ``000``).

Configs:

* ``phantom`` (default): ``num_cases`` synthetic cases from
  `jaxseg.data.phantoms.pelvis.make_pelvis_case` with seeds ``base_seed + i`` (case ids
  ``phantom-{seed:04d}``), so every test, example and CPU preset runs without downloads.
* ``zenodo``: Zenodo record 7013610, "Cross-institution Male Pelvic Structures" (589 T2w cases
  from 7 institutions), read from the manual directory in its published layout::

    <manual_dir>/data/{uid}_img.nii     (uid = 6 digits, e.g. 001000)
    <manual_dir>/data/{uid}_mask.nii    (labels 0..8 on the image grid)
    <manual_dir>/institution.txt        (one "uid institution" line per case)

  or ``<manual_dir>/data.zip`` as downloaded (read in place; files are extracted one at a time
  to a temporary directory that is removed afterwards). ``institution.txt`` may also sit inside
  ``data/`` or the zip.

Overlapping releases. The Zenodo release includes cases of other public prostate collections,
PROMISE12 among them (see the record's description and ``institution.txt``): a model trained
here and tested on ``promise12`` (or the reverse) is tested on patients it has seen.
``exclude_ids`` (a tuple of case ids: Zenodo uids such as ``"001000"``, zero-padded when given
as numbers, or phantom ids ``phantom-XXXX``) leaves those cases out before the split; the number
left out is logged, and an id that matches no case is a logged warning. It is one of the
config's settings, so an excluded build gets its own cache name.

Preprocessing (REFERENCE §1, `jaxseg.data.preprocess`): resample to ``target_spacing``
(0.75 x 0.75 x 3 mm; linear for images, nearest for labels) with the affine updated to match,
clip to the 0.5-99.5 intensity percentiles and z-score, then a random 80/10/10 split by case
with seed 42 (``split_by="institution"``: stratified by institution) into the tfds splits
``train``, ``validation`` and ``test``.

Features: ``image`` float32 ``(x, y, z)``, ``label`` uint8 ``(x, y, z)``, ``case_id`` and
``institution`` (text; ``"phantom"`` for phantoms), ``spacing`` float32 ``(3,)`` (the target
spacing), ``affine`` float64 ``(4, 4)`` (voxel to world, mm).

Custom settings (e.g. tiny phantoms in tests) must use a distinct config name so that cached
builds never mix: ``MalePelvicMrConfig.replace(**settings)`` derives one from the settings
(``load(**settings)`` does it for you), and `datasets._common.prepare` refuses a cached build
whose recorded settings differ from the config's.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import zipfile
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _exclude
from datasets import _volumes
from jaxseg import hierarchy
from jaxseg.data import preprocess

__all__ = [
    "MalePelvicMr",
    "MalePelvicMrConfig",
    "NUM_CLASSES",
    "PHANTOM",
    "ZENODO",
    "ZENODO_LAYOUT",
    "ZENODO_URL",
    "preprocess_case",
]

NUM_CLASSES = len(hierarchy.PELVIS_CLASSES)
"""Number of label classes (0 background ... 8 neurovascular bundle)."""

ZENODO_URL = "https://zenodo.org/records/7013610"
ZENODO_SOURCE = f"data.zip (and institution.txt) from Zenodo record 7013610, {ZENODO_URL}"
ZENODO_LAYOUT = """\
<manual_dir>/
  data/{uid}_img.nii     T2w image, uid = 6 digits (e.g. 001000)
  data/{uid}_mask.nii    labels 0..8 on the same grid
  institution.txt        one line "uid institution" per case
(or <manual_dir>/data.zip as downloaded, not extracted)"""

_VERSION = tfds.core.Version("1.1.0")
_RELEASE_NOTES = {
    "1.0.0": "Initial release: phantom and zenodo configs.",
    "1.1.0": "exclude_ids setting (leave out cases shared with other releases).",
}
_CASE_FILE = re.compile(r"^(\d{6})_(img|mask)\.nii(\.gz)?$")
_UID = re.compile(r"^\d{6}$")


@dataclasses.dataclass(eq=False)
class MalePelvicMrConfig(_common.JaxsegBuilderConfig):
  """Settings of a ``male_pelvic_mr`` build.

  Attributes:
    source: ``"phantom"`` or ``"zenodo"``.
    num_cases: number of phantom cases (phantom only).
    phantom_shape: ``(x, y, z)`` shape of each phantom before resampling.
    phantom_spacing: voxel spacing (mm) of each phantom before resampling.
    base_seed: phantom case ``i`` uses seed ``base_seed + i``.
    target_spacing: voxel spacing (mm) after resampling.
    split_seed: seed of the train/validation/test split.
    split_fractions: fractions of (train, validation, test).
    split_by: ``"case"`` (random by case) or ``"institution"`` (stratified by institution).
    clip_percentiles: intensity percentiles to clip to before z-scoring.
    exclude_ids: case ids to leave out of the build (e.g. the PROMISE12 cases of the Zenodo
      release; module docstring), stored sorted; all-digit ids are zero-padded to 6 digits.
      A string of ids separated by commas or spaces is accepted too.
  """

  source: str = "phantom"
  num_cases: int = 40
  phantom_shape: tuple[int, int, int] = (192, 192, 24)
  phantom_spacing: tuple[float, float, float] = (0.75, 0.75, 3.0)
  base_seed: int = 0
  target_spacing: tuple[float, float, float] = (0.75, 0.75, 3.0)
  split_seed: int = 42
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  split_by: str = "case"
  clip_percentiles: tuple[float, float] = (0.5, 99.5)
  exclude_ids: tuple[str, ...] = ()

  def __post_init__(self):
    _common.check_choice("source", self.source, ("phantom", "zenodo"))
    self.exclude_ids = _exclude.normalize_ids(
        self.exclude_ids, canonical=lambda v: v.zfill(6) if v.isdigit() else v)
    _common.check_choice("split_by", self.split_by, ("case", "institution"))
    if self.source == "phantom" and int(self.num_cases) < 1:
      raise ValueError(f"num_cases must be >= 1, got {self.num_cases}.")
    _common.check_shape("phantom_shape", self.phantom_shape)
    _common.check_spacing("phantom_spacing", self.phantom_spacing)
    _common.check_spacing("target_spacing", self.target_spacing)
    _common.check_percentiles(self.clip_percentiles)


PHANTOM = MalePelvicMrConfig(
    name="phantom",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description="Synthetic pelvis phantoms (jaxseg.data.phantoms.pelvis), 40 cases.",
    source="phantom",
)
ZENODO = MalePelvicMrConfig(
    name="zenodo",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description="Zenodo 7013610 Cross-institution Male Pelvic Structures (manual download).",
    source="zenodo",
)


def preprocess_case(
    image: np.ndarray,
    label: np.ndarray,
    spacing: Any,
    affine: np.ndarray,
    *,
    case_id: str,
    institution: str,
    target_spacing: Any,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, Any]:
  """One case -> one example: label check, resampling, percentile clip + z-score.

  Args:
    image: ``(x, y, z)`` intensities.
    label: ``(x, y, z)`` labels in 0..8 on the image grid.
    spacing: image spacing (mm).
    affine: image 4x4 affine.
    case_id: case identifier (used in error messages too).
    institution: institution name.
    target_spacing: spacing after resampling (mm).
    clip_percentiles: ``(lower, upper)`` percentiles for `preprocess.normalize_intensity`.

  Returns:
    The example dict with the builder's features.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"case {case_id}: image must be 3D, got shape {image.shape}.")
  label = preprocess.validate_label(
      label, NUM_CLASSES, name=f"case {case_id}", shape=image.shape
  )
  _volumes.check_finite(image, "image", case_id)
  example = _volumes.normalized_example(
      image, label, spacing, affine, case_id=case_id, target_spacing=target_spacing,
      clip_percentiles=clip_percentiles,
  )
  return {**example, "institution": institution}


@dataclasses.dataclass(frozen=True)
class _ZenodoCase:
  """Where one Zenodo case's files are: plain paths, or members of ``zip_path``."""

  uid: str
  institution: str
  image: str
  mask: str
  zip_path: str | None = None


class MalePelvicMr(_builder.CaseBuilder):
  """Male pelvic MR with 9 structures (phantom or Zenodo 7013610), preprocessed for seed 000."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [PHANTOM, ZENODO]
  DEFAULT_BUILDER_CONFIG_NAME = "phantom"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'zenodo' only: download {ZENODO_SOURCE} and place it in the manual directory "
      f"(manual_dir=...) with this layout:\n{ZENODO_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "T2-weighted MR of the male pelvis with labels "
            + ", ".join(f"{i} {n}" for i, n in enumerate(hierarchy.PELVIS_CLASSES))
            + ". Resampled, clipped to percentiles and z-scored (REFERENCE §1)."
        ),
        features={
            "image": _builder.volume_feature(np.float32),
            "label": _builder.volume_feature(np.uint8),
            "case_id": tfds.features.Text(),
            "institution": tfds.features.Text(),
            **_builder.geometry_features(),
        },
        homepage=ZENODO_URL,
        class_names=list(hierarchy.PELVIS_CLASSES),
        citation=(
            "Li, Y., Fu, Y., Gayo, I.J., Yang, Q., Min, Z., Saeed, S.U., Yan, W., Wang, Y., "
            "Noble, J.A., Emberton, M., Clarkson, M.J., Huisman, H., Barratt, D.C., "
            "Prisacariu, V.A., Hu, Y.: Cross-institution Male Pelvic Structures [Data set]. "
            "Zenodo. https://doi.org/10.5281/zenodo.7013610"
        ),
    )

  PHANTOM_CASE_ID = "phantom-{seed:04d}"  # the id `make_pelvis_case` gives seed `seed`

  def _phantom_example(self, seed: int) -> dict[str, Any]:
    # Imported here so that the zenodo config does not depend on the phantom generators.
    from jaxseg.data.phantoms import pelvis  # pylint: disable=g-import-not-at-top

    cfg = self.builder_config
    case = pelvis.make_pelvis_case(
        seed, shape=tuple(cfg.phantom_shape), spacing=tuple(cfg.phantom_spacing)
    )
    return preprocess_case(
        case.image,
        case.label,
        case.spacing,
        case.affine,
        case_id=self.PHANTOM_CASE_ID.format(seed=seed),
        institution="phantom",
        target_spacing=cfg.target_spacing,
        clip_percentiles=tuple(cfg.clip_percentiles),
    )

  def _phantom_groups(self, cases):
    by_institution = self.builder_config.split_by == "institution"
    return dict.fromkeys(cases, "phantom") if by_institution else None

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    zcases = _find_zenodo_cases(_ZENODO.manual_dir(dl_manager))
    cases = _exclude.exclude_cases({c.uid: c for c in zcases}, cfg.exclude_ids,
                                   dataset="male_pelvic_mr (zenodo)")
    institutions = {uid: c.institution for uid, c in cases.items()}
    return self._split_by_case(
        cases, groups=institutions if cfg.split_by == "institution" else None
    )

  def _example(self, case) -> dict[str, Any]:
    return _zenodo_example(case, self.builder_config)


# ------------------------------------------------------------------------------------------
# Zenodo 7013610 files.
# ------------------------------------------------------------------------------------------


_ZENODO = _common.ManualRelease(
    dataset="male_pelvic_mr (config 'zenodo')", source=ZENODO_SOURCE, layout=ZENODO_LAYOUT
)


def _zenodo_hint(manual_dir: str) -> str:
  return (
      f" (Re-)download data.zip from {ZENODO_URL} and extract it into {manual_dir} "
      "(layout data/{uid}_img.nii, data/{uid}_mask.nii, institution.txt)."
  )


def _parse_institutions(text: str, where: str) -> dict[str, str]:
  """Parses "uid institution" lines (whitespace, comma or tab separated; '#' comments).

  A first line that does not start with a number is taken as a header; uids written without
  their leading zeros are padded to 6 digits.
  """
  out: dict[str, str] = {}
  for lineno, raw in enumerate(text.splitlines(), 1):
    line = raw.split("#", 1)[0].strip()
    if not line:
      continue
    parts = [p for p in re.split(r"[\s,;]+", line) if p]
    uid = parts[0].zfill(6) if parts[0].isdigit() else parts[0]  # "1000" -> "001000"
    if len(parts) < 2 or not _UID.match(uid):
      if lineno == 1 and not parts[0].isdigit():
        continue  # A header line.
      raise ValueError(
          f"{where}, line {lineno}: expected 'uid institution' (uid = 6 digits), got {raw!r}."
      )
    if uid in out and out[uid] != " ".join(parts[1:]):
      raise ValueError(f"{where}, line {lineno}: case {uid} is listed twice.")
    out[uid] = " ".join(parts[1:])
  return out


def _find_zenodo_cases(manual_dir: str) -> list[_ZenodoCase]:
  """Lists and checks the cases under ``manual_dir`` (extracted layout or ``data.zip``)."""
  data_dir = os.path.join(manual_dir, "data")
  zip_path = os.path.join(manual_dir, "data.zip")
  files: dict[str, dict[str, str]] = {}
  institution_text = None
  institution_where = None
  use_zip = None
  if os.path.isdir(data_dir):
    for name in sorted(os.listdir(data_dir)):
      m = _CASE_FILE.match(name)
      if m:
        files.setdefault(m.group(1), {})[m.group(2)] = os.path.join(data_dir, name)
    for candidate in (
        os.path.join(manual_dir, "institution.txt"),
        os.path.join(data_dir, "institution.txt"),
    ):
      if os.path.isfile(candidate):
        with open(candidate, encoding="utf-8") as f:
          institution_text, institution_where = f.read(), candidate
        break
  elif os.path.isfile(zip_path):
    use_zip = zip_path
    try:
      with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        for member in names:
          m = _CASE_FILE.match(member.rsplit("/", 1)[-1])
          if m and not member.startswith("__MACOSX"):
            files.setdefault(m.group(1), {})[m.group(2)] = member
        inst = [n for n in names if n.rsplit("/", 1)[-1] == "institution.txt"]
        if inst:
          institution_text = zf.read(sorted(inst, key=len)[0]).decode("utf-8")
          institution_where = f"{zip_path}:{inst[0]}"
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise ValueError(
          f"Cannot read {zip_path} (corrupt or truncated download?): {e}."
          + _zenodo_hint(manual_dir)
      ) from e
    outside = os.path.join(manual_dir, "institution.txt")
    if institution_text is None and os.path.isfile(outside):
      with open(outside, encoding="utf-8") as f:
        institution_text, institution_where = f.read(), outside
  else:
    raise _ZENODO.error(
        manual_dir,
        missing=[data_dir + os.sep, zip_path],
        problem=f"Neither {data_dir}/ nor {zip_path} exists.",
    )

  if institution_text is None:
    raise _ZENODO.error(manual_dir, missing=[os.path.join(manual_dir, "institution.txt")])
  institutions = _parse_institutions(institution_text, institution_where)
  if not files and not institutions:
    raise _ZENODO.error(
        manual_dir,
        missing=[os.path.join(data_dir, "{uid}_img.nii"), os.path.join(data_dir, "{uid}_mask.nii")],
        problem=f"No case files ({{uid}}_img.nii / {{uid}}_mask.nii) found under {manual_dir}.",
    )

  root = use_zip or data_dir
  missing = []
  for uid in sorted(set(files) | set(institutions)):
    for kind in ("img", "mask"):
      if kind not in files.get(uid, {}):
        missing.append(f"{root}/{uid}_{kind}.nii")
  if missing:
    raise _ZENODO.error(manual_dir, missing=missing)
  without = sorted(set(files) - set(institutions))
  if without:
    raise ValueError(
        f"{institution_where} has no institution for case(s) {without[:20]}."
        + _zenodo_hint(manual_dir)
    )
  return [
      _ZenodoCase(
          uid=uid,
          institution=institutions[uid],
          image=files[uid]["img"],
          mask=files[uid]["mask"],
          zip_path=use_zip,
      )
      for uid in sorted(files)
  ]


def _zenodo_example(case: _ZenodoCase, cfg: MalePelvicMrConfig) -> dict[str, Any]:
  if case.zip_path is None:
    return _zenodo_example_from_files(case, case.image, case.mask, cfg)
  with tempfile.TemporaryDirectory(prefix="jaxseg_male_pelvic_mr_") as tmp:
    with zipfile.ZipFile(case.zip_path) as zf:
      image = zf.extract(case.image, tmp)
      mask = zf.extract(case.mask, tmp)
    return _zenodo_example_from_files(case, image, mask, cfg)


def _zenodo_example_from_files(
    case: _ZenodoCase, image_path: str, mask_path: str, cfg: MalePelvicMrConfig
) -> dict[str, Any]:
  manual = os.path.dirname(case.zip_path) if case.zip_path else os.path.dirname(
      os.path.dirname(image_path)
  )
  hint = _zenodo_hint(manual)
  with _common.append_to_errors(hint):
    image, spacing, affine = preprocess.load_nifti(image_path)
    label, _, _ = preprocess.load_nifti(mask_path)
  if label.shape != image.shape:
    raise ValueError(
        f"case {case.uid}: mask {mask_path} has shape {label.shape} but image {image_path} "
        f"has shape {image.shape}." + hint
    )
  with _common.append_to_errors(hint):
    label = preprocess.validate_label(label, NUM_CLASSES, name=f"case {case.uid} ({mask_path})")
  return preprocess_case(
      image,
      label,
      spacing,
      affine,
      case_id=case.uid,
      institution=case.institution,
      target_spacing=cfg.target_spacing,
      clip_percentiles=tuple(cfg.clip_percentiles),
  )
