"""tfds builder ``prostatex_bpmri``: biparametric prostate MRI with zones and csPCa (seed ``001``).

Data of the anatomical-vs-diagnostic loss study (Saha et al., REFERENCE §2): per patient the
three bpMRI channels (T2W, high-b DWI, ADC), a zonal map for the anatomical task and a mask of
clinically significant cancer (csPCa = ISUP grade group >= 2) for the diagnostic task.

Configs:

* ``phantom`` (default): ``num_cases`` (60) synthetic patients from
  `jaxseg.data.phantoms.bpmri.make_bpmri_case` with seeds ``base_seed + i`` (case ids
  ``bpmri-{seed:04d}``), rendered at ``phantom_shape`` / ``phantom_spacing`` (default
  192 x 192 x 20 at 0.5 x 0.5 x 3 mm, a 96 x 96 x 60 mm field of view), so that tests, examples
  and CPU presets run without downloads. CPU presets render at a coarse spacing directly (e.g.
  ``phantom_shape=(80, 80, 15), phantom_spacing=(1.25, 1.25, 4.0)``, ``target_spacing`` the same
  and ``crop_shape=(64, 64, 12)``).
* ``prostatex``: ProstateX (TCIA) images with the PROSTATEx_masks annotations (Cuocolo et al.,
  CC BY 4.0), read from the manual directory (`PROSTATEX_LAYOUT`)::

    <manual_dir>/Files/prostate/mask_pz/ProstateX-XXXX_pz.nii.gz         PZ mask
    <manual_dir>/Files/prostate/mask_tz/ProstateX-XXXX_tz.nii.gz         TZ mask
    <manual_dir>/Files/lesions/Masks/T2/ProstateX-XXXX-FindingN-*.nii.gz  lesion mask per finding
    <manual_dir>/Files/lesions/Masks/ADC/ProstateX-XXXX-FindingN-*.nii.gz (used when no T2 one)
    <manual_dir>/Files/lesions/PROSTATEx_Classes.csv                      ID, Clinically
                                                                          Significant, Gleason
                                                                          Grade Group
    <manual_dir>/**/ProstateX-XXXX*<modality>*.nii(.gz)                   the images, anywhere

  Patients are those with both zonal masks. Images are found anywhere under ``<manual_dir>``
  (outside ``mask*`` / ``Masks`` folders) by their ProstateX id (``ProstateX`` + 1-4 digits,
  any case, ``-``/``_``) and their modality, read from the file name or else from a parent
  folder: ADC = ``adc`` / ``Diffusion_Coefficient``; DWI = ``bval`` / ``hbv`` / ``dwi`` /
  ``trace`` / ``b1400``-like (a 3D high-b volume, e.g. the ``*_CALC_BVAL`` series); T2W =
  ``t2``. ``Files/prostate/Images/`` and ``Files/lesions/Images/{T2,ADC}/`` of PROSTATEx_masks
  therefore work as they are. Several series of one modality: the one named in an
  ``image_list.csv`` next to the zonal masks wins, then one named in any other ``*image_list*.csv``;
  otherwise it is an error naming them. The csPCa mask is the union of the masks of the findings
  that are clinically significant (``Clinically Significant`` true or grade group >= 2); the
  patient label is 1 iff the patient has such a finding. ``<manual_dir>`` may also hold the
  repository one level down (``PROSTATEx_masks-master/Files/...``).
* ``picai``: PI-CAI as published (`PICAI_LAYOUT`): the public images
  (``picai_public_images_fold{0-4}.zip``, unzipped) and the ``picai_labels`` repository, or
  exams converted to NIfTI in the same naming, as the ProstateX exams of
  ``../shared/data/prostatex_sample``::

    <manual_dir>/**/<patient>_<study>[_anything]_{t2w,adc,hbv}.mha (or .nii / .nii.gz)
        images, anywhere (e.g. picai_public_images_fold0/<patient>/); other sequences
        (``_cor.mha``, ``_sag.mha``) are ignored
    <manual_dir>/[picai_labels|labels|*]/anatomical_delineations/zonal_pz_tz/AI/<zonal_model>/
        <patient>_<study>.nii.gz                      zones, 1 = PZ, 2 = TZ (remapped: 1 TZ, 2 PZ)
    <manual_dir>/[...]/csPCa_lesion_delineations/<lesion_annotation>/<patient>_<study>.nii.gz
                                                      csPCa lesions (kinds below)
    <manual_dir>/**/marksheet*.csv                    optional: patient_id, study_id, case_csPCa

  ``.mha`` (and ``.mhd``) files are read directly with SimpleITK (`datasets._itk.read_image`),
  an optional dependency: ``pip install -e ".[itk]"`` (or ``pip install SimpleITK``); their
  ITK (LPS) direction and origin become the same RAS affine nibabel reads from the NIfTI
  conversion of the file, so the resampling through the affines below is the same for both.
  Labels may also be ``.mha``. A case with two files of one sequence (e.g. the ``.mha`` and
  its NIfTI conversion) uses the first in sorted path order (logged).

  Case ids are PI-CAI's ``<patient>_<study>`` (e.g. ``11373_1001396``). ``zonal_model`` defaults
  to ``HeviAI23`` (``Yuan23`` is the other PI-CAI model) and ``lesion_annotation`` to
  ``human_expert/resampled``. The kind of the lesion files follows from the annotation's name
  (`lesion_kind`): ``human_expert/original`` and ``human_expert/resampled`` hold ISUP grades
  (0 = no csPCa, 2-5 = ISUP of the lesion; csPCa = ``label >= 2``); every other annotation is
  binary (non-zero = csPCa): ``human_expert/Pooch25`` (the expert csPCa delineations added to
  picai_labels in 2025, 1 = csPCa lesion) and ``AI/Bosma22a``. An ISUP file that contains the
  value 1 (never an ISUP grade of a delineated lesion, but the lesion value of binary masks) is
  an error that says to pick a binary annotation, rather than a silently empty mask. An
  annotation folder that does not exist is an error listing those that do. A case without a
  lesion file gets an empty csPCa mask when the marksheet says ``case_csPCa = NO``, otherwise
  the AI delineation ``csPCa_lesion_delineations/AI/Bosma22a`` (binary; with a logged
  warning), otherwise it is incomplete. The patient label is the marksheet's ``case_csPCa``
  (YES = 1), or whether the mask is non-empty when the case is not in it.

  With only a few exams (the two of the shared sample) a random split is impossible: use
  ``split_fractions=(0, 0, 1)`` (every case in ``test``) or ``(1, 0, 0)``; a split with a zero
  fraction is left out (tfds cannot write an empty split).

Overlapping releases (every source). PI-CAI contains 328 ProstateX exams (327 patients), so a
model trained on one and tested on the other is tested on patients it has seen. ``exclude_ids``
(a tuple of this builder's own case ids: ``ProstateX-XXXX`` for ``prostatex``,
``<patient>_<study>`` or a bare PI-CAI ``<patient>`` id (all of its studies) for ``picai``,
``bpmri-XXXX`` for the phantoms) leaves those cases out before the split; the number left out
is logged, and an id that matches no case is a logged warning. The overlap list comes from a
mapping of ProstateX ids to PI-CAI ids, such as the ``ProstateX-mapping.json`` of the shared
sample (``{"ProstateX-0000_07-07-2011": "11373_1001396", ...}``). For ``picai``,
``exclude_prostatex=True`` reads such a mapping itself: every ``*prostatex*mapping*.json`` or
``.csv`` under the manual directory (PI-CAI ``<patient>_<study>`` ids anywhere in it, or
``patient_id`` / ``study_id`` columns), and leaves out every study of those patients; without
such a file it is an error. Both settings are part of the config's settings, so an excluded
build gets its own cache name (``replace`` / ``load(**settings)``).

Incomplete patients (a missing image, zonal mask, classification row or csPCa mask) are an error
that lists them, or, with ``skip_incomplete=True``, a logged warning and those patients are left
out. With ``require_dwi=False`` a missing DWI is not incomplete: the channel is all zeros.

Preprocessing (REFERENCE §2; the same for every config), `preprocess_case`:

1. onto the T2W grid: ADC and DWI (and any mask on another grid) are resampled through the
   affines (`resample_to_reference`: world coordinates, voxel map ``A_src^-1 A_t2w``; linear for
   images, nearest for masks; zero outside their field of view) -- in PI-CAI, ADC and ``hbv``
   are 84 x 128 x 19 at 2 x 2 x 3 mm against a 384 x 384 x 19 T2W at 0.5 x 0.5 x 3 mm;
2. resampling to ``target_spacing`` (0.5 x 0.5 x 3 mm; linear for images, nearest for masks,
   `jaxseg.data.preprocess.resample`, affine updated; ``None`` keeps the grid);
3. centre crop, or zero padding, to ``crop_shape`` (160 x 160 x 20; ``None`` keeps the shape;
   `center_crop_or_pad`: start ``(n - c) // 2`` per axis, affine origin moved accordingly);
4. intensities: T2W and DWI clipped to the ``clip_percentiles`` (0.5, 99.5) and z-scored per
   case (`jaxseg.data.preprocess.normalize_intensity`; ``(0, 100)`` is a plain z-score); ADC
   divided by ``adc_scale`` = 3000 um^2/s (~ free water at 37 C, so tissue maps to ~0.2-1; the
   "linear normalisation" of the study; ADC maps of ProstateX / PI-CAI are in 1e-6 mm^2/s);
5. patients (never slices) are split at random (``split_fractions`` 80/10/10, seed 42,
   `jaxseg.data.preprocess.split_cases`), stratified by patient label (``stratify=True``; the
   phantoms' planned label, `bpmri.planned_patient_label`).

Features: ``image`` float32 ``(x, y, z, 3)`` (channels T2W, DWI, ADC), ``zones`` uint8
``(x, y, z)`` (0 background, 1 TZ, 2 PZ -- REFERENCE §2's order; PI-CAI files are remapped),
``lesions`` uint8 ``(x, y, z)`` (1 = csPCa), ``patient_label`` int64 (1 = csPCa), ``case_id``
(text), ``spacing`` float32 ``(3,)``, ``affine`` float64 ``(4, 4)`` (voxel to world, mm, of the
cropped grid). Volumes are zlib-compressed tensors (no TensorFlow needed). The patient label
is the patient's, even when a lesion lies outside the crop (logged). Signed distance maps for
the boundary loss are not stored: they depend on the task, and the experiment computes them
once per label (`jaxseg.data.distance.signed_distance_maps`).

Custom settings get a distinct config name derived from them (``ProstatexBpmriConfig.replace`` /
``load(**settings)``), and `datasets._common.prepare` refuses a cached build whose recorded
settings differ, so cached builds never mix.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from absl import logging
import numpy as np
from scipy import ndimage
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _exclude
from datasets import _itk
from datasets import _prostatex
from datasets import _volumes
from jaxseg.data import preprocess

__all__ = [
    "ADC_SCALE",
    "CHANNELS",
    "PHANTOM",
    "PICAI",
    "PICAI_LAYOUT",
    "PROSTATEX",
    "PROSTATEX_LAYOUT",
    "ProstatexBpmri",
    "ProstatexBpmriConfig",
    "ZONE_CLASSES",
    "builder_config",
    "center_crop_or_pad",
    "lesion_kind",
    "preprocess_case",
    "remap_picai_zones",
    "resample_to_reference",
]

CHANNELS = ("t2w", "dwi", "adc")
"""Channel order of the ``image`` feature."""
ZONE_CLASSES = ("background", "tz", "pz")
"""Classes of the ``zones`` feature (REFERENCE §2); PI-CAI zonal files use 1 = PZ, 2 = TZ."""
ADC_SCALE = 3000.0
"""Default ADC divisor (um^2/s): the ADC channel is ``adc / 3000``."""

MASKS_URL = _prostatex.MASKS_URL
TCIA_URL = _prostatex.TCIA_URL
PICAI_LABELS_URL = "https://github.com/DIAGNijmegen/picai_labels"
PICAI_IMAGES_URL = "https://zenodo.org/records/6624726"
PROSTATEX_SOURCE = (
    f"the PROSTATEx_masks repository ({MASKS_URL}, CC BY 4.0: zonal masks, lesion masks, "
    f"PROSTATEx_Classes.csv) and the ProstateX bpMRI images from TCIA PROSTATEx ({TCIA_URL}: "
    "t2_tse_tra, the ADC map and a high-b DWI series, converted from DICOM to NIfTI, e.g. with "
    "dcm2niix)"
)
PICAI_SOURCE = (
    f"the PI-CAI labels ({PICAI_LABELS_URL}, CC BY-NC 4.0) and the PI-CAI public images "
    f"({PICAI_IMAGES_URL}: picai_public_images_fold0..4.zip, unzipped; the .mha files are read "
    f"with SimpleITK: {_itk.INSTALL_HINT})"
)
PROSTATEX_LAYOUT = """\
<manual_dir>/Files/prostate/mask_pz/ProstateX-XXXX_pz.nii.gz          PZ masks
<manual_dir>/Files/prostate/mask_tz/ProstateX-XXXX_tz.nii.gz          TZ masks
<manual_dir>/Files/lesions/Masks/T2/ProstateX-XXXX-FindingN-*.nii.gz  lesion masks (or Masks/ADC/)
<manual_dir>/Files/lesions/PROSTATEx_Classes.csv                      ID, Clinically Significant,
                                                                      Gleason Grade Group
<manual_dir>/**/ProstateX-XXXX*t2*.nii.gz    T2W   (anywhere outside mask folders; modality
<manual_dir>/**/ProstateX-XXXX*adc*.nii.gz   ADC    from the file name or a parent folder
<manual_dir>/**/ProstateX-XXXX*bval*.nii.gz  DWI    named T2 / ADC / DWI; 3D high-b volume)
(Files/ may also sit one level down, e.g. in PROSTATEx_masks-master/)"""
PICAI_LAYOUT = """\
<manual_dir>/**/<patient>_<study>[_...]_t2w.mha   T2W  (e.g. picai_public_images_fold0/<patient>/;
<manual_dir>/**/<patient>_<study>[_...]_adc.mha   ADC   .nii / .nii.gz work too; _cor / _sag
<manual_dir>/**/<patient>_<study>[_...]_hbv.mha   DWI   and other sequences are ignored)
<manual_dir>/picai_labels/anatomical_delineations/zonal_pz_tz/AI/<zonal_model>/
    <patient>_<study>.nii.gz                      zones (1 = PZ, 2 = TZ)
<manual_dir>/picai_labels/csPCa_lesion_delineations/<lesion_annotation>/
    <patient>_<study>.nii.gz                      lesions (ISUP 2-5, or binary for Pooch25 / AI)
<manual_dir>/**/marksheet*.csv                    optional (patient_id, study_id, case_csPCa)
(picai_labels/ may also be labels/, or any folder holding csPCa_lesion_delineations/)"""

_VERSION = tfds.core.Version("1.1.0")
_RELEASE_NOTES = {
    "1.0.0": "Initial release: phantom, prostatex and picai configs.",
    "1.1.0": "exclude_ids (all configs) and exclude_prostatex (picai) settings; picai reads the "
             "published .mha images and binary lesion annotations (human_expert/Pooch25).",
}
_FINDING = re.compile(r"prostatex[-_ ]?(\d{1,4})[-_ ]?finding[-_ ]?(\d+)", re.IGNORECASE)
_PICAI_IMAGE = re.compile(r"^(\d+_\d+)(?:_.*)?_(t2w|adc|hbv)\.(?:nii(?:\.gz)?|mha|mhd)$",
                          re.IGNORECASE)
_PICAI_ID = re.compile(r"^\d+_\d+$")
_LABEL_SUFFIXES = (".nii.gz", ".nii", ".mha")
_ISUP_ANNOTATIONS = ("human_expert/original", "human_expert/resampled")
_T2W, _DWI, _ADC = "t2w", "dwi", "adc"
_NAME_HINT = {_T2W: "t2", _ADC: "adc", _DWI: "bval"}
_TRUE = {"true", "1", "yes", "y", "t"}


@dataclasses.dataclass(eq=False)
class ProstatexBpmriConfig(_common.JaxsegBuilderConfig):
  """Settings of a ``prostatex_bpmri`` build.

  Attributes:
    source: ``"phantom"``, ``"prostatex"`` or ``"picai"``.
    num_cases: number of phantom patients (phantom only).
    phantom_shape: ``(x, y, z)`` shape each phantom is rendered at.
    phantom_spacing: voxel spacing (mm) each phantom is rendered at.
    base_seed: phantom ``i`` uses seed ``base_seed + i``.
    target_spacing: voxel spacing (mm) after resampling, or None to keep each case's grid.
    crop_shape: ``(x, y, z)`` shape of the centre crop (zero padded), or None for no crop.
    split_seed: seed of the split by patient.
    split_fractions: fractions of (train, validation, test); zero fractions are allowed (e.g.
      ``(0, 0, 1)`` for a handful of exams: all in ``test``).
    stratify: stratify the split by patient label.
    clip_percentiles: T2W / DWI percentiles to clip to before z-scoring.
    adc_scale: the ADC channel is divided by it (um^2/s).
    zonal_model: picai only: folder under ``zonal_pz_tz/AI/`` with the zonal labels.
    lesion_annotation: picai only: folder under ``csPCa_lesion_delineations/``; its files are
      ISUP grades for ``human_expert/original`` / ``resampled``, binary otherwise (e.g.
      ``human_expert/Pooch25``, ``AI/Bosma22a``; `lesion_kind`).
    require_dwi: prostatex / picai: a missing DWI makes a patient incomplete (else the DWI
      channel is zeros).
    skip_incomplete: prostatex / picai: leave incomplete patients out (logged) instead of
      raising an error.
    exclude_ids: case ids to leave out of the build (all sources; for picai a bare patient id
      excludes all of its studies), e.g. the patients another release shares (module
      docstring); stored sorted, so the order does not matter. A string of ids separated by
      commas or spaces is accepted too.
    exclude_prostatex: picai only: also leave out the patients listed in a
      ``*prostatex*mapping*.json`` / ``.csv`` under the manual directory (the ProstateX exams
      of PI-CAI).
  """

  source: str = "phantom"
  num_cases: int = 60
  phantom_shape: tuple[int, int, int] = (192, 192, 20)
  phantom_spacing: tuple[float, float, float] = (0.5, 0.5, 3.0)
  base_seed: int = 0
  target_spacing: tuple[float, float, float] | None = (0.5, 0.5, 3.0)
  crop_shape: tuple[int, int, int] | None = (160, 160, 20)
  split_seed: int = 42
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  stratify: bool = True
  clip_percentiles: tuple[float, float] = (0.5, 99.5)
  adc_scale: float = ADC_SCALE
  zonal_model: str = "HeviAI23"
  lesion_annotation: str = "human_expert/resampled"
  require_dwi: bool = True
  skip_incomplete: bool = False
  exclude_ids: tuple[str, ...] = ()
  exclude_prostatex: bool = False

  def __post_init__(self):
    _common.check_choice("source", self.source, ("phantom", "prostatex", "picai"))
    if self.source == "phantom" and int(self.num_cases) < 1:
      raise ValueError(f"num_cases must be >= 1, got {self.num_cases}.")
    if int(self.base_seed) < 0:
      raise ValueError(f"base_seed must be >= 0, got {self.base_seed}.")
    _common.check_shape("phantom_shape", self.phantom_shape)
    if self.crop_shape is not None:
      _common.check_shape("crop_shape", self.crop_shape)
    _common.check_spacing("phantom_spacing", self.phantom_spacing)
    if self.target_spacing is not None:
      _common.check_spacing("target_spacing", self.target_spacing)
    _common.check_percentiles(self.clip_percentiles)
    if not (np.isfinite(self.adc_scale) and self.adc_scale > 0):
      raise ValueError(f"adc_scale must be finite and positive, got {self.adc_scale}.")
    for name in ("zonal_model", "lesion_annotation"):
      value = getattr(self, name)
      if not value or ".." in value.replace("\\", "/").split("/"):
        raise ValueError(f"{name} must be a folder name, got {value!r}.")
    self.exclude_ids = _exclude.normalize_ids(self.exclude_ids)
    if self.exclude_prostatex and self.source != "picai":
      raise ValueError(f"exclude_prostatex is a setting of source 'picai', not {self.source!r}"
                       " (use exclude_ids there).")


PHANTOM = ProstatexBpmriConfig(
    name="phantom",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "Synthetic bpMRI patients (jaxseg.data.phantoms.bpmri): 60 of 192 x 192 x 20 at "
        "0.5 x 0.5 x 3 mm, centre-cropped to 160 x 160 x 20."
    ),
    source="phantom",
)
PROSTATEX = ProstatexBpmriConfig(
    name="prostatex",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "ProstateX bpMRI with PROSTATEx_masks zonal and lesion masks (manual download), "
        "0.5 x 0.5 x 3 mm, 160 x 160 x 20."
    ),
    source="prostatex",
)
PICAI = ProstatexBpmriConfig(
    name="picai",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "bpMRI exams in the PI-CAI layout with PI-CAI zonal and csPCa labels (manual "
        "download), 0.5 x 0.5 x 3 mm, 160 x 160 x 20."
    ),
    source="picai",
)


# ------------------------------------------------------------------------------------------
# Grid operations and the shared preprocessing.
# ------------------------------------------------------------------------------------------


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

  (homogeneous coordinates; both affines map voxel centres to world mm), interpolated with
  `scipy.ndimage.affine_transform` (``order=1`` linear for images, ``order=0`` nearest for
  labels: it copies input values, so no new label appears). Points outside the input take
  ``cval``. When the grids coincide (same shape, ``M`` = identity within 1e-3 voxel) the volume
  is returned unchanged (a copy).

  Args:
    volume: ``(x, y, z)`` array on the grid of ``affine``.
    affine: its 4x4 voxel-to-world matrix.
    reference_shape: shape of the target grid.
    reference_affine: 4x4 voxel-to-world matrix of the target grid.
    order: spline order, 0 (nearest) or 1 (linear).
    cval: value outside the input's field of view.

  Returns:
    The volume on the reference grid (float32 for ``order=1``, the input dtype for 0).
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
  return ndimage.affine_transform(
      src, m[:3, :3], offset=m[:3, 3], output_shape=ref_shape, order=order,
      mode="constant", cval=cval, prefilter=False,
  )


def center_crop_or_pad(
    volume: np.ndarray, shape: Sequence[int], *, fill: float = 0, affine: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
  """Centre crop (or pad with ``fill``) the three leading axes of ``volume`` to ``shape``.

  Along an axis of size ``n`` and target ``c`` the output covers input indices
  ``start .. start + c - 1`` with ``start = floor((n - c) / 2)``: an odd excess is cropped one
  voxel more after than before, an odd deficit padded one voxel more before than after
  (``-start`` voxels before). The affine's origin moves to input voxel ``start``:
  ``A_out = A T(start)``.

  Returns:
    ``(volume, affine)`` (affine None when none was given).
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


def remap_picai_zones(label: np.ndarray, *, name: str = "zonal label") -> np.ndarray:
  """PI-CAI zonal labels (0, 1 = PZ, 2 = TZ) -> this project's (0, 1 = TZ, 2 = PZ), uint8."""
  lab = preprocess.validate_label(label, 3, name=name)
  out = np.zeros(lab.shape, np.uint8)
  out[lab == 2] = 1
  out[lab == 1] = 2
  return out


def preprocess_case(
    t2w: np.ndarray,
    dwi: np.ndarray,
    adc: np.ndarray,
    zones: np.ndarray,
    lesions: np.ndarray,
    spacing: Sequence[float],
    affine: np.ndarray,
    *,
    case_id: str,
    patient_label: int,
    target_spacing: Sequence[float] | None,
    crop_shape: Sequence[int] | None,
    clip_percentiles: tuple[float, float] = (0.5, 99.5),
    adc_scale: float = ADC_SCALE,
) -> dict[str, Any]:
  """One patient on one grid -> one example: resample, crop / pad, normalise (module docstring).

  Args:
    t2w: ``(x, y, z)`` T2W intensities.
    dwi: ``(x, y, z)`` high-b DWI on the T2W grid.
    adc: ``(x, y, z)`` ADC (um^2/s) on the T2W grid.
    zones: ``(x, y, z)`` zonal labels 0 / 1 TZ / 2 PZ.
    lesions: ``(x, y, z)`` csPCa mask 0 / 1.
    spacing: voxel spacing (mm).
    affine: 4x4 voxel-to-world matrix.
    case_id: identifier (error messages too).
    patient_label: 0 / 1.
    target_spacing: spacing after resampling (mm), or None.
    crop_shape: shape of the centre crop / pad, or None.
    clip_percentiles: T2W / DWI percentiles for `preprocess.normalize_intensity`.
    adc_scale: ADC divisor.

  Returns:
    The example with the builder's features.

  Raises:
    ValueError: shapes differ, non-finite values, labels out of range, bad patient label.
  """
  t2w = np.asarray(t2w)
  if t2w.ndim != 3:
    raise ValueError(f"case {case_id}: T2W must be 3D, got shape {t2w.shape}.")
  arrays = {"DWI": np.asarray(dwi), "ADC": np.asarray(adc), "zones": np.asarray(zones),
            "lesions": np.asarray(lesions)}
  for what, arr in arrays.items():
    if arr.shape != t2w.shape:
      raise ValueError(
          f"case {case_id}: {what} shape {arr.shape} differs from T2W shape {t2w.shape}.")
  for what, arr in (("T2W", t2w), ("DWI", arrays["DWI"]), ("ADC", arrays["ADC"])):
    _volumes.check_finite(arr, what, case_id)
  zones = preprocess.validate_label(arrays["zones"], 3, name=f"case {case_id}: zones")
  lesions = preprocess.validate_label(arrays["lesions"], 2, name=f"case {case_id}: lesions")
  if patient_label not in (0, 1):
    raise ValueError(f"case {case_id}: patient_label must be 0 or 1, got {patient_label!r}.")
  spacing = preprocess.validate_spacing(spacing, name=f"case {case_id}: spacing")
  affine = np.asarray(affine, np.float64)
  images = [t2w.astype(np.float32), arrays["DWI"].astype(np.float32),
            arrays["ADC"].astype(np.float32)]
  if target_spacing is not None:
    images = [preprocess.resample(im, spacing, target_spacing, order=1) for im in images]
    shape = images[0].shape
    zones = preprocess.resample(zones, spacing, target_spacing, order=0, shape=shape)
    lesions = preprocess.resample(lesions, spacing, target_spacing, order=0, shape=shape)
    affine = preprocess.resample_affine(affine, spacing, target_spacing)
    spacing = np.asarray(target_spacing, np.float64)
  if crop_shape is not None:
    cropped = [center_crop_or_pad(im, crop_shape)[0] for im in images]
    zones = center_crop_or_pad(zones, crop_shape)[0]
    lesions, affine = center_crop_or_pad(lesions, crop_shape, affine=affine)
    images = cropped
  lo, hi = clip_percentiles
  channels = [
      preprocess.normalize_intensity(images[0], lower=lo, upper=hi),
      preprocess.normalize_intensity(images[1], lower=lo, upper=hi),
      (images[2].astype(np.float64) / float(adc_scale)).astype(np.float32),
  ]
  if patient_label == 1 and not lesions.any():
    logging.warning("case %s: csPCa patient without csPCa voxels in the (cropped) volume.",
                    case_id)
  return {
      "image": np.stack(channels, axis=-1).astype(np.float32),
      "zones": zones.astype(np.uint8),
      "lesions": lesions.astype(np.uint8),
      "patient_label": np.int64(patient_label),
      "case_id": case_id,
      "spacing": np.asarray(spacing, np.float32),
      "affine": np.asarray(affine, np.float64),
  }


# ------------------------------------------------------------------------------------------
# The builder.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Case:
  """One real patient: file paths (None: absent) and what is known of its label."""

  case_id: str
  t2w: str
  adc: str
  dwi: str | None
  zonal: tuple[str, ...]        # prostatex: (pz, tz); picai: (zonal label,)
  lesions: tuple[str, ...]      # prostatex: csPCa finding masks; picai: () or (label,)
  lesion_kind: str = "none"     # picai: "isup" (0 / 2-5), "binary" (Pooch25, AI) or "none"
  patient_label: int | None = None


class ProstatexBpmri(_builder.CaseBuilder):
  """bpMRI (T2W, DWI, ADC) with zonal and csPCa labels: phantom, ProstateX or PI-CAI layout."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [PHANTOM, PROSTATEX, PICAI]
  DEFAULT_BUILDER_CONFIG_NAME = "phantom"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'prostatex': download {PROSTATEX_SOURCE}, and place them in the manual "
      f"directory (manual_dir=...) with this layout:\n{PROSTATEX_LAYOUT}\n"
      f"Config 'picai': download {PICAI_SOURCE}, with this layout:\n{PICAI_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "Biparametric prostate MRI (channels T2W, high-b DWI, ADC) with zonal labels "
            "(0 background, 1 TZ, 2 PZ), a csPCa mask (ISUP >= 2) and a patient label; "
            "resampled, centre-cropped, T2W / DWI z-scored, ADC / 3000 (REFERENCE §2)."
        ),
        features={
            "image": _builder.volume_feature(np.float32, channels=3),
            "zones": _builder.volume_feature(np.uint8),
            "lesions": _builder.volume_feature(np.uint8),
            "patient_label": tfds.features.Tensor(shape=(), dtype=np.int64),
            "case_id": tfds.features.Text(),
            **_builder.geometry_features(),
        },
        homepage=PICAI_LABELS_URL,
        channels=list(CHANNELS),
        zone_classes=list(ZONE_CLASSES),
        lesion_classes=["background", "csPCa"],
        citation=(
            "Saha, A., Hosseinzadeh, M., Huisman, H.: End-to-end prostate cancer detection in "
            "bpMRI via 3D CNNs: effects of attention mechanisms, clinical priori and decoupled "
            "false positive reduction. Medical Image Analysis 73, 102155 (2021). "
            "Saha, A. et al.: Artificial intelligence and radiologists in prostate cancer "
            "detection on MRI (PI-CAI). Lancet Oncology 25(7), 879-887 (2024). "
            "Cuocolo, R. et al.: Quality control and whole-gland, zonal and lesion annotations "
            "for the PROSTATEx challenge public dataset. European Journal of Radiology 138, "
            "109647 (2021). Litjens, G. et al.: ProstateX Challenge data. The Cancer Imaging "
            "Archive (2017). https://doi.org/10.7937/K9TCIA.2017.MURS5CL"
        ),
    )

  def _split_generators(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    if cfg.source == "phantom":
      from jaxseg.data.phantoms import bpmri  # pylint: disable=g-import-not-at-top

      seeds = _builder.phantom_seeds(cfg)
      cases: dict[str, Any] = _exclude.exclude_cases(
          {_phantom_case_id(s): s for s in seeds}, cfg.exclude_ids,
          dataset="prostatex_bpmri (phantom)")
      labels = {c: bpmri.planned_patient_label(s) for c, s in cases.items()}
    else:
      manual = _RELEASES[cfg.source].manual_dir(dl_manager)
      if cfg.source == "prostatex":
        found = _find_prostatex_cases(manual, cfg)
      else:
        found = _find_picai_cases(manual, cfg)
      cases = {c.case_id: c for c in found}
      labels = {c.case_id: _known_label(c) for c in found}
    return self._split_by_case(cases, groups=labels if cfg.stratify else None)

  def _example(self, case) -> dict[str, Any]:
    cfg = self.builder_config
    if cfg.source == "phantom":
      return _phantom_example(int(case), cfg)
    if cfg.source == "prostatex":
      return _prostatex_example(case, cfg)
    return _picai_example(case, cfg)


def _preprocess(cfg: ProstatexBpmriConfig, *args, **kwargs) -> dict[str, Any]:
  return preprocess_case(
      *args,
      target_spacing=None if cfg.target_spacing is None else tuple(cfg.target_spacing),
      crop_shape=None if cfg.crop_shape is None else tuple(cfg.crop_shape),
      clip_percentiles=tuple(cfg.clip_percentiles),
      adc_scale=float(cfg.adc_scale),
      **kwargs,
  )


# ------------------------------------------------------------------------------------------
# Phantom.
# ------------------------------------------------------------------------------------------


def _phantom_case_id(seed: int) -> str:
  """The case id `make_bpmri_case` gives seed ``seed``."""
  return f"bpmri-{seed:04d}"


def _phantom_example(seed: int, cfg: ProstatexBpmriConfig) -> dict[str, Any]:
  from jaxseg.data.phantoms import bpmri  # pylint: disable=g-import-not-at-top

  case = bpmri.make_bpmri_case(
      seed, shape=tuple(cfg.phantom_shape), spacing=tuple(cfg.phantom_spacing)
  )
  return _preprocess(
      cfg, case.image[..., 0], case.image[..., 1], case.image[..., 2], case.zones,
      case.lesions, case.spacing, case.affine, case_id=case.case_id,
      patient_label=case.patient_label,
  )


# ------------------------------------------------------------------------------------------
# Manual data: shared helpers.
# ------------------------------------------------------------------------------------------


_RELEASES = {
    "prostatex": _common.ManualRelease(
        dataset="prostatex_bpmri (config 'prostatex')", source=PROSTATEX_SOURCE,
        layout=PROSTATEX_LAYOUT,
    ),
    "picai": _common.ManualRelease(
        dataset="prostatex_bpmri (config 'picai')", source=PICAI_SOURCE, layout=PICAI_LAYOUT
    ),
}


def _walk(root: str) -> list[str]:
  """Every file under ``root`` (following links), sorted, hidden entries skipped."""
  out = []
  for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
    out.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith("."))
  return sorted(out)


def _find_path(directory: str, *parts: str) -> str | None:
  """``directory/part/...`` with every part matched by `_prostatex.find_child`, or None."""
  for part in parts:
    found = _prostatex.find_child(directory, part)
    if found is None:
      return None
    directory = found
  return directory


def _read_csv(path: str) -> list[dict[str, str]]:
  with open(path, encoding="utf-8-sig", newline="") as f:
    return [{(k or "").strip(): (v or "").strip() for k, v in row.items()}
            for row in csv.DictReader(f)]


def _column(row: Mapping[str, str], *names: str) -> str | None:
  lowered = {k.lower().replace("_", " "): v for k, v in row.items()}
  for name in names:
    if name in lowered:
      return lowered[name]
  return None


def _load(path: str, hint: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(array, spacing, RAS affine)`` of a NIfTI file, or of a ``.mha`` / ``.mhd`` (SimpleITK)."""
  with _common.append_to_errors(f" {hint}"):
    if _itk.is_itk_file(path):
      return _itk.read_image(
          path, reader="prostatex_bpmri (config 'picai') reads the PI-CAI .mha images")
    return preprocess.load_nifti(path)


def _known_label(case: _Case) -> int:
  """The patient label for stratification (reads the lesion file when it is not known)."""
  if case.patient_label is not None:
    return case.patient_label
  return int(any(_lesion_from_file(p, case.lesion_kind, case.case_id)[0].any()
                 for p in case.lesions))


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


def _lesion_from_file(path: str, kind: str, case_id: str) -> tuple[np.ndarray, np.ndarray]:
  """``(mask, affine)``: csPCa (bool) from a lesion file, ISUP labels >= 2 or binary > 0.

  An ISUP file holding the value 1 is an error: delineated lesions are ISUP 2-5, while 1 is the
  lesion value of binary masks (e.g. human_expert/Pooch25), which ``>= 2`` would empty.
  """
  data, _, affine = _load(path, f"(lesion label of case {case_id})")
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


def _finish(source: str, manual_dir: str, cases: list[_Case], incomplete: list[str],
            total: int, cfg: ProstatexBpmriConfig) -> list[_Case]:
  """Raises for incomplete patients (or logs and drops them with ``skip_incomplete``)."""
  if incomplete and (not cfg.skip_incomplete or not cases):
    raise _RELEASES[source].error(
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


# ------------------------------------------------------------------------------------------
# ProstateX (PROSTATEx_masks layout).
# ------------------------------------------------------------------------------------------


def _modality(path: str, root: str) -> str | None:
  """T2W / DWI / ADC from the file name, else from the parent folders (None: not an image)."""
  name = _prostatex.nifti_stem(path).lower()
  if re.search(r"roi|mask|label|seg", name):
    return None
  if re.search(r"adc|diffusion_coefficient", name):
    return _ADC
  if re.search(r"bval|hbv|dwi|trace|(?:^|[^a-z0-9])b\d{3,4}(?![0-9])", name):
    return _DWI
  if "t2" in name:
    return _T2W
  for folder in reversed(os.path.relpath(os.path.dirname(path), root).lower().split(os.sep)):
    if folder in ("adc",):
      return _ADC
    if folder in ("dwi", "hbv", "bval", "highb", "high_b"):
      return _DWI
    if folder in ("t2", "t2w"):
      return _T2W
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
  for row in _read_csv(path):
    ident = _column(row, "id", "proxid")
    m = _FINDING.search(ident or "")
    if m is None:
      continue
    case_id = f"ProstateX-{int(m.group(1)):04d}"
    sig = (_column(row, "clinically significant", "clinsig") or "").lower() in _TRUE
    ggg = _column(row, "gleason grade group", "ggg", "isup") or ""
    if ggg.isdigit() and int(ggg) >= 2:
      sig = True
    out.setdefault(case_id, {})[int(m.group(2))] = sig
  return out


def _find_prostatex_cases(manual_dir: str, cfg: ProstatexBpmriConfig) -> list[_Case]:
  """Pairs zonal masks, classes, lesion masks and images (module docstring)."""
  root = _prostatex.prostate_folder(manual_dir, "mask_pz", "mask_tz")
  if root is None:
    raise _RELEASES["prostatex"].error(
        manual_dir,
        missing=[os.path.join(manual_dir, "Files", "prostate", d) + os.sep
                 for d in ("mask_pz", "mask_tz")],
        problem=f"No Files/prostate/mask_pz/ and mask_tz/ folders found under {manual_dir}.",
    )
  files = _walk(manual_dir)
  zonal: dict[str, dict[str, str]] = {}
  for kind in ("pz", "tz"):
    folder = os.path.normpath(_prostatex.find_child(root, f"mask_{kind}"))
    for path in files:
      if os.path.normpath(os.path.dirname(path)) == folder and _prostatex.NIFTI.search(path):
        case_id = _prostatex.canonical_case_id(path)
        if case_id is not None:
          zonal.setdefault(case_id, {}).setdefault(kind, path)
  if not zonal:
    raise _RELEASES["prostatex"].error(
        manual_dir,
        missing=[os.path.join(root, "mask_pz", "ProstateX-XXXX_pz.nii.gz")],
        problem=f"No ProstateX-XXXX_pz/_tz.nii.gz mask found in {root}/mask_pz, mask_tz.",
    )
  classes_path = next((p for p in files
                       if os.path.basename(p).lower() == "prostatex_classes.csv"), None)
  if classes_path is None:
    raise _RELEASES["prostatex"].error(
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
    for modality in (_T2W, _ADC, _DWI):
      paths = images.get(case_id, {}).get(modality, [])
      if not paths:
        if modality != _DWI or cfg.require_dwi:
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
    cases.append(_Case(
        case_id=case_id, t2w=chosen[_T2W], adc=chosen[_ADC], dwi=chosen[_DWI],
        zonal=(z["pz"], z["tz"]), lesions=tuple(masks), lesion_kind="binary",
        patient_label=int(any(findings.values())),
    ))
  unused = sorted(set(images) - set(zonal) - set(cfg.exclude_ids))
  if unused:
    logging.info("prostatex_bpmri: %d patient(s) with images but no zonal masks ignored: %s",
                 len(unused), unused[:20])
  n_bad = len({p.split(":")[0] for p in incomplete})
  return _finish("prostatex", manual_dir, cases, incomplete, len(cases) + n_bad, cfg)


def _binary_on_grid(path: str, shape, affine, case_id: str, hint: str) -> np.ndarray:
  data, _, aff = _load(path, hint)
  _volumes.check_finite(data, f"mask {path}", case_id)
  mask = (np.asarray(data) > 0).astype(np.uint8)
  return resample_to_reference(mask, aff, reference_shape=shape, reference_affine=affine,
                               order=0).astype(bool)


def _image_on_grid(path: str | None, shape, affine, hint: str) -> np.ndarray:
  if path is None:
    return np.zeros(shape, np.float32)
  data, _, aff = _load(path, hint)
  return resample_to_reference(data, aff, reference_shape=shape, reference_affine=affine,
                               order=1)


def _prostatex_example(case: _Case, cfg: ProstatexBpmriConfig) -> dict[str, Any]:
  hint = (f"(case {case.case_id}; masks from {MASKS_URL}, images from TCIA PROSTATEx "
          f"{TCIA_URL} converted to NIfTI)")
  t2w, spacing, affine = _load(case.t2w, hint)
  adc = _image_on_grid(case.adc, t2w.shape, affine, hint)
  dwi = _image_on_grid(case.dwi, t2w.shape, affine, hint)
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
  with _common.append_to_errors(f" {hint}"):
    return _preprocess(cfg, t2w, dwi, adc, zones, lesions.astype(np.uint8), spacing, affine,
                       case_id=case.case_id, patient_label=int(case.patient_label))


# ------------------------------------------------------------------------------------------
# PI-CAI layout.
# ------------------------------------------------------------------------------------------


def _labels_root(files: list[str], manual_dir: str) -> str | None:
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


def _read_marksheet(files: list[str]) -> dict[str, int]:
  """``{patient_study: case_csPCa}`` from every ``marksheet*.csv`` found."""
  out: dict[str, int] = {}
  for path in files:
    name = os.path.basename(path).lower()
    if not (name.startswith("marksheet") and name.endswith(".csv")):
      continue
    for row in _read_csv(path):
      pid, sid = _column(row, "patient id"), _column(row, "study id")
      value = (_column(row, "case cspca") or "").upper()
      if pid and sid and value in ("YES", "NO"):
        out[f"{pid}_{sid}"] = int(value == "YES")
  return out


def _prostatex_mapping(files: list[str], manual_dir: str) -> tuple[set[str], list[str]]:
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
      for row in _read_csv(path):
        found.extend(row.values())
        pid = _column(row, "patient id")
        if pid and pid.isdigit():
          patients.add(pid)
    patients.update(v.strip().split("_")[0] for v in found if _PICAI_ID.match(v.strip()))
  if used and not patients:
    raise ValueError(f"The ProstateX mapping file(s) {used} name no PI-CAI <patient>_<study> id; "
                     "fix them, or set exclude_prostatex=False.")
  return patients, used


def _find_picai_cases(manual_dir: str, cfg: ProstatexBpmriConfig) -> list[_Case]:
  """Pairs PI-CAI images, zonal and lesion labels and the marksheet (module docstring)."""
  files = _walk(manual_dir)
  images: dict[str, dict[str, str]] = {}
  duplicates: dict[tuple[str, str], list[str]] = {}
  for path in files:
    m = _PICAI_IMAGE.match(os.path.basename(path))
    if m is not None:
      modality = {"t2w": _T2W, "adc": _ADC, "hbv": _DWI}[m.group(2).lower()]
      chosen = images.setdefault(m.group(1), {}).setdefault(modality, path)
      if chosen != path:
        duplicates.setdefault((m.group(1), modality), [chosen]).append(path)
  if not images:
    raise _RELEASES["picai"].error(
        manual_dir,
        missing=[os.path.join(manual_dir, "picai_public_images_fold0", "<patient>",
                              "<patient>_<study>_t2w.mha")],
        problem=(f"No <patient>_<study>_{{t2w,adc,hbv}}.mha (or .nii / .nii.gz) image found "
                 f"under {manual_dir}; unzip the PI-CAI picai_public_images_fold*.zip there."),
    )
  for (case_id, modality), paths in sorted(duplicates.items()):
    logging.warning("case %s: %d %s files %s; using the first, %s.", case_id, len(paths),
                    modality.upper(), paths, paths[0])
  labels = _labels_root(files, manual_dir)
  if labels is None:
    raise _RELEASES["picai"].error(
        manual_dir,
        missing=[os.path.join(manual_dir, "picai_labels", "anatomical_delineations") + os.sep,
                 os.path.join(manual_dir, "picai_labels", "csPCa_lesion_delineations") + os.sep],
        problem=f"No PI-CAI labels (anatomical_delineations/, csPCa_lesion_delineations/) "
                f"found under {manual_dir}.",
    )
  zonal_ai = _find_path(labels, "anatomical_delineations", "zonal_pz_tz", "AI")
  zonal_dir = _find_path(zonal_ai, *cfg.zonal_model.split("/")) if zonal_ai else None
  if zonal_dir is None or not os.path.isdir(zonal_dir):
    available = sorted(os.listdir(zonal_ai)) if zonal_ai and os.path.isdir(zonal_ai) else []
    raise _RELEASES["picai"].error(
        manual_dir,
        missing=[os.path.join(labels, "anatomical_delineations", "zonal_pz_tz", "AI",
                              cfg.zonal_model) + os.sep],
        problem=(f"No zonal labels of model {cfg.zonal_model!r} under {labels} (available: "
                 f"{available or 'none'}; choose one with zonal_model=...)."),
    )
  lesion_root = _find_path(labels, "csPCa_lesion_delineations")
  lesion_dir = _find_path(lesion_root, *cfg.lesion_annotation.split("/")) if lesion_root else None
  if lesion_root is not None and (lesion_dir is None or not os.path.isdir(lesion_dir)):
    available = sorted(
        f"{a}/{b}" for a in os.listdir(lesion_root) if os.path.isdir(os.path.join(lesion_root, a))
        for b in os.listdir(os.path.join(lesion_root, a))
        if os.path.isdir(os.path.join(lesion_root, a, b)))
    raise _RELEASES["picai"].error(
        manual_dir,
        missing=[os.path.join(lesion_root, cfg.lesion_annotation) + os.sep],
        problem=(f"No lesion annotation {cfg.lesion_annotation!r} under {lesion_root} "
                 f"(available: {available or 'none'}; choose one with lesion_annotation=..., "
                 "or update picai_labels: human_expert/Pooch25 was added in 2025)."),
    )
  ai_dir = _find_path(lesion_root, "AI", "Bosma22a") if lesion_root else None
  kind_of_annotation = lesion_kind(cfg.lesion_annotation)
  marksheet = _read_marksheet(files)

  def patient_of(case_id: str) -> tuple[str]:
    return (case_id.split("_")[0],)

  dataset = "prostatex_bpmri (picai)"
  images = _exclude.exclude_cases(images, cfg.exclude_ids, dataset=dataset, aliases=patient_of)
  if cfg.exclude_prostatex:
    patients, mapping_files = _prostatex_mapping(files, manual_dir)
    if not mapping_files:
      raise _RELEASES["picai"].error(
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
    for modality, suffix in ((_T2W, "t2w"), (_ADC, "adc"), (_DWI, "hbv")):
      if modality not in found and (modality != _DWI or cfg.require_dwi):
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
    cases.append(_Case(
        case_id=case_id, t2w=found[_T2W], adc=found[_ADC], dwi=found.get(_DWI),
        zonal=(zonal,), lesions=() if lesion is None else (lesion,),
        lesion_kind="none" if lesion is None else kind, patient_label=known,
    ))
  n_bad = len({p.split(":")[0] for p in incomplete})
  return _finish("picai", manual_dir, cases, incomplete, len(cases) + n_bad, cfg)


def _picai_example(case: _Case, cfg: ProstatexBpmriConfig) -> dict[str, Any]:
  hint = f"(case {case.case_id}; PI-CAI labels {PICAI_LABELS_URL}, images {PICAI_IMAGES_URL})"
  t2w, spacing, affine = _load(case.t2w, hint)
  adc = _image_on_grid(case.adc, t2w.shape, affine, hint)
  dwi = _image_on_grid(case.dwi, t2w.shape, affine, hint)
  zonal, _, zonal_affine = _load(case.zonal[0], hint)
  zones = remap_picai_zones(zonal, name=f"{case.zonal[0]} (PI-CAI zones 0 / 1 PZ / 2 TZ)")
  zones = resample_to_reference(zones, zonal_affine, reference_shape=t2w.shape,
                                reference_affine=affine, order=0)
  lesions = np.zeros(t2w.shape, bool)
  for path in case.lesions:
    mask, lesion_affine = _lesion_from_file(path, case.lesion_kind, case.case_id)
    lesions |= resample_to_reference(mask.astype(np.uint8), lesion_affine,
                                     reference_shape=t2w.shape, reference_affine=affine,
                                     order=0).astype(bool)
  label = case.patient_label
  if label is None:
    label = int(lesions.any())
  elif label != int(lesions.any()):
    logging.warning("case %s: marksheet case_csPCa = %s but the csPCa mask is %s.",
                    case.case_id, "YES" if label else "NO",
                    "empty" if label else "not empty")
  with _common.append_to_errors(f" {hint}"):
    return _preprocess(cfg, t2w, dwi, adc, zones, lesions.astype(np.uint8), spacing, affine,
                       case_id=case.case_id, patient_label=int(label))


def builder_config(
    config: str | ProstatexBpmriConfig = "phantom", **overrides: Any
) -> ProstatexBpmriConfig:
  """A config by name (or object) with optional setting overrides (distinct name if any)."""
  return _common.builder_config(ProstatexBpmri, config, **overrides)
