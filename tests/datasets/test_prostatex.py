"""Tests for datasets._prostatex: PROSTATEx ids and finding the repository's folders."""

import os

import pytest

from datasets import _prostatex


@pytest.mark.parametrize("name,expected", [
    ("ProstateX-0001.nii.gz", "ProstateX-0001"),
    ("ProstateX-080.nii.gz", "ProstateX-0080"),
    ("/a/b/prostatex_0191_t2_tse_tra_Grappa3_2", "ProstateX-0191"),
    ("PROSTATEX7-Finding1-t2.nii", "ProstateX-0007"),
    ("ProstateX 12", "ProstateX-0012"),
    ("ProstateX-12345.nii", None),  # five digits: not an id
    ("image_list.csv", None),
    ("/ProstateX-0002/notes.txt", None),  # only the base name counts
])
def test_canonical_case_id(name, expected):
  assert _prostatex.canonical_case_id(name) == expected


def test_nifti_stem():
  assert _prostatex.nifti_stem("/x/ProstateX-0001_t2.nii.gz") == "ProstateX-0001_t2"
  assert _prostatex.nifti_stem("a.NII") == "a"
  assert _prostatex.nifti_stem("a.nii.gz.bak") == "a.nii.gz.bak"


def test_find_child(tmp_path):
  (tmp_path / "Images").mkdir()
  (tmp_path / "image_list.csv").write_text("")
  assert _prostatex.find_child(str(tmp_path), "Images") == str(tmp_path / "Images")
  assert _prostatex.find_child(str(tmp_path), "images") == str(tmp_path / "Images")
  assert _prostatex.find_child(str(tmp_path), "IMAGE_LIST.CSV") == str(tmp_path / "image_list.csv")
  assert _prostatex.find_child(str(tmp_path), "masks") is None
  assert _prostatex.find_child(str(tmp_path / "nowhere"), "Images") is None


def _folders(root, *names):
  for name in names:
    os.makedirs(root / name, exist_ok=True)
  return str(root)


def test_prostate_folder_layouts(tmp_path):
  repo = tmp_path / "repo"
  _folders(repo, "Files/prostate/mask_prostate", "Files/prostate/mask_pz")
  assert _prostatex.prostate_folder(str(repo), "mask_prostate") == str(
      repo / "Files" / "prostate")
  # Every folder must be there (and be a folder).
  assert _prostatex.prostate_folder(str(repo), "mask_pz", "mask_tz") is None
  (repo / "Files" / "prostate" / "mask_tz").write_text("not a folder")
  assert _prostatex.prostate_folder(str(repo), "mask_pz", "mask_tz") is None
  # The folder itself, or one level down as GitHub's zip unpacks.
  inner = tmp_path / "inner"
  _folders(inner, "MASK_PROSTATE")
  assert _prostatex.prostate_folder(str(inner), "mask_prostate") == str(inner)
  outer = tmp_path / "outer"
  _folders(outer, "PROSTATEx_masks-master/Files/prostate/mask_prostate")
  assert _prostatex.prostate_folder(str(outer), "mask_prostate") == str(
      outer / "PROSTATEx_masks-master" / "Files" / "prostate")
  assert _prostatex.prostate_folder(str(tmp_path / "nowhere"), "mask_prostate") is None
