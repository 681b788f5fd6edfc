"""Tests for the promise12 tfds builder (preprocessed npy and original MetaImage configs)."""

import logging
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import datasets
from datasets import promise12
from datasets.promise12 import promise12 as builder_module
from jaxseg.data import preprocess

_REAL_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "promise12"

# --------------------------------------------------------------------------------------------
# Config 'preprocessed' from tiny npy files in the release layout.
# --------------------------------------------------------------------------------------------

_N = 10  # -> 8 / 1 / 1 cases.
_SRC_SHAPE = (4, 6, 5)  # (slices, rows, cols): all sizes distinct, so a wrong transpose shows.
_XYZ_SHAPE = (5, 6, 4)  # (cols, rows, slices).


def _raw_case(k):
  """(image, label) of case k in (slices, rows, cols); intensity scale differs per case."""
  rng = np.random.default_rng(k)
  label = np.zeros(_SRC_SHAPE, np.int8)
  label[1:3, 2:5, 1:3] = 1
  image = rng.normal(100.0, 20.0, _SRC_SHAPE) * (1 + 10 * k) + 300.0 * label
  return np.round(image).astype(np.int16), label


def _write_npy(root, n=_N):
  root.mkdir(parents=True, exist_ok=True)
  cases = {}
  for k in range(n):
    image, label = _raw_case(k)
    np.save(root / f"image_train{k:02d}.npy", image)
    np.save(root / f"label_train{k:02d}.npy", label)
    cases[f"promise12-{k:02d}"] = (image, label)
  return cases


@pytest.fixture(scope="module")
def npy_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("promise12_npy")
  return root, _write_npy(root)


def _load(tmp_path, manual_dir, config="preprocessed", **overrides):
  return datasets.load("promise12", config, data_dir=tmp_path / "tfds", manual_dir=manual_dir,
                       **overrides)


def _zscore_reference(x, lower=0.5, upper=99.5):
  """Independent float64 clip + z-score (np.percentile, linear interpolation)."""
  x = np.asarray(x, np.float64)
  lo, hi = np.percentile(x, [lower, upper])
  c = np.clip(x, lo, hi)
  return (c - c.mean()) / c.std()


class TestPreprocessed:

  def test_build(self, tmp_path, npy_dir):
    root, cases = npy_dir
    splits = _load(tmp_path, root)
    ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
    assert sorted(ids) == ["test", "train", "validation"]
    assert [len(ids[k]) for k in ("train", "validation", "test")] == [8, 1, 1]
    assert ids == preprocess.split_cases(sorted(cases), seed=42)
    all_ids = sum(ids.values(), [])
    assert sorted(all_ids) == sorted(cases) and len(set(all_ids)) == _N

    for ex in sum(splits.values(), []):
      assert set(ex) == {"image", "label", "case_id", "spacing", "affine"}
      assert isinstance(ex["case_id"], str)
      assert ex["image"].dtype == np.float32 and ex["image"].shape == _XYZ_SHAPE
      assert ex["label"].dtype == np.uint8 and ex["label"].shape == _XYZ_SHAPE
      assert ex["spacing"].dtype == np.float32 and ex["affine"].dtype == np.float64
      np.testing.assert_array_equal(ex["spacing"], [1.0, 1.0, 1.0])
      np.testing.assert_array_equal(ex["affine"], np.diag([-1.0, -1.0, 1.0, 1.0]))
      image, label = cases[ex["case_id"]]
      # volume[x, y, z] = array[z, y, x]: (slices, rows, cols) -> (cols, rows, slices).
      np.testing.assert_array_equal(ex["label"], label.transpose(2, 1, 0))
      np.testing.assert_allclose(
          ex["image"], _zscore_reference(image.transpose(2, 1, 0)), atol=1e-5
      )
      # Per-case normalisation: every case is z-scored although raw scales differ 100-fold.
      assert abs(float(ex["image"].mean())) < 1e-5
      assert abs(float(ex["image"].std()) - 1.0) < 1e-4

    # Built once: a second load reads the cache and gives the same data.
    again = _load(tmp_path, root)
    np.testing.assert_array_equal(again["train"][0]["image"], splits["train"][0]["image"])

  def test_orientation(self, tmp_path):
    root = tmp_path / "manual"
    root.mkdir()
    s, r, c = np.meshgrid(*(np.arange(n) for n in _SRC_SHAPE), indexing="ij")
    for k in range(_N):
      image = (100 * s + 10 * r + c + k).astype(np.int16)  # slices x100, rows x10, cols x1
      label = np.zeros(_SRC_SHAPE, np.int8)
      label[1, 2, 3] = 1  # slice 1, row 2, col 3
      label[0, 0, 4] = 1  # slice 0, row 0, col 4
      np.save(root / f"image_train{k:02d}.npy", image)
      np.save(root / f"label_train{k:02d}.npy", label)
    spacing = (0.5, 0.6, 3.0)
    splits = _load(tmp_path, root, assumed_spacing=spacing, clip_percentiles=(0.0, 100.0))
    ex = splits["train"][0]
    assert ex["label"].shape == (5, 6, 4)
    # Hand-placed voxels end up at [col, row, slice].
    assert sorted(map(tuple, np.argwhere(ex["label"]).tolist())) == [(3, 2, 1), (4, 0, 0)]
    # No clipping: the z-scored image is linear, with steps 1 / 10 / 100 along x / y / z.
    step = np.array([
        ex["image"][1, 0, 0] - ex["image"][0, 0, 0],
        ex["image"][0, 1, 0] - ex["image"][0, 0, 0],
        ex["image"][0, 0, 1] - ex["image"][0, 0, 0],
    ])
    np.testing.assert_allclose(step / step[0], [1.0, 10.0, 100.0], rtol=1e-4)
    # Spacing as assumed; x -> patient's left, y -> posterior, z -> superior (LPS in RAS).
    np.testing.assert_allclose(ex["spacing"], spacing)
    np.testing.assert_allclose(ex["affine"], np.diag([-0.5, -0.6, 3.0, 1.0]))
    np.testing.assert_allclose(np.linalg.norm(ex["affine"][:3, :3], axis=0), spacing)

  def test_resampling(self, tmp_path, npy_dir):
    root, cases = npy_dir
    s, t = (0.5, 0.5, 3.0), (1.0, 1.0, 3.0)
    splits = _load(tmp_path, root, assumed_spacing=s, target_spacing=t)
    ex = splits["test"][0]
    image, label = cases[ex["case_id"]]
    expected_label = preprocess.resample(label.transpose(2, 1, 0), s, t, order=0)
    assert ex["label"].shape == expected_label.shape == (3, 3, 4)
    np.testing.assert_array_equal(ex["label"], expected_label)
    np.testing.assert_allclose(ex["spacing"], t)
    np.testing.assert_allclose(
        ex["affine"], preprocess.resample_affine(np.diag([-0.5, -0.5, 3.0, 1.0]), s, t)
    )
    lin = preprocess.resample(image.transpose(2, 1, 0).astype(np.float64), s, t, order=1)
    np.testing.assert_allclose(ex["image"], _zscore_reference(lin), atol=1e-4)

  def test_deterministic_and_split_by_case(self, tmp_path, npy_dir):
    root, cases = npy_dir
    a = _load(tmp_path / "a", root)
    b = _load(tmp_path / "b", root)
    for k in a:
      assert [ex["case_id"] for ex in a[k]] == [ex["case_id"] for ex in b[k]]
      for ea, eb in zip(a[k], b[k]):
        np.testing.assert_array_equal(ea["image"], eb["image"])
        np.testing.assert_array_equal(ea["label"], eb["label"])
    # Another seed: another split of the same whole cases (never of slices).
    c = _load(tmp_path / "c", root, split_seed=7)
    ids_a = {k: sorted(ex["case_id"] for ex in v) for k, v in a.items()}
    ids_c = {k: sorted(ex["case_id"] for ex in v) for k, v in c.items()}
    assert ids_a != ids_c
    assert ids_c == preprocess.split_cases(sorted(cases), seed=7)
    for split in (a, c):
      ids = [ex["case_id"] for v in split.values() for ex in v]
      assert sorted(ids) == sorted(cases)  # each case once, in one split, as a whole volume
      assert all(ex["image"].shape == _XYZ_SHAPE for v in split.values() for ex in v)


def test_configs():
  base = promise12.PREPROCESSED
  assert datasets.builder_config("promise12") is base and base.assumed_spacing == (1.0, 1.0, 1.0)
  assert base.target_spacing is None and base.split_seed == 42
  assert base.split_fractions == (0.8, 0.1, 0.1)
  a = datasets.builder_config("promise12", "preprocessed", assumed_spacing=[0.6, 0.6, 3.6])
  b = datasets.builder_config("promise12", "preprocessed", assumed_spacing=(0.6, 0.6, 3.6))
  c = datasets.builder_config("promise12", "preprocessed", assumed_spacing=(0.7, 0.6, 3.6))
  assert a.name == b.name != c.name and a.name.startswith("preprocessed_")
  assert a.assumed_spacing == (0.6, 0.6, 3.6)
  assert promise12.ORIGINAL.source == "original" and promise12.ORIGINAL.release_notes
  with pytest.raises(ValueError, match="Unknown setting"):
    datasets.builder_config("promise12", "preprocessed", spacing=(1, 1, 1))
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.builder_config("promise12", "phantom")
  with pytest.raises(ValueError, match="assumed_spacing"):
    datasets.builder_config("promise12", "preprocessed", assumed_spacing=(1.0, 0.0, 1.0))
  with pytest.raises(ValueError, match="target_spacing"):
    datasets.builder_config("promise12", "original", target_spacing=(1.0, 1.0))
  with pytest.raises(ValueError, match="source"):
    datasets.builder_config("promise12", "preprocessed", source="zenodo")
  with pytest.raises(ValueError, match="clip_percentiles"):
    datasets.builder_config("promise12", "preprocessed", clip_percentiles=(99.0, 1.0))


# The messages say what to get (the npy release) and where to put it.
_NPY_HINT = r"(?s)image_trainNN\.npy.*label_trainNN\.npy"


class TestPreprocessedErrors:

  def test_missing_dir(self, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=_NPY_HINT) as e:
      _load(tmp_path, missing)
    assert str(missing) in str(e.value) and "promise12" in str(e.value)

  def test_no_npy_files(self, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_NPY_HINT) as e:
      _load(tmp_path, manual)
    assert "No image_trainNN.npy" in str(e.value) and str(manual) in str(e.value)

  def test_missing_label(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    os.remove(manual / "label_train03.npy")
    with pytest.raises(FileNotFoundError, match=_NPY_HINT) as e:
      _load(tmp_path, manual)
    assert "Missing (1)" in str(e.value) and "label_train03.npy" in str(e.value)
    assert "Unpaired" in str(e.value)

  def test_missing_image(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    os.remove(manual / "image_train05.npy")
    with pytest.raises(FileNotFoundError, match="image_train05.npy"):
      _load(tmp_path, manual)

  def test_shape_mismatch(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    np.save(manual / "label_train04.npy", np.zeros((4, 6, 4), np.int8))
    with pytest.raises(
        ValueError, match=r"(?s)label_train04\.npy has shape \(4, 6, 4\).*\(4, 6, 5\).*npy"
    ):
      _load(tmp_path, manual)

  def test_not_3d(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    np.save(manual / "image_train02.npy", np.zeros((6, 5), np.int16))
    np.save(manual / "label_train02.npy", np.zeros((6, 5), np.int8))
    with pytest.raises(ValueError, match=r"image_train02\.npy must be 3D"):
      _load(tmp_path, manual)

  def test_label_outside_0_1(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    image, label = _raw_case(6)
    label = label.copy()
    label[0, 0, 0] = 2
    np.save(manual / "label_train06.npy", label)
    with pytest.raises(ValueError, match=r"(?s)promise12-06.*outside 0\.\.1: 2\..*label_train06"):
      _load(tmp_path, manual)

  def test_corrupt_npy(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual)
    (manual / "image_train01.npy").write_bytes(b"not an npy file")
    with pytest.raises(ValueError, match=r"(?s)image_train01\.npy.*corrupt"):
      _load(tmp_path, manual)

  def test_too_few_cases(self, tmp_path):
    manual = tmp_path / "manual"
    _write_npy(manual, n=5)
    with pytest.raises(ValueError, match="need at least 7"):
      _load(tmp_path, manual)


# --------------------------------------------------------------------------------------------
# Config 'original' (challenge MetaImage files).
# --------------------------------------------------------------------------------------------

_MHD_XYZ = (6, 5, 4)  # DimSize (x, y, z)
_MHD_SPACING = (0.6, 0.7, 3.0)
_MHD_ORIGIN = (10.0, -20.0, 30.0)


def _write_mhd(path, array_xyz, *, spacing=_MHD_SPACING, origin=_MHD_ORIGIN):
  """Writes a MetaImage header + raw file by hand (x fastest in the raw data)."""
  array_xyz = np.asarray(array_xyz)
  etype = {np.dtype(np.int16): "MET_SHORT", np.dtype(np.uint8): "MET_UCHAR"}[array_xyz.dtype]
  raw = Path(path).with_suffix(".raw")
  little_endian = array_xyz.astype(array_xyz.dtype.newbyteorder("<"))
  raw.write_bytes(np.ascontiguousarray(little_endian.transpose(2, 1, 0)).tobytes())
  Path(path).write_text(
      "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
      "CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\n"
      f"Offset = {' '.join(map(str, origin))}\nCenterOfRotation = 0 0 0\n"
      "AnatomicalOrientation = RAI\n"
      f"ElementSpacing = {' '.join(map(str, spacing))}\n"
      f"DimSize = {' '.join(map(str, array_xyz.shape))}\n"
      f"ElementType = {etype}\nElementDataFile = {raw.name}\n"
  )


def _write_original(root, n=_N):
  """n training cases in two folders, plus two test cases (no segmentation)."""
  cases = {}
  for k in range(n):
    folder = root / ("TrainingData_Part1" if k < n // 2 else "TrainingData_Part2")
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(100 + k)
    label = np.zeros(_MHD_XYZ, np.uint8)
    label[1:4, 2:4, 1:3] = 1
    image = (rng.normal(200.0, 30.0, _MHD_XYZ) * (1 + k) + 100 * label).astype(np.int16)
    _write_mhd(folder / f"Case{k:02d}.mhd", image)
    _write_mhd(folder / f"Case{k:02d}_segmentation.mhd", label)
    cases[f"promise12-case{k:02d}"] = (image, label)
  test = root / "TestData"
  test.mkdir()
  for k in range(2):  # same numbers as training cases, as in the challenge download
    _write_mhd(test / f"Case{k:02d}.mhd", np.zeros(_MHD_XYZ, np.int16))
  return cases


@pytest.fixture
def no_simpleitk(monkeypatch):
  """Makes ``import SimpleITK`` fail, whether or not it is installed."""
  monkeypatch.setitem(sys.modules, "SimpleITK", None)


_ORIGINAL_HINT = r"(?s)promise12\.grand-challenge\.org.*CaseNN_segmentation\.mhd"


class TestOriginalErrors:
  """Listing errors need no SimpleITK (it is made unimportable here)."""

  def test_missing_dir(self, tmp_path, no_simpleitk):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=_ORIGINAL_HINT) as e:
      _load(tmp_path, missing, "original")
    assert str(missing) in str(e.value)

  def test_only_test_cases(self, tmp_path, no_simpleitk):
    test = tmp_path / "manual" / "TestData"
    test.mkdir(parents=True)
    _write_mhd(test / "Case00.mhd", np.zeros(_MHD_XYZ, np.int16))
    with pytest.raises(FileNotFoundError, match=_ORIGINAL_HINT) as e:
      _load(tmp_path, tmp_path / "manual", "original")
    assert "No PROMISE12 training case" in str(e.value) and "1 image(s)" in str(e.value)

  def test_segmentation_without_image(self, tmp_path, no_simpleitk):
    manual = tmp_path / "manual"
    _write_original(manual)
    image = manual / "TrainingData_Part1" / "Case03.mhd"
    os.remove(image)
    with pytest.raises(FileNotFoundError, match=_ORIGINAL_HINT) as e:
      _load(tmp_path, manual, "original")
    assert "Missing (1)" in str(e.value) and str(image) in str(e.value)

  def test_missing_raw(self, tmp_path, no_simpleitk):
    manual = tmp_path / "manual"
    _write_original(manual)
    raw = manual / "TrainingData_Part2" / "Case07_segmentation.raw"
    os.remove(raw)
    with pytest.raises(FileNotFoundError, match=_ORIGINAL_HINT) as e:
      _load(tmp_path, manual, "original")
    assert str(raw) in str(e.value)

  def test_duplicate_case(self, tmp_path, no_simpleitk):
    manual = tmp_path / "manual"
    _write_original(manual)
    other = manual / "copy"
    other.mkdir()
    _write_mhd(other / "Case02.mhd", np.zeros(_MHD_XYZ, np.int16))
    _write_mhd(other / "Case02_segmentation.mhd", np.zeros(_MHD_XYZ, np.uint8))
    with pytest.raises(ValueError, match="Case02 has a segmentation in two folders"):
      _load(tmp_path, manual, "original")

  def test_simpleitk_missing(self, tmp_path, no_simpleitk):
    manual = tmp_path / "manual"
    _write_original(manual)
    with pytest.raises(ImportError, match="pip install SimpleITK"):
      _load(tmp_path, manual, "original")
    with pytest.raises(ImportError, match="pip install SimpleITK"):
      promise12.read_metaimage(manual / "TestData" / "Case00.mhd")


def test_lps_to_ras_affine():
  # Identity direction: columns scaled by spacing, x and y flipped; origin flipped likewise.
  a = promise12.lps_to_ras_affine((0.5, 0.6, 3.0), None, (1.0, 2.0, 3.0))
  expected = np.array([
      [-0.5, 0.0, 0.0, -1.0],
      [0.0, -0.6, 0.0, -2.0],
      [0.0, 0.0, 3.0, 3.0],
      [0.0, 0.0, 0.0, 1.0],
  ])
  np.testing.assert_allclose(a, expected)
  # Index axis x along LPS +y (posterior), y along LPS -x (right), z along +z; row-major 9.
  d = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
  b = promise12.lps_to_ras_affine((2.0, 1.0, 4.0), d, (0.0, 0.0, 0.0))
  np.testing.assert_allclose(b @ [1, 0, 0, 1], [0.0, -2.0, 0.0, 1.0])  # 2 mm posterior
  np.testing.assert_allclose(b @ [0, 1, 0, 1], [1.0, 0.0, 0.0, 1.0])  # 1 mm right (RAS +x)
  np.testing.assert_allclose(b @ [0, 0, 1, 1], [0.0, 0.0, 4.0, 1.0])
  with pytest.raises(ValueError, match="3 entries"):
    promise12.lps_to_ras_affine((1.0, 1.0))


class TestOriginal:

  def test_build(self, tmp_path, caplog):
    pytest.importorskip("SimpleITK")
    manual = tmp_path / "manual"
    cases = _write_original(manual)
    with caplog.at_level(logging.WARNING, logger=builder_module.__name__):
      splits = _load(tmp_path, manual, "original")
    assert "skipped 2 image(s)" in caplog.text and "TestData" in caplog.text
    ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
    assert ids == preprocess.split_cases(sorted(cases), seed=42)
    affine = np.diag([-0.6, -0.7, 3.0, 1.0])
    affine[:3, 3] = [-10.0, 20.0, 30.0]
    for ex in sum(splits.values(), []):
      image, label = cases[ex["case_id"]]
      assert ex["image"].shape == _MHD_XYZ and ex["image"].dtype == np.float32
      np.testing.assert_array_equal(ex["label"], label)
      np.testing.assert_allclose(ex["image"], _zscore_reference(image), atol=1e-5)
      np.testing.assert_allclose(ex["spacing"], _MHD_SPACING, rtol=1e-6)
      np.testing.assert_allclose(ex["affine"], affine, atol=1e-9)

  def test_read_metaimage_and_resample(self, tmp_path):
    pytest.importorskip("SimpleITK")
    arr = np.arange(np.prod(_MHD_XYZ), dtype=np.int16).reshape(_MHD_XYZ)
    _write_mhd(tmp_path / "Case00.mhd", arr)
    got, spacing, _ = promise12.read_metaimage(tmp_path / "Case00.mhd")
    np.testing.assert_array_equal(got, arr)  # x fastest in the file -> [x, y, z] here
    np.testing.assert_allclose(spacing, _MHD_SPACING)

    # Affine: same as SimpleITK's own NIfTI writer read back by nibabel, rotated direction.
    sitk = pytest.importorskip("SimpleITK")
    img = sitk.GetImageFromArray(arr.transpose(2, 1, 0))
    img.SetSpacing(_MHD_SPACING)
    img.SetOrigin(_MHD_ORIGIN)
    cos, sin = np.cos(0.3), np.sin(0.3)
    img.SetDirection((cos, -sin, 0.0, sin, cos, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(img, str(tmp_path / "rot.mhd"))
    sitk.WriteImage(img, str(tmp_path / "rot.nii"))
    got, _, affine = promise12.read_metaimage(tmp_path / "rot.mhd")
    nii, _, nii_affine = preprocess.load_nifti(tmp_path / "rot.nii")
    np.testing.assert_array_equal(got, arr)
    np.testing.assert_array_equal(nii, arr)
    np.testing.assert_allclose(affine, nii_affine, atol=1e-6)

    manual = tmp_path / "manual"
    cases = _write_original(manual)
    t = (1.2, 1.4, 3.0)
    splits = _load(tmp_path, manual, "original", target_spacing=t)
    ex = splits["train"][0]
    _, label = cases[ex["case_id"]]
    np.testing.assert_array_equal(
        ex["label"], preprocess.resample(label, _MHD_SPACING, t, order=0)
    )
    assert ex["label"].shape == (3, 3, 4)
    np.testing.assert_allclose(ex["spacing"], t)


# --------------------------------------------------------------------------------------------
# The real data (../shared/data/promise12), when present.
# --------------------------------------------------------------------------------------------


def test_real_preprocessed(tmp_path):
  if not _REAL_DIR.is_dir():
    pytest.skip(f"real PROMISE12 npy files not found at {_REAL_DIR}")
  splits = _load(tmp_path, _REAL_DIR.resolve())
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  expected_ids = [f"promise12-{k:02d}" for k in range(35)]
  assert sorted(sum(ids.values(), [])) == expected_ids
  assert ids == preprocess.split_cases(expected_ids, seed=42)
  assert [len(ids[k]) for k in ("train", "validation", "test")] == [28, 4, 3]
  fractions = []
  for ex in sum(splits.values(), []):
    assert ex["image"].shape == ex["label"].shape == (128, 128, 32)
    assert set(np.unique(ex["label"]).tolist()) == {0, 1}
    assert abs(float(ex["image"].mean())) < 1e-4 and abs(float(ex["image"].std()) - 1) < 1e-3
    fractions.append(float(ex["label"].mean()))
  # The gland is a small foreground: 0.8% (case 17) to 17.2% (case 23), median ~2.7%.
  assert 0.005 < min(fractions) and max(fractions) < 0.18
  assert 0.02 < float(np.median(fractions)) < 0.035
  # One case against the files, read independently.
  ex = splits["train"][0]
  num = ex["case_id"].split("-")[1]
  image = np.load(_REAL_DIR / f"image_train{num}.npy")
  label = np.load(_REAL_DIR / f"label_train{num}.npy")
  np.testing.assert_array_equal(ex["label"], label.transpose(2, 1, 0))
  np.testing.assert_allclose(ex["image"], _zscore_reference(image.transpose(2, 1, 0)), atol=1e-4)
