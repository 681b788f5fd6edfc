"""Tests of the penalty-matrix builder and constants in jaxseg.hierarchy."""

import numpy as np
import pytest

from jaxseg import hierarchy


def test_paper_matrix_structure():
  d = hierarchy.PAPER_PENALTY_MATRIX
  assert d.shape == (9, 9)
  np.testing.assert_array_equal(d, d.T)
  np.testing.assert_array_equal(np.diag(d), 0)
  np.testing.assert_array_equal(d[0], 0)
  np.testing.assert_array_equal(d[4], d[5])
  assert d[4, 5] == 0 and d.max() == 1.0
  assert len(hierarchy.PELVIS_CLASSES) == len(hierarchy.PELVIS_ABBREVIATIONS) == 9
  with pytest.raises(ValueError):
    d[1, 1] = 3.0  # read-only constant


def _blob_volume():
  """Classes 1, 2, 3 as single voxels at known positions on a 1 mm x 2 mm x 1 mm grid."""
  label = np.zeros((10, 10, 1), np.uint8)
  label[2, 2, 0] = 1   # (2, 4, 0) mm
  label[2, 7, 0] = 2   # (2, 14, 0) mm
  label[6, 2, 0] = 3   # (6, 4, 0) mm
  return label, (1.0, 2.0, 1.0)


def test_distances_without_rounding():
  label, spacing = _blob_volume()
  d = hierarchy.penalty_matrix_from_labels([label], [spacing], num_classes=4, superclasses=(),
                                           bilateral_axis=None, round_to=None)
  raw = {(1, 2): 10.0, (1, 3): 4.0, (2, 3): np.hypot(4.0, 10.0)}
  top = max(raw.values())
  for (i, j), dist in raw.items():
    assert d[i, j] == pytest.approx(dist / top)
    assert d[j, i] == pytest.approx(dist / top)
  np.testing.assert_array_equal(d[0], 0)
  np.testing.assert_array_equal(np.diag(d), 0)


def test_rounding_to_ten_mm():
  label = np.zeros((40, 1, 1), np.uint8)
  label[0, 0, 0] = 1
  label[14, 0, 0] = 2   # 14 mm from class 1 -> 10
  label[36, 0, 0] = 3   # 36 mm from class 1 -> 40; 22 mm from class 2 -> 20
  d = hierarchy.penalty_matrix_from_labels([label], [(1.0, 1.0, 1.0)], num_classes=4,
                                           superclasses=(), bilateral_axis=None)
  assert d[1, 2] == pytest.approx(10 / 40)
  assert d[1, 3] == pytest.approx(1.0)
  assert d[2, 3] == pytest.approx(20 / 40)


def test_bilateral_halves_keep_centroids_inside_paired_structures():
  # Class 2 is bilateral (both ends of the left-right axis), class 1 sits next to it on each side.
  label = np.zeros((20, 4, 1), np.uint8)
  label[[0, 19], 0, 0] = 2
  label[[2, 17], 0, 0] = 1
  label[9, 3, 0] = 3
  halves = hierarchy.penalty_matrix_from_labels([label], [(1, 1, 1)], num_classes=4,
                                                superclasses=(), round_to=None)
  whole = hierarchy.penalty_matrix_from_labels([label], [(1, 1, 1)], num_classes=4,
                                               superclasses=(), round_to=None,
                                               bilateral_axis=None)
  assert whole[1, 2] == pytest.approx(0.0)   # whole-image centroids coincide at the midline
  assert halves[1, 2] > 0.0                  # per-half distance is 2 mm


def test_superclass_merge_and_mean_over_cases():
  a = np.zeros((12, 1, 1), np.uint8)
  a[0, 0, 0], a[4, 0, 0], a[5, 0, 0], a[10, 0, 0] = 1, 2, 3, 4
  b = np.zeros((12, 1, 1), np.uint8)
  b[2, 0, 0], b[4, 0, 0], b[5, 0, 0], b[10, 0, 0] = 1, 2, 3, 4
  d = hierarchy.penalty_matrix_from_labels([a, b], [(1, 1, 1)] * 2, num_classes=5,
                                           superclasses=((2, 3),), bilateral_axis=None,
                                           round_to=None)
  # Mean centroid of class 1 is 1 mm; the merged {2, 3} centroid is 4.5 mm; class 4 is at 10 mm.
  assert d[2, 3] == 0.0
  np.testing.assert_array_equal(d[2], d[3])
  assert d[1, 2] == pytest.approx(3.5 / 9.0)
  assert d[1, 4] == pytest.approx(1.0)
  assert d[2, 4] == pytest.approx(5.5 / 9.0)


def test_errors():
  label, spacing = _blob_volume()
  with pytest.raises(ValueError, match="at least one"):
    hierarchy.penalty_matrix_from_labels([], [], num_classes=4)
  with pytest.raises(ValueError, match="never appear"):
    hierarchy.penalty_matrix_from_labels([label], [spacing], num_classes=5, superclasses=())
  with pytest.raises(ValueError, match="spacing"):
    hierarchy.penalty_matrix_from_labels([label], [(1.0, 0.0, 1.0)], num_classes=4,
                                         superclasses=())
  with pytest.raises(ValueError, match="labels must lie"):
    hierarchy.penalty_matrix_from_labels([label + 5], [spacing], num_classes=4, superclasses=())


def test_ordinal_cost_matrix():
  m = hierarchy.ordinal_cost_matrix(3)
  np.testing.assert_allclose(m, [[0, 0.25, 1], [0.25, 0, 0.25], [1, 0.25, 0]])


def _table1_geometry_labels(spacing=(1.0, 1.0, 1.0), shape=(200, 200, 200)):
  """One label volume with a small cube per class at positions whose distances are Table 1's.

  Positions come from classical multidimensional scaling of Table 1 x 110 mm (the paper's matrix
  embeds in 3D to within a few mm); TZ and CG share the prostate's position (upper and lower
  half of its cube).
  """
  merged = [1, 2, 3, 4, 6, 7, 8]
  d = hierarchy.PAPER_PENALTY_MATRIX[np.ix_(merged, merged)] * hierarchy.PAPER_MAX_DISTANCE_MM
  n = len(merged)
  j = np.eye(n) - 1.0 / n
  w, v = np.linalg.eigh(-0.5 * j @ (d**2) @ j)
  points = v[:, -3:] * np.sqrt(np.maximum(w[-3:], 0.0))  # (classes, 3) in mm
  centre = np.array(shape) * np.array(spacing) / 2.0
  label = np.zeros(shape, np.uint8)
  for c, p in zip(merged, points):
    index = np.round((p + centre) / np.array(spacing)).astype(int)
    lo, hi = index - 2, index + 3
    box = label[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    box[...] = c
    if c == 4:  # the prostate: TZ above, CG below (merged back by the builder)
      box[:, :, 3:] = 5
  return label, points, merged


def test_builder_recovers_table1_on_table1_geometry():
  label, points, merged = _table1_geometry_labels()
  d = hierarchy.centroid_distances_mm([label], [(1.0, 1.0, 1.0)], bilateral_axis=None)
  paper_mm = hierarchy.PAPER_PENALTY_MATRIX * hierarchy.PAPER_MAX_DISTANCE_MM
  pairs = hierarchy.penalty_pairs()
  assert len(pairs) == 21
  # The cubes sit where the embedding put them (within a voxel), and the embedding is Table 1's
  # geometry to within a few mm.
  err = [abs(d[i, j] - paper_mm[i, j]) for i, j in pairs]
  assert max(err) < 6.0, err
  penalty = hierarchy.penalty_matrix_from_labels([label], [(1.0, 1.0, 1.0)], bilateral_axis=None)
  assert hierarchy.penalty_rank_agreement(penalty) >= 0.95
  # Rounding to 10 mm may move a pair by one level (1/11) at most.
  np.testing.assert_array_less(np.abs(penalty - hierarchy.PAPER_PENALTY_MATRIX), 1.0 / 11 + 1e-9)
  np.testing.assert_array_equal(penalty[4], penalty[5])


def test_rank_agreement_detects_a_shuffled_matrix():
  paper = hierarchy.PAPER_PENALTY_MATRIX
  assert hierarchy.penalty_rank_agreement(paper) == pytest.approx(1.0)
  flipped = np.where(paper > 0, 1.0 - paper, 0.0)
  np.fill_diagonal(flipped, 0.0)
  assert hierarchy.penalty_rank_agreement(flipped) == pytest.approx(-1.0)
  with pytest.raises(ValueError, match="shape"):
    hierarchy.penalty_rank_agreement(np.zeros((3, 3)))


def test_phantom_matrix_is_not_table1():
  """Why the study trains phantoms with Table 1 (experiments/configs/hierarchical.py)."""
  from jaxseg.data.phantoms.pelvis import make_pelvis_case
  cases = [make_pelvis_case(s, shape=(64, 64, 16), spacing=(2.25, 2.25, 4.5)) for s in range(3)]
  penalty = hierarchy.penalty_matrix_from_labels([c.label for c in cases],
                                                 [c.spacing for c in cases])
  assert hierarchy.penalty_rank_agreement(penalty) < 0.9
