"""tfds builder ``micro_us``: micro-ultrasound prostate stacks with expert + non-expert masks.

Data of the adaptive-focal-loss study (seed ``003``, REFERENCE §4).

Configs:

* ``phantom`` (default): ``num_cases`` synthetic patients from
  `jaxseg.data.phantoms.micro_us.make_micro_us_case` with seeds ``base_seed + i`` (case ids
  ``phantom-{seed:04d}``), split by patient into train / validation / test
  (``split_fractions``, default 70/10/20, seed ``split_seed``), so that tests, examples and
  CPU presets run without downloads.
* ``microsegnet``: the MicroSegNet release, Zenodo record 10475293 ("Micro-Ultrasound Prostate
  Segmentation Dataset"; Jiang et al., CMIG 2024), read from the manual directory in its
  published layout::

    <manual_dir>/train/micro_ultrasound_scans/microUS_train_XX.nii.gz            (55 patients)
    <manual_dir>/train/expert_annotations/expert_annotation_train_XX.nii.gz
    <manual_dir>/train/non_expert_annotations/nonexpert_annotation_train_XX.nii.gz
    <manual_dir>/test/micro_ultrasound_scans/microUS_test_XX.nii.gz              (20 patients)
    <manual_dir>/test/expert_annotations/expert_annotation_test_XX.nii.gz

  (``.nii`` is accepted too, and so is the whole tree one level down, in
  ``<manual_dir>/Micro_Ultrasound_Prostate_Segmentation_Dataset/``, as the original code
  expects it). Other files (e.g. further annotators of the test set) are ignored. The official
  training patients are split by patient into ``train`` and ``validation``
  (``validation_fraction`` 0.1, seed 42, `jaxseg.data.preprocess.split_cases`); the official
  test patients are ``test``. Case ids are the scans' names (``microUS_train_XX``).

Preprocessing (REFERENCE §4; MicroSegNet ``preprocessing.py`` / ``test_MicroUS.py``):

* Each volume is a stack of 2D slices; ``slice_axis`` (default 2: the last NIfTI axis) is
  moved last. The original code reads the files with SimpleITK and iterates over the first
  axis of ``GetArrayFromImage``, which is the *last* axis of the NIfTI voxel order that
  nibabel (and this builder) use, hence the default; it is not verified against the real
  files here, so it is a setting.
* Slices are resized to ``image_size x image_size`` with the half-pixel convention of
  `jaxseg.data.preprocess.resample` (the same grid as ``cv2.resize``): images linearly (no
  anti-aliasing, like ``cv2.INTER_LINEAR``), masks by nearest neighbour. The slice axis is not
  resampled.
* Intensities: the released volumes are normalised to 0-254, so the image is divided by 254
  and clipped to [0, 1] (as the original ``x / 254``). Masks are binarised as ``mask > 0``
  (the original code's convention: it thresholds ``> 0`` as well) to uint8 0/1.
* The test set has no non-expert annotation: its ``non_expert`` feature is a copy of the
  expert mask, so the disagreement (hard region) of a test example is empty. The test set is
  for evaluation only.
* Spacing. ``spacing_mm`` (default 0.033586) is the in-plane pixel size of the *released*
  slices: the original test code resizes predictions back to the native slice size and
  multiplies HD95 in pixels by 0.033586 mm (REFERENCE §4 calls this "the preprocessed size";
  in the code it is the native grid of the test volumes). The spacing carried by an example
  is that of its resized slices, ``spacing_mm * n / image_size`` per in-plane axis (``n`` the
  native size along it; ~1372 x 962 native pixels give ~0.206 x 0.144 mm at 224), so HD95 in
  mm on the 224 x 224 grid approximates the original's. The slice spacing is the header's
  (nominal: the sweep is a fan of angles). ``spacing_mm=None`` takes the in-plane spacing
  from the NIfTI header instead. The affine is the header's, with its in-plane columns
  rescaled to that spacing and then updated for the resize
  (`jaxseg.data.preprocess.resample_affine`).

The ``phantom`` config goes through the same resize (``phantom_size`` -> ``image_size``);
phantom images are already in [0, 1].

Features: ``image`` float32 ``(H, W, S)`` in [0, 1] (slices last), ``label`` uint8 (the
expert mask, under the name generic pipeline code reads), ``non_expert`` uint8 (same shape),
``case_id`` (text), ``spacing`` float32 ``(3,)`` (mm; in-plane of the resized slices, then
slice), ``affine`` float64 ``(4, 4)``. Volumes are zlib-compressed tensors (no TensorFlow
needed; REFERENCE, platform facts).

Custom settings must use a distinct config name so that cached builds never mix:
``MicroUsConfig.replace(**settings)`` derives one from the settings (``load(**settings)`` does
it for you).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _volumes
from jaxseg.data import preprocess

__all__ = [
    "MICROSEGNET",
    "MICROSEGNET_LAYOUT",
    "MICROSEGNET_SPACING_MM",
    "MICROSEGNET_URL",
    "MicroUs",
    "MicroUsConfig",
    "PHANTOM",
    "preprocess_case",
]

MICROSEGNET_URL = "https://zenodo.org/records/10475293"
MICROSEGNET_SOURCE = (
    "the Micro-Ultrasound Prostate Segmentation Dataset (MicroSegNet) from Zenodo record "
    f"10475293, {MICROSEGNET_URL}, and extract it"
)
MICROSEGNET_LAYOUT = """\
<manual_dir>/
  train/micro_ultrasound_scans/microUS_train_XX.nii.gz
  train/expert_annotations/expert_annotation_train_XX.nii.gz
  train/non_expert_annotations/nonexpert_annotation_train_XX.nii.gz
  test/micro_ultrasound_scans/microUS_test_XX.nii.gz
  test/expert_annotations/expert_annotation_test_XX.nii.gz
(XX = patient number; the tree may also sit in
<manual_dir>/Micro_Ultrasound_Prostate_Segmentation_Dataset/)"""
MICROSEGNET_SPACING_MM = 0.033586
"""In-plane pixel size (mm) of the released slices, as used by the original test code."""
MICROSEGNET_INTENSITY_MAX = 254.0
"""The released volumes are normalised to 0-254."""

_NESTED = "Micro_Ultrasound_Prostate_Segmentation_Dataset"
# (kind, folder, file prefix) per official split; the non-expert annotation is train only.
_KINDS = {
    "train": (("scan", "micro_ultrasound_scans", "microUS_train_"),
              ("expert", "expert_annotations", "expert_annotation_train_"),
              ("non_expert", "non_expert_annotations", "nonexpert_annotation_train_")),
    "test": (("scan", "micro_ultrasound_scans", "microUS_test_"),
             ("expert", "expert_annotations", "expert_annotation_test_")),
}
_NII = re.compile(r"^(.+)\.nii(\.gz)?$")

_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "Initial release: phantom and microsegnet configs."}


@dataclasses.dataclass(eq=False)
class MicroUsConfig(_common.JaxsegBuilderConfig):
  """Settings of a ``micro_us`` build.

  Attributes:
    source: ``"phantom"`` or ``"microsegnet"``.
    image_size: in-plane size of every slice after resizing (square).
    num_cases: number of phantom patients (phantom only).
    num_slices: slices per phantom stack (phantom only).
    phantom_size: in-plane ``(along probe, depth)`` size of each phantom before resizing.
    phantom_spacing: ``(in-plane, slice)`` spacing (mm) of each phantom before resizing.
    base_seed: phantom patient ``i`` uses seed ``base_seed + i``.
    split_fractions: (train, validation, test) fractions of the phantom patients.
    validation_fraction: fraction of the official training patients moved to ``validation``
      (microsegnet only), in (0, 1).
    split_seed: seed of the patient splits.
    slice_axis: NIfTI axis along which the released volumes stack their slices (microsegnet).
    spacing_mm: in-plane pixel size (mm) of the released slices, or None to read it from the
      NIfTI headers (microsegnet; see the module docstring).
  """

  source: str = "phantom"
  image_size: int = 224
  num_cases: int = 40
  num_slices: int = 16
  phantom_size: tuple[int, int] = (224, 224)
  phantom_spacing: tuple[float, float] = (0.2, 2.5)
  base_seed: int = 0
  split_fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
  validation_fraction: float = 0.1
  split_seed: int = 42
  slice_axis: int = 2
  spacing_mm: float | None = MICROSEGNET_SPACING_MM

  def __post_init__(self):
    _common.check_choice("source", self.source, ("phantom", "microsegnet"))
    for name in ("image_size", "num_cases", "num_slices"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if len(tuple(self.phantom_size)) != 2 or min(self.phantom_size) < 1:
      raise ValueError(f"phantom_size must be 2 positive ints, got {self.phantom_size}.")
    _common.check_spacing("phantom_spacing (in-plane, slice)", self.phantom_spacing, ndim=2)
    if not 0.0 < float(self.validation_fraction) < 1.0:
      raise ValueError(
          f"validation_fraction must be in (0, 1), got {self.validation_fraction}."
      )
    if self.slice_axis not in (0, 1, 2):
      raise ValueError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis!r}.")
    if self.spacing_mm is not None and not (
        np.isfinite(self.spacing_mm) and self.spacing_mm > 0
    ):
      raise ValueError(f"spacing_mm must be a finite positive number or None, got "
                       f"{self.spacing_mm}.")


PHANTOM = MicroUsConfig(
    name="phantom",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description="Synthetic micro-US prostate stacks (jaxseg.data.phantoms.micro_us), 40 patients.",
    source="phantom",
)
MICROSEGNET = MicroUsConfig(
    name="microsegnet",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description="MicroSegNet micro-US release, Zenodo 10475293 (manual download).",
    source="microsegnet",
)


def preprocess_case(
    image: np.ndarray,
    expert: np.ndarray,
    non_expert: np.ndarray,
    spacing: Any,
    affine: np.ndarray,
    *,
    case_id: str,
    image_size: int,
    intensity_scale: float = 1.0,
) -> dict[str, Any]:
  """One slices-last stack -> one example: intensity scaling, binarisation, in-plane resize.

  The image becomes ``clip(image * intensity_scale, 0, 1)`` (float32); masks become
  ``mask > 0`` (uint8). Each slice is resized to ``image_size x image_size``
  (`preprocess.resample` with an explicit output shape: output pixel ``j`` samples input
  ``(j + 1/2) n / m - 1/2``; linear for the image, nearest for the masks); the slice axis is
  kept. The spacing becomes ``(s_x n_x / m, s_y n_y / m, s_z)`` and the affine is updated to
  match (`preprocess.resample_affine`), so the field of view is unchanged.

  Args:
    image: ``(x, y, slices)`` intensities.
    expert: expert mask, same shape.
    non_expert: non-expert mask, same shape.
    spacing: ``(s_x, s_y, s_z)`` in mm.
    affine: 4x4 voxel-to-world matrix.
    case_id: case identifier (used in error messages too).
    image_size: in-plane output size ``m``.
    intensity_scale: factor applied to the image before clipping to [0, 1]
      (``1 / 254`` for the release).

  Returns:
    The example dict with the builder's features.
  """
  image = np.asarray(image)
  if image.ndim != 3 or image.size == 0:
    raise ValueError(f"case {case_id}: image must be a non-empty 3D array, got {image.shape}.")
  _volumes.check_real(image, case_id)
  masks = {}
  for name, mask in (("expert", expert), ("non_expert", non_expert)):
    mask = np.asarray(mask)
    if mask.shape != image.shape:
      raise ValueError(
          f"case {case_id}: {name} mask shape {mask.shape} differs from image shape "
          f"{image.shape}."
      )
    if not np.issubdtype(mask.dtype, np.number) and mask.dtype != bool:
      raise ValueError(f"case {case_id}: {name} mask must be numeric, got {mask.dtype}.")
    if mask.dtype.kind == "f" and not np.all(np.isfinite(mask)):
      raise ValueError(f"case {case_id}: {name} mask has non-finite values.")
    masks[name] = mask
  if isinstance(image_size, bool) or int(image_size) < 1:
    raise ValueError(f"image_size must be a positive int, got {image_size!r}.")
  m = int(image_size)
  s = preprocess.validate_spacing(spacing, name=f"case {case_id}: spacing")
  nx, ny, nz = image.shape
  target = np.array([s[0] * nx / m, s[1] * ny / m, s[2]])
  # Slice by slice, so that a release volume is never held as floats in full.
  new_image = np.empty((m, m, nz), np.float32)
  scale = np.float32(intensity_scale)
  for k in range(nz):
    plane = image[:, :, k].astype(np.float32) * scale
    if image.dtype.kind == "f" and not np.all(np.isfinite(plane)):
      raise ValueError(f"case {case_id}: image has non-finite voxels in slice {k}.")
    np.clip(plane, 0.0, 1.0, out=plane)
    new_image[:, :, k] = preprocess.resample(plane, s[:2], target[:2], order=1, shape=(m, m))
  np.clip(new_image, 0.0, 1.0, out=new_image)
  out = {
      "image": new_image,
      "case_id": case_id,
      "spacing": target.astype(np.float32),
      "affine": preprocess.resample_affine(affine, s, target),
  }
  for feature, name in (("label", "expert"), ("non_expert", "non_expert")):
    resized = preprocess.resample(masks[name], s, target, order=0, shape=(m, m, nz))
    out[feature] = (resized > 0).astype(np.uint8)
  return out


class MicroUs(_builder.CaseBuilder):
  """Micro-US prostate stacks with expert and non-expert masks (phantom or MicroSegNet)."""

  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [PHANTOM, MICROSEGNET]
  DEFAULT_BUILDER_CONFIG_NAME = "phantom"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'microsegnet' only: download {MICROSEGNET_SOURCE} into the manual directory "
      f"(manual_dir=...) with this layout:\n{MICROSEGNET_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "Micro-ultrasound prostate slice stacks (slices last) with the expert mask "
            "('label') and a non-expert mask ('non_expert'); slices resized to image_size, "
            "intensities in [0, 1] (REFERENCE §4)."
        ),
        features={
            "image": _builder.volume_feature(np.float32),
            "label": _builder.volume_feature(np.uint8),
            "non_expert": _builder.volume_feature(np.uint8),
            "case_id": tfds.features.Text(),
            **_builder.geometry_features(affine_encoding="bytes"),
        },
        homepage=MICROSEGNET_URL,
        citation=(
            "Jiang, H., et al.: MicroSegNet: A deep learning approach for prostate "
            "segmentation on micro-ultrasound images. Computerized Medical Imaging and "
            "Graphics (2024). Data: https://doi.org/10.5281/zenodo.10475293"
        ),
    )

  PHANTOM_CASE_ID = "phantom-{seed:04d}"  # the id `make_micro_us_case` gives seed `seed`

  def _phantom_example(self, seed: int) -> dict[str, Any]:
    # Imported here so that the microsegnet config does not depend on the phantom generator.
    from jaxseg.data.phantoms import micro_us  # pylint: disable=g-import-not-at-top

    cfg = self.builder_config
    case = micro_us.make_micro_us_case(
        seed,
        num_slices=int(cfg.num_slices),
        size=tuple(cfg.phantom_size),
        spacing=tuple(cfg.phantom_spacing),
    )
    return preprocess_case(
        case.image, case.expert, case.non_expert, case.spacing, case.affine,
        case_id=self.PHANTOM_CASE_ID.format(seed=seed), image_size=int(cfg.image_size),
    )

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    # The official training patients are split into train / validation; test is the official.
    cfg = self.builder_config
    found = _find_microsegnet_cases(_MICROSEGNET.manual_dir(dl_manager))
    v = float(cfg.validation_fraction)
    split = preprocess.split_cases(
        sorted(c.case_id for c in found["train"]), fractions=(1.0 - v, v, 0.0),
        seed=cfg.split_seed,
    )
    split["test"] = sorted(c.case_id for c in found["test"])
    return self._split_by_case(
        {c.case_id: c for c in found["train"] + found["test"]}, split=split
    )

  def _example(self, case) -> dict[str, Any]:
    return _microsegnet_example(case, self.builder_config)


# ------------------------------------------------------------------------------------------
# MicroSegNet (Zenodo 10475293) files.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _MicroSegNetCase:
  """The files of one released patient (``non_expert`` None for the test set)."""

  case_id: str
  scan: str
  expert: str
  non_expert: str | None
  manual_dir: str


_MICROSEGNET = _common.ManualRelease(
    dataset="micro_us (config 'microsegnet')", source=MICROSEGNET_SOURCE,
    layout=MICROSEGNET_LAYOUT,
)


def _hint(manual_dir: str) -> str:
  return (
      f" (Re-)download the dataset from {MICROSEGNET_URL} and extract it into {manual_dir} "
      "(layout train/micro_ultrasound_scans/microUS_train_XX.nii.gz, ...)."
  )


def _list_volumes(folder: str, prefix: str) -> dict[str, str]:
  """``{XX: path}`` of the files ``{prefix}XX.nii[.gz]`` in ``folder`` (empty if absent)."""
  if not os.path.isdir(folder):
    return {}
  out = {}
  for name in sorted(os.listdir(folder)):
    m = _NII.match(name)
    if m and m.group(1).startswith(prefix) and len(m.group(1)) > len(prefix):
      out.setdefault(m.group(1)[len(prefix):], os.path.join(folder, name))
  return out


def _find_microsegnet_cases(manual_dir: str) -> dict[str, list[_MicroSegNetCase]]:
  """Lists and checks the released patients: ``{"train": [...], "test": [...]}``."""
  root = manual_dir
  nested = os.path.join(manual_dir, _NESTED)
  if not os.path.isdir(os.path.join(root, "train")) and os.path.isdir(nested):
    root = nested
  found: dict[str, list[_MicroSegNetCase]] = {}
  missing: list[str] = []
  for split, kinds in _KINDS.items():
    files = {
        kind: _list_volumes(os.path.join(root, split, folder), prefix)
        for kind, folder, prefix in kinds
    }
    numbers = sorted(set().union(*files.values()))
    if not numbers:
      missing.extend(
          os.path.join(root, split, folder, f"{prefix}XX.nii.gz") for _, folder, prefix in kinds
      )
      continue
    for xx in numbers:
      for kind, folder, prefix in kinds:
        if xx not in files[kind]:
          missing.append(os.path.join(root, split, folder, f"{prefix}{xx}.nii.gz"))
    found[split] = [
        _MicroSegNetCase(
            case_id=f"microUS_{split}_{xx}",
            scan=files["scan"].get(xx, ""),
            expert=files["expert"].get(xx, ""),
            non_expert=files.get("non_expert", {}).get(xx),
            manual_dir=manual_dir,
        )
        for xx in numbers
    ]
  if missing:
    raise _MICROSEGNET.error(manual_dir, missing=missing)
  return found


def _slices_last(
    spacing: np.ndarray, affine: np.ndarray, order: list[int]
) -> tuple[np.ndarray, np.ndarray]:
  """Spacing and affine of a volume transposed by ``order`` (voxel axes permuted alike)."""
  perm = np.eye(4)
  perm[:3, :3] = np.eye(3)[:, order]
  return np.asarray(spacing, np.float64)[order], np.asarray(affine, np.float64) @ perm


def _microsegnet_example(case: _MicroSegNetCase, cfg: MicroUsConfig) -> dict[str, Any]:
  hint = _hint(case.manual_dir)
  with _common.append_to_errors(hint):
    image, spacing, affine = preprocess.load_nifti(case.scan)
    expert, _, _ = preprocess.load_nifti(case.expert)
    non_expert = (
        preprocess.load_nifti(case.non_expert)[0] if case.non_expert is not None else expert
    )
  for path, mask in ((case.expert, expert), (case.non_expert, non_expert)):
    if path is not None and mask.shape != image.shape:
      raise ValueError(
          f"case {case.case_id}: {path} has shape {mask.shape} but {case.scan} has shape "
          f"{image.shape}." + hint
      )
  order = [a for a in range(3) if a != int(cfg.slice_axis)] + [int(cfg.slice_axis)]
  image, expert, non_expert = (np.transpose(v, order) for v in (image, expert, non_expert))
  spacing, affine = _slices_last(spacing, affine, order)
  if cfg.spacing_mm is not None:
    spacing = np.array([cfg.spacing_mm, cfg.spacing_mm, spacing[2]], np.float64)
    columns = affine[:3, :3]
    norms = np.linalg.norm(columns, axis=0)
    if np.any(norms <= 0):
      raise ValueError(f"case {case.case_id}: {case.scan} has a singular affine." + hint)
    affine = affine.copy()
    affine[:3, :3] = columns / norms * spacing
  with _common.append_to_errors(hint):
    return preprocess_case(
        image, expert, non_expert, spacing, affine,
        case_id=case.case_id, image_size=int(cfg.image_size),
        intensity_scale=1.0 / MICROSEGNET_INTENSITY_MAX,
    )
