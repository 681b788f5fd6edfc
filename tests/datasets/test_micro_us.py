"""Tests for the micro_us tfds builder (phantom and microsegnet configs)."""

import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import datasets
from datasets import _common
from datasets import micro_us
from jaxseg.data import preprocess
from jaxseg.data.phantoms import micro_us as phantom

_TINY_PHANTOM = dict(
    num_cases=6,
    num_slices=3,
    phantom_size=(48, 40),
    phantom_spacing=(0.9, 6.0),
    image_size=24,
)


# --------------------------------------------------------------------------------------------
# Independent float64 references of the in-plane resize (half-pixel convention).
# --------------------------------------------------------------------------------------------


def _source_coords(n, m):
  return (np.arange(m) + 0.5) * n / m - 0.5


def _resize_linear(volume, m):
  nx, ny, nz = volume.shape
  x, y = np.meshgrid(_source_coords(nx, m), _source_coords(ny, m), indexing="ij")
  out = np.empty((m, m, nz))
  for k in range(nz):
    out[:, :, k] = ndimage.map_coordinates(
        volume[:, :, k].astype(np.float64), [x, y], order=1, mode="nearest"
    )
  return out


def _resize_nearest(volume, m):
  nx, ny, _ = volume.shape
  ix = np.clip(np.floor(_source_coords(nx, m) + 0.5).astype(int), 0, nx - 1)
  iy = np.clip(np.floor(_source_coords(ny, m) + 0.5).astype(int), 0, ny - 1)
  return volume[ix][:, iy]


# --------------------------------------------------------------------------------------------
# Phantom config.
# --------------------------------------------------------------------------------------------


def test_phantom_build(tmp_path):
  splits = datasets.load("micro_us", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  assert sorted(splits) == ["test", "train", "validation"]
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  assert [len(ids[k]) for k in ("train", "validation", "test")] == [4, 1, 1]
  expected = preprocess.split_cases(
      [f"phantom-{i:04d}" for i in range(6)], fractions=(0.7, 0.1, 0.2), seed=42
  )
  assert ids == expected

  for ex in sum(splits.values(), []):
    assert set(ex) == {"image", "label", "non_expert", "case_id", "spacing", "affine"}
    assert ex["image"].dtype == np.float32 and ex["image"].shape == (24, 24, 3)
    for key in ("label", "non_expert"):
      assert ex[key].dtype == np.uint8 and ex[key].shape == (24, 24, 3)
      assert set(np.unique(ex[key])) <= {0, 1}
    assert ex["label"].any() and 0.0 <= ex["image"].min() and ex["image"].max() <= 1.0
    # Same field of view: 48 x 0.9 mm and 40 x 0.9 mm over 24 pixels.
    np.testing.assert_allclose(ex["spacing"], [1.8, 1.5, 6.0], rtol=1e-6)
    assert ex["spacing"].dtype == np.float32 and ex["affine"].dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(ex["affine"][:3, :3], axis=0), [1.8, 1.5, 6.0],
                               rtol=1e-12)  # float64 kept exactly

  # The example is the phantom pushed through the documented resize.
  ex = splits["train"][0]
  case = phantom.make_micro_us_case(
      int(ex["case_id"].split("-")[1]), num_slices=3, size=(48, 40), spacing=(0.9, 6.0)
  )
  np.testing.assert_allclose(ex["image"], _resize_linear(case.image, 24), atol=1e-5)
  np.testing.assert_array_equal(ex["label"], _resize_nearest(case.expert, 24))
  np.testing.assert_array_equal(ex["non_expert"], _resize_nearest(case.non_expert, 24))
  # Voxel centres keep their world position: output j samples input (j + 1/2) n / m - 1/2.
  j = np.array([3.0, 7.0, 1.0])
  x_in = np.array([(j[0] + 0.5) * 2 - 0.5, (j[1] + 0.5) * 40 / 24 - 0.5, j[2]])
  np.testing.assert_allclose(ex["affine"] @ [*j, 1], case.affine @ [*x_in, 1], atol=1e-9)

  # Cached: a second load reads the same data.
  again = datasets.load("micro_us", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  np.testing.assert_array_equal(again["train"][0]["image"], ex["image"])


def test_configs():
  base = micro_us.PHANTOM
  a = datasets.builder_config("micro_us", "phantom", num_cases=8)
  assert a.name.startswith("phantom_") and a.num_cases == 8 and base.num_cases == 40
  assert datasets.builder_config("micro_us", "phantom") is base
  assert base.image_size == 224 and base.split_fractions == (0.7, 0.1, 0.2)
  ms = micro_us.MICROSEGNET
  assert ms.source == "microsegnet" and ms.validation_fraction == 0.1 and ms.split_seed == 42
  assert ms.slice_axis == 2 and ms.spacing_mm == micro_us.MICROSEGNET_SPACING_MM == 0.033586
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.builder_config("micro_us", "micro")
  with pytest.raises(ValueError, match="Unknown setting"):
    datasets.builder_config("micro_us", "phantom", num_case=3)
  for bad in (dict(slice_axis=3), dict(validation_fraction=0.0), dict(spacing_mm=-1.0),
              dict(image_size=0), dict(phantom_spacing=(0.2,)), dict(source="mri")):
    with pytest.raises(ValueError):
      datasets.builder_config("micro_us", "microsegnet", **bad)


def test_preprocess_case_checks():
  img = np.zeros((8, 6, 2), np.float32)
  mask = np.zeros((8, 6, 2), np.uint8)
  kw = dict(case_id="c", image_size=4)
  with pytest.raises(ValueError, match="expert mask shape"):
    micro_us.preprocess_case(img, mask[:, :, :1], mask, (1, 1, 1), np.eye(4), **kw)
  with pytest.raises(ValueError, match="non-finite"):
    micro_us.preprocess_case(img + np.nan, mask, mask, (1, 1, 1), np.eye(4), **kw)
  with pytest.raises(ValueError, match="spacing"):
    micro_us.preprocess_case(img, mask, mask, (1, 0, 1), np.eye(4), **kw)
  out = micro_us.preprocess_case(
      img + 300.0, mask + 255, mask, (1.0, 1.5, 2.0), np.eye(4), intensity_scale=1 / 254, **kw
  )
  assert out["image"].shape == (4, 4, 2) and np.all(out["image"] == 1.0)  # clipped
  assert np.all(out["label"] == 1) and np.all(out["non_expert"] == 0)  # binarised
  np.testing.assert_allclose(out["spacing"], [2.0, 2.25, 2.0])


# --------------------------------------------------------------------------------------------
# MicroSegNet config from tiny NIfTI files in the published layout.
# --------------------------------------------------------------------------------------------

_SHAPE = (30, 20, 3)  # (x, y, slices): slices along the last NIfTI axis.
_HEADER_SPACING = (0.05, 0.04, 1.5)
_SIZE = 16
_N_TRAIN, _N_TEST = 6, 2


def _affine(spacing=_HEADER_SPACING):
  a = np.diag([*spacing, 1.0])
  a[:3, 3] = [-3.0, 4.0, 1.0]
  return a


def _volume(seed):
  rng = np.random.default_rng(seed)
  x, y = np.meshgrid(np.arange(_SHAPE[0]), np.arange(_SHAPE[1]), indexing="ij")
  image = np.empty(_SHAPE, np.uint8)
  expert = np.zeros(_SHAPE, np.uint8)
  for k in range(_SHAPE[2]):
    r = 5 + k + seed % 3
    inside = (x - 15) ** 2 + ((y - 10) * 1.4) ** 2 < r**2
    expert[:, :, k] = inside
    image[:, :, k] = np.clip(150 - 80 * inside + rng.normal(0, 20, inside.shape), 0, 254)
  non_expert = expert.copy()
  non_expert[15:20, 10:14, 1] = 1 - non_expert[15:20, 10:14, 1]
  return image, expert, non_expert


def _save(array, path):
  nib.save(nib.Nifti1Image(array, _affine()), str(path))


def _write_release(root):
  cases = {}
  folders = {
      "train": ("micro_ultrasound_scans", "expert_annotations", "non_expert_annotations"),
      "test": ("micro_ultrasound_scans", "expert_annotations"),
  }
  for split, names in folders.items():
    for name in names:
      (root / split / name).mkdir(parents=True)
    for i in range(1, (_N_TRAIN if split == "train" else _N_TEST) + 1):
      image, expert, non_expert = _volume(i + (100 if split == "test" else 0))
      _save(image, root / split / "micro_ultrasound_scans" / f"microUS_{split}_{i:02d}.nii.gz")
      _save(expert,
            root / split / "expert_annotations" / f"expert_annotation_{split}_{i:02d}.nii.gz")
      if split == "train":
        _save(non_expert, root / split / "non_expert_annotations"
              / f"nonexpert_annotation_train_{i:02d}.nii.gz")
      cases[f"microUS_{split}_{i:02d}"] = (image, expert, non_expert)
  (root / "test" / "expert_annotations" / "readme.txt").write_text("ignored")
  return cases


@pytest.fixture(scope="module")
def release(tmp_path_factory):
  root = tmp_path_factory.mktemp("release")
  return root, _write_release(root)


def _load(tmp_path, manual_dir, **overrides):
  return datasets.load("micro_us",
      "microsegnet", data_dir=tmp_path / "tfds", manual_dir=manual_dir,
      image_size=_SIZE, **overrides
  )


class TestMicroSegNet:

  def test_build(self, tmp_path, release):
    root, cases = release
    splits = _load(tmp_path, root)
    ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
    train_ids = [f"microUS_train_{i:02d}" for i in range(1, _N_TRAIN + 1)]
    expected = preprocess.split_cases(train_ids, fractions=(0.9, 0.1, 0.0), seed=42)
    assert ids["train"] == expected["train"] and ids["validation"] == expected["validation"]
    assert [len(ids[k]) for k in ("train", "validation")] == [5, 1]
    assert ids["test"] == ["microUS_test_01", "microUS_test_02"]
    native = micro_us.MICROSEGNET_SPACING_MM
    want_spacing = [native * 30 / _SIZE, native * 20 / _SIZE, 1.5]
    for split, examples in splits.items():
      for ex in examples:
        image, expert, non_expert = cases[ex["case_id"]]
        assert ex["image"].shape == ex["label"].shape == ex["non_expert"].shape == (16, 16, 3)
        assert ex["image"].dtype == np.float32 and 0.0 <= ex["image"].min() <= 1.0
        for key in ("label", "non_expert"):
          assert ex[key].dtype == np.uint8 and set(np.unique(ex[key])) <= {0, 1}
        # Images: / 254 then linear resize; masks: nearest.
        np.testing.assert_allclose(ex["image"], _resize_linear(image / 254.0, _SIZE), atol=1e-5)
        np.testing.assert_array_equal(ex["label"], _resize_nearest(expert, _SIZE))
        if split == "test":  # no non-expert annotation: the expert's copy
          np.testing.assert_array_equal(ex["non_expert"], ex["label"])
        else:
          np.testing.assert_array_equal(ex["non_expert"], _resize_nearest(non_expert, _SIZE))
          assert np.any(ex["non_expert"] != ex["label"])
        np.testing.assert_allclose(ex["spacing"], want_spacing, rtol=1e-6)
        np.testing.assert_allclose(
            np.linalg.norm(ex["affine"][:3, :3], axis=0), want_spacing, rtol=1e-12
        )
        np.testing.assert_allclose(ex["affine"][:3, 3], [-3.0, 4.0, 1.0]
                                   + np.array([0.5 * (30 / 16 - 1) * native,
                                               0.5 * (20 / 16 - 1) * native, 0.0]), atol=1e-9)

  def test_header_spacing_slice_axis_and_nested(self, tmp_path, release):
    root, cases = release
    # The same release with the slices stacked along axis 0, one folder down.
    moved = tmp_path / "manual" / "Micro_Ultrasound_Prostate_Segmentation_Dataset"
    for path in sorted(root.rglob("*.nii.gz")):
      img = nib.load(str(path))
      data = np.moveaxis(np.asarray(img.dataobj), 2, 0)
      spacing = (_HEADER_SPACING[2], *_HEADER_SPACING[:2])
      out = moved / path.relative_to(root)
      out.parent.mkdir(parents=True, exist_ok=True)
      nib.save(nib.Nifti1Image(data, _affine(spacing)), str(out))
    splits = _load(tmp_path, tmp_path / "manual", slice_axis=0, spacing_mm=None)
    reference = _load(tmp_path / "ref", root, spacing_mm=None)
    for split in reference:
      for a, b in zip(splits[split], reference[split]):
        assert a["case_id"] == b["case_id"]
        for key in ("image", "label", "non_expert", "spacing"):
          np.testing.assert_allclose(a[key], b[key], atol=1e-6)
        np.testing.assert_allclose(
            b["spacing"], [0.05 * 30 / _SIZE, 0.04 * 20 / _SIZE, 1.5], rtol=1e-6
        )


# The message must say what to download and where it comes from.
_HINT = r"(?s)zenodo\.org/records/10475293"


class TestMicroSegNetErrors:

  def test_missing_dir(self, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match=_HINT) as e:
      _load(tmp_path, missing)
    assert str(missing) in str(e.value) and "microUS_train_XX.nii.gz" in str(e.value)

  def test_wrong_folder(self, tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "notes.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_HINT) as e:
      _load(tmp_path, manual)
    msg = str(e.value)
    assert "Missing (5)" in msg
    for name in ("microUS_train_XX", "nonexpert_annotation_train_XX", "expert_annotation_test_XX"):
      assert name in msg

  def test_missing_files(self, tmp_path, release):
    root, _ = release
    manual = tmp_path / "manual"
    shutil.copytree(root, manual)
    os.remove(manual / "train" / "non_expert_annotations" / "nonexpert_annotation_train_03.nii.gz")
    os.remove(manual / "test" / "micro_ultrasound_scans" / "microUS_test_02.nii.gz")
    with pytest.raises(FileNotFoundError, match=_HINT) as e:
      _load(tmp_path, manual)
    msg = str(e.value)
    assert "Missing (2)" in msg
    assert "nonexpert_annotation_train_03.nii.gz" in msg and "microUS_test_02.nii.gz" in msg

  def test_missing_test_split(self, tmp_path, release):
    root, _ = release
    manual = tmp_path / "manual"
    shutil.copytree(root / "train", manual / "train")
    with pytest.raises(FileNotFoundError, match=_HINT) as e:
      _load(tmp_path, manual)
    assert "test/micro_ultrasound_scans/microUS_test_XX.nii.gz" in str(e.value)

  def test_shape_mismatch(self, tmp_path, release):
    root, _ = release
    manual = tmp_path / "manual"
    shutil.copytree(root, manual)
    _save(np.zeros((30, 20, 2), np.uint8),
          manual / "train" / "expert_annotations" / "expert_annotation_train_02.nii.gz")
    with pytest.raises(ValueError, match=r"(?s)expert_annotation_train_02\.nii\.gz has shape "
                       r"\(30, 20, 2\).*\(30, 20, 3\).*zenodo\.org/records/10475293"):
      _load(tmp_path, manual)

  def test_corrupt_nifti(self, tmp_path, release):
    root, _ = release
    manual = tmp_path / "manual"
    shutil.copytree(root, manual)
    path = manual / "train" / "micro_ultrasound_scans" / "microUS_train_04.nii.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"(?s)microUS_train_04\.nii\.gz.*corrupt.*10475293"):
      _load(tmp_path, manual)

  def test_too_few_patients(self, tmp_path, release):
    root, _ = release
    manual = tmp_path / "manual"
    shutil.copytree(root, manual)
    for kind, prefix in (("micro_ultrasound_scans", "microUS_train_"),
                         ("expert_annotations", "expert_annotation_train_"),
                         ("non_expert_annotations", "nonexpert_annotation_train_")):
      os.remove(manual / "train" / kind / f"{prefix}06.nii.gz")
    with pytest.raises(ValueError, match="need at least 6"):
      _load(tmp_path, manual)


def test_missing_manual_data_lists_layout():
  err = micro_us.micro_us._MICROSEGNET.error("/x/m", missing=["a.nii.gz"])
  assert isinstance(err, FileNotFoundError)
  msg = str(err)
  assert "/x/m" in msg and micro_us.MICROSEGNET_URL in msg and "a.nii.gz" in msg
  assert micro_us.MICROSEGNET_LAYOUT.splitlines()[1].strip() in msg
  assert isinstance(_common.missing_manual_data(
      dataset="d", source="s", manual_dir=None, layout="l"), FileNotFoundError)
