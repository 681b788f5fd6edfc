"""Tests for the prostatex_gland tfds builder (phantom and prostatex configs)."""

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import datasets
from datasets import _common
from datasets import prostatex_gland
from datasets.prostatex_gland import prostatex_gland as builder_module
from jaxseg.data import preprocess
from jaxseg.data.phantoms import gland

_REAL_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "prostatex_sample"

# 192 x 192 x 48 mm field of view (the default) at a coarse resolution.
_TINY_PHANTOM = dict(num_cases=8, phantom_shape=(48, 48, 8), phantom_spacing=(4.0, 4.0, 6.0))


# --------------------------------------------------------------------------------------------
# Phantom config.
# --------------------------------------------------------------------------------------------


def test_phantom_build(tmp_path):
  splits = datasets.load("prostatex_gland", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  assert sorted(splits) == ["test", "train", "validation"]
  assert [len(splits[k]) for k in ("train", "validation", "test")] == [6, 1, 1]
  ids = [ex["case_id"] for k in splits for ex in splits[k]]
  assert sorted(ids) == [f"gland-{i:04d}" for i in range(8)]
  assert {k: [ex["case_id"] for ex in v] for k, v in splits.items()} == preprocess.split_cases(
      sorted(ids), seed=42
  )

  for ex in sum(splits.values(), []):
    assert set(ex) == {"image", "label", "case_id", "spacing", "affine"}
    assert ex["image"].dtype == np.float32 and ex["image"].shape == (48, 48, 8)
    assert ex["label"].dtype == np.uint8 and ex["label"].shape == (48, 48, 8)
    assert set(np.unique(ex["label"])) == {0, 1}
    assert ex["spacing"].dtype == np.float32 and ex["affine"].dtype == np.float64
    np.testing.assert_array_equal(ex["spacing"], np.float32([4.0, 4.0, 6.0]))
    assert abs(float(ex["image"].mean())) < 1e-4
    assert abs(float(ex["image"].std()) - 1.0) < 1e-3

  # No resampling by default: the example is the phantom, clipped and z-scored.
  ex = splits["validation"][0]
  seed = int(ex["case_id"].split("-")[1])
  case = gland.make_gland_case(seed, shape=(48, 48, 8), spacing=(4.0, 4.0, 6.0))
  assert case.case_id == ex["case_id"]
  np.testing.assert_array_equal(ex["label"], case.label)
  np.testing.assert_allclose(ex["affine"], case.affine)
  x = case.image.astype(np.float64)
  lo, hi = np.percentile(x, [0.5, 99.5])
  x = np.clip(x, lo, hi)
  np.testing.assert_allclose(ex["image"], (x - x.mean()) / x.std(), atol=1e-5)

  # Built once: a second load reads the cache and gives the same data.
  again = datasets.load("prostatex_gland", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  np.testing.assert_array_equal(again["validation"][0]["image"], ex["image"])


def test_phantom_resampled(tmp_path):
  splits = datasets.load("prostatex_gland",
      "phantom", data_dir=tmp_path, **_TINY_PHANTOM, target_spacing=(8.0, 8.0, 6.0)
  )
  ex = splits["test"][0]
  seed = int(ex["case_id"].split("-")[1])
  case = gland.make_gland_case(seed, shape=(48, 48, 8), spacing=(4.0, 4.0, 6.0))
  assert ex["image"].shape == (24, 24, 8)
  np.testing.assert_array_equal(
      ex["label"], preprocess.resample(case.label, (4.0, 4.0, 6.0), (8.0, 8.0, 6.0), order=0)
  )
  np.testing.assert_allclose(
      ex["affine"], preprocess.resample_affine(case.affine, (4.0, 4.0, 6.0), (8.0, 8.0, 6.0))
  )
  np.testing.assert_array_equal(ex["spacing"], np.float32([8.0, 8.0, 6.0]))


def test_configs():
  base = prostatex_gland.PHANTOM
  assert base.num_cases == 60 and base.target_spacing is None
  assert tuple(base.phantom_shape) == (128, 128, 16)
  assert tuple(prostatex_gland.PROSTATEX.target_spacing) == (0.5, 0.5, 3.0)
  assert datasets.builder_config("prostatex_gland", "phantom") is base
  a = datasets.builder_config("prostatex_gland", "phantom", num_cases=8)
  b = datasets.builder_config("prostatex_gland", "phantom", num_cases=9)
  assert a.name.startswith("phantom_") and a.name != b.name
  assert a.name == datasets.builder_config("prostatex_gland", "phantom", num_cases=8).name
  assert prostatex_gland.ProstatexGland.DEFAULT_BUILDER_CONFIG_NAME == "phantom"
  with pytest.raises(ValueError, match="Unknown setting"):
    datasets.builder_config("prostatex_gland", "phantom", num_case=8)
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.builder_config("prostatex_gland", "prostate_x")
  with pytest.raises(ValueError, match="source"):
    datasets.builder_config("prostatex_gland", "phantom", source="promise12")
  with pytest.raises(ValueError, match="target_spacing"):
    datasets.builder_config("prostatex_gland", "prostatex", target_spacing=(0.5, 0.0, 3.0))
  with pytest.raises(ValueError, match="num_cases"):
    datasets.builder_config("prostatex_gland", "phantom", num_cases=0)
  with pytest.raises(ValueError, match="clip_percentiles"):
    datasets.builder_config("prostatex_gland", "phantom", clip_percentiles=(99.0, 1.0))


def test_same_name_different_settings_refused(tmp_path):
  tiny = {**_TINY_PHANTOM, "num_cases": 7, "phantom_shape": (24, 24, 4)}
  cfg = prostatex_gland.PHANTOM.replace(name="tiny", **tiny)
  splits = _common.prepare(prostatex_gland.ProstatexGland, config=cfg, data_dir=tmp_path)
  assert [len(splits[k]) for k in ("train", "validation", "test")] == [5, 1, 1]
  other = prostatex_gland.PHANTOM.replace(name="tiny", **{**tiny, "base_seed": 5})
  with pytest.raises(ValueError, match="different settings"):
    _common.prepare(prostatex_gland.ProstatexGland, config=other, data_dir=tmp_path)


def test_preprocess_case_binarises_and_checks():
  rng = np.random.default_rng(0)
  image = rng.normal(100, 10, (6, 5, 4)).astype(np.float32)
  mask = np.zeros((6, 5, 4), np.float32)
  mask[2:4, 1:3, 1:3] = 255.0
  mask[0, 0, 0] = 0.5
  ex = prostatex_gland.preprocess_case(
      image, mask, (1.0, 1.0, 2.0), np.eye(4), case_id="c", target_spacing=None
  )
  np.testing.assert_array_equal(ex["label"], (mask > 0).astype(np.uint8))
  assert ex["label"].dtype == np.uint8
  with pytest.raises(ValueError, match=r"case c: mask shape \(6, 5, 3\)"):
    prostatex_gland.preprocess_case(
        image, mask[..., :3], (1.0, 1.0, 2.0), np.eye(4), case_id="c", target_spacing=None
    )
  mask[1, 1, 1] = np.nan
  with pytest.raises(ValueError, match="case c: mask has 1 non-finite"):
    prostatex_gland.preprocess_case(
        image, mask, (1.0, 1.0, 2.0), np.eye(4), case_id="c", target_spacing=None
    )


def test_canonical_case_id():
  assert prostatex_gland.canonical_case_id("ProstateX-080.nii.gz") == "ProstateX-0080"
  assert prostatex_gland.canonical_case_id("ProstateX-0000.nii.gz") == "ProstateX-0000"
  assert (
      prostatex_gland.canonical_case_id("/a/prostatex_0191_t2_tse_tra_Grappa3_2.nii.gz")
      == "ProstateX-0191"
  )
  assert prostatex_gland.canonical_case_id("ProstateX-12345.nii.gz") is None
  assert prostatex_gland.canonical_case_id("image_list.csv") is None


# --------------------------------------------------------------------------------------------
# prostatex config from tiny NIfTI files in the PROSTATEx_masks layout.
# --------------------------------------------------------------------------------------------

_SHAPE = (24, 20, 5)
_SPACING = (0.5, 0.5, 3.6)
_TARGET = (0.5, 0.5, 3.0)
_OUT_SHAPE = (24, 20, 6)
_IDS = (0, 1, 2, 3, 4, 5, 6, 80)


def _affine():
  a = np.diag([-_SPACING[0], _SPACING[1], _SPACING[2], 1.0])
  a[:3, 3] = [60.0, -80.0, 12.0]
  return a


def _save(path, array):
  nib.save(nib.Nifti1Image(array, _affine()), str(path))


def _volumes(seed):
  rng = np.random.default_rng(seed)
  x, y, z = np.meshgrid(*[np.arange(n) for n in _SHAPE], indexing="ij")
  r = rng.uniform(4, 7)
  inside = ((x - 12) / r) ** 2 + ((y - 10) / (0.8 * r)) ** 2 + ((z - 2) / 2.2) ** 2 <= 1
  image = (300 + 150 * inside + 5 * x + rng.normal(0, 10, _SHAPE)).astype(np.int16)
  return image, inside


def _write_layout(manual, ids=_IDS):
  """PROSTATEx_masks layout with the upstream naming quirks; returns {case_id: (image, gland)}."""
  root = manual / "Files" / "prostate"
  (root / "mask_prostate").mkdir(parents=True)
  (root / "Images").mkdir()
  cases, listed = {}, []
  for i in ids:
    image, inside = _volumes(i)
    if i == 1:  # Masks stored as 0 / 255.
      mask = (255 * inside).astype(np.uint8)
    elif i == 2:  # Float masks.
      mask = inside.astype(np.float32)
    else:
      mask = inside.astype(np.uint8)
    mask_name = "ProstateX-080.nii.gz" if i == 80 else f"ProstateX-{i:04d}.nii.gz"
    _save(root / "mask_prostate" / mask_name, mask)
    series = f"ProstateX-{i:04d}_t2_tse_tra_" + ("Grappa3_2" if i == 3 else "4")
    if i == 5:  # Two T2 series; image_list.csv names the one the mask was drawn on.
      _save(root / "Images" / "ProstateX-0005_t2_tse_tra_4.nii.gz", (image * 0 + 7).astype(np.int16))
      series = "ProstateX-0005_t2_tse_tra_7"
    _save(root / "Images" / f"{series}.nii.gz", image)
    listed.append(series)
    cases[f"ProstateX-{i:04d}"] = (image, inside)
  # An image without a mask is ignored.
  _save(root / "Images" / "ProstateX-0150_t2_tse_tra_4.nii.gz", _volumes(150)[0])
  (root / "image_list.csv").write_text("T2\n" + "\n".join(listed) + "\n")
  return cases


@pytest.fixture(scope="module")
def prostatex_dir(tmp_path_factory):
  manual = tmp_path_factory.mktemp("prostatex_masks")
  return manual, _write_layout(manual)


def _prostatex(tmp_path, manual_dir, **overrides):
  return datasets.load("prostatex_gland",
      "prostatex", data_dir=tmp_path / "tfds", manual_dir=manual_dir, **overrides
  )


def test_prostatex_build(tmp_path, prostatex_dir):
  manual, cases = prostatex_dir
  splits = _prostatex(tmp_path, manual)
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  assert [len(ids[k]) for k in ("train", "validation", "test")] == [6, 1, 1]
  all_ids = sum(ids.values(), [])
  assert sorted(all_ids) == sorted(cases)  # 3-digit "ProstateX-080" -> "ProstateX-0080"
  assert "ProstateX-0080" in all_ids and "ProstateX-0150" not in all_ids
  assert ids == preprocess.split_cases(sorted(cases), seed=42)

  new_affine = preprocess.resample_affine(_affine(), _SPACING, _TARGET)
  for ex in sum(splits.values(), []):
    image, inside = cases[ex["case_id"]]
    assert ex["image"].shape == _OUT_SHAPE and ex["label"].shape == _OUT_SHAPE
    assert ex["image"].dtype == np.float32 and ex["label"].dtype == np.uint8
    np.testing.assert_allclose(ex["spacing"], _TARGET)
    np.testing.assert_allclose(ex["affine"], new_affine, atol=1e-6)
    # Binary label, resampled by nearest neighbour: x_in = (j + 1/2) t / s - 1/2.
    z_in = np.clip(np.floor((np.arange(6) + 0.5) * 3.0 / 3.6 - 0.5 + 0.5), 0, 4).astype(int)
    np.testing.assert_array_equal(ex["label"], inside[:, :, z_in].astype(np.uint8))
    # Independent check of the image: linear resampling + clip + z-score in float64.
    res = preprocess.resample(image.astype(np.float64), _SPACING, _TARGET, order=1)
    lo, hi = np.percentile(res, [0.5, 99.5])
    clipped = np.clip(res, lo, hi)
    np.testing.assert_allclose(ex["image"], (clipped - clipped.mean()) / clipped.std(), atol=1e-4)
    # The gland is brighter in every case (case 5: the listed series, not the constant one).
    assert ex["image"][ex["label"] == 1].mean() > ex["image"][ex["label"] == 0].mean() + 0.5


def test_find_cases_layout_variants(tmp_path, prostatex_dir):
  manual, cases = prostatex_dir
  found = builder_module._find_prostatex_cases(str(manual))
  assert [c.case_id for c in found] == sorted(cases)
  by_id = {c.case_id: c for c in found}
  assert os.path.basename(by_id["ProstateX-0080"].mask) == "ProstateX-080.nii.gz"
  assert by_id["ProstateX-0003"].image.endswith("ProstateX-0003_t2_tse_tra_Grappa3_2.nii.gz")
  assert by_id["ProstateX-0005"].image.endswith("ProstateX-0005_t2_tse_tra_7.nii.gz")
  # manual_dir = Files/prostate itself, or a folder holding the extracted repository.
  inner = builder_module._find_prostatex_cases(str(manual / "Files" / "prostate"))
  assert [c.case_id for c in inner] == sorted(cases)
  outer = tmp_path / "download"
  outer.mkdir()
  os.symlink(manual, outer / "PROSTATEx_masks-master")
  assert [c.case_id for c in builder_module._find_prostatex_cases(str(outer))] == sorted(cases)


def test_two_images_resolved_by_shape(tmp_path):
  root = tmp_path / "Files" / "prostate"
  _write_layout(tmp_path, ids=(0, 1, 2, 3, 4, 5, 6))
  os.remove(root / "image_list.csv")
  # Without image_list.csv, case 5's second series is told apart by its shape ...
  _save(root / "Images" / "ProstateX-0005_t2_tse_tra_4.nii.gz", np.zeros((8, 8, 5), np.int16))
  found = {c.case_id: c for c in builder_module._find_prostatex_cases(str(tmp_path))}
  assert found["ProstateX-0005"].image.endswith("_t2_tse_tra_7.nii.gz")
  # ... and two candidates of the mask's shape are an error naming them.
  _save(root / "Images" / "ProstateX-0005_t2_tse_tra_4.nii.gz", np.zeros(_SHAPE, np.int16))
  with pytest.raises(ValueError, match=r"ProstateX-0005 has several T2 images.*image_list\.csv"):
    builder_module._find_prostatex_cases(str(tmp_path))


# The message must say what to download and where from.
_DOWNLOAD_HINT = r"(?s)github\.com/rcuocolo/PROSTATEx_masks.*CC BY 4\.0.*TCIA PROSTATEx.*NIfTI"


class TestProstatexErrors:

  def test_mask_without_image(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4, 5, 6, 7))
    os.remove(manual / "Files" / "prostate" / "Images" / "ProstateX-0007_t2_tse_tra_4.nii.gz")
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _prostatex(tmp_path, manual)
    msg = str(e.value)
    assert "1 of 8 whole-gland masks" in msg and "Missing (1)" in msg
    assert "ProstateX-0007_t2_tse_tra_4.nii.gz (for mask" in msg
    assert str(manual) in msg and "Files/prostate/" in msg and "skip_missing_images" in msg

  def test_skip_missing_images(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4, 5, 6, 7))
    _save(manual / "Files" / "prostate" / "mask_prostate" / "ProstateX-0099.nii.gz",
          _volumes(99)[1].astype(np.uint8))
    splits = _prostatex(tmp_path, manual, skip_missing_images=True)
    ids = sorted(ex["case_id"] for v in splits.values() for ex in v)
    assert ids == [f"ProstateX-{i:04d}" for i in range(8)]

  def test_missing_dir(self, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _prostatex(tmp_path, missing)
    assert str(missing) in str(e.value)

  def test_no_mask_folder(self, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _prostatex(tmp_path, manual)
    assert "No Files/prostate/mask_prostate/ folder" in str(e.value)

  def test_empty_mask_folder(self, tmp_path):
    manual = tmp_path / "manual"
    (manual / "Files" / "prostate" / "mask_prostate").mkdir(parents=True)
    (manual / "Files" / "prostate" / "mask_prostate" / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_DOWNLOAD_HINT) as e:
      _prostatex(tmp_path, manual)
    assert "No ProstateX-XXXX.nii.gz mask found" in str(e.value)

  def test_shape_mismatch(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4, 5, 6))
    _save(manual / "Files" / "prostate" / "mask_prostate" / "ProstateX-0004.nii.gz",
          np.zeros((24, 20, 4), np.uint8))
    with pytest.raises(ValueError, match=r"(?s)case ProstateX-0004: mask .*ProstateX-0004\.nii\.gz "
                       r"has shape \(24, 20, 4\).*\(24, 20, 5\).*PROSTATEx_masks"):
      _prostatex(tmp_path, manual)

  def test_corrupt_image(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4, 5, 6))
    path = manual / "Files" / "prostate" / "Images" / "ProstateX-0002_t2_tse_tra_4.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"(?s)ProstateX-0002_t2_tse_tra_4\.nii\.gz.*corrupt.*TCIA"):
      _prostatex(tmp_path, manual)

  def test_two_masks_for_one_case(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4, 5, 6))
    masks = manual / "Files" / "prostate" / "mask_prostate"
    _save(masks / "ProstateX-006_copy.nii.gz", np.zeros(_SHAPE, np.uint8))
    # The canonical name wins over a non-canonical duplicate ...
    found = {c.case_id: c for c in builder_module._find_prostatex_cases(str(manual))}
    assert found["ProstateX-0006"].mask.endswith("ProstateX-0006.nii.gz")
    # ... but two non-canonical ones are ambiguous.
    os.rename(masks / "ProstateX-0006.nii.gz", masks / "ProstateX-06.nii.gz")
    with pytest.raises(ValueError, match="ProstateX-0006 has several whole-gland masks"):
      builder_module._find_prostatex_cases(str(manual))

  def test_too_few_cases(self, tmp_path):
    manual = tmp_path / "manual"
    _write_layout(manual, ids=(0, 1, 2, 3, 4))
    with pytest.raises(ValueError, match="need at least 7"):
      _prostatex(tmp_path, manual)


# --------------------------------------------------------------------------------------------
# Two real PROSTATEx exams (../shared/data/prostatex_sample), when present, linked into the
# PROSTATEx_masks layout (whole-gland masks: the Bosma22b AI delineations on the T2w grid).
# --------------------------------------------------------------------------------------------


def test_real_prostatex_sample(tmp_path):
  if not _REAL_DIR.is_dir():
    pytest.skip(f"real PROSTATEx sample not found at {_REAL_DIR}")
  real = _REAL_DIR.resolve()
  root = tmp_path / "manual" / "Files" / "prostate"
  (root / "mask_prostate").mkdir(parents=True)
  (root / "Images").mkdir()
  picai = {"ProstateX-0000": "11373_1001396", "ProstateX-0001": "10795_1000811"}
  for case_id, pid in picai.items():
    t2 = real / "converted_nifti" / f"{pid}_{case_id}_t2w.nii.gz"
    mask = real / "labels" / "anatomical_delineations" / "whole_gland" / "AI" / "Bosma22b"
    os.symlink(t2, root / "Images" / t2.name)  # named "<picai id>_ProstateX-XXXX_t2w"
    os.symlink(mask / f"{pid}.nii.gz", root / "mask_prostate" / f"{case_id}.nii.gz")
  splits = _prostatex(tmp_path, tmp_path / "manual", split_fractions=(0.5, 0.5, 0.0))
  assert sorted(splits) == ["train", "validation"]  # no empty "test" split
  assert [len(splits[k]) for k in ("train", "validation")] == [1, 1]
  for ex in splits["train"] + splits["validation"]:
    pid = picai[ex["case_id"]]
    t2 = nib.load(str(real / "converted_nifti" / f"{pid}_{ex['case_id']}_t2w.nii.gz"))
    assert ex["image"].shape == ex["label"].shape == (384, 384, 19)  # already 0.5 x 0.5 x 3
    np.testing.assert_allclose(ex["affine"], t2.affine, atol=1e-5)
    assert set(np.unique(ex["label"]).tolist()) == {0, 1}
    frac = ex["label"].mean(axis=(0, 1))
    assert 0.02 < frac.max() < 0.07  # ~1-6% of a slice where the gland appears
    assert frac[0] == 0 and frac[-1] == 0
    # T2w: the gland is darker than the periprostatic fat around it but not a void.
    gland = ex["image"][ex["label"] == 1]
    assert -2.0 < float(np.median(gland)) < 1.5
