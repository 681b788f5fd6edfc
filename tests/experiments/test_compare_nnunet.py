"""``python -m experiments.compare --data nnunet``: the own-loss example on an nnU-Net dataset."""

import json
import os

import nibabel as nib
import numpy as np
import pytest

from benchmarks import promise12_to_nnunet
from experiments import compare
from jaxseg.train.checkpoint import load_model

_REPO = os.path.join(os.path.dirname(__file__), "..", "..")
_CONFIG = os.path.join(_REPO, "experiments", "configs", "example_own_loss.py")
_PROMISE12 = os.path.join(_REPO, "..", "shared", "data", "promise12")


def _flags(manual_dir, tmp_path):
  return ["--config", _CONFIG, "--data", "nnunet", "--manual-dir", str(manual_dir),
          "--data-dir", str(tmp_path / "tfds"), "--workdir", str(tmp_path / "out"),
          "--epochs", "1", "--batch-size", "8", "--train.samples_per_epoch", "8",
          "--train.patch", "32", "32", "--eval.num_resamples", "100", "--no-progress"]


@pytest.mark.skipif(not os.path.isdir(_PROMISE12), reason="../shared/data/promise12 absent")
def test_compare_on_converted_promise12(tmp_path):
  root = promise12_to_nnunet.convert(_PROMISE12, tmp_path / "raw", cases=8)  # -> 6 / 1 / 1
  result = compare.main(_flags(root, tmp_path))
  out = tmp_path / "out"
  assert result["names"] == ["BCE", "soft Dice", "log-cosh Dice"]
  assert len(result["test_cases"]) == 1 and result["test_cases"][0].startswith("promise12_")
  table = (out / "table.md").read_text()
  assert "Data `nnunet`: 6 training / 1 validation / 1 test cases" in table
  assert "| BCE |" in table and "log-cosh Dice − BCE" in table and "(n=1)" in table
  saved = json.loads((out / "results.json").read_text())
  for name in saved["names"]:
    dice = saved["estimates"][name]["dice"]
    assert dice["n"] + dice["n_undefined"] == 1 and 0.0 <= dice["value"] <= 1.0
  _, _, card = load_model(out / "models" / "BCE")
  assert card.channels == ("T2",) and card.class_names == ("background", "prostate")
  assert card.info["data"] == "nnunet"


def test_class_count_mismatch_stops_with_one_line(tmp_path, capsys):
  root = tmp_path / "Dataset005_Zones"
  (root / "imagesTr").mkdir(parents=True)
  (root / "labelsTr").mkdir()
  for k in range(7):
    label = np.zeros((16, 16, 2), np.uint8)
    label[2:6, 2:6] = 1
    label[8:12, 8:12] = 2
    image = np.random.default_rng(k).normal(size=label.shape).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), root / "imagesTr" / f"case{k}_0000.nii.gz")
    nib.save(nib.Nifti1Image(label, np.eye(4)), root / "labelsTr" / f"case{k}.nii.gz")
  (root / "dataset.json").write_text(json.dumps({
      "channel_names": {"0": "T2"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
      "numTraining": 7, "file_ending": ".nii.gz"}))
  with pytest.raises(SystemExit) as e:
    compare.main(_flags(root, tmp_path))
  assert e.value.code == 2
  err = [l for l in capsys.readouterr().err.strip().splitlines() if not l.startswith("building")]
  assert len(err) == 1, err
  assert "data.source = 'nnunet' has 3 classes (background, PZ, TZ)" in err[0]
  assert "the model has 2" in err[0]
  assert not (tmp_path / "out" / "models").exists()  # nothing trained
