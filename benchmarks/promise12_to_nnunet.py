"""Converts PROMISE12's npy teaching release into an nnU-Net v2 raw dataset (NIfTI).

Reads ``image_trainNN.npy`` (int16) and ``label_trainNN.npy`` (int8, 1 = prostate gland), both
``(slices, rows, cols)``, and writes::

  <output>/Dataset012_PROMISE12/
    dataset.json                   {"channel_names": {"0": "T2"},
                                    "labels": {"background": 0, "prostate": 1},
                                    "numTraining": N, "file_ending": ".nii.gz"}
    imagesTr/promise12_NN_0000.nii.gz   int16 (x, y, z) = (cols, rows, slices)
    labelsTr/promise12_NN.nii.gz        uint8 (x, y, z), 1 = prostate

in the voxel order and orientation of the ``promise12`` builder (its module docstring): arrays
transposed with ``.transpose(2, 1, 0)`` to ``(x, y, z)``, affine the LPS-to-RAS matrix
``diag(-1, -1, 1, 1)`` of an assumed 1 mm spacing (the release does not record the spacing).
The result is what ``datasets.nnunet`` (config ``raw``) reads, and what ``python -m
experiments.compare --data nnunet --manual-dir <output>/Dataset012_PROMISE12`` trains on; it
stands in for your own nnU-Net dataset in the tests and the README example.

Usage::

  python benchmarks/promise12_to_nnunet.py OUTPUT [--src ../shared/data/promise12] [--cases N]

``--cases N`` converts the first ``N`` cases (by number) only. Prints the dataset folder.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

import nibabel as nib
import numpy as np

DEFAULT_SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                           "data", "promise12")
DATASET_NAME = "Dataset012_PROMISE12"
AFFINE = np.diag([-1.0, -1.0, 1.0, 1.0])
"""Voxel to world (RAS, mm) of the npy volumes in (x, y, z) order: LPS index directions, 1 mm."""

_IMAGE = re.compile(r"^image_train(\d+)\.npy$")


def _nifti(array: np.ndarray, path: str) -> None:
  image = nib.Nifti1Image(array, AFFINE)
  image.header.set_xyzt_units("mm")
  image.set_qform(AFFINE, code=1)
  image.set_sform(AFFINE, code=1)
  nib.save(image, path)


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str],
            cases: int | None = None) -> str:
  """Writes the nnU-Net raw dataset ``dst/Dataset012_PROMISE12`` (module docstring).

  Args:
    src: folder holding ``image_trainNN.npy`` / ``label_trainNN.npy``.
    dst: output folder (created if needed).
    cases: convert the first ``cases`` cases (by number) only; None: all.

  Returns:
    The dataset folder (``dst/Dataset012_PROMISE12``), to pass as the manual directory.

  Raises:
    FileNotFoundError: no ``image_trainNN.npy`` in ``src``, or a label file is missing.
    ValueError: ``cases < 1``, or an image and its label differ in shape or are not 3D.
  """
  src, dst = os.fspath(src), os.fspath(dst)
  if cases is not None and cases < 1:
    raise ValueError(f"cases must be >= 1, got {cases}.")
  numbers = sorted((m.group(1) for m in map(_IMAGE.match, os.listdir(src)) if m), key=int)
  if not numbers:
    raise FileNotFoundError(f"No image_trainNN.npy in {src}: give the folder of PROMISE12's "
                            "npy teaching release (image_trainNN.npy, label_trainNN.npy).")
  numbers = numbers[:cases] if cases is not None else numbers
  root = os.path.join(dst, DATASET_NAME)
  for folder in ("imagesTr", "labelsTr"):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
  for num in numbers:
    image_path = os.path.join(src, f"image_train{num}.npy")
    label_path = os.path.join(src, f"label_train{num}.npy")
    if not os.path.isfile(label_path):
      raise FileNotFoundError(f"{label_path} is missing: every image_trainNN.npy needs its "
                              f"label_trainNN.npy in {src}.")
    image = np.load(image_path, allow_pickle=False)
    label = np.load(label_path, allow_pickle=False)
    if image.ndim != 3 or image.shape != label.shape:
      raise ValueError(f"{image_path} {image.shape} and {label_path} {label.shape} must be "
                       "3D (slices, rows, cols) arrays of one shape.")
    case = f"promise12_{num}"
    # (slices, rows, cols) -> (cols, rows, slices) = (x, y, z).
    _nifti(np.ascontiguousarray(image.transpose(2, 1, 0)),
           os.path.join(root, "imagesTr", f"{case}_0000.nii.gz"))
    _nifti(np.ascontiguousarray(label.transpose(2, 1, 0)).astype(np.uint8),
           os.path.join(root, "labelsTr", f"{case}.nii.gz"))
  with open(os.path.join(root, "dataset.json"), "w", encoding="utf-8") as f:
    json.dump({
        "name": "PROMISE12",
        "description": "PROMISE12 npy teaching release converted by "
                       "benchmarks/promise12_to_nnunet.py (spacing assumed 1 mm).",
        "channel_names": {"0": "T2"},
        "labels": {"background": 0, "prostate": 1},
        "numTraining": len(numbers),
        "file_ending": ".nii.gz",
    }, f, indent=2)
  return root


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("output", help="output folder; the dataset goes to OUTPUT/" + DATASET_NAME)
  parser.add_argument("--src", default=DEFAULT_SRC,
                      help="folder of image_trainNN.npy / label_trainNN.npy [%(default)s]")
  parser.add_argument("--cases", type=int, default=None,
                      help="convert only the first N cases (default: all)")
  args = parser.parse_args(argv)
  try:
    print(convert(args.src, args.output, cases=args.cases))
  except (OSError, ValueError) as e:
    print(f"{parser.prog}: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
