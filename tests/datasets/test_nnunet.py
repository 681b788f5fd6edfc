"""Tests for the nnunet tfds builder (nnU-Net v2 raw and Decathlon layouts) and the converter."""

import json
import logging
import os

import nibabel as nib
import numpy as np
import pytest

from benchmarks import promise12_to_nnunet
import datasets
from datasets import nnunet
from jaxseg.data import preprocess
from jaxseg.errors import DataError

_PROMISE12 = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data",
                          "promise12")

_N = 6
_SHAPE = (8, 7, 4)  # all sizes distinct, so a transposed axis shows.
_LABELS = {"background": 0, "TZ": 2, "PZ": 5}  # stored values 0, 2, 5 -> classes 0, 1, 2.
_FRACTIONS = (0.5, 0.25, 0.25)  # 6 cases -> 3 / 2 / 1.
_AFFINE = np.array([[0.0, 0.0, 3.0, -10.0],
                    [-0.5, 0.0, 0.0, 20.0],
                    [0.0, 0.6, 0.0, 5.0],
                    [0.0, 0.0, 0.0, 1.0]])  # permuted axes: spacing (0.5, 0.6, 3.0).


def _case(k):
  """(T2, ADC, stored label) of case k: the channels differ in scale, so an order swap shows."""
  rng = np.random.default_rng(k)
  label = np.zeros(_SHAPE, np.uint8)
  label[1:4, 1:3, 1:3] = 2
  label[5:7, 4:6, :] = 5
  t2 = rng.normal(300.0, 40.0, _SHAPE) + 100.0 * (label > 0)
  adc = 1000.0 * np.arange(np.prod(_SHAPE)).reshape(_SHAPE) / np.prod(_SHAPE) + rng.normal(
      0, 5.0, _SHAPE)
  return t2.astype(np.float32), adc.astype(np.float32), label


def _save(array, path, affine=_AFFINE):
  nib.save(nib.Nifti1Image(array, affine), str(path))


def _write_raw(root, n=_N, labels=_LABELS, ending=".nii.gz", number=None):
  """An nnU-Net v2 raw dataset of n cases under root; returns {case: (t2, adc, label)}."""
  (root / "imagesTr").mkdir(parents=True)
  (root / "labelsTr").mkdir()
  (root / "imagesTs").mkdir()
  cases = {}
  for k in range(n):
    case = f"prostate_{k:03d}"
    t2, adc, label = _case(k)
    _save(t2, root / "imagesTr" / f"{case}_0000{ending}")
    _save(adc, root / "imagesTr" / f"{case}_0001{ending}")
    _save(label, root / "labelsTr" / f"{case}{ending}")
    cases[case] = (t2, adc, label)
  _save(_case(99)[0], root / "imagesTs" / "prostate_099_0000.nii.gz")  # ignored
  (root / "dataset.json").write_text(json.dumps({
      "channel_names": {"0": "T2", "1": "ADC"}, "labels": labels,
      "numTraining": n if number is None else number, "file_ending": ending}))
  return cases


def _zscore(x, lower=0.5, upper=99.5):
  """Independent float64 clip + z-score."""
  x = np.asarray(x, np.float64)
  lo, hi = np.percentile(x, [lower, upper])
  c = np.clip(x, lo, hi)
  return (c - c.mean()) / c.std()


def _load(tmp_path, manual_dir, config="raw", **overrides):
  overrides.setdefault("split_fractions", _FRACTIONS)
  return datasets.load("nnunet", config, data_dir=tmp_path / "tfds", manual_dir=manual_dir,
                       **overrides)


@pytest.fixture(scope="module")
def raw_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("nnunet_raw") / "Dataset001_Prostate"
  return root, _write_raw(root)


# --------------------------------------------------------------------------------------------
# Config 'raw'.
# --------------------------------------------------------------------------------------------


def test_raw_round_trip(tmp_path, raw_dir):
  root, cases = raw_dir
  splits = _load(tmp_path, root)
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  assert ids == preprocess.split_cases(sorted(cases), fractions=_FRACTIONS, seed=42)
  assert [len(ids[k]) for k in ("train", "validation", "test")] == [3, 2, 1]
  for ex in sum(splits.values(), []):
    t2, adc, label = cases[ex["case_id"]]
    assert set(ex) == {"image", "label", "case_id", "spacing", "affine"}
    assert ex["image"].dtype == np.float32 and ex["image"].shape == _SHAPE + (2,)
    # Channel order of channel_names, each clipped and z-scored on its own.
    np.testing.assert_allclose(ex["image"][..., 0], _zscore(t2), atol=1e-5)
    np.testing.assert_allclose(ex["image"][..., 1], _zscore(adc), atol=1e-5)
    # Stored 0 / 2 / 5 -> classes 0 / 1 / 2 in the order of 'labels'.
    assert ex["label"].dtype == np.uint8
    np.testing.assert_array_equal(ex["label"], np.select([label == 2, label == 5], [1, 2], 0))
    np.testing.assert_allclose(ex["spacing"], [0.5, 0.6, 3.0], rtol=1e-6)
    np.testing.assert_allclose(ex["affine"], _AFFINE, atol=1e-6)
  meta = datasets.metadata("nnunet", "raw", data_dir=tmp_path / "tfds", split_fractions=_FRACTIONS)
  assert meta["class_names"] == ["background", "TZ", "PZ"]
  assert meta["channel_names"] == ["T2", "ADC"]
  assert meta["label_values"] == [0, 2, 5]


def test_raw_parent_folder_and_target_spacing(tmp_path, raw_dir):
  root, cases = raw_dir
  splits = _load(tmp_path, root.parent, target_spacing=(1.0, 1.2, 3.0))  # the only dataset in it
  ex = splits["test"][0]
  # The affine's column lengths are the spacing (0.5, 0.6, 3.0): x, y halve, z stays.
  assert ex["image"].shape == (4, 4, 4, 2) and ex["label"].shape == (4, 4, 4)
  np.testing.assert_allclose(ex["spacing"], [1.0, 1.2, 3.0])
  np.testing.assert_allclose(np.linalg.norm(ex["affine"][:3, :3], axis=0), [1.0, 1.2, 3.0],
                             rtol=1e-6)
  assert set(np.unique(ex["label"]).tolist()) <= {0, 1, 2}
  for c in range(2):
    assert abs(ex["image"][..., c].mean()) < 1e-5 and abs(ex["image"][..., c].std() - 1) < 1e-4


def test_labels_order_background_first_and_remap():
  names, values = nnunet.parse_labels({"PZ": 5, "background": 0, "TZ": 2}, path="d.json",
                                      by_name=True)
  assert names == ("background", "PZ", "TZ") and values == (0, 5, 2)
  label = np.array([[0, 5], [2, 2]], np.float32)
  np.testing.assert_array_equal(nnunet.remap_labels(label, values, name="x"), [[0, 1], [2, 2]])
  names, values = nnunet.parse_labels({"0": "background", "1": "PZ", "2": "TZ"}, path="d.json",
                                      by_name=False)
  assert names == ("background", "PZ", "TZ") and values == (0, 1, 2)


def _broken(tmp_path, change):
  root = tmp_path / "Dataset002_Broken"
  _write_raw(root)
  change(root)
  return root


def _drop(path):
  return lambda root: os.remove(root / path)


def _stray_label(root):
  label = _case(2)[2].copy()
  label[0, 0, 0] = 3
  _save(label, root / "labelsTr" / "prostate_002.nii.gz")


def _other_shape(root):
  _save(np.zeros((8, 7, 5), np.float32), root / "imagesTr" / "prostate_001_0001.nii.gz")


def _other_label_shape(root):
  _save(np.zeros((8, 8, 4), np.uint8), root / "labelsTr" / "prostate_001.nii.gz")


def _other_affine(root):
  shifted = _AFFINE.copy()
  shifted[0, 3] += 1.0
  _save(_case(4)[1], root / "imagesTr" / "prostate_004_0001.nii.gz", affine=shifted)


def _json(**changes):
  def change(root):
    data = json.loads((root / "dataset.json").read_text())
    data.update(changes)
    (root / "dataset.json").write_text(json.dumps(data))
  return change


@pytest.mark.parametrize("change,kind,words", [
    (_drop("imagesTr/prostate_003_0001.nii.gz"), FileNotFoundError,
     ["case prostate_003: channel file(s) missing", "prostate_003_0001.nii.gz", "T2, ADC"]),
    (_drop("labelsTr/prostate_002.nii.gz"), FileNotFoundError,
     ["Label file(s) missing", "labelsTr/prostate_002.nii.gz"]),
    (_stray_label, ValueError,
     ["label value(s) 3 are not in dataset.json's labels", "prostate_002.nii.gz", "0, 2, 5"]),
    (_other_shape, ValueError,
     ["prostate_001_0001.nii.gz has shape (8, 7, 5)", "prostate_001_0000.nii.gz has (8, 7, 4)"]),
    (_other_label_shape, ValueError,
     ["label", "labelsTr/prostate_001.nii.gz has shape (8, 8, 4)", "prostate_001_0000.nii.gz"]),
    (_other_affine, ValueError,
     ["prostate_004_0001.nii.gz has another affine than", "prostate_004_0000.nii.gz",
      "up to 1 mm"]),
    (_json(labels={"background": 0, "gland": [1, 2]}), ValueError,
     ["label 'gland' is a region ([1, 2])", "region-based labels are not supported"]),
    (_json(labels={"background": 0, "TZ": 2, "PZ": 5, "ignore": 6}), ValueError,
     ["'ignore' label"]),
    (_json(labels={"TZ": 2, "PZ": 5}), ValueError, ["no background (value 0)"]),
    (_json(file_ending=".mha"), ValueError,
     ["file_ending '.mha' is not supported", "NIfTI only (.nii.gz or .nii)"]),
    (_json(channel_names={"0": "T2"}), ValueError,
     ["prostate_000_0001.nii.gz is channel 1", "1 channel(s)"]),
])
def test_raw_errors_name_the_file_and_the_fix(tmp_path, change, kind, words):
  root = _broken(tmp_path, change)
  with pytest.raises(kind) as e:
    _load(tmp_path, root)
  assert isinstance(e.value, DataError)
  message = str(e.value)
  for w in words:
    assert w in message, (w, message)


def test_missing_dataset_json_gives_the_layout(tmp_path):
  root = tmp_path / "empty"
  (root / "imagesTr").mkdir(parents=True)
  with pytest.raises(FileNotFoundError) as e:
    _load(tmp_path, root)
  message = str(e.value)
  assert isinstance(e.value, DataError)
  assert f"No dataset.json in {root}" in message
  assert "imagesTr/{case}_{XXXX}{file_ending}" in message and '"file_ending"' in message


def test_no_manual_dir_gives_the_layout(tmp_path):
  with pytest.raises(FileNotFoundError) as e:
    datasets.load("nnunet", data_dir=tmp_path / "tfds")
  message = str(e.value)
  assert isinstance(e.value, DataError)
  assert "for nnunet (config 'raw') does not exist or is empty" in message
  assert "Download or convert your own data to nnU-Net v2's raw layout" in message
  assert "labelsTr/{case}{file_ending}" in message


def test_num_training_mismatch_is_a_warning(tmp_path, caplog):
  root = tmp_path / "Dataset003_Count"
  _write_raw(root, number=9)
  with caplog.at_level(logging.WARNING, logger="datasets.nnunet.nnunet"):
    splits = _load(tmp_path, root)
  assert sum(len(v) for v in splits.values()) == _N
  assert any("numTraining = 9 but 6 training case(s)" in r.getMessage() for r in caplog.records)


def test_plain_nii_ending(tmp_path):
  root = tmp_path / "Dataset004_Nii"
  cases = _write_raw(root, ending=".nii")
  splits = _load(tmp_path, root)
  assert sorted(ex["case_id"] for s in splits.values() for ex in s) == sorted(cases)


# --------------------------------------------------------------------------------------------
# Config 'msd'.
# --------------------------------------------------------------------------------------------


def _write_msd(root, n=_N):
  (root / "imagesTr").mkdir(parents=True)
  (root / "labelsTr").mkdir()
  (root / "imagesTs").mkdir()
  cases, training = {}, []
  for k in range(n):
    case = f"prostate_{k:02d}"
    t2, adc, label = _case(k)
    label = np.where(label == 2, 1, np.where(label == 5, 2, 0)).astype(np.uint8)
    _save(np.stack([t2, adc], axis=-1), root / "imagesTr" / f"{case}.nii.gz")
    _save(label, root / "labelsTr" / f"{case}.nii.gz")
    # The macOS resource forks of the MSD tarball.
    (root / "imagesTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    (root / "labelsTr" / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07junk")
    training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    cases[case] = (t2, adc, label)
  (root / "._dataset.json").write_bytes(b"\x00\x05\x16\x07junk")
  (root / "dataset.json").write_text(json.dumps({
      "name": "PROSTATE", "modality": {"0": "T2", "1": "ADC"},
      "labels": {"0": "background", "1": "PZ", "2": "TZ"}, "numTraining": n,
      "numTest": 0, "training": training, "test": []}))
  return cases


def test_msd_4d_layout(tmp_path):
  root = tmp_path / "Task05_Prostate"
  cases = _write_msd(root)
  splits = _load(tmp_path, tmp_path / "Task05_Prostate", config="msd")
  assert sorted(ex["case_id"] for s in splits.values() for ex in s) == sorted(cases)
  for ex in sum(splits.values(), []):
    t2, adc, label = cases[ex["case_id"]]
    assert ex["image"].shape == _SHAPE + (2,)
    np.testing.assert_allclose(ex["image"][..., 0], _zscore(t2), atol=1e-5)
    np.testing.assert_allclose(ex["image"][..., 1], _zscore(adc), atol=1e-5)
    np.testing.assert_array_equal(ex["label"], label)  # PZ = 1, TZ = 2 as MSD gives them
    np.testing.assert_allclose(ex["affine"], _AFFINE, atol=1e-6)
  meta = datasets.metadata("nnunet", "msd", data_dir=tmp_path / "tfds", split_fractions=_FRACTIONS)
  assert meta["class_names"] == ["background", "PZ", "TZ"]
  assert meta["channel_names"] == ["T2", "ADC"]


def test_msd_channel_count_mismatch(tmp_path):
  root = tmp_path / "Task05_Prostate"
  _write_msd(root)
  data = json.loads((root / "dataset.json").read_text())
  data["modality"] = {"0": "T2", "1": "ADC", "2": "DWI"}
  (root / "dataset.json").write_text(json.dumps(data))
  with pytest.raises(ValueError, match=r"prostate_\d\d.nii.gz has shape \(8, 7, 4, 2\) but "
                     r"dataset.json's modality names 3 channel\(s\)"):
    _load(tmp_path, root, config="msd")


# --------------------------------------------------------------------------------------------
# PROMISE12 converted to nnU-Net's raw layout.
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not os.path.isdir(_PROMISE12), reason="../shared/data/promise12 absent")
def test_promise12_conversion_loads(tmp_path):
  assert os.path.realpath(_PROMISE12) == os.path.realpath(promise12_to_nnunet.DEFAULT_SRC)
  root = promise12_to_nnunet.convert(_PROMISE12, tmp_path / "raw", cases=4)
  assert root == os.path.join(tmp_path / "raw", "Dataset012_PROMISE12")
  assert sorted(os.listdir(os.path.join(root, "imagesTr"))) == [
      f"promise12_{k:02d}_0000.nii.gz" for k in range(4)]
  splits = _load(tmp_path, root)
  examples = sum(splits.values(), [])
  assert sorted(ex["case_id"] for ex in examples) == [f"promise12_{k:02d}" for k in range(4)]
  assert [len(splits[k]) for k in ("train", "validation", "test")] == [2, 1, 1]
  for ex in examples:
    num = ex["case_id"][-2:]
    image = np.load(os.path.join(_PROMISE12, f"image_train{num}.npy"))
    label = np.load(os.path.join(_PROMISE12, f"label_train{num}.npy"))
    assert ex["image"].shape == image.shape[::-1] + (1,)
    assert int(ex["label"].sum()) == int((label == 1).sum()) > 0
    np.testing.assert_array_equal(ex["label"], label.transpose(2, 1, 0))
    z = ex["image"][..., 0]
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1.0) < 1e-4
    np.testing.assert_allclose(z, _zscore(image.transpose(2, 1, 0)), atol=1e-4)
    np.testing.assert_allclose(ex["affine"], np.diag([-1.0, -1.0, 1.0, 1.0]))
    np.testing.assert_allclose(ex["spacing"], [1.0, 1.0, 1.0])
  meta = datasets.metadata("nnunet", data_dir=tmp_path / "tfds", split_fractions=_FRACTIONS)
  assert meta["class_names"] == ["background", "prostate"] and meta["channel_names"] == ["T2"]
