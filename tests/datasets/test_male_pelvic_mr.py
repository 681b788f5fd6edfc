"""Tests for the male_pelvic_mr tfds builder (phantom and zenodo configs)."""

import os
import zipfile

import nibabel as nib
import numpy as np
import pytest

import datasets
from datasets import _common
from datasets import male_pelvic_mr
from datasets.male_pelvic_mr import male_pelvic_mr as builder_module
from jaxseg.data import preprocess
from jaxseg.data.phantoms import pelvis

_TINY_PHANTOM = dict(
    num_cases=8,
    phantom_shape=(48, 48, 8),
    phantom_spacing=(3.0, 3.0, 3.0),
    target_spacing=(6.0, 6.0, 3.0),
)


# --------------------------------------------------------------------------------------------
# Phantom config.
# --------------------------------------------------------------------------------------------


def test_phantom_build(tmp_path):
  splits = datasets.load("male_pelvic_mr", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  assert sorted(splits) == ["test", "train", "validation"]
  assert [len(splits[k]) for k in ("train", "validation", "test")] == [6, 1, 1]
  ids = [ex["case_id"] for k in splits for ex in splits[k]]
  assert sorted(ids) == [f"phantom-{i:04d}" for i in range(8)]
  expected = preprocess.split_cases(sorted(ids), seed=42)
  assert {k: [ex["case_id"] for ex in v] for k, v in splits.items()} == expected

  ex = splits["train"][0]
  assert set(ex) == {"image", "label", "case_id", "institution", "spacing", "affine"}
  assert ex["image"].dtype == np.float32 and ex["image"].shape == (24, 24, 8)
  assert ex["label"].dtype == np.uint8 and ex["label"].shape == (24, 24, 8)
  assert ex["institution"] == "phantom"
  assert isinstance(ex["case_id"], str)
  np.testing.assert_array_equal(ex["spacing"], np.float32([6.0, 6.0, 3.0]))
  assert ex["spacing"].dtype == np.float32 and ex["affine"].dtype == np.float64

  # The example equals the phantom pushed through the documented preprocessing.
  seed = int(ex["case_id"].split("-")[1])
  case = pelvis.make_pelvis_case(seed, shape=(48, 48, 8), spacing=(3.0, 3.0, 3.0))
  assert case.case_id == ex["case_id"]
  img, lab, _, aff = preprocess.resample_case(
      case.image, case.label, case.spacing, case.affine, (6.0, 6.0, 3.0)
  )
  np.testing.assert_array_equal(ex["label"], lab)
  np.testing.assert_allclose(ex["affine"], aff)
  np.testing.assert_allclose(ex["image"], preprocess.normalize_intensity(img), atol=1e-6)
  assert abs(float(ex["image"].mean())) < 1e-4
  assert abs(float(ex["image"].std()) - 1.0) < 1e-3
  assert set(np.unique(ex["label"])) <= set(range(9)) and ex["label"].any()

  # Built once: a second load reads the cache and gives the same data.
  again = datasets.load("male_pelvic_mr", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  np.testing.assert_array_equal(again["train"][0]["image"], ex["image"])


def test_custom_configs_get_distinct_names():
  base = male_pelvic_mr.PHANTOM
  a = datasets.builder_config("male_pelvic_mr", "phantom", num_cases=8)
  b = datasets.builder_config("male_pelvic_mr", "phantom", num_cases=9)
  c = datasets.builder_config("male_pelvic_mr", "phantom", num_cases=8)
  assert a.name != base.name and a.name != b.name and a.name == c.name
  assert a.name.startswith("phantom_") and a.num_cases == 8 and base.num_cases == 40
  assert a.replace(num_cases=9).name == b.name  # no stacked suffixes
  assert datasets.builder_config("male_pelvic_mr", "phantom") is base
  assert base.version is not None and base.release_notes
  assert male_pelvic_mr.ZENODO.version is not None and male_pelvic_mr.ZENODO.release_notes
  with pytest.raises(ValueError, match="Unknown setting"):
    datasets.builder_config("male_pelvic_mr", "phantom", num_case=8)
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.builder_config("male_pelvic_mr", "phantoms")
  with pytest.raises(ValueError, match="split_by"):
    datasets.builder_config("male_pelvic_mr", "zenodo", split_by="scanner")


def test_same_name_different_settings_refused(tmp_path):
  tiny = {**_TINY_PHANTOM, "num_cases": 7, "phantom_shape": (24, 24, 4)}
  cfg = male_pelvic_mr.PHANTOM.replace(name="tiny", **tiny)
  splits = _common.prepare(male_pelvic_mr.MalePelvicMr, config=cfg, data_dir=tmp_path)
  assert [len(splits[k]) for k in ("train", "validation", "test")] == [5, 1, 1]
  other = male_pelvic_mr.PHANTOM.replace(name="tiny", **{**tiny, "base_seed": 5})
  with pytest.raises(ValueError, match="different settings"):
    _common.prepare(male_pelvic_mr.MalePelvicMr, config=other, data_dir=tmp_path)


# --------------------------------------------------------------------------------------------
# Zenodo config from tiny NIfTI files in the published layout.
# --------------------------------------------------------------------------------------------

_SHAPE = (24, 20, 5)
_SPACING = (0.5, 0.6, 3.6)
_TARGET = (0.75, 0.75, 3.0)
_OUT_SHAPE = (16, 16, 6)
_INSTITUTIONS = {"UCL": 10, "bergen": 10}


def _affine():
  a = np.diag([-_SPACING[0], _SPACING[1], _SPACING[2], 1.0])
  a[:3, 3] = [60.0, -80.0, 12.0]
  return a


def _write_case(data_dir, uid, seed, *, label_max=8):
  rng = np.random.default_rng(seed)
  label = rng.integers(0, label_max + 1, size=_SHAPE).astype(np.uint8)
  ramp = np.arange(_SHAPE[0], dtype=np.float32)[:, None, None]
  image = (300.0 + 10.0 * ramp + 25.0 * label + rng.normal(0, 3, _SHAPE)).astype(np.int16)
  nib.save(nib.Nifti1Image(image, _affine()), str(data_dir / f"{uid}_img.nii"))
  nib.save(nib.Nifti1Image(label, _affine()), str(data_dir / f"{uid}_mask.nii"))
  return image, label


def _write_zenodo(root):
  data = root / "data"
  data.mkdir(parents=True)
  lines, cases = [], {}
  for i_inst, (inst, n) in enumerate(_INSTITUTIONS.items()):
    for k in range(n):
      uid = f"{i_inst:03d}{k:03d}"
      cases[uid] = _write_case(data, uid, seed=1000 * i_inst + k)
      lines.append(f"{uid} {inst}")
  (root / "institution.txt").write_text("\n".join(lines) + "\n")
  return cases


@pytest.fixture(scope="module")
def zenodo_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("zenodo")
  cases = _write_zenodo(root)
  return root, cases


def _zenodo(tmp_path, manual_dir, **overrides):
  return datasets.load("male_pelvic_mr",
      "zenodo", data_dir=tmp_path / "tfds", manual_dir=manual_dir, **overrides
  )


class TestZenodo:

  def test_build(self, tmp_path, zenodo_dir):
    root, cases = zenodo_dir
    splits = _zenodo(tmp_path, root)
    ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
    assert [len(ids[k]) for k in ("train", "validation", "test")] == [16, 2, 2]
    all_ids = sum(ids.values(), [])
    assert sorted(all_ids) == sorted(cases) and len(set(all_ids)) == len(all_ids)
    assert ids == preprocess.split_cases(sorted(cases), seed=42)

    new_affine = preprocess.resample_affine(_affine(), _SPACING, _TARGET)
    for ex in sum(splits.values(), []):
      image, label = cases[ex["case_id"]]
      assert ex["image"].shape == _OUT_SHAPE and ex["label"].shape == _OUT_SHAPE
      np.testing.assert_allclose(ex["spacing"], _TARGET)
      np.testing.assert_allclose(ex["affine"], new_affine, atol=1e-6)
      np.testing.assert_allclose(np.linalg.norm(ex["affine"][:3, :3], axis=0), _TARGET)
      # Output voxel j sits where the input was sampled: x_in = (j + 1/2) t / s - 1/2.
      j = np.array([3.0, 5.0, 2.0])
      x_in = (j + 0.5) * np.array(_TARGET) / np.array(_SPACING) - 0.5
      np.testing.assert_allclose(ex["affine"] @ [*j, 1.0], _affine() @ [*x_in, 1.0], atol=1e-5)
      np.testing.assert_array_equal(
          ex["label"], preprocess.resample(label, _SPACING, _TARGET, order=0)
      )
      assert set(np.unique(ex["label"])) <= set(np.unique(label))
      assert abs(float(ex["image"].mean())) < 1e-4
      assert abs(float(ex["image"].std()) - 1.0) < 1e-3
      expected_inst = "UCL" if ex["case_id"].startswith("000") else "bergen"
      assert ex["institution"] == expected_inst

    # Independent check of one image: linear resampling + clip + z-score in float64.
    ex = splits["train"][0]
    image = cases[ex["case_id"]][0].astype(np.float64)
    res = preprocess.resample(image, _SPACING, _TARGET, order=1)
    lo, hi = np.percentile(res, [0.5, 99.5])
    clipped = np.clip(res, lo, hi)
    np.testing.assert_allclose(
        ex["image"], (clipped - clipped.mean()) / clipped.std(), atol=1e-4
    )

  def test_exclude_ids(self, tmp_path, zenodo_dir, caplog):
    # E.g. the PROMISE12 cases of the release: left out before the split, logged; numbers are
    # zero-padded uids, the order does not change the config, an unknown id is a warning.
    root, cases = zenodo_dir
    cfg = datasets.builder_config("male_pelvic_mr", "zenodo", exclude_ids=(1, "001003", "999999"))
    assert cfg.exclude_ids == ("000001", "001003", "999999")
    same = datasets.builder_config("male_pelvic_mr", "zenodo", exclude_ids="999999, 001003 1")
    assert same.name == cfg.name != male_pelvic_mr.ZENODO.name
    assert "exclude_ids" in male_pelvic_mr.ZENODO.settings()
    with caplog.at_level("INFO", logger="datasets._exclude"):
      splits = _zenodo(tmp_path, root, exclude_ids=(1, "001003", "999999"))
    ids = sorted(ex["case_id"] for v in splits.values() for ex in v)
    assert ids == sorted(set(cases) - {"000001", "001003"})
    assert ({k: [ex["case_id"] for ex in v] for k, v in splits.items()}
            == preprocess.split_cases(ids, seed=42))
    assert "leaving out 2 of 20 cases (exclude_ids)" in caplog.text
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "999999" in warnings[0].getMessage()
    with pytest.raises(ValueError, match="exclude_ids must be case ids"):
      datasets.builder_config("male_pelvic_mr", "zenodo", exclude_ids=(1.5,))

  def test_deterministic(self, tmp_path, zenodo_dir):
    root, _ = zenodo_dir
    a = _zenodo(tmp_path / "a", root)
    b = _zenodo(tmp_path / "b", root)
    for k in a:
      assert [ex["case_id"] for ex in a[k]] == [ex["case_id"] for ex in b[k]]
      for ea, eb in zip(a[k], b[k]):
        np.testing.assert_array_equal(ea["image"], eb["image"])

  def test_split_by_institution(self, tmp_path, zenodo_dir):
    root, cases = zenodo_dir
    for seed in (42, 0, 1):
      splits = _zenodo(tmp_path / str(seed), root, split_by="institution", split_seed=seed)
      for k, per_inst in (("train", 8), ("validation", 1), ("test", 1)):
        insts = [ex["institution"] for ex in splits[k]]
        assert insts.count("UCL") == per_inst and insts.count("bergen") == per_inst, (seed, k)
      ids = sorted(ex["case_id"] for v in splits.values() for ex in v)
      assert ids == sorted(cases)

  def test_from_zip(self, tmp_path, zenodo_dir):
    root, _ = zenodo_dir
    manual = tmp_path / "manual"
    manual.mkdir()
    with zipfile.ZipFile(manual / "data.zip", "w") as zf:
      for f in sorted((root / "data").iterdir()):
        zf.write(f, f"data/{f.name}")
      zf.write(root / "institution.txt", "institution.txt")
    from_zip = _zenodo(tmp_path / "z", manual)
    plain = _zenodo(tmp_path / "p", root)
    for k in plain:
      assert [ex["case_id"] for ex in from_zip[k]] == [ex["case_id"] for ex in plain[k]]
      for a, b in zip(from_zip[k], plain[k]):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
    assert sorted(os.listdir(manual)) == ["data.zip"]  # nothing extracted next to the zip


def test_parse_institutions():
  text = (
      "uid institution\n001000 UCL\n001001\tUCL\n2000,bergen\n\n# comment\n"
      "003001 Prostate 3T\n"
  )
  assert builder_module._parse_institutions(text, "i.txt") == {
      "001000": "UCL", "001001": "UCL", "002000": "bergen", "003001": "Prostate 3T"
  }
  with pytest.raises(ValueError, match=r"i\.txt, line 2"):
    builder_module._parse_institutions("001000 UCL\n001001\n", "i.txt")
  with pytest.raises(ValueError, match="listed twice"):
    builder_module._parse_institutions("001000 UCL\n001000 bergen\n", "i.txt")


def _small_zenodo(root, n=8):
  data = root / "data"
  data.mkdir(parents=True)
  for k in range(n):
    _write_case(data, f"001{k:03d}", seed=k)
  (root / "institution.txt").write_text("".join(f"001{k:03d} UCL\n" for k in range(n)))
  return data


# The message must say what to download (the record and data.zip).
_DOWNLOAD_HINT = r"(?s)data\.zip.*zenodo\.org/records/7013610"


class TestZenodoErrors:

  def test_missing_dir(self, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _zenodo(tmp_path, missing)
    assert str(missing) in str(e.value)

  def test_missing_data_folder(self, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _zenodo(tmp_path, manual)
    assert "data.zip" in str(e.value) and "{uid}_mask.nii" in str(e.value)

  def test_missing_mask(self, tmp_path):
    data = _small_zenodo(tmp_path / "manual")
    os.remove(data / "001003_mask.nii")
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _zenodo(tmp_path, tmp_path / "manual")
    assert "001003_mask.nii" in str(e.value) and "Missing (1)" in str(e.value)

  def test_missing_institution_file(self, tmp_path):
    _small_zenodo(tmp_path / "manual")
    os.remove(tmp_path / "manual" / "institution.txt")
    with pytest.raises(FileNotFoundError, match="institution.txt"):
      _zenodo(tmp_path, tmp_path / "manual")

  def test_case_without_institution(self, tmp_path):
    data = _small_zenodo(tmp_path / "manual")
    _write_case(data, "009000", seed=99)
    with pytest.raises(ValueError, match=r"no institution for case\(s\) \['009000'\]"):
      _zenodo(tmp_path, tmp_path / "manual")

  def test_label_out_of_range(self, tmp_path):
    data = _small_zenodo(tmp_path / "manual")
    _write_case(data, "001002", seed=2, label_max=9)
    msg = r"001002_mask\.nii\): label values outside 0\.\.8: 9\."
    with pytest.raises(ValueError, match=msg) as e:
      _zenodo(tmp_path, tmp_path / "manual")
    assert "zenodo.org/records/7013610" in str(e.value)

  def test_shape_mismatch(self, tmp_path):
    data = _small_zenodo(tmp_path / "manual")
    nib.save(
        nib.Nifti1Image(np.zeros((24, 20, 4), np.uint8), _affine()), str(data / "001005_mask.nii")
    )
    with pytest.raises(ValueError, match=r"(?s)001005_mask\.nii has shape \(24, 20, 4\).*"
                       r"\(24, 20, 5\).*zenodo\.org/records/7013610"):
      _zenodo(tmp_path, tmp_path / "manual")

  def test_corrupt_nifti(self, tmp_path):
    data = _small_zenodo(tmp_path / "manual")
    path = data / "001004_img.nii"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"(?s)001004_img\.nii.*truncated or corrupt.*data\.zip"):
      _zenodo(tmp_path, tmp_path / "manual")

  def test_too_few_cases(self, tmp_path):
    _small_zenodo(tmp_path / "manual", n=5)
    with pytest.raises(ValueError, match="need at least 7"):
      _zenodo(tmp_path, tmp_path / "manual")
