"""Tests for datasets._volumes: per-case checks and the resample + clip/z-score path."""

import numpy as np
import pytest

from datasets import _volumes
from jaxseg.data import preprocess

_AFFINE = np.diag([1.0, 2.0, 3.0, 1.0])


def _zscore_reference(x, lo_p, hi_p):
  """Percentile clip + population z-score, float64, written from the formula."""
  x = np.asarray(x, np.float64)
  lo, hi = np.percentile(x, [lo_p, hi_p])
  c = np.clip(x, lo, hi)
  return (c - c.mean()) / c.std()


def test_check_finite_counts():
  _volumes.check_finite(np.arange(6, dtype=np.int16), "image", "c1")
  x = np.ones((2, 3))
  x[0, 1], x[1, 2] = np.nan, -np.inf
  with pytest.raises(ValueError) as e:
    _volumes.check_finite(x, "mask", "c1")
  assert str(e.value) == "case c1: mask has 2 non-finite voxel(s)."


@pytest.mark.parametrize("dtype", [bool, complex, object, "U3"])
def test_check_real_rejects(dtype):
  with pytest.raises(ValueError, match=r"^case c2: image must be real-valued, got dtype "):
    _volumes.check_real(np.zeros((2, 2), dtype), "c2")


@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32, np.float64])
def test_check_real_accepts(dtype):
  _volumes.check_real(np.zeros((2, 2), dtype), "c2")


def test_normalized_example_without_resampling():
  rng = np.random.default_rng(0)
  image = rng.normal(100.0, 20.0, (6, 5, 4))
  label = (image > 110).astype(np.int64)
  out = _volumes.normalized_example(image, label, (1, 2, 3), _AFFINE, case_id="c3",
                                    target_spacing=None, clip_percentiles=(5.0, 95.0))
  assert sorted(out) == ["affine", "case_id", "image", "label", "spacing"]
  assert out["image"].dtype == np.float32 and out["label"].dtype == np.uint8
  np.testing.assert_allclose(out["image"], _zscore_reference(image, 5.0, 95.0), atol=1e-5)
  assert abs(float(out["image"].mean())) < 1e-5
  np.testing.assert_array_equal(out["label"], label)
  assert out["case_id"] == "c3"
  assert out["spacing"].dtype == np.float32 and out["spacing"].tolist() == [1.0, 2.0, 3.0]
  assert out["affine"].dtype == np.float64
  np.testing.assert_array_equal(out["affine"], _AFFINE)


def test_normalized_example_resamples_like_resample_case():
  rng = np.random.default_rng(1)
  image = rng.normal(0.0, 1.0, (8, 6, 4)).astype(np.float32)
  label = rng.integers(0, 3, (8, 6, 4)).astype(np.uint8)
  out = _volumes.normalized_example(image, label, (1, 2, 3), _AFFINE, case_id="c4",
                                    target_spacing=(2.0, 2.0, 3.0), clip_percentiles=(0, 100))
  ref_image, ref_label, ref_spacing, ref_affine = preprocess.resample_case(
      image, label, (1, 2, 3), _AFFINE, (2.0, 2.0, 3.0))
  assert out["image"].shape == (4, 6, 4)
  np.testing.assert_allclose(out["image"], _zscore_reference(ref_image, 0, 100), atol=1e-5)
  np.testing.assert_array_equal(out["label"], ref_label)
  np.testing.assert_array_equal(out["spacing"], [2.0, 2.0, 3.0])
  np.testing.assert_array_equal(out["affine"], ref_affine)
  assert out["affine"][0, 0] == 2.0  # Field of view kept: voxel size doubled along x.


@pytest.mark.parametrize("spacing,affine,image,match", [
    ((0.0, 1.0, 1.0), _AFFINE, None, r"^case c5: spacing must be"),
    ((1.0, 1.0), _AFFINE, None, r"^case c5: spacing must have 3 entries"),
    ((1.0, 1.0, 1.0), np.eye(3), None, r"^case c5: affine must be 4x4, got shape \(3, 3\)\.$"),
    ((1.0, 1.0, 1.0), _AFFINE, np.full((3, 3, 2), np.nan),
     r"^case c5: image has 18 non-finite \(NaN or Inf\) voxel"),
])
def test_normalized_example_errors_name_the_case(spacing, affine, image, match):
  image = np.ones((3, 3, 2)) if image is None else image
  with pytest.raises(ValueError, match=match):
    _volumes.normalized_example(image, np.zeros((3, 3, 2), np.uint8), spacing, affine,
                                case_id="c5", target_spacing=None, clip_percentiles=(0.5, 99.5))
