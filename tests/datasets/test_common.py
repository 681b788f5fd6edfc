"""Tests for datasets._common: config checks and look-up, manual-data errors, error hints."""

import os
import types

import numpy as np
import pytest

from datasets import _common
from datasets import male_pelvic_mr
from jaxseg.data import preprocess
from jaxseg.errors import ConfigError


def test_default_data_dir(monkeypatch, tmp_path):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "d"))
  assert _common.default_data_dir() == str(tmp_path / "d")
  monkeypatch.delenv("JAXSEG_DATA_DIR")
  assert _common.default_data_dir() == os.path.join(
      os.path.expanduser("~"), ".cache", "jaxseg", "tfds"
  )


def test_missing_manual_data_message():
  err = _common.missing_manual_data(
      dataset="ds",
      source="data.zip from https://example.org/1",
      manual_dir="/x/manual",
      layout="data/{uid}_img.nii",
      missing=[f"f{i}" for i in range(25)],
  )
  assert isinstance(err, FileNotFoundError)
  msg = str(err)
  for part in ("ds", "https://example.org/1", "/x/manual", "data/{uid}_img.nii", "f0", "f19"):
    assert part in msg
  assert "Missing (25)" in msg and "5 more" in msg and "f20" not in msg


# --------------------------------------------------------------------------------------------
# Config settings and look-up.
# --------------------------------------------------------------------------------------------


def test_check_choice_lists_every_choice():
  _common.check_choice("source", "b", ("a", "b"))
  with pytest.raises(ValueError) as e:
    _common.check_choice("source", "x", ("a", "b"))
  assert str(e.value) == "source must be 'a' or 'b', got 'x'."
  with pytest.raises(ValueError) as e:
    _common.check_choice("source", None, ("phantom", "prostatex", "picai"))
  assert str(e.value) == "source must be 'phantom', 'prostatex' or 'picai', got None."


@pytest.mark.parametrize("good", [(1, 2, 3), [4, 4, 1], (2.0, 3.0, 1.0)])
def test_check_shape_accepts(good):
  _common.check_shape("crop_shape", good)


@pytest.mark.parametrize("bad", [(1, 2), (1, 2, 3, 4), (4, 0, 4), (4, -1, 4)])
def test_check_shape_rejects(bad):
  with pytest.raises(ValueError, match=r"^crop_shape must be 3 positive ints, got "):
    _common.check_shape("crop_shape", bad)


@pytest.mark.parametrize("bad", [(1.0, 1.0), (1.0, 0.0, 3.0), (1.0, -2.0, 3.0),
                                 (1.0, float("nan"), 3.0), (float("inf"), 1.0, 1.0), None])
def test_check_spacing_rejects_with_the_one_validators_message(bad):
  with pytest.raises(ConfigError) as e:
    _common.check_spacing("target_spacing", bad)
  with pytest.raises(ValueError) as expected:
    preprocess.validate_spacing(bad, name="target_spacing")
  assert str(e.value) == str(expected.value)
  assert str(e.value).startswith("target_spacing must ")


def test_check_spacing_returns_floats():
  assert _common.check_spacing("s", [1, 2, np.float32(3.5)]) == (1.0, 2.0, 3.5)
  assert _common.check_spacing("s", (0.5, 2), ndim=2) == (0.5, 2.0)


def test_check_spacing_accepts():
  _common.check_spacing("target_spacing", (0.5, 0.5, 3))


def test_check_percentiles():
  for good in ((0.0, 100.0), (0.5, 99.5), (20, 20)):
    _common.check_percentiles(good)
  for bad in ((-1.0, 50.0), (60.0, 50.0), (0.0, 100.5)):
    with pytest.raises(ValueError, match=r"0 <= lower <= upper <= 100, got"):
      _common.check_percentiles(bad)
  with pytest.raises(ValueError, match=r"must be \(lower, upper\), got \(1, 2, 3\)"):
    _common.check_percentiles((1, 2, 3))


def test_builder_config_by_name_object_and_overrides():
  cls = male_pelvic_mr.MalePelvicMr
  assert _common.builder_config(cls, "zenodo") is male_pelvic_mr.ZENODO
  assert _common.builder_config(cls, male_pelvic_mr.ZENODO) is male_pelvic_mr.ZENODO
  custom = _common.builder_config(cls, "phantom", num_cases=3)
  assert custom.num_cases == 3 and custom.name.startswith("phantom_")
  assert _common.builder_config(cls, custom) is custom
  assert _common.builder_config(cls, custom, num_cases=4).name != custom.name
  with pytest.raises(ValueError) as e:
    _common.builder_config(cls, "nope")
  assert str(e.value) == "Unknown config 'nope'; available: ['phantom', 'zenodo']."


# --------------------------------------------------------------------------------------------
# Manual releases and error hints.
# --------------------------------------------------------------------------------------------

_RELEASE = _common.ManualRelease(dataset="toy (config 'real')", source="toy.zip from x.org",
                                 layout="<manual_dir>/\n  a.nii")


def test_manual_release_error_is_missing_manual_data():
  err = _RELEASE.error("/m", missing=["/m/a.nii"], problem="Nothing here.")
  expected = _common.missing_manual_data(dataset="toy (config 'real')", source="toy.zip from x.org",
                                         manual_dir="/m", layout="<manual_dir>/\n  a.nii",
                                         missing=["/m/a.nii"], problem="Nothing here.")
  assert isinstance(err, FileNotFoundError) and str(err) == str(expected)
  assert str(err).startswith("Nothing here.\nMissing (1): /m/a.nii\nDownload toy.zip from x.org")
  assert "toy (config 'real') are missing" in str(_RELEASE.error(None))


class _DownloadManager:
  """Stands in for tfds' DownloadManager: ``manual_dir`` asserts when it is unusable."""

  def __init__(self, manual_dir, usable):
    self._manual_dir = manual_dir
    self._usable = usable

  @property
  def manual_dir(self):
    assert self._usable, "tfds' bare assertion"
    return self._manual_dir


def test_manual_release_manual_dir(tmp_path):
  assert _RELEASE.manual_dir(_DownloadManager(tmp_path, True)) == str(tmp_path)
  with pytest.raises(FileNotFoundError) as e:
    _RELEASE.manual_dir(_DownloadManager(tmp_path / "nowhere", False))
  msg = str(e.value)
  assert msg.startswith(f"Manual directory {tmp_path / 'nowhere'} for toy (config 'real') does "
                        "not exist or is empty.\n")
  assert "Download toy.zip from x.org" in msg and "  <manual_dir>/\n    a.nii" in msg


def test_append_to_errors():
  with pytest.raises(ValueError) as e:
    with _common.append_to_errors(" (hint)"):
      raise ValueError("bad value")
  assert str(e.value) == "bad value (hint)" and type(e.value) is ValueError
  assert str(e.value.__cause__) == "bad value"
  with pytest.raises(FileNotFoundError, match=r"^gone\.nii \(hint\)$"):
    with _common.append_to_errors(" (hint)"):
      raise FileNotFoundError("gone.nii")
  with pytest.raises(KeyError) as e:  # Other types pass unchanged.
    with _common.append_to_errors(" (hint)"):
      raise KeyError("k")
  assert "hint" not in str(e.value)
  with pytest.raises(FileNotFoundError, match=r"^x$"):  # Only the given types.
    with _common.append_to_errors(" (hint)", (ValueError,)):
      raise FileNotFoundError("x")
  with _common.append_to_errors(" (hint)"):
    value = types.SimpleNamespace(ok=True)
  assert value.ok
