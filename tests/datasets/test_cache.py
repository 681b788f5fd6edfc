"""Tests for the tfds cache of datasets._common.prepare: a cached build follows its manual dir.

Tiny PROMISE12 npy releases (7 cases of 2x3x4 voxels) built into one data directory: a build
is reused only while its manual directory is the same and unchanged; another directory or
changed files rebuild it; a missing directory is an error, never the old data.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

import datasets
from datasets import _common
from jaxseg.errors import DataError

_N = 7  # The fewest cases promise12 accepts (5 / 1 / 1).
_SHAPE = (2, 3, 4)  # (slices, rows, cols)


def _write_release(root: Path, *, label_value: int = 1) -> dict[str, np.ndarray]:
  """A tiny npy release; the gland is ``label_value`` at one voxel per case (0 or 1)."""
  root.mkdir(parents=True, exist_ok=True)
  labels = {}
  for k in range(_N):
    image = np.arange(np.prod(_SHAPE), dtype=np.int16).reshape(_SHAPE) * (k + 1)
    label = np.zeros(_SHAPE, np.int8)
    label[1, 1, 1] = label_value
    label[0, 0, k % _SHAPE[2]] = 1
    np.save(root / f"image_train{k:02d}.npy", image)
    np.save(root / f"label_train{k:02d}.npy", label)
    labels[f"promise12-{k:02d}"] = label.transpose(2, 1, 0)
  return labels


def _load(data_dir: Path, manual_dir: Path | None):
  return datasets.load("promise12", "preprocessed", data_dir=data_dir, manual_dir=manual_dir)


def _labels(splits) -> dict[str, np.ndarray]:
  return {ex["case_id"]: ex["label"] for v in splits.values() for ex in v}


def _assert_labels(splits, expected: dict[str, np.ndarray]) -> None:
  got = _labels(splits)
  assert sorted(got) == sorted(expected)
  for case_id, label in expected.items():
    np.testing.assert_array_equal(got[case_id], label, err_msg=case_id)


def _build_dir(data_dir: Path) -> Path:
  (version,) = (data_dir / "promise12" / "preprocessed").iterdir()
  return version


@pytest.fixture
def cached(tmp_path):
  """A release in ``a/`` built into ``tfds/``: (data_dir, manual_dir, labels)."""
  manual = tmp_path / "a"
  labels = _write_release(manual)
  data_dir = tmp_path / "tfds"
  _assert_labels(_load(data_dir, manual), labels)
  return data_dir, manual, labels


def test_record_written(cached):
  data_dir, manual, _ = cached
  record = json.loads((_build_dir(data_dir) / _common.MANUAL_RECORD).read_text())
  assert record["manual_dir"] == os.path.realpath(manual)
  assert sorted(record["files"]) == sorted(os.listdir(manual))
  size = os.path.getsize(manual / "label_train03.npy")
  assert record["files"]["label_train03.npy"][0] == size


def test_same_directory_reuses_cache(cached, capsys):
  data_dir, manual, labels = cached
  capsys.readouterr()
  _assert_labels(_load(data_dir, manual), labels)
  # Not given: the directory the cache was built from, checked and unchanged.
  _assert_labels(_load(data_dir, None), labels)
  assert capsys.readouterr().err == ""


def test_other_directory_rebuilds(cached, tmp_path, capsys):
  data_dir, manual, _ = cached
  fixed = _write_release(tmp_path / "b", label_value=0)  # "corrected" labels
  capsys.readouterr()
  _assert_labels(_load(data_dir, tmp_path / "b"), fixed)
  err = capsys.readouterr().err
  assert re.fullmatch(
      r"rebuilding promise12/preprocessed: the manual directory changed \(.+ -> .+\)\n", err)
  assert os.path.realpath(manual) in err and os.path.realpath(tmp_path / "b") in err
  # The rebuild is recorded: next time the cache is used.
  _assert_labels(_load(data_dir, tmp_path / "b"), fixed)
  assert capsys.readouterr().err == ""


def test_changed_contents_rebuild(cached, capsys):
  data_dir, manual, labels = cached
  label = np.load(manual / "label_train03.npy")
  label[1, 1, 1] = 0  # Same size: only the mtime (and the content) tell.
  np.save(manual / "label_train03.npy", label)
  st = os.stat(manual / "label_train03.npy")
  os.utime(manual / "label_train03.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
  (manual / "notes.txt").write_text("fixed case 03")
  capsys.readouterr()
  splits = _load(data_dir, manual)
  labels["promise12-03"] = label.transpose(2, 1, 0)
  _assert_labels(splits, labels)
  err = capsys.readouterr().err
  assert err.startswith("rebuilding promise12/preprocessed: the manual directory changed (")
  assert "1 file changed (label_train03.npy)" in err and "1 file added (notes.txt)" in err
  assert err.count("\n") == 1

  # Not given: the recorded directory is checked too.
  os.remove(manual / "notes.txt")
  _assert_labels(_load(data_dir, None), labels)
  assert "1 file removed (notes.txt)" in capsys.readouterr().err


@pytest.mark.parametrize("given", ["none", "missing"])
def test_missing_directory_is_an_error(cached, tmp_path, given):
  data_dir, manual, _ = cached
  shutil.rmtree(manual)
  missing = tmp_path / "nowhere"
  with pytest.raises(DataError) as e:
    _load(data_dir, None if given == "none" else missing)
  msg = str(e.value)
  assert isinstance(e.value, FileNotFoundError) and "\n" not in msg
  assert os.path.realpath(manual) in msg and "--manual-dir" in msg
  if given == "none":
    assert "gone" in msg and str(_build_dir(data_dir)) in msg
  else:
    assert str(missing) in msg and "does not exist" in msg
  # The cache is left alone: the data come back with the directory.
  labels = _write_release(manual)
  _assert_labels(_load(data_dir, manual), labels)


def test_build_without_record(cached, tmp_path, capsys):
  """A cache made before the records: an error without manual_dir, rebuilt once with it."""
  data_dir, _, _ = cached
  os.remove(_build_dir(data_dir) / _common.MANUAL_RECORD)
  with pytest.raises(DataError, match="does not record the manual directory.*--manual-dir"):
    _load(data_dir, None)
  fixed = _write_release(tmp_path / "b", label_value=0)
  capsys.readouterr()
  _assert_labels(_load(data_dir, tmp_path / "b"), fixed)
  assert "does not record its manual directory" in capsys.readouterr().err
  _assert_labels(_load(data_dir, tmp_path / "b"), fixed)
  assert capsys.readouterr().err == ""


def test_phantom_unaffected(tmp_path, capsys):
  tiny = dict(num_cases=3, num_slices=2, phantom_size=(24, 20), phantom_spacing=(0.9, 6.0),
              image_size=8, split_fractions=(0.34, 0.33, 0.33))
  first = datasets.load("micro_us", "phantom", data_dir=tmp_path, **tiny)
  (version,) = [p.parent for p in (tmp_path / "micro_us").glob("*/*/dataset_info.json")]
  record = json.loads((version / _common.MANUAL_RECORD).read_text())
  assert record["manual_dir"] is None
  capsys.readouterr()
  for manual_dir in (None, tmp_path / "nowhere"):
    again = datasets.load("micro_us", "phantom", data_dir=tmp_path, manual_dir=manual_dir, **tiny)
    assert [ex["case_id"] for ex in again["train"]] == [ex["case_id"] for ex in first["train"]]
  assert capsys.readouterr().err == ""


def test_fingerprint_manual_dir(tmp_path):
  (tmp_path / "sub").mkdir()
  (tmp_path / "a.txt").write_text("abc")
  (tmp_path / "sub" / "b.bin").write_bytes(b"12345")
  os.symlink(tmp_path / "sub", tmp_path / "loop")  # followed, listed once per real folder
  os.symlink(tmp_path / "gone", tmp_path / "broken")
  fp = _common.fingerprint_manual_dir(tmp_path)
  assert fp["a.txt"][0] == 3 and fp["broken"] == [-1, -1]
  assert sum(name.endswith("b.bin") for name in fp) == 1
  assert fp == _common.fingerprint_manual_dir(tmp_path)


def test_a_second_process_waits_for_the_build_lock(cached, capsys):
  """While another process holds the build's lock (two runs started side by side), prepare
  waits instead of deleting or reading a build in progress, then reads the finished one."""
  import fcntl  # pylint: disable=import-outside-toplevel
  import threading  # pylint: disable=import-outside-toplevel
  data_dir, manual, labels = cached
  capsys.readouterr()
  lock = data_dir / "promise12" / ".preprocessed.lock"
  assert lock.exists()
  result = {}
  with open(lock, "a", encoding="utf-8") as held:
    fcntl.flock(held, fcntl.LOCK_EX)
    reader = threading.Thread(target=lambda: result.update(splits=_load(data_dir, manual)))
    reader.start()
    reader.join(timeout=2.0)
    assert reader.is_alive() and "splits" not in result  # blocked on the lock
    fcntl.flock(held, fcntl.LOCK_UN)
  reader.join(timeout=60.0)
  assert not reader.is_alive()
  _assert_labels(result["splits"], labels)
  assert capsys.readouterr().err.startswith(
      f"waiting for another process that prepares promise12/preprocessed ({lock})")


def test_an_incomplete_build_directory_is_built_again(cached):
  """A version directory without tfds' dataset_info.json (a clean-up that was interrupted) is
  not a build: it is replaced, not read as an empty dataset."""
  data_dir, manual, labels = cached
  version = _build_dir(data_dir)
  for path in version.iterdir():
    if path.name != _common.MANUAL_RECORD:
      path.unlink()
  _assert_labels(_load(data_dir, manual), labels)
