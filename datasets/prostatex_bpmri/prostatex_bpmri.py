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

1. onto the T2W grid (when the files are read): ADC and DWI (and any mask on another grid) are
   resampled through the affines (`jaxseg.data.preprocess.resample_to_reference`: world
   coordinates, voxel map ``A_src^-1 A_t2w``; linear for images, nearest for masks; zero
   outside their field of view) -- in PI-CAI, ADC and ``hbv`` are 84 x 128 x 19 at
   2 x 2 x 3 mm against a 384 x 384 x 19 T2W at 0.5 x 0.5 x 3 mm;
2. resampling to ``target_spacing`` (0.5 x 0.5 x 3 mm; linear for images, nearest for masks,
   `jaxseg.data.preprocess.resample`, affine updated; ``None`` keeps the grid);
3. centre crop, or zero padding, to ``crop_shape`` (160 x 160 x 20; ``None`` keeps the shape;
   `jaxseg.data.preprocess.center_crop_or_pad`: start ``(n - c) // 2`` per axis, affine origin
   moved accordingly);
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

Modules. This one holds what the builder is: the layouts and sources, the label map
(`remap_picai_zones`), the config, `preprocess_case`, the builder and its phantom. The manual
releases are read by ``_prostatex_reader`` (PROSTATEx_masks + TCIA) and ``_picai_reader``
(PI-CAI, `lesion_kind`), with the helpers they share in ``_release_files``; they are given the
config and the release (`datasets._common.ManualRelease`) and return each patient on its T2W
grid for `preprocess_case`. `resample_to_reference` and `center_crop_or_pad` are
`jaxseg.data.preprocess`'s, importable from here as before.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from absl import logging
import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _exclude
from datasets import _itk
from datasets import _prostatex
from datasets import _volumes
from datasets.prostatex_bpmri import _picai_reader
from datasets.prostatex_bpmri import _prostatex_reader
from datasets.prostatex_bpmri import _release_files
from datasets.prostatex_bpmri._picai_reader import lesion_kind
from datasets.prostatex_bpmri._release_files import Case as _Case
from jaxseg.data import preprocess
from jaxseg.data.preprocess import center_crop_or_pad
from jaxseg.data.preprocess import resample_to_reference

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
# The label map of PI-CAI and the preprocessing of every source.
# ------------------------------------------------------------------------------------------


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

  PHANTOM_CASE_ID = "bpmri-{seed:04d}"  # the id `make_bpmri_case` gives seed `seed`

  def _phantom_example(self, seed: int) -> dict[str, Any]:
    from jaxseg.data.phantoms import bpmri  # pylint: disable=g-import-not-at-top

    cfg = self.builder_config
    case = bpmri.make_bpmri_case(
        seed, shape=tuple(cfg.phantom_shape), spacing=tuple(cfg.phantom_spacing)
    )
    return _preprocess(
        cfg, case.image[..., 0], case.image[..., 1], case.image[..., 2], case.zones,
        case.lesions, case.spacing, case.affine, case_id=case.case_id,
        patient_label=case.patient_label,
    )

  def _phantom_groups(self, cases):
    from jaxseg.data.phantoms import bpmri  # pylint: disable=g-import-not-at-top

    if not self.builder_config.stratify:
      return None
    return {c: bpmri.planned_patient_label(s) for c, s in cases.items()}

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    manual = _RELEASES[cfg.source].manual_dir(dl_manager)
    if cfg.source == "prostatex":
      found = _find_prostatex_cases(manual, cfg)
    else:
      found = _find_picai_cases(manual, cfg)
    labels = {c.case_id: _known_label(c) for c in found}
    return self._split_by_case({c.case_id: c for c in found},
                               groups=labels if cfg.stratify else None)

  def _example(self, case) -> dict[str, Any]:
    if self.builder_config.source == "prostatex":
      return _prostatex_example(case, self.builder_config)
    return _picai_example(case, self.builder_config)

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


# ------------------------------------------------------------------------------------------
# Manual data: this builder's releases, read by _prostatex_reader / _picai_reader.
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


def _find_prostatex_cases(manual_dir: str, cfg: ProstatexBpmriConfig) -> list[_Case]:
  """The ProstateX patients (`_prostatex_reader.find_cases`)."""
  return _prostatex_reader.find_cases(manual_dir, cfg, _RELEASES["prostatex"])


def _find_picai_cases(manual_dir: str, cfg: ProstatexBpmriConfig) -> list[_Case]:
  """The PI-CAI exams (`_picai_reader.find_cases`)."""
  return _picai_reader.find_cases(manual_dir, cfg, _RELEASES["picai"])


def _known_label(case: _Case) -> int:
  """The patient label for stratification (`_picai_reader.known_label`)."""
  return _picai_reader.known_label(case)


def _prostatex_example(case: _Case, cfg: ProstatexBpmriConfig) -> dict[str, Any]:
  hint = (f"(case {case.case_id}; masks from {MASKS_URL}, images from TCIA PROSTATEx "
          f"{TCIA_URL} converted to NIfTI)")
  return _preprocess_on_grid(cfg, _prostatex_reader.read_case(case, hint), hint)


def _picai_example(case: _Case, cfg: ProstatexBpmriConfig) -> dict[str, Any]:
  hint = f"(case {case.case_id}; PI-CAI labels {PICAI_LABELS_URL}, images {PICAI_IMAGES_URL})"
  volumes = _picai_reader.read_case(case, hint, remap_zones=remap_picai_zones)
  return _preprocess_on_grid(cfg, volumes, hint)


def _preprocess_on_grid(cfg: ProstatexBpmriConfig, v: _release_files.OnT2wGrid,
                        hint: str) -> dict[str, Any]:
  """`preprocess_case` of a patient read onto its T2W grid (errors end with ``hint``)."""
  with _common.append_to_errors(f" {hint}"):
    return _preprocess(cfg, v.t2w, v.dwi, v.adc, v.zones, v.lesions, v.spacing, v.affine,
                       case_id=v.case_id, patient_label=v.patient_label)
