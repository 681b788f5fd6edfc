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
