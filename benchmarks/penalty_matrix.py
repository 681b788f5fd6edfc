"""The penalty-matrix builder on pelvis phantoms against the paper's Table 1, pair by pair.

Prints, for each of the 21 class pairs (TZ and CG merged into the prostate), the paper's entry,
its distance in mm (entry x 110 mm: Table 1's entries are multiples of 1/11 of the largest
distance), the phantom's mean-centroid distance in mm and its normalised entry, and the Spearman
rank correlation of the two matrices. This is why the hierarchical study trains phantoms with the
paper's matrix (``experiments/configs/hierarchical.py``).

Usage::

  python -m benchmarks.penalty_matrix               # 30 phantom cases, the cpu preset's grid
  python -m benchmarks.penalty_matrix --cases 8 --shape 96 96 24 --spacing 1.5 1.5 3
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg import hierarchy  # pylint: disable=g-import-not-at-top
from jaxseg.data.phantoms.pelvis import make_pelvis_case  # pylint: disable=g-import-not-at-top


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", type=int, default=30)
  parser.add_argument("--shape", type=int, nargs=3, default=(96, 96, 24))
  parser.add_argument("--spacing", type=float, nargs=3, default=(1.5, 1.5, 3.0))
  args = parser.parse_args(argv)
  cases = [make_pelvis_case(s, shape=args.shape, spacing=args.spacing) for s in range(args.cases)]
  labels, spacings = [c.label for c in cases], [c.spacing for c in cases]
  distance = hierarchy.centroid_distances_mm(labels, spacings)
  penalty = hierarchy.penalty_matrix_from_labels(labels, spacings)
  paper = hierarchy.PAPER_PENALTY_MATRIX
  abbrev = hierarchy.PELVIS_ABBREVIATIONS
  print(f"{args.cases} phantom cases, shape {tuple(args.shape)}, spacing {tuple(args.spacing)} mm\n")
  print("| pair | Table 1 | Table 1 mm | phantom mm | phantom entry |")
  print("|---|---:|---:|---:|---:|")
  for i, j in hierarchy.penalty_pairs():
    name = f"{abbrev[i]}-{'P' if j in hierarchy.PROSTATE_SUPERCLASS else abbrev[j]}"
    if i in hierarchy.PROSTATE_SUPERCLASS:
      name = f"P-{abbrev[j]}"
    print(f"| {name} | {paper[i, j]:.2f} | {round(paper[i, j] * 11) * hierarchy.PAPER_MAX_DISTANCE_MM / 11:.0f} | "
          f"{distance[i, j]:.1f} | {penalty[i, j]:.2f} |")
  levels = len(np.unique(np.round(penalty[np.triu_indices(9, 1)], 6)))
  print(f"\nSpearman (21 pairs): {hierarchy.penalty_rank_agreement(penalty):.3f}; "
        f"largest phantom distance {np.nanmax(distance[1:, 1:]):.1f} mm (Table 1: 110 mm); "
        f"{levels} distinct levels in the phantom matrix")


if __name__ == "__main__":
  main()
