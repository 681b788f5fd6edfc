"""Tests of jaxseg.data.augment."""

import numpy as np
import pytest
from scipy import ndimage

from jaxseg.data.augment import Compose, FlipRotate, IntensityJitter, Mirror
from jaxseg.data.distance import signed_distance_maps


def _sample():
  image = np.zeros((9, 9, 1), np.float32)
  label = np.zeros((9, 9), np.int32)
  label[1:3, 4:6] = 1
  image[..., 0] = label * 2.0 + 1.0
  return {"image": image, "label": label}


def _sample_3d(spacing=(0.5, 0.5, 3.0)):
  label = np.zeros((10, 8, 5), np.int32)
  label[1:5, 2:7, 1:3] = 1
  label[2:4, 3:5, 1] = 2
  rng = np.random.default_rng(0)
  image = rng.normal(size=label.shape + (3,)).astype(np.float32)
  return {"image": image, "label": label,
          "sdm": signed_distance_maps(label, 3, spacing=spacing)}


def test_flips_are_applied_jointly():
  sample = _sample()
  out = FlipRotate(horizontal_prob=1.0, vertical_prob=1.0)(np.random.default_rng(0), sample)
  np.testing.assert_array_equal(out["label"], sample["label"][::-1, ::-1])
  np.testing.assert_array_equal(out["image"], sample["image"][::-1, ::-1])


def test_no_augmentation_is_identity():
  sample = _sample()
  out = FlipRotate(horizontal_prob=0.0)(np.random.default_rng(0), sample)
  np.testing.assert_array_equal(out["label"], sample["label"])
  np.testing.assert_array_equal(out["image"], sample["image"])


def test_rotation_keeps_label_values_and_moves_the_object():
  sample = _sample()
  seed = next(s for s in range(100) if abs(np.random.default_rng(s).uniform(-90, 90)) > 60)
  out = FlipRotate(max_degrees=90.0, horizontal_prob=0.0)(np.random.default_rng(seed), sample)
  assert set(np.unique(out["label"])) <= {0, 1}
  assert out["label"].sum() > 0 and not np.array_equal(out["label"], sample["label"])
  assert out["image"].min() >= sample["image"].min() - 1e-6   # filled with the image's minimum


def test_rotation_matches_scipy_rotate():
  sample = _sample()
  out = FlipRotate(max_degrees=30.0, horizontal_prob=0.0)(np.random.default_rng(3), sample)
  angle = np.random.default_rng(3).uniform(-30.0, 30.0)
  want = ndimage.rotate(sample["image"], angle, axes=(0, 1), reshape=False, order=1,
                        mode="constant", cval=float(sample["image"].min()))
  np.testing.assert_allclose(out["image"], want, atol=1e-6)
  np.testing.assert_array_equal(out["label"], ndimage.rotate(
      sample["label"], angle, axes=(0, 1), reshape=False, order=0, mode="constant", cval=0))


@pytest.mark.parametrize("zoom,side", [(2.0, 22), (0.5, 5)])
def test_zoom_scales_a_centred_square(zoom, side):
  # An 11 x 11 square centred in a 41 x 41 slice: zoom 2 gives 22 x 22 (each input pixel read by
  # two outputs), zoom 1/2 gives 5 x 5 (outputs 18...22 read the inputs 16, 18, ..., 24).
  label = np.zeros((41, 41), np.int8)
  label[15:26, 15:26] = 1
  sample = {"image": label[..., None].astype(np.float32), "label": label}
  out = FlipRotate(horizontal_prob=0.0, scale=(zoom, zoom))(np.random.default_rng(0), sample)
  rows, cols = np.nonzero(out["label"])
  assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (side, side)
  assert out["label"].sum() == side * side
  assert abs(rows.mean() - 20) <= 0.5 and abs(cols.mean() - 20) <= 0.5   # about the centre
  # The image (linear) agrees with the label (nearest): pixels read half-way between inside and
  # outside get 0.5 (0.25 at a corner) and fall inside the label at zoom 2.
  inside = out["label"] == 1
  assert out["image"][inside, 0].min() >= 0.25 and out["image"][~inside, 0].max() <= 0.5
  assert out["image"][inside, 0].mean() > 0.8


def test_zoom_is_drawn_after_the_angle_and_is_checked():
  sample = _sample()
  sample = {"image": sample["image"], "label": sample["label"]}
  plain = FlipRotate(max_degrees=20.0, vertical_prob=0.5)
  zoomed = FlipRotate(max_degrees=20.0, vertical_prob=0.5, scale=(1.0, 1.0))
  np.testing.assert_array_equal(plain(np.random.default_rng(1), sample)["image"],
                                zoomed(np.random.default_rng(1), sample)["image"])
  for bad in [(0.0, 1.0), (1.2, 0.8)]:
    with pytest.raises(ValueError, match="scale must be"):
      FlipRotate(scale=bad)


def test_same_generator_state_same_result_and_bad_input():
  sample = _sample()
  aug = FlipRotate(max_degrees=35.0, horizontal_prob=0.5, vertical_prob=0.1)
  a = aug(np.random.default_rng(5), sample)
  b = aug(np.random.default_rng(5), sample)
  np.testing.assert_array_equal(a["label"], b["label"])
  with pytest.raises(ValueError, match="2D sample"):
    aug(np.random.default_rng(0), {"image": sample["image"][None], "label": sample["label"][None]})
  with pytest.raises(ValueError, match="extra maps"):
    aug(np.random.default_rng(0), {**sample, "sdm": np.zeros((9, 9, 1), np.float32)})
  with pytest.raises(ValueError, match="needs 'image' and 'label'"):
    aug(np.random.default_rng(0), {"image": sample["image"]})


@pytest.mark.parametrize("probs", [(1.0,), (0.0, 1.0), (1.0, 1.0, 1.0)])
def test_mirror_keeps_distance_maps_exact(probs):
  spacing = (0.5, 0.5, 3.0)
  sample = _sample_3d(spacing)
  out = Mirror(probs=probs)(np.random.default_rng(0), sample)
  want_axes = tuple(a for a, p in enumerate(probs) if p == 1.0)
  np.testing.assert_array_equal(out["label"], np.flip(sample["label"], want_axes))
  np.testing.assert_array_equal(out["image"], np.flip(sample["image"], want_axes))
  # The flipped maps are the maps of the flipped label, recomputed from scratch.
  np.testing.assert_allclose(out["sdm"], signed_distance_maps(out["label"], 3, spacing=spacing),
                             atol=1e-5)


def test_mirror_draws_per_axis_and_validates():
  sample = _sample_3d()
  seen = set()
  for seed in range(40):
    out = Mirror(probs=(0.5, 0.5))(np.random.default_rng(seed), sample)
    seen.add(next(axes for axes in [(), (0,), (1,), (0, 1)]
                  if np.array_equal(out["label"], np.flip(sample["label"], axes))))
  assert seen == {(), (0,), (1,), (0, 1)}  # each axis flipped independently
  with pytest.raises(ValueError, match="flip probabilities"):
    Mirror(probs=(0.5,) * 4)(np.random.default_rng(0), sample)
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    Mirror(probs=(1.5,))
  with pytest.raises(ValueError, match="does not start with"):
    Mirror()(np.random.default_rng(0), {**sample, "sdm": sample["sdm"][:3]})


def test_intensity_jitter_changes_only_the_image():
  sample = _sample_3d()
  aug = IntensityJitter(scale_std=0.2, shift_std=0.3, noise_std=0.0)
  out = aug(np.random.default_rng(1), sample)
  np.testing.assert_array_equal(out["label"], sample["label"])
  np.testing.assert_array_equal(out["sdm"], sample["sdm"])
  # Without noise every channel is an affine map of the input: s * x + b, as drawn.
  rng = np.random.default_rng(1)
  rng.random()
  scale = 1.0 + 0.2 * rng.standard_normal(3)
  shift = 0.3 * rng.standard_normal(3)
  np.testing.assert_allclose(out["image"], sample["image"] * scale + shift, rtol=1e-5, atol=1e-6)
  assert out["image"].dtype == np.float32
  noisy = IntensityJitter(scale_std=0.0, shift_std=0.0, noise_std=0.5)(
      np.random.default_rng(2), sample)
  residual = noisy["image"] - sample["image"]
  assert 0.4 < residual.std() < 0.6
  off = IntensityJitter(prob=0.0)(np.random.default_rng(3), sample)
  np.testing.assert_array_equal(off["image"], sample["image"])
  with pytest.raises(ValueError, match="noise_std"):
    IntensityJitter(noise_std=-1.0)


def test_compose_applies_in_order_from_one_generator():
  sample = _sample_3d()
  aug = Compose([Mirror(probs=(1.0,)), IntensityJitter(scale_std=0.0, shift_std=1.0)])
  out = aug(np.random.default_rng(4), sample)
  rng = np.random.default_rng(4)
  step = IntensityJitter(scale_std=0.0, shift_std=1.0)(rng, Mirror(probs=(1.0,))(rng, sample))
  for key in sample:
    np.testing.assert_array_equal(out[key], step[key])
  np.testing.assert_array_equal(out["label"], sample["label"][::-1])
