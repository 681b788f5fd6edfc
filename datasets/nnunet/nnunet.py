"""tfds builder ``nnunet``: any segmentation dataset in nnU-Net's raw layout (your own data).

A reader for the user's own data rather than one release: whatever dataset has been arranged for
nnU-Net (Isensee et al. 2021) -- prostate zones, the gland, lesions, or anything else -- is read
from the manual directory and becomes one example per case, split by case like every builder of
jaxseg. There is no phantom config. The manual directory is the dataset's folder (the one that
holds ``dataset.json``), or a folder with exactly one such dataset folder directly under it.

Configs:

* ``raw`` (default): nnU-Net v2's raw layout (nnU-Net's ``documentation/dataset_format.md``)::

    <manual_dir>/                          e.g. nnUNet_raw/Dataset012_PROMISE12/
      dataset.json
      imagesTr/{case}_{XXXX}{file_ending}  channel XXXX = 0000, 0001, ... of case {case}
      labelsTr/{case}{file_ending}         integer label map of case {case}
      imagesTs/                            optional: test images without labels (ignored)

  with a ``dataset.json`` such as::

    {"channel_names": {"0": "T2", "1": "ADC"},
     "labels": {"background": 0, "PZ": 1, "TZ": 2},
     "numTraining": 32,
     "file_ending": ".nii.gz"}

  The cases are the files of ``labelsTr``; every case needs one image per entry of
  ``channel_names`` in ``imagesTr``, and every image in ``imagesTr`` a label. ``file_ending``
  must be ``.nii.gz`` or ``.nii`` (nnU-Net also reads other formats; convert them to NIfTI
  first). ``labels`` maps each class name to one integer value; nnU-Net's region-based labels
  (lists of values) and its ``ignore`` label (sparse annotations) are refused with an error. A
  ``numTraining`` that differs from the number of cases found is a logged warning.
* ``msd``: the Medical Segmentation Decathlon layout (Antonelli et al. 2022), e.g.
  ``Task05_Prostate`` as untarred::

    <manual_dir>/                          e.g. Task05_Prostate/
      dataset.json
      imagesTr/prostate_00.nii.gz          one NIfTI per case, channels on the 4th axis (x, y, z, C)
      labelsTr/prostate_00.nii.gz          (x, y, z) label map
      imagesTs/                            test images without labels (ignored)

  with a ``dataset.json`` such as::

    {"modality": {"0": "T2", "1": "ADC"},
     "labels": {"0": "background", "1": "PZ", "2": "TZ"},
     "numTraining": 32,
     "training": [{"image": "./imagesTr/prostate_00.nii.gz",
                   "label": "./labelsTr/prostate_00.nii.gz"}, ...]}

  ``labels`` maps values to names (the reverse of nnU-Net v2's mapping). The cases are the
  entries of ``training``; case ids are the image file names without ``.nii.gz``
  (``prostate_00``). A single-modality task may store 3D images. The macOS ``._*`` files of the
  MSD tarballs are ignored.

Classes. Label values are remapped to contiguous class indices ``0..K-1``: background (value 0,
required) first, then the other classes in the order in which ``labels`` lists them. With
``{"background": 0, "TZ": 2, "PZ": 5}`` the classes are 0 background, 1 TZ, 2 PZ. The class
names and channel names travel with the data: they are stored in the build's metadata
(``class_names``, ``channel_names``, and the original ``label_values``; `metadata` reads them
back). Note that MSD's Task05_Prostate gives PZ = 1 and TZ = 2, and ``msd`` keeps that order,
whereas jaxseg's own zonal builders (``prostatex_bpmri``) use TZ = 1 and PZ = 2: read the class
names rather than assume an order.

Checks (each a one-sentence error naming the file(s) and the fix): a missing ``dataset.json``
(the message gives the layout), a missing channel file or label file, label values that
``labels`` does not list, a shape or affine (voxel-to-world, to within ``1e-3`` mm) that differs
between the channels of a case or between its image and label, a channel count that differs
from ``channel_names`` / ``modality``, non-NIfTI file endings.

Preprocessing (per case, `jaxseg.data.preprocess` via `datasets._volumes.normalized_example`,
applied to each channel): optional resampling to ``target_spacing`` (None, the default, keeps
the grid; linear for images, nearest for labels, affine updated); each channel clipped to its
own ``clip_percentiles`` (default 0.5-99.5) and z-scored. Split by case: a random 80/10/10 split
with seed 42 (`preprocess.split_cases`; at least 7 cases with the default fractions).

Features: ``image`` float32 ``(x, y, z, C)`` (channels in the order of ``channel_names`` /
``modality``; ``C`` depends on the dataset), ``label`` uint8 ``(x, y, z)`` class indices,
``case_id`` (text), ``spacing`` float32 ``(3,)`` (mm, from the NIfTI header), ``affine`` float64
``(4, 4)`` (voxel to world, from the NIfTI header).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from datasets import _builder
from datasets import _common
from datasets import _volumes
from jaxseg.data import preprocess

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "MSD",
    "MSD_LAYOUT",
    "NIFTI_ENDINGS",
    "NNUNET_URL",
    "NnUnet",
    "NnUnetConfig",
    "RAW",
    "RAW_LAYOUT",
    "parse_labels",
    "remap_labels",
]

_LOG = logging.getLogger(__name__)

NNUNET_URL = "https://github.com/MIC-DKFZ/nnUNet/blob/master/documentation/dataset_format.md"
MSD_URL = "http://medicaldecathlon.com/"
NIFTI_ENDINGS = (".nii.gz", ".nii")
"""The file endings the builder reads."""
AFFINE_TOLERANCE_MM = 1e-3
"""Largest difference (mm) between the affine entries of a case's channels and label."""

RAW_SOURCE = f"or convert your own data to nnU-Net v2's raw layout ({NNUNET_URL})"
RAW_LAYOUT = """\
<manual_dir>/                          (the dataset folder, e.g. Dataset012_PROMISE12/)
  dataset.json                         {"channel_names": {"0": "T2", "1": "ADC"},
                                        "labels": {"background": 0, "PZ": 1, "TZ": 2},
                                        "numTraining": 32, "file_ending": ".nii.gz"}
  imagesTr/{case}_{XXXX}{file_ending}  channel XXXX = 0000, 0001, ... of each case
  labelsTr/{case}{file_ending}         integer label map, values as in "labels"
  imagesTs/                            optional, ignored"""
MSD_SOURCE = f"a Medical Segmentation Decathlon task (e.g. Task05_Prostate.tar from {MSD_URL})"
MSD_LAYOUT = """\
<manual_dir>/                          (the task folder, e.g. Task05_Prostate/)
  dataset.json                         {"modality": {"0": "T2", "1": "ADC"},
                                        "labels": {"0": "background", "1": "PZ", "2": "TZ"},
                                        "training": [{"image": "./imagesTr/prostate_00.nii.gz",
                                                      "label": "./labelsTr/prostate_00.nii.gz"}]}
  imagesTr/prostate_00.nii.gz          (x, y, z, C) image, channels as in "modality"
  labelsTr/prostate_00.nii.gz          (x, y, z) label map, values as in "labels"
  imagesTs/                            ignored"""

_VERSION = tfds.core.Version("1.0.0")
_RELEASE_NOTES = {"1.0.0": "Initial release: nnU-Net v2 raw (raw) and Decathlon (msd) layouts."}
_DATASET_JSON = "dataset.json"


@dataclasses.dataclass(eq=False)
class NnUnetConfig(_common.JaxsegBuilderConfig):
  """Settings of an ``nnunet`` build.

  Attributes:
    source: ``"raw"`` (nnU-Net v2 raw layout) or ``"msd"`` (Medical Segmentation Decathlon).
    target_spacing: voxel spacing (mm) to resample to, or None (default) to keep each case's
      grid.
    split_seed: seed of the train/validation/test split.
    split_fractions: fractions of (train, validation, test).
    clip_percentiles: intensity percentiles to clip each channel to before z-scoring.
  """

  source: str = "raw"
  target_spacing: tuple[float, float, float] | None = None
  split_seed: int = 42
  split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
  clip_percentiles: tuple[float, float] = (0.5, 99.5)

  def __post_init__(self):
    _common.check_choice("source", self.source, ("raw", "msd"))
    if self.target_spacing is not None:
      self.target_spacing = _common.check_spacing("target_spacing", self.target_spacing)
    _common.check_percentiles(self.clip_percentiles)


RAW = NnUnetConfig(
    name="raw",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "A dataset in nnU-Net v2's raw layout (dataset.json, imagesTr/{case}_{XXXX}.nii.gz, "
        "labelsTr/{case}.nii.gz); your own data, manual directory."
    ),
    source="raw",
)
MSD = NnUnetConfig(
    name="msd",
    version=_VERSION,
    release_notes=_RELEASE_NOTES,
    description=(
        "A Medical Segmentation Decathlon task (dataset.json with 'training', one 4D NIfTI per "
        "case); manual directory."
    ),
    source="msd",
)

_RELEASES = {
    "raw": _common.ManualRelease(dataset="nnunet (config 'raw')", source=RAW_SOURCE,
                                 layout=RAW_LAYOUT),
    "msd": _common.ManualRelease(dataset="nnunet (config 'msd')", source=MSD_SOURCE,
                                 layout=MSD_LAYOUT),
}


# ------------------------------------------------------------------------------------------
# dataset.json.
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Case:
  """One case's files: one image per channel (``raw``) or one 4D image (``msd``), a label."""

  case_id: str
  images: tuple[str, ...]
  label: str


@dataclasses.dataclass(frozen=True)
class _Dataset:
  """What ``dataset.json`` and the folders give: names, label values and cases."""

  root: str
  channel_names: tuple[str, ...]
  class_names: tuple[str, ...]
  label_values: tuple[int, ...]
  cases: tuple[_Case, ...]


def _visible(name: str) -> bool:
  """False for hidden files and the macOS ``._*`` resource forks of tarballs."""
  return not name.startswith(".")


def _find_root(manual_dir: str, source: str) -> str:
  """The folder of ``dataset.json``: ``manual_dir`` or its only dataset folder."""
  if os.path.isfile(os.path.join(manual_dir, _DATASET_JSON)):
    return manual_dir
  found = sorted(
      os.path.join(manual_dir, name)
      for name in os.listdir(manual_dir)
      if _visible(name) and os.path.isfile(os.path.join(manual_dir, name, _DATASET_JSON))
  )
  if len(found) == 1:
    return found[0]
  if len(found) > 1:
    raise ValueError(
        f"{manual_dir} holds {len(found)} datasets ({', '.join(os.path.basename(f) for f in found)}"
        "); pass the folder of the one to read as manual_dir (--manual-dir)."
    )
  raise _RELEASES[source].error(
      manual_dir,
      missing=[os.path.join(manual_dir, _DATASET_JSON)],
      problem=(
          f"No {_DATASET_JSON} in {manual_dir} (nor in a folder directly under it): nnunet "
          f"(config {source!r}) reads a dataset folder with this layout."
      ),
  )


def _read_json(path: str) -> dict[str, Any]:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ValueError(f"Cannot parse {path} ({type(e).__name__}: {e}); fix its JSON.") from e
  if not isinstance(data, dict):
    raise ValueError(f"{path} must hold a JSON object, got {type(data).__name__}; fix its JSON.")
  return data


def _integer(value: Any) -> int | None:
  """``value`` as an int if it is an integer (or an integral float / numeric string)."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, float) and value.is_integer():
    return int(value)
  if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
    return int(value)
  return None


def _indexed_names(mapping: Any, key: str, path: str) -> tuple[str, ...]:
  """The names of ``{"0": name0, "1": name1, ...}`` in index order (channels)."""
  if not isinstance(mapping, Mapping) or not mapping:
    raise ValueError(
        f"{path}: {key!r} must map channel indices to names, e.g. "
        f'{{"0": "T2", "1": "ADC"}}, got {mapping!r}.'
    )
  indexed = {}
  for index, name in mapping.items():
    i = _integer(index)
    if i is None:
      raise ValueError(f"{path}: {key!r} has the key {index!r}; its keys must be channel "
                       'indices "0", "1", ...')
    indexed[i] = str(name)
  if sorted(indexed) != list(range(len(indexed))):
    raise ValueError(
        f"{path}: {key!r} has the indices {sorted(indexed)}; they must be 0..{len(indexed) - 1} "
        "(one per channel)."
    )
  return tuple(indexed[i] for i in range(len(indexed)))


def parse_labels(labels: Any, *, path: str,
                 by_name: bool) -> tuple[tuple[str, ...], tuple[int, ...]]:
  """Class names and label values of ``dataset.json``'s ``labels``, in class order.

  Args:
    labels: ``{"background": 0, "PZ": 1}`` (nnU-Net v2, ``by_name=True``) or ``{"0":
      "background", "1": "PZ"}`` (Decathlon, ``by_name=False``).
    path: the ``dataset.json`` (named in errors).
    by_name: whether ``labels`` maps names to values (else values to names).

  Returns:
    ``(names, values)``: class ``k`` is ``names[k]``, stored as ``values[k]`` in the label
    files. Background (value 0) comes first, the others in the order of ``labels``.

  Raises:
    ValueError: not a mapping, region-based labels (lists of values), an ``ignore`` label,
      non-integer, negative or repeated values, no background (value 0), or more than 256
      classes.
  """
  example = ('{"background": 0, "PZ": 1, "TZ": 2}' if by_name
             else '{"0": "background", "1": "PZ", "2": "TZ"}')
  if not isinstance(labels, Mapping) or not labels:
    raise ValueError(f"{path}: 'labels' must map class names to values, e.g. {example}, got "
                     f"{labels!r}.")
  pairs: list[tuple[str, int]] = []
  for key, item in labels.items():
    name, value = (key, item) if by_name else (item, key)
    if isinstance(value, (list, tuple)):
      raise ValueError(
          f"{path}: label {name!r} is a region ({list(value)}): nnU-Net's region-based labels "
          "are not supported; give every class one integer value, e.g. " + example + "."
      )
    if str(name).lower() == "ignore":
      raise ValueError(
          f"{path}: the 'ignore' label (nnU-Net's sparse annotations) is not supported: jaxseg "
          "trains on dense labels; remove it from 'labels' and from the label files."
      )
    v = _integer(value)
    if v is None or v < 0:
      raise ValueError(f"{path}: label {name!r} has the value {value!r}; label values must be "
                       f"integers >= 0, e.g. {example}.")
    pairs.append((str(name), v))
  values = [v for _, v in pairs]
  repeated = sorted({v for v in values if values.count(v) > 1})
  if repeated:
    raise ValueError(f"{path}: label value(s) {repeated} are given to more than one class; give "
                     "every class its own value.")
  if 0 not in values:
    raise ValueError(f"{path}: 'labels' has no background (value 0); add it, e.g. {example}.")
  if len(pairs) > 256:
    raise ValueError(f"{path}: {len(pairs)} classes; jaxseg stores labels as uint8 (at most "
                     "256 classes).")
  pairs.sort(key=lambda p: p[1] != 0)  # background first, the others in the given order.
  return tuple(n for n, _ in pairs), tuple(v for _, v in pairs)


def remap_labels(label: np.ndarray, values: Sequence[int], *, name: str) -> np.ndarray:
  """Label values ``values[k]`` -> class index ``k`` (uint8).

  Args:
    label: the label map as stored (integer, or float with integral values).
    values: the stored value of each class (`parse_labels`).
    name: what to call the label in errors (the case and the file).

  Raises:
    ValueError: non-numeric, non-finite or non-integral voxels, or values not in ``values``
      (the message lists them).
  """
  arr = np.asarray(label)
  if arr.dtype == bool:
    arr = arr.astype(np.uint8)
  if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
    raise ValueError(f"{name}: labels must be numeric, got dtype {arr.dtype}.")
  if np.issubdtype(arr.dtype, np.floating):
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
      raise ValueError(f"{name}: {bad} label voxel(s) are NaN or Inf.")
    frac = int(np.count_nonzero(arr != np.round(arr)))
    if frac:
      raise ValueError(f"{name}: {frac} label voxel(s) are not integers.")
  found = np.unique(arr)
  stray = [v for v in found.tolist() if v not in set(values)]
  if stray:
    shown = ", ".join(str(int(v)) for v in stray[:10]) + (" ..." if len(stray) > 10 else "")
    raise ValueError(
        f"{name}: label value(s) {shown} are not in dataset.json's labels (values "
        f"{', '.join(str(v) for v in sorted(values))}); fix the label file or add the class to "
        "dataset.json."
    )
  lut = np.zeros(max(values) + 1, np.uint8)
  lut[list(values)] = np.arange(len(values), dtype=np.uint8)
  return lut[arr.astype(np.int64)]


def _check_number(data: Mapping[str, Any], found: int, path: str) -> None:
  """Warns when ``numTraining`` differs from the number of cases found."""
  stated = data.get("numTraining")
  if stated is not None and _integer(stated) != found:
    _LOG.warning("nnunet: %s gives numTraining = %r but %d training case(s) were found; using "
                 "the %d found.", path, stated, found, found)


def _raw_dataset(root: str) -> _Dataset:
  """The cases of an nnU-Net v2 raw dataset folder (module docstring)."""
  path = os.path.join(root, _DATASET_JSON)
  data = _read_json(path)
  if "channel_names" not in data:
    hint = (" (it has 'modality': a Decathlon dataset.json? use config 'msd')"
            if "modality" in data else "")
    raise ValueError(f"{path} has no 'channel_names'{hint}; add it, e.g. "
                     '"channel_names": {"0": "T2"}.')
  channels = _indexed_names(data["channel_names"], "channel_names", path)
  if "labels" not in data:
    raise ValueError(f"{path} has no 'labels'; add it, e.g. "
                     '"labels": {"background": 0, "prostate": 1}.')
  names, values = parse_labels(data["labels"], path=path, by_name=True)
  ending = data.get("file_ending")
  if ending is None:
    raise ValueError(f'{path} has no \'file_ending\'; add it, e.g. "file_ending": ".nii.gz".')
  if ending not in NIFTI_ENDINGS:
    raise ValueError(
        f"{path}: file_ending {ending!r} is not supported: the nnunet builder reads NIfTI only "
        '(.nii.gz or .nii); convert the images and labels to NIfTI and set "file_ending": '
        '".nii.gz".'
    )
  images_dir, labels_dir = os.path.join(root, "imagesTr"), os.path.join(root, "labelsTr")
  absent = [d for d in (images_dir, labels_dir) if not os.path.isdir(d)]
  if absent:
    folders = " or ".join(os.path.basename(d) for d in absent)
    raise _RELEASES["raw"].error(
        root, missing=absent, problem=f"The nnU-Net dataset {root} has no {folders} folder."
    )
  label_files = {
      name[: -len(ending)]: os.path.join(labels_dir, name)
      for name in sorted(os.listdir(labels_dir))
      if _visible(name) and name.endswith(ending)
  }
  pattern = re.compile(r"^(.+)_(\d{4})" + re.escape(ending) + "$")
  image_files: dict[str, dict[int, str]] = {}
  for name in sorted(os.listdir(images_dir)):
    m = pattern.match(name)
    if _visible(name) and m:
      image_files.setdefault(m.group(1), {})[int(m.group(2))] = os.path.join(images_dir, name)
  if not label_files:
    raise _RELEASES["raw"].error(
        root, missing=[os.path.join(labels_dir, "{case}" + ending)],
        problem=f"No label file {{case}}{ending} in {labels_dir}: the cases are its files.",
    )
  unlabelled = sorted(set(image_files) - set(label_files))
  if unlabelled:
    shown = ", ".join(os.path.join(labels_dir, c + ending) for c in unlabelled[:5])
    raise FileNotFoundError(
        f"Label file(s) missing for {len(unlabelled)} case(s) of {images_dir}: {shown}"
        f"{' ...' if len(unlabelled) > 5 else ''}; every case in imagesTr needs its label in "
        "labelsTr (move unlabelled images to imagesTs)."
    )
  cases = []
  for case_id, label in label_files.items():
    have = image_files.get(case_id, {})
    extra = sorted(set(have) - set(range(len(channels))))
    if extra:
      raise ValueError(
          f"{have[extra[0]]} is channel {extra[0]} but {path} names {len(channels)} channel(s) "
          f"in channel_names ({', '.join(channels)}); add the channel to channel_names or "
          "remove the file."
      )
    missing = [os.path.join(images_dir, f"{case_id}_{c:04d}{ending}")
               for c in range(len(channels)) if c not in have]
    if missing:
      raise FileNotFoundError(
          f"case {case_id}: channel file(s) missing: {', '.join(missing)}; every case of "
          f"labelsTr needs one image per channel of channel_names ({', '.join(channels)})."
      )
    cases.append(_Case(case_id=case_id, images=tuple(have[c] for c in range(len(channels))),
                       label=label))
  _check_number(data, len(cases), path)
  return _Dataset(root, channels, names, values, tuple(cases))


def _msd_dataset(root: str) -> _Dataset:
  """The cases of a Medical Segmentation Decathlon task folder (module docstring)."""
  path = os.path.join(root, _DATASET_JSON)
  data = _read_json(path)
  if "modality" not in data:
    hint = (" (it has 'channel_names': an nnU-Net v2 dataset.json? use config 'raw')"
            if "channel_names" in data else "")
    raise ValueError(f"{path} has no 'modality'{hint}; add it, e.g. "
                     '"modality": {"0": "T2", "1": "ADC"}.')
  channels = _indexed_names(data["modality"], "modality", path)
  if "labels" not in data:
    raise ValueError(f"{path} has no 'labels'; add it, e.g. "
                     '"labels": {"0": "background", "1": "prostate"}.')
  names, values = parse_labels(data["labels"], path=path, by_name=False)
  training = data.get("training")
  if not isinstance(training, list) or not training:
    raise ValueError(f"{path} has no 'training' list; add one entry per case, e.g. "
                     '"training": [{"image": "./imagesTr/case_00.nii.gz", "label": '
                     '"./labelsTr/case_00.nii.gz"}].')
  cases, missing = {}, []
  for entry in training:
    if not isinstance(entry, Mapping) or "image" not in entry or "label" not in entry:
      raise ValueError(f"{path}: the 'training' entry {entry!r} needs an 'image' and a 'label' "
                       "path.")
    image = os.path.normpath(os.path.join(root, str(entry["image"])))
    label = os.path.normpath(os.path.join(root, str(entry["label"])))
    if not _visible(os.path.basename(image)):  # a macOS ._* file listed by mistake.
      continue
    for p in (image, label):
      if not p.endswith(NIFTI_ENDINGS):
        raise ValueError(f"{path}: {p} is not a NIfTI file; the nnunet builder reads NIfTI "
                         "only (.nii.gz or .nii).")
    case_id = re.sub(r"\.nii(\.gz)?$", "", os.path.basename(image))
    if case_id in cases:
      raise ValueError(f"{path} lists the case {case_id} twice; list every case once.")
    missing.extend(p for p in (image, label) if not os.path.isfile(p))
    cases[case_id] = _Case(case_id=case_id, images=(image,), label=label)
  if missing:
    raise _RELEASES["msd"].error(
        root, missing=missing,
        problem=f"{len(missing)} file(s) that {path} lists under 'training' are missing.",
    )
  _check_number(data, len(cases), path)
  return _Dataset(root, channels, names, values, tuple(cases[c] for c in sorted(cases)))


# ------------------------------------------------------------------------------------------
# Examples.
# ------------------------------------------------------------------------------------------


def _same_grid(what: str, path: str, shape: tuple[int, ...], affine: np.ndarray,
               ref_path: str, ref_shape: tuple[int, ...], ref_affine: np.ndarray,
               case_id: str) -> None:
  """Raises unless ``path``'s grid (shape, affine) is ``ref_path``'s."""
  if tuple(shape) != tuple(ref_shape):
    raise ValueError(
        f"case {case_id}: {what} {path} has shape {tuple(shape)} but {ref_path} has "
        f"{tuple(ref_shape)}; the channels and the label of a case must share one voxel grid "
        "(resample them onto the first channel's grid)."
    )
  if not np.allclose(affine, ref_affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
    diff = float(np.max(np.abs(np.asarray(affine) - np.asarray(ref_affine))))
    raise ValueError(
        f"case {case_id}: {what} {path} has another affine than {ref_path} (entries differ by "
        f"up to {diff:.4g} mm); the channels and the label of a case must share one voxel grid "
        "(resample them onto the first channel's grid, or fix the headers)."
    )


def _read_image(case: _Case, channels: Sequence[str], source: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """``(image (x, y, z, C), spacing, affine)`` of a case, channels checked to share a grid."""
  if source == "msd":
    data, spacing, img = preprocess.read_nifti(case.images[0])
    affine = np.asarray(img.affine, np.float64)
    if data.ndim == 3:
      data = data[..., None]
    if data.ndim != 4 or data.shape[3] != len(channels):
      raise ValueError(
          f"case {case.case_id}: {case.images[0]} has shape {data.shape} but dataset.json's "
          f"modality names {len(channels)} channel(s) ({', '.join(channels)}); the image must "
          f"be (x, y, z, {len(channels)})."
      )
    _volumes.check_real(data, case.case_id)
    return data, spacing, affine
  arrays = []
  for c, path in enumerate(case.images):
    data, spacing_c, affine_c = preprocess.load_nifti(path)
    _volumes.check_real(data, case.case_id)
    if c == 0:
      spacing, affine = spacing_c, affine_c
    else:
      _same_grid(f"channel {c} ({channels[c]})", path, data.shape, affine_c, case.images[0],
                 arrays[0].shape, affine, case.case_id)
    arrays.append(data)
  return np.stack(arrays, axis=-1), spacing, affine


def _example(case: _Case, dataset: _Dataset, cfg: NnUnetConfig) -> dict[str, Any]:
  """One case -> one example: grids checked, labels remapped, channels normalised."""
  files = ", ".join(case.images + (case.label,))
  image, spacing, affine = _read_image(case, dataset.channel_names, cfg.source)
  label, _, label_affine = preprocess.load_nifti(case.label)
  _same_grid("label", case.label, label.shape, label_affine, case.images[0], image.shape[:3],
             affine, case.case_id)
  label = remap_labels(label, dataset.label_values, name=f"case {case.case_id} ({case.label})")
  example: dict[str, Any] = {}
  channels = []
  with _common.append_to_errors(f" Files: {files}."):
    for c in range(image.shape[3]):
      example = _volumes.normalized_example(
          image[..., c], label, spacing, affine, case_id=case.case_id,
          target_spacing=cfg.target_spacing, clip_percentiles=tuple(cfg.clip_percentiles),
      )
      channels.append(example["image"])
  example["image"] = np.stack(channels, axis=-1).astype(np.float32)
  return example


# ------------------------------------------------------------------------------------------
# The builder.
# ------------------------------------------------------------------------------------------


class NnUnet(_builder.CaseBuilder):
  """Any dataset in nnU-Net's raw (v2) or Decathlon layout, read from the manual directory."""

  name = "nnunet"
  VERSION = _VERSION
  RELEASE_NOTES = _RELEASE_NOTES
  BUILDER_CONFIGS = [RAW, MSD]
  DEFAULT_BUILDER_CONFIG_NAME = "raw"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Config 'raw': put your own data, in nnU-Net v2's raw layout ({NNUNET_URL}), in the "
      "manual directory (manual_dir=...):\n"
      f"{RAW_LAYOUT}\n"
      f"Config 'msd': untar {MSD_SOURCE} into the manual directory:\n{MSD_LAYOUT}"
  )

  def _info(self) -> tfds.core.DatasetInfo:
    return self._dataset_info(
        description=(
            "A segmentation dataset in nnU-Net's raw or Decathlon layout: multi-channel images "
            "(x, y, z, C), each channel clipped and z-scored per case, labels remapped to "
            "class indices 0..K-1 (class and channel names in the metadata)."
        ),
        features={
            "image": tfds.features.Tensor(shape=(None, None, None, None), dtype=np.float32,
                                          encoding="zlib"),
            "label": _builder.volume_feature(np.uint8),
            "case_id": tfds.features.Text(),
            **_builder.geometry_features(),
        },
        homepage=NNUNET_URL,
        citation=(
            "Isensee, F., Jaeger, P.F., Kohl, S.A.A., Petersen, J., Maier-Hein, K.H.: nnU-Net: a "
            "self-configuring method for deep learning-based biomedical image segmentation. "
            "Nature Methods 18(2), 203-211 (2021)."
        ),
    )

  def _release_splits(self, dl_manager: tfds.download.DownloadManager):
    cfg = self.builder_config
    manual_dir = _RELEASES[cfg.source].manual_dir(dl_manager)
    root = _find_root(manual_dir, cfg.source)
    self._dataset = _raw_dataset(root) if cfg.source == "raw" else _msd_dataset(root)
    # Written with the build (dataset_info's metadata.json), read back by `metadata`.
    self.info.metadata.update(
        class_names=list(self._dataset.class_names),
        channel_names=list(self._dataset.channel_names),
        label_values=list(self._dataset.label_values),
    )
    return self._split_by_case({c.case_id: c for c in self._dataset.cases})

  def _example(self, case: _Case) -> dict[str, Any]:
    return _example(case, self._dataset, self.builder_config)
