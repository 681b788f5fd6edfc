"""tfds builder ``prostatex_gland``: axial T2w prostate MR with whole-gland masks (seed ``002``).

Configs:

* ``phantom`` (default): ``num_cases`` (60) synthetic cases from
  `jaxseg.data.phantoms.gland.make_gland_case` with seeds ``base_seed + i`` (case ids
  ``gland-{seed:04d}``), rendered at ``phantom_shape`` / ``phantom_spacing`` (default 128 x 128 x
  16 voxels of 1.5 x 1.5 x 3 mm, the 192 mm in-plane field of view of PROSTATEx) and kept on
  that grid (``target_spacing=None``), so every test, example and CPU preset runs without
  downloads.
* ``prostatex``: the whole-gland masks of PROSTATEx_masks (Cuocolo et al., CC BY 4.0,
  https://github.com/rcuocolo/PROSTATEx_masks) with the matching T2w images, read from the manual
  directory in that repository's layout (REFERENCE §3)::

    <manual_dir>/Files/prostate/mask_prostate/ProstateX-XXXX.nii.gz
    <manual_dir>/Files/prostate/Images/ProstateX-XXXX_t2_tse_tra_N.nii.gz
    <manual_dir>/Files/prostate/image_list.csv            (optional)

  ``<manual_dir>`` may also be ``Files/prostate`` itself, or hold one folder with ``Files/``
  (``PROSTATEx_masks-master/`` from GitHub's zip). File names are not fully consistent upstream
  (``ProstateX-080.nii.gz``, ``..._t2_tse_tra_Grappa3_2.nii.gz``), so ids are parsed leniently
  (``ProstateX`` + 1-4 digits, any case, ``-``/``_`` or nothing in between) and normalised to
  ``ProstateX-%04d``; any ``*t2*.nii(.gz)`` named with the id counts as that case's T2 image.
  When a case has several, the series named in ``image_list.csv`` wins, else the only one whose
  shape matches the mask; anything else is an error naming the candidates. The repository ships
  T2 images for a subset of the 204 cases only: the others must be converted from the TCIA
  PROSTATEx DICOM (e.g. with dcm2niix) and added to ``Images/``. Masks without an image are an
  error listing them (or, with ``skip_missing_images=True``, a logged warning and those cases are
  left out); images without a mask are ignored.

Preprocessing: masks are binarised (``> 0`` -> 1; non-finite values are an error; a mask whose
shape differs from its image's is an error naming the case), the case is resampled to
``target_spacing`` (``prostatex``: 0.5 x 0.5 x 3 mm; linear for the image, nearest for the mask,
affine updated; ``None`` keeps each case's grid), intensities are clipped to the 0.5-99.5
percentiles and z-scored per case (`jaxseg.data.preprocess.normalize_intensity`), and the cases
(never slices) are split 80/10/10 at random with seed 42 (`jaxseg.data.preprocess.split_cases`)
into the tfds splits ``train``, ``validation`` and ``test`` (a split given a zero fraction is
left out: tfds cannot write an empty split).

Features: ``image`` float32 ``(x, y, z)`` and ``label`` uint8 ``(x, y, z)`` (both zlib),
``case_id`` (text), ``spacing`` float32 ``(3,)``, ``affine`` float64 ``(4, 4)`` (voxel to world,
mm).

Custom settings get a distinct config name derived from them (``ProstatexGlandConfig.replace`` /
``load(**settings)``), and `datasets._common.prepare` refuses a cached build whose recorded
settings differ, so cached builds never mix.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

from absl import logging
import nibabel as nib
import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _prostatex
from datasets import _volumes
from jaxseg.data import preprocess

__all__ = [
    "MASKS_URL",
    "PHANTOM",
    "PROSTATEX",
    "PROSTATEX_LAYOUT",
    "ProstatexGland",
    "ProstatexGlandConfig",
    "TCIA_URL",
    "canonical_case_id",
    "preprocess_case",
]

MASKS_URL = _prostatex.MASKS_URL
TCIA_URL = _prostatex.TCIA_URL
PROSTATEX_SOURCE = (
    f"the PROSTATEx_masks repository ({MASKS_URL}, CC BY 4.0; git clone or its zip) and the T2w "
    f"images of the cases it lacks from TCIA PROSTATEx ({TCIA_URL}, the t2_tse_tra series, "
    "converted from DICOM to NIfTI, e.g. with dcm2niix)"
)
PROSTATEX_LAYOUT = """\
<manual_dir>/Files/prostate/
  mask_prostate/ProstateX-XXXX.nii.gz          whole-gland masks (from PROSTATEx_masks)
  Images/ProstateX-XXXX_t2_tse_tra_N.nii.gz    T2w image of each mask, same grid (any
                                                ProstateX-XXXX*t2*.nii.gz name works)
  image_list.csv                               optional: the T2 series used for each mask
(<manual_dir> may also be Files/prostate itself or contain PROSTATEx_masks-master/Files/)"""

_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "Initial release: phantom and prostatex configs."}
canonical_case_id = _prostatex.canonical_case_id


@dataclasses.dataclass(eq=False)
class ProstatexGlandConfig(_common.JaxsegBuilderConfig):
  """Settings of a ``prostatex_gland`` build.

  Attributes:
    source: ``"phantom"`` or ``"prostatex"``.
    num_cases: number of phantom cases (phantom only).
    phantom_shape: ``(x, y, z)`` shape of each phantom.
    phantom_spacing: voxel spacing (mm) of each phantom.
    base_seed: phantom case ``i`` uses seed ``base_seed + i``.
    target_spacing: voxel spacing (mm) after resampling, or None to keep each case's grid.
    split_seed: seed of the train/validation/test split.
    split_fractions: fractions of (train, validation, test).
    clip_percentiles: intensity percentiles to clip to before z-scoring.
    skip_missing_images: prostatex only: leave out (with a logged warning) masks that have no
      T2 image instead of raising an error.
  """

  source: str = "phantom"
  num_cases: int = 60
  phantom_shape: tuple[int, int, int] = (128, 128, 16)
  phantom_spacing: tuple[float, float, float] = (1.5, 1.5, 3.0)
  base_seed: int = 0
  target_spacing: tuple[float, float, float] | None = (0.5, 0.5, 3.0)
  split_seed: int = 42
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  clip_percentiles: tuple[float, float] = (0.5, 99.5)
  skip_missing_images: bool = False

  def __post_init__(self):
    _common.check_choice("source", self.source, ("phantom", "prostatex"))
    if self.source == "phantom" and int(self.num_cases) < 1:
      raise ValueError(f"num_cases must be >= 1, got {self.num_cases}.")
    if int(self.base_seed) < 0:
      raise ValueError(f"base_seed must be >= 0, got {self.base_seed}.")
    _common.check_shape("phantom_shape", self.phantom_shape)
    _common.check_spacing("phantom_spacing", self.phantom_spacing)
    if self.target_spacing is not None:
      _common.check_spacing("target_spacing", self.target_spacing)
    _common.check_percentiles(self.clip_percentiles)


PHANTOM = ProstatexGlandConfig(
    name="phantom",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "Synthetic axial T2w prostate phantoms (jaxseg.data.phantoms.gland), 60 cases of "
        "128 x 128 x 16 at 1.5 x 1.5 x 3 mm."
    ),
    source="phantom",
    target_spacing=None,
)
PROSTATEX = ProstatexGlandConfig(
    name="prostatex",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "PROSTATEx T2w with PROSTATEx_masks whole-gland masks (manual download), resampled to "
        "0.5 x 0.5 x 3 mm."
    ),
    source="prostatex",
)


def preprocess_case(
    image: np.ndarray,
    mask: np.ndarray,
    spacing: Any,
    affine: np.ndarray,
    *,
    case_id: str,
    target_spacing: Any | None,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
) -> dict[str, Any]:
  """One case -> one example: binarise, resample, percentile clip + z-score.

  Args:
    image: ``(x, y, z)`` intensities.
    mask: ``(x, y, z)`` gland mask on the image grid; values ``> 0`` are the gland.
    spacing: image spacing (mm).
    affine: image 4x4 affine.
    case_id: case identifier (used in error messages too).
    target_spacing: spacing after resampling (mm), or None to keep the grid.
    clip_percentiles: ``(lower, upper)`` percentiles for `preprocess.normalize_intensity`.

  Returns:
    The example dict with the builder's features.

  Raises:
    ValueError: image not 3D, shapes differ, non-finite image or mask values.
  """
  image = np.asarray(image)
  mask = np.asarray(mask)
  if image.ndim != 3:
    raise ValueError(f"case {case_id}: image must be 3D, got shape {image.shape}.")
  if mask.shape != image.shape:
    raise ValueError(
        f"case {case_id}: mask shape {mask.shape} differs from image shape {image.shape}."
    )
  if not np.issubdtype(mask.dtype, np.number) and mask.dtype != bool:
    raise ValueError(f"case {case_id}: mask must be numeric, got dtype {mask.dtype}.")
  if np.issubdtype(mask.dtype, np.floating):
    _volumes.check_finite(mask, "mask", case_id)
  _volumes.check_finite(image, "image", case_id)
  if target_spacing is None:
    image = image.astype(np.float32)  # As resampling returns it.
  return _volumes.normalized_example(
      image, (mask > 0).astype(np.uint8), spacing, affine, case_id=case_id,
      target_spacing=target_spacing, clip_percentiles=clip_percentiles,
  )


@dataclasses.dataclass(frozen=True)
class _ProstatexCase:
  """One PROSTATEx case: its canonical id, mask and T2 image paths."""

  case_id: str
  mask: str
  image: str


class ProstatexGland(_builder.CaseBuilder):
  """Axial T2w prostate MR with whole-gland masks (phantom or PROSTATEx), for seed 002."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [PHANTOM, PROSTATEX]
  DEFAULT_BUILDER_CONFIG_NAME = "phantom"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'prostatex' only: download {PROSTATEX_SOURCE}, and place them in the manual "
      f"directory (manual_dir=...) with this layout:\n{PROSTATEX_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "Axial T2-weighted prostate MR with a binary whole-gland label (1 = prostate). "
            "Optionally resampled, clipped to percentiles and z-scored per case (REFERENCE §3)."
        ),
        features={
            "image": _builder.volume_feature(np.float32),
            "label": _builder.volume_feature(np.uint8),
            "case_id": tfds.features.Text(),
            **_builder.geometry_features(),
        },
        homepage=MASKS_URL,
        class_names=["background", "prostate"],
        citation=(
            "Cuocolo, R., Stanzione, A., Castaldo, A., De Lucia, D.R., Imbriaco, M.: Quality "
            "control and whole-gland, zonal and lesion annotations for the PROSTATEx challenge "
            "public dataset. European Journal of Radiology 138, 109647 (2021). "
            "Litjens, G., Debats, O., Barentsz, J., Karssemeijer, N., Huisman, H.: ProstateX "
            "Challenge data. The Cancer Imaging Archive (2017). "
            "https://doi.org/10.7937/K9TCIA.2017.MURS5CL"
        ),
    )

  PHANTOM_CASE_ID = "gland-{seed:04d}"  # the id `make_gland_case` gives seed `seed`

  def _phantom_example(self, seed: int) -> dict[str, Any]:
    # Imported here so that the prostatex config does not depend on the phantom generators.
    from jaxseg.data.phantoms import gland  # pylint: disable=g-import-not-at-top

    cfg = self.builder_config
    case = gland.make_gland_case(
        seed, shape=tuple(cfg.phantom_shape), spacing=tuple(cfg.phantom_spacing)
    )
    return preprocess_case(
        case.image,
        case.label,
        case.spacing,
        case.affine,
        case_id=self.PHANTOM_CASE_ID.format(seed=seed),
        target_spacing=cfg.target_spacing,
        clip_percentiles=tuple(cfg.clip_percentiles),
    )

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    found = _find_prostatex_cases(
        _PROSTATEX.manual_dir(dl_manager),
        skip_missing_images=bool(self.builder_config.skip_missing_images),
    )
    return self._split_by_case({c.case_id: c for c in found})

  def _example(self, case) -> dict[str, Any]:
    return _prostatex_example(case, self.builder_config)


# ------------------------------------------------------------------------------------------
# PROSTATEx files.
# ------------------------------------------------------------------------------------------


_PROSTATEX = _common.ManualRelease(
    dataset="prostatex_gland (config 'prostatex')", source=PROSTATEX_SOURCE,
    layout=PROSTATEX_LAYOUT,
)


def _hint(manual_dir: str) -> str:
  return (
      f" Check the files in {manual_dir} (masks from {MASKS_URL}; T2w images from TCIA "
      f"PROSTATEx, {TCIA_URL}, converted to NIfTI on the mask's grid)."
  )


def _nifti_by_id(directory: str | None) -> dict[str, list[str]]:
  """``{canonical id: [paths]}`` of the NIfTI files in ``directory`` that name a case."""
  out: dict[str, list[str]] = {}
  if directory is None or not os.path.isdir(directory):
    return out
  for name in sorted(os.listdir(directory)):
    path = os.path.join(directory, name)
    if name.startswith(".") or not _prostatex.NIFTI.search(name) or not os.path.isfile(path):
      continue
    case_id = canonical_case_id(name)
    if case_id is not None:
      out.setdefault(case_id, []).append(path)
  return out


def _read_image_list(root: str) -> dict[str, str]:
  """``{canonical id: series name}`` from ``image_list.csv`` (empty if absent)."""
  path = _prostatex.find_child(root, "image_list.csv")
  if path is None or not os.path.isfile(path):
    return {}
  out: dict[str, str] = {}
  with open(path, encoding="utf-8-sig") as f:
    for line in f:
      for cell in re.split(r"[,;\t]", line):
        cell = cell.strip().strip('"')
        case_id = canonical_case_id(cell)
        if case_id is not None:
          out.setdefault(case_id, _prostatex.nifti_stem(cell))
  return out


def _shape(path: str) -> tuple[int, ...] | None:
  """Spatial shape from the NIfTI header (trailing singleton axes dropped), None if unreadable."""
  try:
    shape = tuple(int(n) for n in nib.load(path).shape)
  except Exception:  # pylint: disable=broad-except  (reported when the case is read)
    return None
  while len(shape) > 3 and shape[-1] == 1:
    shape = shape[:-1]
  return shape


def _pick_mask(case_id: str, paths: list[str]) -> str:
  if len(paths) == 1:
    return paths[0]
  canonical = [p for p in paths if _prostatex.nifti_stem(p) == case_id]
  if len(canonical) == 1:
    logging.warning("Case %s has several masks %s; using %s.", case_id, paths, canonical[0])
    return canonical[0]
  raise ValueError(
      f"Case {case_id} has several whole-gland masks: {paths}; keep one of them."
  )


def _pick_image(case_id: str, candidates: list[str], listed: str | None, mask: str) -> str | None:
  """The T2 image of a case among ``candidates`` (None when there is none)."""
  if not candidates:
    return None
  if listed is not None:
    named = [p for p in candidates if _prostatex.nifti_stem(p).lower() == listed.lower()]
    if len(named) == 1:
      return named[0]
  if len(candidates) == 1:
    return candidates[0]
  mask_shape = _shape(mask)
  same = [p for p in candidates if mask_shape is not None and _shape(p) == mask_shape]
  if len(same) == 1:
    return same[0]
  raise ValueError(
      f"Case {case_id} has several T2 images {candidates} and none is singled out by "
      f"image_list.csv{f' ({listed!r})' if listed else ''} or by matching the mask's shape "
      f"{mask_shape}; list the right series in image_list.csv or remove the others."
  )


def _find_prostatex_cases(
    manual_dir: str, *, skip_missing_images: bool = False
) -> list[_ProstatexCase]:
  """Lists and pairs the masks and T2 images under ``manual_dir`` (see the module docstring)."""
  root = _prostatex.prostate_folder(manual_dir, "mask_prostate")
  if root is None:
    expected = os.path.join(manual_dir, "Files", "prostate", "mask_prostate")
    raise _PROSTATEX.error(
        manual_dir,
        missing=[expected + os.sep],
        problem=f"No Files/prostate/mask_prostate/ folder found under {manual_dir}.",
    )
  mask_dir = _prostatex.find_child(root, "mask_prostate")
  masks = _nifti_by_id(mask_dir)
  if not masks:
    raise _PROSTATEX.error(
        manual_dir,
        missing=[os.path.join(mask_dir, "ProstateX-XXXX.nii.gz")],
        problem=f"No ProstateX-XXXX.nii.gz mask found in {mask_dir}.",
    )
  image_dir = _prostatex.find_child(root, "Images") or os.path.join(root, "Images")
  images = {
      case_id: [p for p in paths if "t2" in os.path.basename(p).lower()]
      for case_id, paths in _nifti_by_id(image_dir).items()
  }
  listed = _read_image_list(root)

  cases, missing = [], []
  for case_id in sorted(masks):
    mask = _pick_mask(case_id, masks[case_id])
    image = _pick_image(case_id, images.get(case_id, []), listed.get(case_id), mask)
    if image is None:
      series = listed.get(case_id, f"{case_id}_t2_tse_tra_N")
      missing.append(f"{os.path.join(image_dir, series)}.nii.gz (for mask {mask})")
    else:
      cases.append(_ProstatexCase(case_id=case_id, mask=mask, image=image))
  unused = sorted(set(c for c, p in images.items() if p) - set(masks))
  if unused:
    logging.info("prostatex_gland: %d T2 image(s) without a mask ignored: %s", len(unused),
                 unused[:20])
  if missing:
    if not skip_missing_images or not cases:
      raise _PROSTATEX.error(
          manual_dir,
          missing=missing,
          problem=(
              f"{len(missing)} of {len(masks)} whole-gland masks in {mask_dir} have no T2 "
              f"image in {image_dir}"
              + (" (and no case has both)" if not cases else "")
              + ". Add the missing images (or pass skip_missing_images=True to leave those "
              "cases out)."
          ),
      )
    logging.warning(
        "prostatex_gland: leaving out %d of %d cases whose T2 image is missing: %s",
        len(missing), len(masks), missing[:20],
    )
  return cases


def _prostatex_example(case: _ProstatexCase, cfg: ProstatexGlandConfig) -> dict[str, Any]:
  manual = os.path.dirname(os.path.dirname(case.mask))
  hint = _hint(manual)
  with _common.append_to_errors(hint):
    image, spacing, affine = preprocess.load_nifti(case.image)
    mask, _, mask_affine = preprocess.load_nifti(case.mask)
  if mask.shape != image.shape:
    raise ValueError(
        f"case {case.case_id}: mask {case.mask} has shape {mask.shape} but image {case.image} "
        f"has shape {image.shape}." + hint
    )
  if not np.allclose(mask_affine, affine, atol=1e-2):
    logging.warning(
        "case %s: the affines of mask %s and image %s differ; the mask is used on the image "
        "grid as is.", case.case_id, case.mask, case.image,
    )
  with _common.append_to_errors(f" (mask {case.mask}, image {case.image}).{hint}"):
    return preprocess_case(
        image,
        mask,
        spacing,
        affine,
        case_id=case.case_id,
        target_spacing=cfg.target_spacing,
        clip_percentiles=tuple(cfg.clip_percentiles),
    )
