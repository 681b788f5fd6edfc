"""Tests of jaxseg.data.augment."""

import numpy as np
import pytest

from jaxseg.data.augment import FlipRotate


def _sample():
  image = np.zeros((9, 9, 1), np.float32)
  label = np.zeros((9, 9), np.int32)
  label[1:3, 4:6] = 1
  image[..., 0] = label * 2.0 + 1.0
  return image, label


def test_flips_are_applied_jointly():
  image, label = _sample()
  out_image, out_label = FlipRotate(horizontal_prob=1.0, vertical_prob=1.0)(
      np.random.default_rng(0), image, label)
  np.testing.assert_array_equal(out_label, label[::-1, ::-1])
  np.testing.assert_array_equal(out_image, image[::-1, ::-1])


def test_no_augmentation_is_identity():
  image, label = _sample()
  out_image, out_label = FlipRotate(horizontal_prob=0.0)(np.random.default_rng(0), image, label)
  np.testing.assert_array_equal(out_label, label)
  np.testing.assert_array_equal(out_image, image)


def test_rotation_keeps_label_values_and_moves_the_object():
  image, label = _sample()
  seed = next(s for s in range(100) if abs(np.random.default_rng(s).uniform(-90, 90)) > 60)
  rng = np.random.default_rng(seed)
  rotated_image, rotated_label = FlipRotate(max_degrees=90.0, horizontal_prob=0.0)(rng, image,
                                                                                   label)
  assert set(np.unique(rotated_label)) <= {0, 1}
  assert rotated_label.sum() > 0 and not np.array_equal(rotated_label, label)
  assert rotated_image.min() >= image.min() - 1e-6   # filled with the image's minimum


def test_same_generator_state_same_result_and_bad_input():
  image, label = _sample()
  aug = FlipRotate(max_degrees=35.0, horizontal_prob=0.5, vertical_prob=0.1)
  a = aug(np.random.default_rng(5), image, label)
  b = aug(np.random.default_rng(5), image, label)
  np.testing.assert_array_equal(a[1], b[1])
  with pytest.raises(ValueError, match="2D sample"):
    aug(np.random.default_rng(0), image, label[None])
