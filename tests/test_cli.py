"""Tests for jaxseg.cli (one-line errors, exit codes) and jaxseg.errors."""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
import textwrap

import nibabel as nib
import numpy as np
import pytest

import datasets
from jaxseg import cli
from jaxseg.errors import ConfigError, DataError, JaxsegError, as_data_error

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
  monkeypatch.delenv(cli.DEBUG_ENV, raising=False)


def _raising(error):
  def main(argv):
    del argv
    raise error
  return main


# --------------------------------------------------------------------------------------------
# jaxseg.errors
# --------------------------------------------------------------------------------------------


def test_error_types():
  assert issubclass(ConfigError, JaxsegError) and issubclass(ConfigError, ValueError)
  assert issubclass(DataError, JaxsegError) and not issubclass(DataError, ValueError)


def test_as_data_error_keeps_the_original_type_and_message():
  for error in (FileNotFoundError("gone.nii\nDownload x"), ValueError("bad"), EOFError("eof"),
                ImportError("pip install SimpleITK")):
    new = as_data_error(error)
    assert isinstance(new, DataError) and isinstance(new, type(error))
    assert str(new) == str(error) and new.args == error.args
  # One class per original type.
  assert type(as_data_error(ValueError("a"))) is type(as_data_error(ValueError("b")))
  assert type(as_data_error(ValueError("a"))).__name__ == "DataError[ValueError]"


def test_as_data_error_keeps_os_error_fields():
  new = as_data_error(FileNotFoundError(2, "No such file or directory", "/x/a.nii"))
  assert isinstance(new, FileNotFoundError)
  assert (new.errno, new.filename) == (2, "/x/a.nii")
  assert str(new) == "[Errno 2] No such file or directory: '/x/a.nii'"


def test_as_data_error_passes_jaxseg_errors_and_falls_back():
  error = ConfigError("x")
  assert as_data_error(error) is error

  class Odd(ValueError):
    def __init__(self, a, b):
      super().__init__(f"{a}/{b}")

  new = as_data_error(Odd(1, 2))  # Odd("1/2") cannot be rebuilt from its args.
  assert isinstance(new, DataError) and str(new) == "Odd: 1/2"


def test_as_data_error_takes_over_traceback_and_cause():
  root = KeyError("root")
  try:
    try:
      raise ValueError("bad") from root
    except ValueError as e:
      raise as_data_error(e)  # pylint: disable=raise-missing-from
  except DataError as new:
    assert new.__cause__ is root and new.__suppress_context__
    assert new.__traceback__ is not None


def test_as_data_error_pickles():
  new = as_data_error(ValueError("bad file"))
  again = pickle.loads(pickle.dumps(new))
  assert type(again) is type(new) and str(again) == "bad file"


# --------------------------------------------------------------------------------------------
# jaxseg.cli.run
# --------------------------------------------------------------------------------------------


def test_run_returns_what_main_returns():
  assert cli.run(lambda argv: ("ok", argv), ["--x"], prog="p") == ("ok", ["--x"])


@pytest.mark.parametrize("error", [ConfigError("--epochs must be positive, got -1."),
                                   DataError("Manual directory /m is empty; download x.")])
def test_run_prints_one_line_and_exits_2(capsys, error):
  with pytest.raises(SystemExit) as e:
    cli.run(_raising(error), [], prog="python -m experiments.x")
  assert e.value.code == 2
  out, err = capsys.readouterr()
  assert out == ""
  assert err == f"python -m experiments.x: error: {error}\n"
  assert "Traceback" not in err


def test_run_keeps_the_lines_of_a_block(capsys):
  with pytest.raises(SystemExit):
    cli.run(_raising(as_data_error(FileNotFoundError("Missing a.nii.\nDownload b.zip"))),
            prog="p")
  assert capsys.readouterr().err == "p: error: Missing a.nii.\nDownload b.zip\n"


def test_error_helper():
  with pytest.raises(ConfigError, match=r"^--lr must be > 0, got 0\.$"):
    cli.error("--lr must be > 0, got 0.")


def test_error_helper_through_run(capsys):
  with pytest.raises(SystemExit) as e:
    cli.run(lambda argv: cli.error("--lr must be > 0, got 0."), prog="p")
  assert e.value.code == 2 and capsys.readouterr().err == "p: error: --lr must be > 0, got 0.\n"


def test_run_keyboard_interrupt(capsys):
  with pytest.raises(SystemExit) as e:
    cli.run(_raising(KeyboardInterrupt()), prog="p")
  assert e.value.code == 130
  assert capsys.readouterr().err == "p: interrupted\n"


def test_run_leaves_other_errors_alone(capsys):
  with pytest.raises(TypeError, match="a bug"):
    cli.run(_raising(TypeError("a bug")), prog="p")
  with pytest.raises(ValueError, match="plain"):  # Not a JaxsegError: a traceback.
    cli.run(_raising(ValueError("plain")), prog="p")
  assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_debug_reraises(monkeypatch, capsys, value):
  monkeypatch.setenv(cli.DEBUG_ENV, value)
  with pytest.raises(ConfigError, match="bad flag"):
    cli.run(_raising(ConfigError("bad flag")), prog="p")
  with pytest.raises(KeyboardInterrupt):
    cli.run(_raising(KeyboardInterrupt()), prog="p")
  assert capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["", "0", "false"])
def test_debug_off(monkeypatch, value):
  monkeypatch.setenv(cli.DEBUG_ENV, value)
  with pytest.raises(SystemExit):
    cli.run(_raising(ConfigError("bad flag")), prog="p")


# --------------------------------------------------------------------------------------------
# Dataset errors, end to end: a real process, a real builder.
# --------------------------------------------------------------------------------------------

_PROMISE12_MAIN = textwrap.dedent("""
    import sys
    from jaxseg import cli
    import datasets

    def main(argv):
      datasets.load("promise12", "preprocessed", manual_dir=argv[0], data_dir=argv[1])
      print("loaded")

    cli.run(main, sys.argv[1:], prog="demo")
""")


def _python(code, *args, debug=False):
  env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
  env["PYTHONPATH"] = _REPO + os.pathsep + env.get("PYTHONPATH", "")
  env["TFDS_DISABLE_GCS"] = "1"
  if debug:
    env[cli.DEBUG_ENV] = "1"
  return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=_REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)


def _check_clean_error(proc, *, prog="demo"):
  """Exit 2; stderr is the build note and the error block, nothing of tfds on either stream."""
  assert proc.returncode == 2, proc.stderr
  assert "Traceback" not in proc.stderr
  for noise in ("Downloading and preparing", "downloaded and prepared", "absl",
                "dataset_info.json", "examples/s"):
    assert noise not in proc.stdout + proc.stderr, (noise, proc.stdout, proc.stderr)
  lines = proc.stderr.splitlines()
  assert lines[0].startswith("building ") and lines[0].endswith("(first run only)")
  assert lines[1].startswith(f"{prog}: error: ")
  return lines


def test_missing_manual_dir_in_a_process(tmp_path):
  proc = _python(_PROMISE12_MAIN, tmp_path / "nonexistent", tmp_path / "tfds")
  lines = _check_clean_error(proc)
  # The error block of the builder: the problem, what to download, where, and the layout --
  # 6 lines, with none of the 36-76 traceback lines.
  assert len(lines) <= 8, proc.stderr
  assert proc.stdout == ""
  assert f"Manual directory {tmp_path / 'nonexistent'}" in lines[1]
  assert "image_trainNN.npy" in proc.stderr and "promise12.grand-challenge.org" in proc.stderr
  assert "<manual_dir>/" in proc.stderr

  debug = _python(_PROMISE12_MAIN, tmp_path / "nonexistent", tmp_path / "tfds", debug=True)
  assert debug.returncode == 1
  assert "Traceback" in debug.stderr and "DataError[FileNotFoundError]" in debug.stderr
  assert "Downloading and preparing" not in debug.stdout + debug.stderr


def test_corrupt_npy_in_a_process(tmp_path):
  manual = tmp_path / "manual"
  manual.mkdir()
  rng = np.random.default_rng(0)
  for k in range(10):
    label = np.zeros((4, 6, 5), np.int8)
    label[1:3, 2:5, 1:3] = 1
    np.save(manual / f"image_train{k:02d}.npy", rng.integers(0, 500, (4, 6, 5), np.int16))
    np.save(manual / f"label_train{k:02d}.npy", label)
  path = manual / "image_train03.npy"
  path.write_bytes(path.read_bytes()[:100])
  proc = _python(_PROMISE12_MAIN, manual, tmp_path / "tfds")
  lines = _check_clean_error(proc)
  assert len(lines) <= 4, proc.stderr
  assert "image_train03.npy" in lines[1] and "corrupt" in lines[1]

  path.unlink()
  np.save(path, rng.integers(0, 500, (4, 6, 5), np.int16))
  proc = _python(_PROMISE12_MAIN, manual, tmp_path / "tfds")
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout == "loaded\n"  # Nothing of tfds on stdout.
  assert proc.stderr.splitlines()[0].startswith("building promise12/preprocessed in ")


def test_corrupt_nifti(tmp_path, capfd):
  """A truncated NIfTI file of male_pelvic_mr: one error block naming the file, no tfds noise."""

  data = tmp_path / "manual" / "data"
  data.mkdir(parents=True)
  rng = np.random.default_rng(0)
  affine = np.diag([-0.5, 0.6, 3.6, 1.0])
  for k in range(8):
    label = rng.integers(0, 9, size=(24, 20, 5)).astype(np.uint8)
    image = (300.0 + 25.0 * label + rng.normal(0, 3, label.shape)).astype(np.int16)
    nib.save(nib.Nifti1Image(image, affine), str(data / f"001{k:03d}_img.nii"))
    nib.save(nib.Nifti1Image(label, affine), str(data / f"001{k:03d}_mask.nii"))
  (tmp_path / "manual" / "institution.txt").write_text(
      "".join(f"001{k:03d} UCL\n" for k in range(8)))
  path = data / "001004_img.nii"
  path.write_bytes(path.read_bytes()[:1000])

  def main(argv):
    del argv
    datasets.load("male_pelvic_mr", "zenodo", data_dir=tmp_path / "tfds",
                  manual_dir=tmp_path / "manual")

  capfd.readouterr()
  with pytest.raises(SystemExit) as e:
    cli.run(main, prog="demo")
  assert e.value.code == 2
  out, err = capfd.readouterr()
  assert "Downloading and preparing" not in out + err and "Traceback" not in err
  lines = err.splitlines()
  assert lines[0].startswith("building male_pelvic_mr/zenodo in ")
  assert lines[1].startswith("demo: error: ") and len(lines) <= 4, err
  assert "001004_img.nii" in err and "corrupt" in err and "data.zip" in err


def test_prepare_errors_are_data_errors_of_the_original_type(tmp_path):

  with pytest.raises(FileNotFoundError, match="image_trainNN.npy") as e:
    datasets.load("promise12", "preprocessed", manual_dir=tmp_path / "nowhere",
                  data_dir=tmp_path / "tfds")
  assert isinstance(e.value, DataError)


def test_bad_dataset_settings_are_config_errors(tmp_path, capsys):

  for config, overrides, message in (
      ("nope", {}, "Unknown config 'nope'; available: ['original', 'preprocessed']."),
      ("preprocessed", {"clip_percentiles": (5, 1)},
       "clip_percentiles must satisfy 0 <= lower <= upper <= 100, got (5, 1)."),
      ("preprocessed", {"spacing_mm": 1}, "Unknown setting(s) ['spacing_mm'] for "),
  ):
    with pytest.raises(SystemExit) as e:
      cli.run(lambda argv: datasets.load("promise12", config, data_dir=tmp_path, **overrides),
                                         prog="p")
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"p: error: {message}") and len(err.splitlines()) == 1, err


def test_quiet_tfds_drops_only_what_tfds_logs(caplog):
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

  from datasets import _common  # pylint: disable=import-outside-toplevel

  tfds_file = os.path.join(os.path.dirname(tfds.__file__), "core", "dataset_builder.py")
  ours = os.path.abspath(__file__)
  loggers = [logging.getLogger("absl"), logging.getLogger()]

  def log_all(tag):
    for logger in loggers:
      for level in (logging.INFO, logging.WARNING, logging.ERROR):
        for path in (tfds_file, ours):
          logger.handle(logger.makeRecord(logger.name, level, path, 1, f"{tag} %s %s",
                                          (level, os.path.basename(path)), None))

  bars = tfds.core.utils.tqdm_utils._active  # pylint: disable=protected-access
  with caplog.at_level(logging.INFO):
    with _common.quiet_tfds():
      assert not tfds.core.utils.tqdm_utils._active  # pylint: disable=protected-access
      log_all("in")
    log_all("out")
  assert tfds.core.utils.tqdm_utils._active == bars  # pylint: disable=protected-access
  inside = [r for r in caplog.records if r.getMessage().startswith("in ")]
  # tfds' records below ERROR are dropped; its errors and everything of ours stay.
  assert sorted((r.levelno, os.path.basename(r.pathname)) for r in inside) == sorted(
      [(logging.ERROR, "dataset_builder.py")] * 2
      + [(level, "test_cli.py") for level in (logging.INFO, logging.WARNING, logging.ERROR)] * 2)
  assert len([r for r in caplog.records if r.getMessage().startswith("out ")]) == 12
