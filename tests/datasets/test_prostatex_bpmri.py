"""Tests for the prostatex_bpmri tfds builder (phantom, prostatex and picai configs)."""

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

import datasets
from datasets import _common
from datasets import prostatex_bpmri
from jaxseg.data import preprocess
from jaxseg.data.phantoms import bpmri

_REAL_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "prostatex_sample"

# The phantom's default field of view (96 x 96 x 60 mm) at a coarse resolution, cropped.
_TINY_PHANTOM = dict(num_cases=8, phantom_shape=(48, 48, 20), phantom_spacing=(2.0, 2.0, 3.0),
                     target_spacing=(2.0, 2.0, 3.0), crop_shape=(40, 40, 16))


def _zscore(x, lo=0.5, hi=99.5):
  """Independent float64 reference: percentile clip, then z-score."""
  x = np.asarray(x, np.float64)
  a, b = np.percentile(x, [lo, hi])
  x = np.clip(x, a, b)
  return (x - x.mean()) / x.std()


def _world(affine, shape):
  """World coordinates (3, *shape) of the voxel centres."""
  idx = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")).reshape(3, -1)
  return (affine[:3, :3] @ idx + affine[:3, 3:]).reshape((3,) + tuple(shape))


# --------------------------------------------------------------------------------------------
# Grid helpers (jaxseg.data.preprocess) and the PI-CAI label map.
# --------------------------------------------------------------------------------------------


def test_grid_helpers_are_preprocess_ones():
  # Tested in tests/data/test_preprocess.py; still importable from the builder package.
  assert prostatex_bpmri.resample_to_reference is preprocess.resample_to_reference
  assert prostatex_bpmri.center_crop_or_pad is preprocess.center_crop_or_pad


def test_remap_picai_zones():
  picai = np.array([0, 1, 2, 2, 1, 0], np.uint8)  # PI-CAI: 1 = PZ, 2 = TZ
  np.testing.assert_array_equal(prostatex_bpmri.remap_picai_zones(picai), [0, 2, 1, 1, 2, 0])
  assert prostatex_bpmri.ZONE_CLASSES == ("background", "tz", "pz")
  with pytest.raises(ValueError, match="outside 0..2: 3"):
    prostatex_bpmri.remap_picai_zones(np.array([0, 3]))


def test_preprocess_case_checks():
  rng = np.random.default_rng(0)
  t2 = rng.normal(100, 10, (6, 5, 4)).astype(np.float32)
  zones = np.zeros((6, 5, 4), np.uint8)
  args = (t2, t2, t2 * 10, zones, zones, (1.0, 1.0, 3.0), np.eye(4))
  kw = dict(case_id="c", patient_label=0, target_spacing=None, crop_shape=None)
  ex = prostatex_bpmri.preprocess_case(*args, **kw)
  assert ex["image"].shape == (6, 5, 4, 3) and ex["patient_label"] == 0
  np.testing.assert_allclose(ex["image"][..., 0], _zscore(t2), atol=1e-5)
  np.testing.assert_allclose(ex["image"][..., 2], t2 * 10 / 3000.0, rtol=1e-6)
  with pytest.raises(ValueError, match=r"case c: ADC shape \(6, 5, 3\) differs"):
    prostatex_bpmri.preprocess_case(t2, t2, t2[..., :3], zones, zones, (1, 1, 3), np.eye(4),
                                    **kw)
  bad = t2.copy()
  bad[0, 0, 0] = np.nan
  with pytest.raises(ValueError, match="case c: DWI has 1 non-finite"):
    prostatex_bpmri.preprocess_case(t2, bad, t2, zones, zones, (1, 1, 3), np.eye(4), **kw)
  with pytest.raises(ValueError, match="zones: label values outside 0..2: 3"):
    prostatex_bpmri.preprocess_case(t2, t2, t2, zones + 3, zones, (1, 1, 3), np.eye(4), **kw)
  with pytest.raises(ValueError, match="patient_label"):
    prostatex_bpmri.preprocess_case(*args, **{**kw, "patient_label": 2})


def test_configs():
  base = prostatex_bpmri.PHANTOM
  assert base.num_cases == 60 and tuple(base.target_spacing) == (0.5, 0.5, 3.0)
  assert tuple(base.crop_shape) == (160, 160, 20) and base.adc_scale == 3000.0
  assert tuple(base.phantom_shape) == bpmri.BPMRI_PHANTOM_SHAPE
  assert prostatex_bpmri.PICAI.zonal_model == "HeviAI23"
  assert datasets.builder_config("prostatex_bpmri", "phantom") is base
  a = datasets.builder_config("prostatex_bpmri", "phantom", num_cases=8)
  assert a.name.startswith("phantom_") and a.name != datasets.builder_config("prostatex_bpmri",
      "phantom", num_cases=9).name
  assert prostatex_bpmri.ProstatexBpmri.DEFAULT_BUILDER_CONFIG_NAME == "phantom"
  for bad, match in [(dict(source="promise12"), "source"), (dict(num_cases=0), "num_cases"),
                     (dict(crop_shape=(0, 4, 4)), "crop_shape"),
                     (dict(target_spacing=(0.5, 0.0, 3.0)), "target_spacing"),
                     (dict(adc_scale=0.0), "adc_scale"),
                     (dict(clip_percentiles=(99.0, 1.0)), "clip_percentiles"),
                     (dict(zonal_model="../x"), "zonal_model")]:
    with pytest.raises(ValueError, match=match):
      datasets.builder_config("prostatex_bpmri", "phantom", **bad)
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.builder_config("prostatex_bpmri", "prostate_x")
  with pytest.raises(ValueError, match="Unknown setting"):
    datasets.builder_config("prostatex_bpmri", "phantom", num_case=3)


# --------------------------------------------------------------------------------------------
# Phantom config.
# --------------------------------------------------------------------------------------------


def test_phantom_build(tmp_path):
  splits = datasets.load("prostatex_bpmri", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  all_ids = sorted(sum(ids.values(), []))
  assert all_ids == [f"bpmri-{i:04d}" for i in range(8)]
  labels = [bpmri.planned_patient_label(i) for i in range(8)]
  assert ids == preprocess.split_cases(all_ids, seed=42, groups=labels)  # stratified
  for ex in sum(splits.values(), []):
    assert set(ex) == {"image", "zones", "lesions", "patient_label", "case_id", "spacing",
                       "affine"}
    assert ex["image"].shape == (40, 40, 16, 3) and ex["image"].dtype == np.float32
    assert ex["zones"].shape == ex["lesions"].shape == (40, 40, 16)
    assert ex["zones"].dtype == ex["lesions"].dtype == np.uint8
    assert ex["patient_label"].dtype == np.int64
    np.testing.assert_array_equal(ex["spacing"], np.float32([2.0, 2.0, 3.0]))
    seed = int(ex["case_id"].split("-")[1])
    case = bpmri.make_bpmri_case(seed, shape=(48, 48, 20), spacing=(2.0, 2.0, 3.0))
    assert int(ex["patient_label"]) == case.patient_label
    # Centre crop: start (48 - 40) // 2 = 4 in-plane, (20 - 16) // 2 = 2 through-plane.
    crop = (slice(4, 44), slice(4, 44), slice(2, 18))
    np.testing.assert_array_equal(ex["zones"], case.zones[crop])
    np.testing.assert_array_equal(ex["lesions"], case.lesions[crop])
    np.testing.assert_allclose(ex["affine"][:3, 3], (case.affine @ [4, 4, 2, 1])[:3])
    np.testing.assert_allclose(ex["image"][..., 0], _zscore(case.image[crop + (0,)]), atol=1e-4)
    np.testing.assert_allclose(ex["image"][..., 1], _zscore(case.image[crop + (1,)]), atol=1e-4)
    np.testing.assert_allclose(ex["image"][..., 2], case.image[crop + (2,)] / 3000.0, rtol=1e-6)
  assert sum(int(ex["patient_label"]) for v in splits.values() for ex in v) == sum(labels)
  again = datasets.load("prostatex_bpmri", "phantom", data_dir=tmp_path, **_TINY_PHANTOM)
  np.testing.assert_array_equal(again["train"][0]["image"], splits["train"][0]["image"])


def test_phantom_resampled_and_refused_cache(tmp_path):
  tiny = {**_TINY_PHANTOM, "num_cases": 3, "split_fractions": (0.0, 0.0, 1.0),
          "target_spacing": (4.0, 4.0, 3.0), "crop_shape": None}
  splits = datasets.load("prostatex_bpmri", "phantom", data_dir=tmp_path, **tiny)
  assert sorted(splits) == ["test"]  # zero fractions: no empty train / validation split
  ex = splits["test"][1]
  case = bpmri.make_bpmri_case(1, shape=(48, 48, 20), spacing=(2.0, 2.0, 3.0))
  assert ex["image"].shape == (24, 24, 20, 3)
  np.testing.assert_array_equal(
      ex["zones"], preprocess.resample(case.zones, (2, 2, 3), (4, 4, 3), order=0))
  np.testing.assert_allclose(
      ex["affine"], preprocess.resample_affine(case.affine, (2, 2, 3), (4, 4, 3)))
  cfg = prostatex_bpmri.PHANTOM.replace(name="tiny", **tiny)
  _common.prepare(prostatex_bpmri.ProstatexBpmri, config=cfg, data_dir=tmp_path / "b")
  other = prostatex_bpmri.PHANTOM.replace(name="tiny", **{**tiny, "base_seed": 5})
  with pytest.raises(ValueError, match="different settings"):
    _common.prepare(prostatex_bpmri.ProstatexBpmri, config=other, data_dir=tmp_path / "b")


# --------------------------------------------------------------------------------------------
# prostatex config from tiny NIfTI files in the PROSTATEx_masks layout.
# --------------------------------------------------------------------------------------------

_T2_SHAPE = (24, 20, 6)
_DW_SHAPE = (8, 8, 6)


def _t2_affine():
  a = np.diag([-0.5, 0.5, 3.0, 1.0])
  a[:3, 3] = [60.0, -80.0, 12.0]
  return a


def _dw_affine():  # 2 x 2 x 3 mm, covering the T2 field of view, shifted (no nearest ties).
  a = np.diag([-2.0, 2.0, 3.0, 1.0])
  a[:3, 3] = [60.1, -81.9, 12.0]
  return a


def _adc_of(w):
  return 1000.0 + 10.0 * (w[0] - 50) + 20.0 * (w[1] + 75) + 5.0 * (w[2] - 12)


def _dwi_of(w):
  return 50.0 + (w[0] - 46) - (w[1] + 82) * 0.5


def _save(path, array, affine):
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(array, affine), str(path))


# (finding, clinically significant, grade group, grid of its mask or None)
_FINDINGS = {
    0: [(1, "True", "3", "t2")],
    1: [(1, "False", "1", "t2")],
    2: [(1, "True", "2", "t2"), (2, "False", "No biopsy information", "t2")],
    3: [(1, "False", "No biopsy information", None)],
    4: [(1, "True", "4", "adc")],
    5: [(1, "False", "1", None)],
    6: [(1, "True", "2", "t2"), (2, "True", "5", "t2")],
}


def _write_prostatex(manual, ids=tuple(_FINDINGS)):
  """The PROSTATEx_masks layout (+ TCIA images); returns {case_id: expected (zones, lesions)}."""
  files = manual / "Files"
  t2w_world = _world(_t2_affine(), _T2_SHAPE)
  dw_world = _world(_dw_affine(), _DW_SHAPE)
  rows = ['"ID","Clinically Significant","Gleason Grade Group"']
  expected = {}
  x, y, _ = np.meshgrid(*[np.arange(n) for n in _T2_SHAPE], indexing="ij")
  for i in ids:
    cid = f"ProstateX-{i:04d}"
    rng = np.random.default_rng(i)
    gland = ((x - 12) / 8.0) ** 2 + ((y - 10) / 7.0) ** 2 <= 1
    tz = gland & (y >= 10)
    pz = gland & ~tz
    t2 = (300 + 100 * tz + 200 * pz + rng.normal(0, 5, _T2_SHAPE)).astype(np.int16)
    pz_name = f"ProstateX-0{i}_pz.nii.gz" if i == 6 else f"{cid}_pz.nii.gz"  # 2-digit quirk
    _save(files / "prostate" / "mask_pz" / pz_name, (255 * pz).astype(np.uint8), _t2_affine())
    _save(files / "prostate" / "mask_tz" / f"{cid}_tz.nii.gz", tz.astype(np.float32),
          _t2_affine())
    _save(files / "prostate" / "Images" / f"{cid}_t2_tse_tra_4.nii.gz", t2, _t2_affine())
    if i == 0:  # The same series again under lesions/Images/T2: one series, not two.
      _save(files / "lesions" / "Images" / "T2" / f"{cid}_t2_tse_tra_4.nii.gz", t2, _t2_affine())
    _save(files / "lesions" / "Images" / "ADC" / f"{cid}_ep2d_diff_tra_7.nii.gz",
          _adc_of(dw_world).astype(np.float32), _dw_affine())
    _save(manual / "TCIA" / cid / f"{cid}_ep2d_diff_tra_DYNDISTCALC_BVAL_9.nii.gz",
          _dwi_of(dw_world).astype(np.float32), _dw_affine())
    lesions = np.zeros(_T2_SHAPE, bool)
    for finding, sig, ggg, grid in _FINDINGS[i]:
      ggg_cell = ggg if ggg.isdigit() else f'"{ggg}"'
      rows.append(f'"{cid}_Finding{finding}","{sig}",{ggg_cell}')
      if grid == "t2":
        mask = np.zeros(_T2_SHAPE, np.uint8)
        mask[4 + 6 * finding: 8 + 6 * finding, 3:6, 2:4] = 1
        suffix = "t2_tse_tra0_ROI.nii_ROI" if (i, finding) == (6, 2) else "t2_tse_tra_ROI"
        _save(files / "lesions" / "Masks" / "T2" / f"{cid}-Finding{finding}-{suffix}.nii.gz",
              mask, _t2_affine())
        if sig == "True":
          lesions |= mask.astype(bool)
      elif grid == "adc":  # On the ADC grid only: voxels x 2-3, y 1-2, z 3.
        mask = np.zeros(_DW_SHAPE, np.uint8)
        mask[2:4, 1:3, 3] = 1
        _save(files / "lesions" / "Masks" / "ADC" /
              f"{cid}-Finding{finding}-ep2d_diff_tra_DYNDIST_ADC_ROI.nii.gz", mask, _dw_affine())
        # Nearest neighbour through the affines: T2 voxels whose centre lies in those ADC
        # voxels (world x 53.1-57.1, y -80.9 - -76.9, z 21 mm).
        w = t2w_world
        lesions |= ((w[0] > 53.1) & (w[0] < 57.1) & (w[1] > -80.9) & (w[1] < -76.9)
                    & (np.abs(w[2] - 21.0) < 1.0))
    zones = np.zeros(_T2_SHAPE, np.uint8)
    zones[pz], zones[tz] = 2, 1
    expected[cid] = (zones, lesions, t2)
  (files / "lesions" / "PROSTATEx_Classes.csv").write_text("\n".join(rows) + "\n")
  return expected


@pytest.fixture(scope="module")
def prostatex_dir(tmp_path_factory):
  manual = tmp_path_factory.mktemp("prostatex")
  return manual, _write_prostatex(manual)


def _prostatex(tmp_path, manual, **overrides):
  settings = dict(target_spacing=(0.5, 0.5, 3.0), crop_shape=None)
  return datasets.load("prostatex_bpmri", "prostatex", data_dir=tmp_path / "tfds",
                       manual_dir=manual,
                              **{**settings, **overrides})


def test_prostatex_build(tmp_path, prostatex_dir):
  manual, expected = prostatex_dir
  splits = _prostatex(tmp_path, manual)
  ids = {k: [ex["case_id"] for ex in v] for k, v in splits.items()}
  labels = {f"ProstateX-{i:04d}": int(any(f[1] == "True" for f in fs))
            for i, fs in _FINDINGS.items()}
  assert ids == preprocess.split_cases(sorted(labels), seed=42,
                                       groups=[labels[c] for c in sorted(labels)])
  t2_world = _world(_t2_affine(), _T2_SHAPE)
  for ex in sum(splits.values(), []):
    zones, lesions, t2 = expected[ex["case_id"]]
    assert int(ex["patient_label"]) == labels[ex["case_id"]]
    assert ex["image"].shape == _T2_SHAPE + (3,)
    np.testing.assert_allclose(ex["affine"], _t2_affine(), atol=1e-6)
    np.testing.assert_array_equal(ex["zones"], zones)  # TZ -> 1, PZ -> 2 (0/255, float masks)
    # Significant findings only (T2 masks, or the ADC-grid mask resampled through the affines).
    np.testing.assert_array_equal(ex["lesions"], lesions.astype(np.uint8))
    assert ex["lesions"].any() == bool(labels[ex["case_id"]])
    np.testing.assert_allclose(ex["image"][..., 0], _zscore(t2), atol=1e-4)
    # ADC / DWI: resampled from their 2 mm grid onto the T2W grid through the affines.
    np.testing.assert_allclose(ex["image"][..., 2], _adc_of(t2_world) / 3000.0, rtol=1e-5)
    np.testing.assert_allclose(ex["image"][..., 1], _zscore(_dwi_of(t2_world)), atol=1e-4)


def test_prostatex_crop_and_two_series(tmp_path):
  manual = tmp_path / "manual"
  expected = _write_prostatex(manual)
  images = manual / "Files" / "prostate" / "Images"
  _save(images / "ProstateX-0003_t2_tse_tra_5.nii.gz", np.zeros(_T2_SHAPE, np.int16),
        _t2_affine())
  with pytest.raises(FileNotFoundError, match=r"ProstateX-0003: several T2W series"):
    _prostatex(tmp_path, manual)
  # image_list.csv next to the zonal masks names the series they were drawn on.
  (manual / "Files" / "prostate" / "image_list.csv").write_text(
      "T2\nProstateX-0003_t2_tse_tra_4\n")
  splits = _prostatex(tmp_path, manual, crop_shape=(16, 16, 8), split_fractions=(0, 0, 1))
  ex = {e["case_id"]: e for e in splits["test"]}["ProstateX-0003"]
  zones, _, t2 = expected["ProstateX-0003"]
  crop = (slice(4, 20), slice(2, 18))  # starts (24 - 16) // 2, (20 - 16) // 2; z padded by 1
  assert ex["image"].shape == (16, 16, 8, 3)
  np.testing.assert_array_equal(ex["zones"][:, :, 1:7], zones[crop])
  np.testing.assert_array_equal(ex["zones"][:, :, [0, 7]], 0)
  padded = np.zeros((16, 16, 8))
  padded[:, :, 1:7] = t2[crop]
  np.testing.assert_allclose(ex["image"][..., 0], _zscore(padded), atol=1e-4)
  np.testing.assert_allclose(ex["affine"], _t2_affine() @ _translation(4, 2, -1), atol=1e-9)


def test_prostatex_exclude_ids(tmp_path):
  # An excluded patient is left out before the completeness check: its missing ADC is no error.
  manual = tmp_path / "m"
  _write_prostatex(manual)
  os.remove(manual / "Files" / "lesions" / "Images" / "ADC" /
            "ProstateX-0002_ep2d_diff_tra_7.nii.gz")
  splits = _prostatex(tmp_path, manual, exclude_ids=("ProstateX-0002", "ProstateX-0005"),
                      split_fractions=(0, 0, 1))
  assert [e["case_id"] for e in splits["test"]] == [
      "ProstateX-0000", "ProstateX-0001", "ProstateX-0003", "ProstateX-0004", "ProstateX-0006"]


def _translation(*t):
  m = np.eye(4)
  m[:3, 3] = t
  return m


# The message must say what to download and where from.
_PX_HINT = r"(?s)github\.com/rcuocolo/PROSTATEx_masks.*TCIA PROSTATEx.*Files/prostate/mask_pz"


class TestProstatexErrors:

  def test_missing_dir(self, tmp_path):
    with pytest.raises(FileNotFoundError, match=_PX_HINT) as e:
      _prostatex(tmp_path, tmp_path / "nowhere")
    assert "nowhere" in str(e.value)

  def test_no_zonal_masks(self, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "readme.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_PX_HINT + ".*") as e:
      _prostatex(tmp_path, tmp_path / "m")
    assert "No Files/prostate/mask_pz/ and mask_tz/ folders" in str(e.value)

  def test_no_classes(self, tmp_path):
    _write_prostatex(tmp_path / "m")
    os.remove(tmp_path / "m" / "Files" / "lesions" / "PROSTATEx_Classes.csv")
    with pytest.raises(FileNotFoundError, match="PROSTATEx_Classes.csv not found"):
      _prostatex(tmp_path, tmp_path / "m")

  def test_incomplete_patients(self, tmp_path):
    manual = tmp_path / "m"
    _write_prostatex(manual)
    os.remove(manual / "Files" / "lesions" / "Images" / "ADC" /
              "ProstateX-0002_ep2d_diff_tra_7.nii.gz")
    os.remove(manual / "Files" / "lesions" / "Masks" / "T2" /
              "ProstateX-0000-Finding1-t2_tse_tra_ROI.nii.gz")
    os.remove(manual / "TCIA" / "ProstateX-0005" /
              "ProstateX-0005_ep2d_diff_tra_DYNDISTCALC_BVAL_9.nii.gz")
    with pytest.raises(FileNotFoundError, match=_PX_HINT) as e:
      _prostatex(tmp_path, manual)
    msg = str(e.value)
    assert "3 of 7 patients" in msg and "skip_incomplete=True" in msg
    assert "ProstateX-0002: no ADC image" in msg and "ProstateX-0005: no DWI image" in msg
    assert "ProstateX-0000: no lesion mask for clinically significant finding 1" in msg
    # Leave them out; or accept the missing DWI as a zero channel.
    splits = _prostatex(tmp_path, manual, skip_incomplete=True, split_fractions=(0, 0, 1))
    assert [e["case_id"] for e in splits["test"]] == [
        "ProstateX-0001", "ProstateX-0003", "ProstateX-0004", "ProstateX-0006"]
    splits = _prostatex(tmp_path, manual, skip_incomplete=True, require_dwi=False,
                        split_fractions=(0, 0, 1))
    ex = {e["case_id"]: e for e in splits["test"]}["ProstateX-0005"]
    np.testing.assert_array_equal(ex["image"][..., 1], 0.0)

  def test_patient_without_classes_row(self, tmp_path):
    manual = tmp_path / "m"
    _write_prostatex(manual)
    csv_path = manual / "Files" / "lesions" / "PROSTATEx_Classes.csv"
    csv_path.write_text("\n".join(l for l in csv_path.read_text().splitlines()
                                  if "ProstateX-0003" not in l) + "\n")
    with pytest.raises(FileNotFoundError, match="ProstateX-0003: no row in .*Classes.csv"):
      _prostatex(tmp_path, manual)

  def test_zonal_masks_off_the_t2_grid(self, tmp_path):
    manual = tmp_path / "m"
    _write_prostatex(manual)
    far = _t2_affine()
    far[:3, 3] += 500.0  # another scanner frame: nothing lands on the T2W grid
    for kind in ("pz", "tz"):
      path = manual / "Files" / "prostate" / f"mask_{kind}" / f"ProstateX-0001_{kind}.nii.gz"
      _save(path, np.ones(_T2_SHAPE, np.uint8), far)
    with pytest.raises(ValueError, match=r"ProstateX-0001: the zonal masks .* are empty on the "
                       "grid of T2W"):
      _prostatex(tmp_path, manual)

  def test_corrupt_image(self, tmp_path):
    manual = tmp_path / "m"
    _write_prostatex(manual)
    path = manual / "Files" / "prostate" / "Images" / "ProstateX-0001_t2_tse_tra_4.nii.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"(?s)ProstateX-0001_t2_tse_tra_4.*corrupt.*TCIA"):
      _prostatex(tmp_path, manual)


# --------------------------------------------------------------------------------------------
# picai config: tiny synthetic layout (errors) and the two real exams of the shared sample.
# --------------------------------------------------------------------------------------------


def _write_picai(manual, cases=("1_11", "2_22", "3_33"), marksheet=None):
  shape, aff = (8, 8, 4), np.diag([1.0, 1.0, 3.0, 1.0])
  labels = manual / "picai_labels"
  for k, cid in enumerate(cases):
    rng = np.random.default_rng(k)
    for m in ("t2w", "adc", "hbv"):
      _save(manual / "images" / cid.split("_")[0] / f"{cid}_{m}.nii.gz",
            rng.uniform(100, 200, shape).astype(np.float32), aff)
    zonal = np.zeros(shape, np.uint8)
    zonal[2:6, 2:4] = 1  # PZ
    zonal[2:6, 4:6] = 2  # TZ
    for model in ("HeviAI23", "Yuan23"):
      _save(labels / "anatomical_delineations" / "zonal_pz_tz" / "AI" / model / f"{cid}.nii.gz",
            zonal, aff)
    lesion = np.zeros(shape, np.uint8)
    if k == 0:
      lesion[3:5, 3:5, 1:3] = 4
    _save(labels / "csPCa_lesion_delineations" / "human_expert" / "resampled" / f"{cid}.nii.gz",
          lesion, aff)
  if marksheet is not None:
    (labels / "clinical_information").mkdir(parents=True, exist_ok=True)
    (labels / "clinical_information" / "marksheet.csv").write_text(
        "patient_id,study_id,case_csPCa\n" + "".join(
            f"{cid.split('_')[0]},{cid.split('_')[1]},{v}\n" for cid, v in marksheet.items()))
  return labels


def _picai(tmp_path, manual, build="tfds", **overrides):
  settings = dict(target_spacing=None, crop_shape=None, split_fractions=(0, 0, 1))
  return datasets.load("prostatex_bpmri", "picai", data_dir=tmp_path / build, manual_dir=manual,
                              **{**settings, **overrides})


_PICAI_HINT = r"(?s)picai_labels.*zenodo\.org/records/6624726.*zonal_pz_tz"


def test_picai_tiny_layout_and_missing_lesion_labels(tmp_path):
  manual = tmp_path / "m"
  labels = _write_picai(manual, marksheet={"1_11": "YES", "2_22": "NO"})
  ex = {e["case_id"]: e for e in _picai(tmp_path, manual)["test"]}
  assert sorted(ex) == ["1_11", "2_22", "3_33"]
  np.testing.assert_array_equal(np.unique(ex["1_11"]["zones"][2:6, 2:4]), [2])  # PZ -> 2
  np.testing.assert_array_equal(np.unique(ex["1_11"]["zones"][2:6, 4:6]), [1])  # TZ -> 1
  assert ex["1_11"]["lesions"].sum() == 8 and int(ex["1_11"]["patient_label"]) == 1
  assert int(ex["2_22"]["patient_label"]) == 0
  assert int(ex["3_33"]["patient_label"]) == 0  # not in the marksheet: from the empty mask
  # Without a human label: NO in the marksheet -> empty mask; otherwise the AI label, else error.
  human = labels / "csPCa_lesion_delineations" / "human_expert" / "resampled"
  os.remove(human / "2_22.nii.gz")
  os.remove(human / "3_33.nii.gz")
  with pytest.raises(FileNotFoundError, match=_PICAI_HINT) as e:
    _picai(tmp_path, manual, build="b")  # (a fresh build: "tfds" holds the first one)
  assert "1 of 3 patients" in str(e.value) and "3_33: no lesion label" in str(e.value)
  ai = np.zeros((8, 8, 4), np.int8)
  ai[1, 1, 1] = 1
  _save(labels / "csPCa_lesion_delineations" / "AI" / "Bosma22a" / "3_33.nii.gz", ai,
        np.diag([1.0, 1.0, 3.0, 1.0]))
  ex = {e["case_id"]: e for e in _picai(tmp_path, manual, build="c")["test"]}
  assert not ex["2_22"]["lesions"].any() and int(ex["2_22"]["patient_label"]) == 0
  assert ex["3_33"]["lesions"].sum() == 1 and int(ex["3_33"]["patient_label"]) == 1


class TestPicaiErrors:

  def test_no_images(self, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=_PICAI_HINT) as e:
      _picai(tmp_path, tmp_path / "m")
    assert "_{t2w,adc,hbv}.mha (or .nii / .nii.gz) image" in str(e.value)

  def test_no_labels(self, tmp_path):
    manual = tmp_path / "m"
    labels = _write_picai(manual)
    os.rename(labels, tmp_path / "elsewhere")
    with pytest.raises(FileNotFoundError, match="No PI-CAI labels"):
      _picai(tmp_path, manual)

  def test_unknown_zonal_model(self, tmp_path):
    manual = tmp_path / "m"
    _write_picai(manual)
    with pytest.raises(FileNotFoundError, match=r"model 'Guerbet23'.*\['HeviAI23', 'Yuan23'\]"):
      _picai(tmp_path, manual, zonal_model="Guerbet23")

  def test_missing_image_and_zones(self, tmp_path):
    manual = tmp_path / "m"
    labels = _write_picai(manual)
    os.remove(manual / "images" / "2" / "2_22_adc.nii.gz")
    os.remove(labels / "anatomical_delineations" / "zonal_pz_tz" / "AI" / "HeviAI23" /
              "3_33.nii.gz")
    with pytest.raises(FileNotFoundError, match=_PICAI_HINT) as e:
      _picai(tmp_path, manual)
    assert "2_22: no image **/2_22_adc.mha (or .nii.gz)" in str(e.value)
    assert "3_33: no zonal label" in str(e.value)
    splits = _picai(tmp_path, manual, skip_incomplete=True)
    assert [e["case_id"] for e in splits["test"]] == ["1_11"]

  def test_too_few_cases_for_a_split(self, tmp_path):
    manual = tmp_path / "m"
    _write_picai(manual)
    with pytest.raises(ValueError, match="need at least"):
      _picai(tmp_path, manual, split_fractions=(0.8, 0.1, 0.1))


def test_picai_real_sample(tmp_path):
  if not _REAL_DIR.is_dir():
    pytest.skip(f"real PROSTATEx sample not found at {_REAL_DIR}")
  real = _REAL_DIR.resolve()
  splits = datasets.load("prostatex_bpmri", "picai", data_dir=tmp_path, manual_dir=real,
                                split_fractions=(0.0, 0.0, 1.0))
  assert sorted(splits) == ["test"]
  ex = {e["case_id"]: e for e in splits["test"]}
  assert sorted(ex) == ["10795_1000811", "11373_1001396"]
  mapping = json.loads((real / "ProstateX-mapping.json").read_text())
  assert mapping["ProstateX-0000_07-07-2011"] == "11373_1001396"
  # README: ProstateX-0000 has one ISUP-3 lesion (csPCa); ProstateX-0001 has no csPCa.
  assert int(ex["11373_1001396"]["patient_label"]) == 1
  assert int(ex["10795_1000811"]["patient_label"]) == 0
  assert not ex["10795_1000811"]["lesions"].any()
  for cid, e in ex.items():
    t2_nii = nib.load(str(next((real / "converted_nifti").glob(f"{cid}_*_t2w.nii.gz"))))
    assert e["image"].shape == (160, 160, 20, 3)  # 384 x 384 x 19 cropped, z padded
    assert e["zones"].shape == e["lesions"].shape == (160, 160, 20)
    np.testing.assert_allclose(e["spacing"], [0.5, 0.5, 3.0])
    # Crop start (384 - 160) // 2 = 112 in-plane, (19 - 20) // 2 = -1 through-plane.
    np.testing.assert_allclose(e["affine"], t2_nii.affine @ _translation(112, 112, -1),
                               atol=1e-4)
    t2 = np.asarray(t2_nii.dataobj, np.float64)
    padded = np.zeros((160, 160, 20))
    padded[:, :, 1:] = t2[112:272, 112:272]
    np.testing.assert_allclose(e["image"][..., 0], _zscore(padded), atol=1e-4)
    # Zones: both present, remapped (PI-CAI 1 = PZ -> 2), TZ anterior to PZ, PZ ADC higher.
    zonal = np.asarray(nib.load(str(real / "labels" / "anatomical_delineations" / "zonal_pz_tz"
                                    / "AI" / "HeviAI23" / f"{cid}.nii.gz")).dataobj)
    np.testing.assert_array_equal(e["zones"][:, :, 1:] == 2, zonal[112:272, 112:272] == 1)
    np.testing.assert_array_equal(e["zones"][:, :, 1:] == 1, zonal[112:272, 112:272] == 2)
    centroid = {k: e["affine"][:3, :3] @ np.array(np.nonzero(e["zones"] == k)).mean(1)
                for k in (1, 2)}
    assert centroid[1][1] > centroid[2][1] + 3.0  # world +y = anterior (RAS)
    adc = e["image"][..., 2]
    assert adc[e["zones"] == 2].mean() > adc[e["zones"] == 1].mean()
  # The lesion of ProstateX-0000 (ISUP 3, in the PZ) survives the crop, and the ADC / hbv
  # resampled through the affines line up with it: ADC lower, DWI higher than in the gland.
  e = ex["11373_1001396"]
  les, gland = e["lesions"] > 0, e["zones"] > 0
  assert les.sum() == 414 and np.all(e["zones"][les] == 2)
  adc, dwi = e["image"][..., 2], e["image"][..., 1]
  assert adc[les].mean() < 0.85 * adc[gland & ~les].mean()
  assert dwi[les].mean() > dwi[gland & ~les].mean() + 0.8
  assert 0.2 < adc[gland].mean() < 0.7  # ~1000-2000 um^2/s / 3000
  # Independent check of the ADC resampling: trilinear interpolation of the 2 mm ADC at the
  # world positions of the lesion voxels (map_coordinates on the composed affine).
  adc_nii = nib.load(str(real / "converted_nifti" / "11373_1001396_ProstateX-0000_adc.nii.gz"))
  idx = np.array(np.nonzero(les), np.float64)
  world = e["affine"][:3, :3] @ idx + e["affine"][:3, 3:]
  inv = np.linalg.inv(adc_nii.affine)
  src = inv[:3, :3] @ world + inv[:3, 3:]
  ref = ndimage.map_coordinates(np.asarray(adc_nii.dataobj, np.float64), src, order=1)
  np.testing.assert_allclose(adc[les] * 3000.0, ref, rtol=1e-4, atol=0.05)
