"""tfds builder ``promise12``: prostate-gland segmentation on T2w MRI (seed ``002``, Tversky study).

PROMISE12 (MICCAI 2012 grand challenge; Litjens et al. 2014): T2-weighted prostate MRI from four
centres (different scanners, some with an endorectal coil) with a binary label, 1 = prostate
gland. Real data only (no phantom config: the Tversky study's phantom lives in another builder),
read from a manual directory.

Configs:

* ``preprocessed`` (default): the teaching release of PROMISE12 (35 cases resampled to
  32 x 128 x 128, spacing not recorded), layout::

    <manual_dir>/image_trainNN.npy   int16 (slices, rows, cols), raw scanner intensities
    <manual_dir>/label_trainNN.npy   int8, same shape, 1 = gland, 0 = background

  Case ids ``promise12-NN`` (``NN`` as in the file names). The voxel spacing is unknown: the
  config field ``assumed_spacing`` (default 1 x 1 x 1, i.e. distances in voxels) is written as
  the examples' spacing.
* ``original``: the challenge's own training data, MetaImage files ``CaseNN.mhd`` (+ ``.raw``)
  with ``CaseNN_segmentation.mhd`` (+ ``.raw``) in the same folder, anywhere under the manual
  directory (e.g. ``TrainingData_Part1/`` ... ``Part3/`` as unzipped). Images without a
  segmentation (the challenge's test cases) are skipped with a logged warning. Case ids
  ``promise12-caseNN``. Read with SimpleITK (`datasets._itk.read_image`), an optional
  dependency (the ``itk`` extra: ``pip install -e ".[itk]"``, or ``pip install SimpleITK``)
  imported only when a file is read; the real spacing and orientation come from the headers.

Orientation. Volumes are stored in the project's NIfTI voxel order ``(x, y, z)`` with axial
slices on the last axis. The npy arrays are ``(slices, rows, cols)`` -- the ``(z, y, x)`` order
of ``SimpleITK.GetArrayFromImage`` -- and are transposed with ``.transpose(2, 1, 0)`` to
``(cols, rows, slices)``, i.e. ``volume[x, y, z] = array[z, y, x]``, which is ITK's voxel index
order, so both configs index voxels the same way. Checked on the 35 cases: row 0 is anterior
(the rectum / endorectal coil lies at high rows) and the slice index grows towards the head
(the bladder is in the last slices); columns follow the radiological (DICOM / ITK LPS)
convention, index growing towards the patient's left (left and right cannot be told apart on
the images). So ``x`` points left, ``y`` posterior, ``z`` superior (LPS), and the nominal
``preprocessed`` affine is the LPS-to-RAS voxel-to-world matrix ``diag(-sx, -sy, sz, 1)``
(origin 0, ``s`` = ``assumed_spacing``). For ``original`` the affine is the header's ITK
direction / spacing / origin converted from LPS to RAS (NIfTI / nibabel convention):
``A[:3, :3] = F D diag(s)``, ``A[:3, 3] = F o`` with ``F = diag(-1, -1, 1)``.

Preprocessing (per case, `jaxseg.data.preprocess`): labels checked to lie in {0, 1}; optional
resampling to ``target_spacing`` (None, the default, keeps the grid; linear for images, nearest
for labels, affine updated); percentile clip (0.5-99.5) and z-score of the intensities of each
case separately (the cases' raw ranges differ widely). Split by case, never by slice: a random
80/10/10 split with seed 42 (`preprocess.split_cases`) into ``train``, ``validation`` and
``test`` (35 cases -> 28 / 4 / 3).

Features: ``image`` float32 ``(x, y, z)``, ``label`` uint8 ``(x, y, z)`` in {0, 1}, ``case_id``
(text), ``spacing`` float32 ``(3,)`` (mm; assumed for ``preprocessed``), ``affine`` float64
``(4, 4)`` (voxel to world, RAS, mm).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _itk
from datasets import _volumes
from jaxseg.data import preprocess

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ORIGINAL",
    "ORIGINAL_LAYOUT",
    "PREPROCESSED",
    "PREPROCESSED_LAYOUT",
    "PROMISE12_URL",
    "Promise12",
    "Promise12Config",
    "lps_to_ras_affine",
    "preprocess_case",
    "read_metaimage",
]

_LOG = logging.getLogger(__name__)

CLASS_NAMES = ("background", "prostate")
"""Label values: 0 background, 1 prostate gland."""
NUM_CLASSES = len(CLASS_NAMES)

PROMISE12_URL = "https://promise12.grand-challenge.org/"
ORIGINAL_SOURCE = (
    f"the PROMISE12 training data (TrainingData_Part1/2/3 zips) from {PROMISE12_URL} "
    "(registration required)"
)
ORIGINAL_LAYOUT = """\
<manual_dir>/ (searched recursively, e.g. TrainingData_Part1/ ... TrainingData_Part3/)
  CaseNN.mhd + CaseNN.raw                             T2w image (MetaImage)
  CaseNN_segmentation.mhd + CaseNN_segmentation.raw   1 = prostate, 0 = background
(a CaseNN.mhd without a segmentation in its folder, i.e. a test case, is skipped)"""
PREPROCESSED_SOURCE = (
    "the preprocessed PROMISE12 arrays (image_trainNN.npy and label_trainNN.npy, 35 cases "
    "NN = 00..34, as released with the promise12 data of the open-source medical-imaging "
    f"course; derived from the PROMISE12 training data, {PROMISE12_URL})"
)
PREPROCESSED_LAYOUT = """\
<manual_dir>/
  image_trainNN.npy   int16 (slices, rows, cols), e.g. (32, 128, 128); NN = 00, 01, ...
  label_trainNN.npy   int8, same shape, 1 = prostate gland, 0 = background"""

_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "Initial release: preprocessed (npy) and original (MetaImage) configs."}
_NPY_FILE = re.compile(r"^(image|label)_train(\d+)\.npy$")
_MHD_FILE = re.compile(r"^Case(\d+)(_segmentation)?\.mhd$", re.IGNORECASE)


@dataclasses.dataclass(eq=False)
class Promise12Config(_common.JaxsegBuilderConfig):
  """Settings of a ``promise12`` build.

  Attributes:
    source: ``"preprocessed"`` (npy teaching release) or ``"original"`` (challenge MetaImage).
    assumed_spacing: ``(sx, sy, sz)`` voxel spacing (mm) given to the ``preprocessed`` volumes,
      whose real spacing is unknown; the default ``(1, 1, 1)`` means distances in voxels.
      Ignored by ``original`` (spacing from the headers).
    target_spacing: voxel spacing (mm) to resample to, or None (default) to keep each case's
      grid.
    split_seed: seed of the train/validation/test split.
    split_fractions: fractions of (train, validation, test).
    clip_percentiles: intensity percentiles to clip to before z-scoring.
  """

  source: str = "preprocessed"
  assumed_spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
  target_spacing: tuple[float, float, float] | None = None
  split_seed: int = 42
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  clip_percentiles: tuple[float, float] = (0.5, 99.5)

  def __post_init__(self):
    _common.check_choice("source", self.source, ("preprocessed", "original"))
    names = ["assumed_spacing"] + (["target_spacing"] if self.target_spacing is not None else [])
    for name in names:
      setattr(self, name, _common.check_spacing(name, getattr(self, name)))
    _common.check_percentiles(self.clip_percentiles)


PREPROCESSED = Promise12Config(
    name="preprocessed",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "PROMISE12 teaching release: 35 cases at 32 x 128 x 128 (npy), spacing unknown "
        "(assumed_spacing, default 1 mm = distances in voxels); manual download."
    ),
    source="preprocessed",
)
ORIGINAL = Promise12Config(
    name="original",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "PROMISE12 challenge training data (CaseNN.mhd + CaseNN_segmentation.mhd) at native "
        "spacing unless target_spacing is set; needs SimpleITK; manual download."
    ),
    source="original",
)


# ------------------------------------------------------------------------------------------
# Per-case preprocessing and file reading.
# ------------------------------------------------------------------------------------------


def preprocess_case(
    image: np.ndarray,
    label: np.ndarray,
    spacing: Any,
    affine: np.ndarray,
    *,
    case_id: str,
    target_spacing: Any = None,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, Any]:
  """One ``(x, y, z)`` case -> one example: label check, optional resampling, clip + z-score.

  The label must lie in {0, 1} on the image grid (`preprocess.validate_label`); with
  ``target_spacing`` the case is resampled by `preprocess.resample_case` (linear image, nearest
  label, affine updated); the intensities are then clipped to ``clip_percentiles`` of this case
  and z-scored (`preprocess.normalize_intensity`).

  Args:
    image: ``(x, y, z)`` intensities.
    label: ``(x, y, z)`` labels in {0, 1}, same shape.
    spacing: voxel spacing ``(sx, sy, sz)`` in mm.
    affine: 4x4 voxel-to-world affine.
    case_id: case identifier (also used in error messages).
    target_spacing: spacing to resample to, or None to keep the grid.
    clip_percentiles: ``(lower, upper)`` percentiles.

  Returns:
    The example dict with the builder's features.
  """
  image = np.asarray(image)
  if image.ndim != 3:
    raise ValueError(f"case {case_id}: image must be 3D (x, y, z), got shape {image.shape}.")
  _volumes.check_real(image, case_id)
  label = preprocess.validate_label(label, NUM_CLASSES, name=f"case {case_id}", shape=image.shape)
  return _volumes.normalized_example(
      image, label, spacing, affine, case_id=case_id, target_spacing=target_spacing,
      clip_percentiles=clip_percentiles,
  )


lps_to_ras_affine = _itk.lps_to_ras_affine
"""`datasets._itk.lps_to_ras_affine`: the RAS voxel-to-world affine of an ITK (LPS) image."""


def read_metaimage(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Reads a 3D MetaImage (``.mhd`` + data file) with SimpleITK (`datasets._itk.read_image`).

  Args:
    path: the ``.mhd`` header.

  Returns:
    ``(array, spacing, affine)``: the ``(x, y, z)`` array (ITK index order, i.e.
    ``GetArrayFromImage(...).transpose(2, 1, 0)``), the spacing (float64 ``(3,)``, mm) and the
    RAS 4x4 affine (`lps_to_ras_affine`).

  Raises:
    ImportError: SimpleITK is not installed (the ``itk`` extra).
    FileNotFoundError: the file does not exist.
    ValueError: unreadable file, not a 3D scalar image, or bad spacing.
  """
  return _itk.read_image(
      path, reader="promise12 (config 'original') reads the challenge's MetaImage (.mhd/.raw) "
      "files")


# ------------------------------------------------------------------------------------------
# The builder.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Case:
  """One case's files: npy arrays (``preprocessed``) or MetaImage headers (``original``)."""

  case_id: str
  image: str
  label: str


class Promise12(_builder.CaseBuilder):
  """PROMISE12 prostate-gland MRI (npy teaching release or challenge MetaImage), seed 002."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [PREPROCESSED, ORIGINAL]
  DEFAULT_BUILDER_CONFIG_NAME = "preprocessed"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'preprocessed': put {PREPROCESSED_SOURCE} in the manual directory "
      f"(manual_dir=...):\n{PREPROCESSED_LAYOUT}\n"
      f"Config 'original': download {ORIGINAL_SOURCE}, unzip it into the manual directory:\n"
      f"{ORIGINAL_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "PROMISE12 T2-weighted prostate MRI with the gland label (0 background, "
            "1 prostate), per-case percentile clip + z-score, (x, y, z) voxel order "
            "(x = column, y = row, z = slice; LPS index directions)."
        ),
        features={
            "image": _builder.volume_feature(np.float32),
            "label": _builder.volume_feature(np.uint8),
            "case_id": tfds.features.Text(),
            **_builder.geometry_features(),
        },
        homepage=PROMISE12_URL,
        class_names=list(CLASS_NAMES),
        spacing_known=self.builder_config.source == "original",
        citation=(
            "Litjens, G., Toth, R., van de Ven, W., Hoeks, C., Kerkstra, S., van Ginneken, B., "
            "Vincent, G., Guillard, G., Birbeck, N., Zhang, J., et al.: Evaluation of prostate "
            "segmentation algorithms for MRI: the PROMISE12 challenge. Medical Image Analysis "
            "18(2), 359-373 (2014)."
        ),
    )

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    source = self.builder_config.source
    manual_dir = _RELEASES[source].manual_dir(dl_manager)
    if source == "preprocessed":
      cases = _find_preprocessed_cases(manual_dir)
    else:
      cases = _find_original_cases(manual_dir)
    return self._split_by_case({c.case_id: c for c in cases})

  def _example(self, case: _Case) -> dict[str, Any]:
    cfg = self.builder_config
    if cfg.source == "preprocessed":
      return _preprocessed_example(case, cfg)
    return _original_example(case, cfg)


# ------------------------------------------------------------------------------------------
# Manual directory, errors, and the examples of both configs.
# ------------------------------------------------------------------------------------------


_RELEASES = {
    "preprocessed": _common.ManualRelease(
        dataset="promise12 (config 'preprocessed')", source=PREPROCESSED_SOURCE,
        layout=PREPROCESSED_LAYOUT,
    ),
    "original": _common.ManualRelease(
        dataset="promise12 (config 'original')", source=ORIGINAL_SOURCE, layout=ORIGINAL_LAYOUT
    ),
}


def _hint(source: str, manual_dir: str) -> str:
  if source == "preprocessed":
    return (
        f" (Re-)copy image_trainNN.npy / label_trainNN.npy of the PROMISE12 teaching release "
        f"into {manual_dir}."
    )
  return (
      f" (Re-)download the PROMISE12 training data from {PROMISE12_URL} and unzip it into "
      f"{manual_dir} (CaseNN.mhd/.raw with CaseNN_segmentation.mhd/.raw)."
  )


def _case_example(
    case: _Case, cfg: Promise12Config, image: np.ndarray, label: np.ndarray, spacing: Any,
    affine: np.ndarray,
) -> dict[str, Any]:
  """`preprocess_case` with the config's settings; its errors name the files and the fix."""
  hint = _hint(cfg.source, os.path.dirname(case.image))
  with _common.append_to_errors(f" Files: {case.image}, {case.label}.{hint}"):
    return preprocess_case(
        image,
        label,
        spacing,
        affine,
        case_id=case.case_id,
        target_spacing=cfg.target_spacing,
        clip_percentiles=tuple(cfg.clip_percentiles),
    )


# ------------------------------------------------------------------------------------------
# Config 'preprocessed': npy arrays (slices, rows, cols).
# ------------------------------------------------------------------------------------------


def _load_npy(path: str, manual_dir: str, mmap_mode: str | None = None) -> np.ndarray:
  """``np.load`` (no pickles) with a ValueError naming the file and what to re-copy."""
  try:
    return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  except Exception as e:  # numpy raises ValueError, OSError, EOFError... on corrupt files.
    if isinstance(e, (MemoryError, KeyboardInterrupt)):
      raise
    raise ValueError(
        f"Cannot read {path} (truncated or corrupt npy file?): {type(e).__name__}: {e}."
        + _hint("preprocessed", manual_dir)
    ) from e


def _find_preprocessed_cases(manual_dir: str) -> list[_Case]:
  """Pairs ``image_trainNN.npy`` with ``label_trainNN.npy`` and checks their shapes."""
  files: dict[str, dict[str, str]] = {}
  for name in sorted(os.listdir(manual_dir)):
    m = _NPY_FILE.match(name)
    if m and os.path.isfile(os.path.join(manual_dir, name)):
      files.setdefault(m.group(2), {})[m.group(1)] = os.path.join(manual_dir, name)
  if not files:
    raise _RELEASES["preprocessed"].error(
        manual_dir,
        missing=[
            os.path.join(manual_dir, "image_trainNN.npy"),
            os.path.join(manual_dir, "label_trainNN.npy"),
        ],
        problem=f"No image_trainNN.npy / label_trainNN.npy files found in {manual_dir}.",
    )
  missing = [
      os.path.join(manual_dir, f"{kind}_train{num}.npy")
      for num in sorted(files)
      for kind in ("image", "label")
      if kind not in files[num]
  ]
  if missing:
    raise _RELEASES["preprocessed"].error(
        manual_dir,
        missing=missing,
        problem=(
            f"Unpaired PROMISE12 npy files in {manual_dir}: every image_trainNN.npy needs its "
            "label_trainNN.npy and vice versa."
        ),
    )
  cases = []
  for num in sorted(files):
    # Memory-mapped: only the headers are read here.
    image_head = _load_npy(files[num]["image"], manual_dir, mmap_mode="r")
    image_shape, image_dtype = tuple(image_head.shape), image_head.dtype
    label_shape = tuple(_load_npy(files[num]["label"], manual_dir, mmap_mode="r").shape)
    if len(image_shape) != 3:
      raise ValueError(
          f"{files[num]['image']} must be 3D (slices, rows, cols), got shape {image_shape}."
          + _hint("preprocessed", manual_dir)
      )
    if not np.issubdtype(image_dtype, np.number) or np.issubdtype(image_dtype, np.complexfloating):
      raise ValueError(
          f"{files[num]['image']} must hold real numbers, got dtype {image_dtype}."
          + _hint("preprocessed", manual_dir)
      )
    if label_shape != image_shape:
      raise ValueError(
          f"case {num}: {files[num]['label']} has shape {label_shape} but "
          f"{files[num]['image']} has shape {image_shape}." + _hint("preprocessed", manual_dir)
      )
    cases.append(
        _Case(case_id=f"promise12-{num}", image=files[num]["image"], label=files[num]["label"])
    )
  return cases


def _preprocessed_example(case: _Case, cfg: Promise12Config) -> dict[str, Any]:
  manual_dir = os.path.dirname(case.image)
  # (slices, rows, cols) -> (cols, rows, slices) = (x, y, z); see the module docstring.
  image = _load_npy(case.image, manual_dir).transpose(2, 1, 0)
  label = _load_npy(case.label, manual_dir).transpose(2, 1, 0)
  spacing = np.asarray(cfg.assumed_spacing, dtype=np.float64)
  return _case_example(case, cfg, image, label, spacing, lps_to_ras_affine(spacing))


# ------------------------------------------------------------------------------------------
# Config 'original': challenge MetaImage files.
# ------------------------------------------------------------------------------------------


def _metaimage_data_file(header: str) -> str | None:
  """The data file a ``.mhd`` header names (None for inline or listed data, or no entry)."""
  try:
    with open(header, encoding="latin-1") as f:
      text = f.read(65536)
  except OSError:
    return None
  m = re.search(r"^\s*ElementDataFile\s*=\s*(.+?)\s*$", text, re.MULTILINE)
  if m is None:
    return None
  name = m.group(1)
  if name.upper() == "LOCAL" or name.upper().startswith("LIST") or " " in name or "%" in name:
    return None
  return os.path.join(os.path.dirname(header), name)


def _find_original_cases(manual_dir: str) -> list[_Case]:
  """Lists the training cases (image + segmentation in one folder) under ``manual_dir``.

  Needs no SimpleITK: only file names and the headers' ``ElementDataFile`` entries are read.
  """
  cases: dict[str, _Case] = {}
  missing: list[str] = []
  skipped: list[str] = []
  for folder, dirs, names in os.walk(manual_dir):
    dirs.sort()
    images: dict[str, str] = {}
    segmentations: dict[str, str] = {}
    for name in sorted(names):
      m = _MHD_FILE.match(name)
      if m:
        (segmentations if m.group(2) else images)[m.group(1)] = os.path.join(folder, name)
    for num in sorted(set(images) | set(segmentations)):
      if num not in segmentations:
        skipped.append(images[num])
        continue
      if num not in images:
        missing.append(os.path.join(folder, f"Case{num}.mhd"))
        continue
      for header in (images[num], segmentations[num]):
        data = _metaimage_data_file(header)
        if data is not None and not os.path.isfile(data):
          missing.append(data)
      case_id = f"promise12-case{num}"
      if case_id in cases:
        raise ValueError(
            f"Case{num} has a segmentation in two folders: {os.path.dirname(cases[case_id].image)}"
            f" and {folder}; keep one copy of the PROMISE12 training data in {manual_dir}."
        )
      cases[case_id] = _Case(case_id=case_id, image=images[num], label=segmentations[num])
  if missing:
    raise _RELEASES["original"].error(manual_dir, missing=missing)
  if not cases:
    raise _RELEASES["original"].error(
        manual_dir,
        missing=[os.path.join(manual_dir, "CaseNN_segmentation.mhd")],
        problem=(
            f"No PROMISE12 training case (CaseNN.mhd with CaseNN_segmentation.mhd) found under "
            f"{manual_dir}" + (f" ({len(skipped)} image(s) without segmentation)." if skipped
                               else ".")
        ),
    )
  if skipped:
    _LOG.warning(
        "promise12 (config 'original'): skipped %d image(s) without a CaseNN_segmentation.mhd "
        "in their folder (the challenge's test cases have none): %s",
        len(skipped),
        ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else ""),
    )
  return [cases[c] for c in sorted(cases)]


def _original_example(case: _Case, cfg: Promise12Config) -> dict[str, Any]:
  hint = _hint("original", os.path.dirname(case.image))
  with _common.append_to_errors(hint):
    image, spacing, affine = read_metaimage(case.image)
    label, label_spacing, _ = read_metaimage(case.label)
  if label.shape != image.shape:
    raise ValueError(
        f"case {case.case_id}: segmentation {case.label} has shape {label.shape} but image "
        f"{case.image} has shape {image.shape}." + hint
    )
  if not np.allclose(label_spacing, spacing, rtol=1e-4, atol=1e-6):
    raise ValueError(
        f"case {case.case_id}: segmentation {case.label} has spacing "
        f"{tuple(label_spacing.tolist())} but image {case.image} has "
        f"{tuple(spacing.tolist())}." + hint
    )
  return _case_example(case, cfg, image, label, spacing, affine)
