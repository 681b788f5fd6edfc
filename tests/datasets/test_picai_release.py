"""prostatex_bpmri 'picai' as published: .mha images, Pooch25 binary lesions, exclude_ids."""

import logging
import shutil
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

import datasets
from datasets import _itk
from datasets import prostatex_bpmri
from jaxseg.data import preprocess

_REAL_DIR = Path(__file__).parents[2] / ".." / "shared" / "data" / "prostatex_sample"
_F = np.diag([-1.0, -1.0, 1.0])  # LPS <-> RAS


def _write_mha(path, array, affine, spacing=None):
  """``array`` (x, y, z) with the RAS ``affine`` as ITK writes it: LPS direction and origin.

  ``spacing`` (default: the affine's column norms) is the ITK spacing; the direction is the
  affine's columns divided by it, so the affine read back is ``affine``.
  """
  sitk = pytest.importorskip("SimpleITK")
  spacing = np.linalg.norm(affine[:3, :3], axis=0) if spacing is None else np.asarray(spacing)
  img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
  img.SetSpacing(spacing.tolist())
  img.SetDirection((_F @ affine[:3, :3] / spacing).ravel().tolist())
  img.SetOrigin((_F @ affine[:3, 3]).tolist())
  path.parent.mkdir(parents=True, exist_ok=True)
  sitk.WriteImage(img, str(path), True)


def _save(path, array, affine):
  path.parent.mkdir(parents=True, exist_ok=True)
  nib.save(nib.Nifti1Image(array, affine), str(path))


def _nifti_to_mha(src, dst):
  """Converts a NIfTI file to .mha: its array, its (RAS) affine as LPS, its pixdim as spacing.

  The affine is the one nibabel reads (the header's float32 sform), so both files describe the
  same grid to the last bit and the builder must give the same example from either.
  """
  img = nib.load(str(src))
  _write_mha(dst, np.asarray(img.dataobj), img.affine, spacing=img.header.get_zooms()[:3])


def _load(tmp_path, manual, build, **overrides):
  settings = dict(target_spacing=None, crop_shape=None, split_fractions=(0, 0, 1))
  splits = datasets.load("prostatex_bpmri", "picai", data_dir=tmp_path / build, manual_dir=manual,
                                **{**settings, **overrides})
  return {e["case_id"]: e for e in splits["test"]}


def _assert_same_examples(a, b):
  assert sorted(a) == sorted(b)
  for cid in a:
    for key in ("zones", "lesions", "patient_label", "spacing"):
      np.testing.assert_array_equal(a[cid][key], b[cid][key], err_msg=f"{cid} {key}")
    np.testing.assert_allclose(a[cid]["image"], b[cid]["image"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(a[cid]["affine"], b[cid]["affine"], atol=1e-5)


# --------------------------------------------------------------------------------------------
# .mha images.
# --------------------------------------------------------------------------------------------


def _oblique_affine(spacing, origin, angle=0.4):
  c, s = np.cos(angle), np.sin(angle)
  rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([-1.0, 1.0, 1.0])
  a = np.eye(4)
  a[:3, :3] = rot @ np.diag(spacing)
  a[:3, 3] = origin
  return a


def _write_tiny_exam(root, cid, fmt, rng):
  """One exam on oblique grids: T2W 0.5 mm, ADC / hbv 1 mm (another origin); fmt mha / nii."""
  t2_aff = _oblique_affine((0.5, 0.5, 3.0), (20.0, -10.0, 5.0))
  dw_aff = _oblique_affine((1.0, 1.0, 3.0), (20.3, -10.2, 5.0))
  folder = root / "picai_public_images_fold0" / cid.split("_")[0]
  for seq, array, aff in (
      ("t2w", rng.integers(100, 900, (24, 20, 4)).astype(np.int16), t2_aff),
      ("adc", rng.integers(500, 2500, (14, 12, 4)).astype(np.uint16), dw_aff),
      ("hbv", rng.uniform(0, 50, (14, 12, 4)).astype(np.float32), dw_aff)):
    nii = folder / f"{cid}_{seq}.nii.gz"
    _save(nii, array, aff)
    if fmt == "mha":
      _nifti_to_mha(nii, folder / f"{cid}_{seq}.mha")
      nii.unlink()
  if fmt == "mha":  # Other sequences of the release: ignored.
    for seq in ("cor", "sag"):
      _write_mha(folder / f"{cid}_{seq}.mha", np.zeros((5, 5, 3), np.int16), np.eye(4))
  labels = root / "picai_labels"
  zonal = np.zeros((24, 20, 4), np.uint8)
  zonal[6:18, 4:10] = 1
  zonal[6:18, 10:16] = 2
  _save(labels / "anatomical_delineations" / "zonal_pz_tz" / "AI" / "HeviAI23" / f"{cid}.nii.gz",
        zonal, t2_aff)
  lesion = np.zeros((24, 20, 4), np.uint8)
  lesion[8:12, 5:9, 1:3] = 3
  _save(labels / "csPCa_lesion_delineations" / "human_expert" / "resampled" / f"{cid}.nii.gz",
        lesion, t2_aff)


def test_read_image_matches_nibabel_on_an_oblique_grid(tmp_path):
  pytest.importorskip("SimpleITK")
  arr = np.arange(5 * 4 * 3, dtype=np.int16).reshape(5, 4, 3)
  aff = _oblique_affine((0.7, 0.8, 2.5), (-3.0, 7.0, 11.0))
  _write_mha(tmp_path / "x.mha", arr, aff)
  _save(tmp_path / "x.nii.gz", arr, aff)
  got, spacing, affine = _itk.read_image(tmp_path / "x.mha")
  nii, nii_spacing, nii_affine = preprocess.load_nifti(tmp_path / "x.nii.gz")
  np.testing.assert_array_equal(got, nii)
  assert got.dtype == np.int16
  np.testing.assert_allclose(spacing, nii_spacing, rtol=1e-6)
  np.testing.assert_allclose(affine, nii_affine, atol=1e-6)
  # ITK's own NIfTI reader (its qform/sform to LPS) agrees with the conversion written above.
  sitk = pytest.importorskip("SimpleITK")
  ref = sitk.ReadImage(str(tmp_path / "x.nii.gz"))
  np.testing.assert_allclose(
      _itk.lps_to_ras_affine(ref.GetSpacing(), ref.GetDirection(), ref.GetOrigin()), affine,
      atol=1e-5)
  with pytest.raises(FileNotFoundError, match="MetaImage file not found"):
    _itk.read_image(tmp_path / "nowhere.mha")
  (tmp_path / "bad.mha").write_bytes(b"ObjectType = Image\nNDims = 3\n")
  with pytest.raises(ValueError, match="Cannot read MetaImage file .*bad.mha"):
    _itk.read_image(tmp_path / "bad.mha")


def test_tiny_oblique_exam_mha_equals_nifti(tmp_path):
  pytest.importorskip("SimpleITK")
  for fmt in ("mha", "nii"):
    _write_tiny_exam(tmp_path / fmt, "7_77", fmt, np.random.default_rng(0))
  from_mha = _load(tmp_path, tmp_path / "mha", "a")
  from_nii = _load(tmp_path, tmp_path / "nii", "b")
  _assert_same_examples(from_mha, from_nii)
  ex = from_mha["7_77"]
  assert ex["lesions"].sum() == 32 and int(ex["patient_label"]) == 1
  # The ADC on the 1 mm oblique grid reached the T2W grid (not all zeros / out of view).
  assert (ex["image"][..., 2] > 0).mean() > 0.5


def test_real_exam_as_mha_equals_nifti(tmp_path):
  """One shared NIfTI exam converted to .mha (PI-CAI's layout): the same example."""
  pytest.importorskip("SimpleITK")
  if not _REAL_DIR.is_dir():
    pytest.skip(f"real PROSTATEx sample not found at {_REAL_DIR}")
  real = _REAL_DIR.resolve()
  cid = "11373_1001396"
  mha, nii = tmp_path / "mha", tmp_path / "nii"
  for seq in ("t2w", "adc", "hbv"):
    src = next((real / "converted_nifti").glob(f"{cid}_*_{seq}.nii.gz"))
    _nifti_to_mha(src, mha / "picai_public_images_fold0" / cid.split("_")[0] / f"{cid}_{seq}.mha")
    (nii / "converted_nifti").mkdir(parents=True, exist_ok=True)
    shutil.copy(src, nii / "converted_nifti" / src.name)
  _write_mha(mha / "picai_public_images_fold0" / "11373" / f"{cid}_cor.mha",
             np.zeros((4, 4, 2), np.int16), np.eye(4))
  for root in (mha, nii):
    for rel in ("anatomical_delineations/zonal_pz_tz/AI/HeviAI23",
                "csPCa_lesion_delineations/human_expert/resampled"):
      (root / "picai_labels" / rel).mkdir(parents=True)
      shutil.copy(real / "labels" / rel / f"{cid}.nii.gz", root / "picai_labels" / rel)
  settings = dict(target_spacing=(0.5, 0.5, 3.0), crop_shape=(160, 160, 20))
  from_mha = _load(tmp_path, mha, "a", **settings)
  from_nii = _load(tmp_path, nii, "b", **settings)
  _assert_same_examples(from_mha, from_nii)
  assert from_mha[cid]["lesions"].sum() == 414  # as from the shared NIfTI (ISUP-3 lesion)


def test_mha_without_simpleitk_is_one_line_naming_the_extra(tmp_path, monkeypatch):
  pytest.importorskip("SimpleITK")
  _write_tiny_exam(tmp_path / "m", "7_77", "mha", np.random.default_rng(0))
  monkeypatch.setitem(sys.modules, "SimpleITK", None)
  with pytest.raises(ImportError) as e:
    _load(tmp_path, tmp_path / "m", "a")
  msg = str(e.value)
  assert "\n" not in msg and 'pip install -e ".[itk]"' in msg and "PI-CAI .mha" in msg


# --------------------------------------------------------------------------------------------
# Lesion annotations: ISUP (human_expert/original, resampled) and binary (Pooch25, AI).
# --------------------------------------------------------------------------------------------

_AFF = np.diag([1.0, 1.0, 3.0, 1.0])
_SHAPE = (8, 8, 4)


def _write_picai(manual, cases=("1_11", "2_22", "3_33")):
  """A tiny NIfTI layout; case k = 0 has an ISUP-4 lesion and a Pooch25 (binary) one."""
  labels = manual / "picai_labels"
  lesion_root = labels / "csPCa_lesion_delineations" / "human_expert"
  for k, cid in enumerate(cases):
    rng = np.random.default_rng(k)
    for m in ("t2w", "adc", "hbv"):
      _save(manual / "images" / f"{cid}_{m}.nii.gz",
            rng.uniform(100, 200, _SHAPE).astype(np.float32), _AFF)
    zonal = np.zeros(_SHAPE, np.uint8)
    zonal[2:6, 2:4], zonal[2:6, 4:6] = 1, 2
    _save(labels / "anatomical_delineations" / "zonal_pz_tz" / "AI" / "HeviAI23" /
          f"{cid}.nii.gz", zonal, _AFF)
    isup, pooch = np.zeros(_SHAPE, np.uint8), np.zeros(_SHAPE, np.uint8)
    if k == 0:
      isup[3:5, 3:5, 1:3] = 4
      pooch[2:5, 3:5, 1:3] = 1  # the 2025 expert delineation: another extent, value 1
    _save(lesion_root / "resampled" / f"{cid}.nii.gz", isup, _AFF)
    _save(lesion_root / "Pooch25" / f"{cid}.nii.gz", pooch, _AFF)
  return labels


@pytest.fixture(scope="module")
def tiny_picai(tmp_path_factory):
  manual = tmp_path_factory.mktemp("picai")
  _write_picai(manual)
  return manual


def test_lesion_kind():
  assert prostatex_bpmri.lesion_kind("human_expert/resampled") == "isup"
  assert prostatex_bpmri.lesion_kind("Human_Expert/Original/") == "isup"
  for binary in ("human_expert/Pooch25", "AI/Bosma22a", "human_expert/someone26"):
    assert prostatex_bpmri.lesion_kind(binary) == "binary"


def test_pooch25_binary_labels(tmp_path, tiny_picai):
  isup = _load(tmp_path, tiny_picai, "isup")
  pooch = _load(tmp_path, tiny_picai, "pooch", lesion_annotation="human_expert/Pooch25")
  assert isup["1_11"]["lesions"].sum() == 8 and pooch["1_11"]["lesions"].sum() == 12
  expected = np.zeros(_SHAPE, np.uint8)
  expected[2:5, 3:5, 1:3] = 1
  np.testing.assert_array_equal(pooch["1_11"]["lesions"], expected)
  assert [int(pooch[c]["patient_label"]) for c in sorted(pooch)] == [1, 0, 0]


def test_binary_file_under_an_isup_annotation_is_an_error(tmp_path):
  manual = tmp_path / "m"
  labels = _write_picai(manual)
  resampled = labels / "csPCa_lesion_delineations" / "human_expert" / "resampled"
  shutil.copy(resampled.parent / "Pooch25" / "1_11.nii.gz", resampled / "1_11.nii.gz")
  with pytest.raises(ValueError, match=r"1_11\.nii\.gz \(case 1_11\) contains the value 1") as e:
    _load(tmp_path, manual, "a")
  assert "lesion_annotation='human_expert/Pooch25'" in str(e.value)


def test_missing_annotation_folder_lists_the_available_ones(tmp_path, tiny_picai):
  with pytest.raises(FileNotFoundError, match=r"No lesion annotation 'human_expert/Pooch24'.*"
                     r"\['human_expert/Pooch25', 'human_expert/resampled'\]"):
    _load(tmp_path, tiny_picai, "a", lesion_annotation="human_expert/Pooch24")


# --------------------------------------------------------------------------------------------
# exclude_ids / exclude_prostatex.
# --------------------------------------------------------------------------------------------


def test_exclude_settings_and_names():
  base = prostatex_bpmri.PICAI
  assert base.exclude_ids == () and base.exclude_prostatex is False
  assert {"exclude_ids", "exclude_prostatex"} <= set(base.settings())
  a = datasets.builder_config("prostatex_bpmri", "picai", exclude_ids=("2_22", "1_11"))
  b = datasets.builder_config("prostatex_bpmri", "picai", exclude_ids="1_11, 2_22")
  assert a.exclude_ids == ("1_11", "2_22") and a.name == b.name != base.name
  assert a.name != datasets.builder_config("prostatex_bpmri", "picai", exclude_ids=("1_11",)).name
  assert datasets.builder_config("prostatex_bpmri", "picai",
                                 exclude_prostatex=True).name != base.name
  with pytest.raises(ValueError, match="exclude_prostatex is a setting of source 'picai'"):
    datasets.builder_config("prostatex_bpmri", "prostatex", exclude_prostatex=True)
  with pytest.raises(ValueError, match="exclude_ids must be case ids"):
    datasets.builder_config("prostatex_bpmri", "picai", exclude_ids=("1_11", ""))


def test_exclude_ids_picai(tmp_path, tiny_picai, caplog):
  with caplog.at_level(logging.INFO, logger="datasets._exclude"):
    ex = _load(tmp_path, tiny_picai, "a", exclude_ids=("2_22", "3", "9_99"))
  assert sorted(ex) == ["1_11"]  # "3": every study of patient 3
  assert "leaving out 2 of 3 cases (exclude_ids)" in caplog.text
  warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
  assert len(warnings) == 1 and "9_99" in warnings[0]
  with pytest.raises(ValueError, match="exclude_ids leaves none of the 3 cases"):
    _load(tmp_path, tiny_picai, "b", exclude_ids=("1", "2", "3"))


def test_exclude_ids_phantom(tmp_path):
  tiny = dict(num_cases=3, phantom_shape=(24, 24, 8), phantom_spacing=(4.0, 4.0, 4.0),
              target_spacing=(4.0, 4.0, 4.0), crop_shape=None, split_fractions=(0, 0, 1))
  splits = datasets.load("prostatex_bpmri", "phantom", data_dir=tmp_path,
                         exclude_ids=("bpmri-0001",),
                                **tiny)
  assert [e["case_id"] for e in splits["test"]] == ["bpmri-0000", "bpmri-0002"]


def test_exclude_prostatex_tiny(tmp_path):
  manual = tmp_path / "m"
  _write_picai(manual)
  with pytest.raises(FileNotFoundError, match="exclude_prostatex=True needs a ProstateX mapping"):
    _load(tmp_path, manual, "a", exclude_prostatex=True)
  (manual / "ProstateX-mapping.json").write_text('{"ProstateX-0000_07-07-2011": "1_11"}')
  assert sorted(_load(tmp_path, manual, "b", exclude_prostatex=True)) == ["2_22", "3_33"]
  (manual / "ProstateX-mapping.json").unlink()
  (manual / "picai_prostatex_mapping.csv").write_text(
      "prostatex_id,patient_id,study_id\nProstateX-0001,2,22\n")
  assert sorted(_load(tmp_path, manual, "c", exclude_prostatex=True)) == ["1_11", "3_33"]


def test_exclude_prostatex_real_sample(tmp_path):
  """Both exams of the shared sample are ProstateX patients (its ProstateX-mapping.json)."""
  if not _REAL_DIR.is_dir():
    pytest.skip(f"real PROSTATEx sample not found at {_REAL_DIR}")
  with pytest.raises(ValueError, match=r"exclude_prostatex=True leaves none of the 2 cases"):
    datasets.load("prostatex_bpmri", "picai", data_dir=tmp_path, manual_dir=_REAL_DIR.resolve(),
                         split_fractions=(0, 0, 1), exclude_prostatex=True)
