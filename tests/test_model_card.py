"""Tests of `jaxseg.model_card`: the typed card of an exported model."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from datasets.prostatex_bpmri.prostatex_bpmri import ADC_SCALE, preprocess_case
from jaxseg.data.preprocess import normalize_intensity
from jaxseg.model_card import (ModelCard, no_normalization, normalize_channel, percentile_zscore,
                               scale)
from jaxseg.models import ProbAttentionUNet3D, ProbUNet3DConfig, UNet2D, UNet2DConfig


def _bpmri(**overrides) -> ModelCard:
  base = dict(activation="softmax", class_names=("background", "csPCa"),
              channels=("T2W", "DWI", "ADC"), spacing=(0.5, 0.5, 3.0),
              normalization=(percentile_zscore(), percentile_zscore(), scale(ADC_SCALE)),
              inference="volume", layout="xyz",
              info={"study": "anatomical_vs_diagnostic", "fold": 2, "held_out": ["a", "b"]})
  return ModelCard(**{**base, **overrides})


def _sigmoid(**overrides) -> ModelCard:
  base = dict(activation="sigmoid", class_names=("background", "prostate"), channels=("T2W",),
              spacing=None, normalization=(percentile_zscore(),), inference="slices",
              layout="zyx")
  return ModelCard(**{**base, **overrides})


@pytest.mark.parametrize("card", [_bpmri(), _sigmoid(), _sigmoid(info={}),
                                  _sigmoid(slice_context=2), _sigmoid(flip_axes=(0,)),
                                  _sigmoid(flip_axes=()), _bpmri(flip_axes=(2, 0))])
def test_json_round_trip(card):
  d = card.to_json()
  again = ModelCard.from_json(json.loads(json.dumps(d)))  # through real JSON: lists
  assert again == card
  assert again.to_json() == d
  assert isinstance(again.class_names, tuple) and isinstance(again.channels, tuple)
  assert isinstance(again.normalization, tuple)


def test_fields_are_canonical():
  card = _bpmri(class_names=["background", "csPCa"], spacing=np.array([0.5, 0.5, 3]),
                normalization=[{"kind": "percentile_zscore", "lower": 1, "upper": 99},
                               {"kind": "none"}, {"kind": "scale", "divisor": 3000}],
                info={"best_epoch": np.int64(7), "dice": np.float32(0.5), "t": (1, 2)})
  assert card.class_names == ("background", "csPCa")
  assert card.spacing == (0.5, 0.5, 3.0) and all(type(s) is float for s in card.spacing)
  assert card.normalization[0] == {"kind": "percentile_zscore", "lower": 1.0, "upper": 99.0}
  assert card.normalization[2] == {"kind": "scale", "divisor": 3000.0}
  assert card.info == {"best_epoch": 7, "dice": 0.5, "t": [1, 2]}
  assert type(card.info["best_epoch"]) is int
  assert card.num_channels == 3 and card.num_outputs == 2
  assert _sigmoid().num_outputs == 1
  assert card.model_channels == 3 and _sigmoid(slice_context=1).model_channels == 3
  assert ModelCard(activation="softmax", class_names=("a", "b"), channels=("c",), spacing=None,
                   normalization=(no_normalization(),), inference="slices").layout == "xyz"
  with pytest.raises(dataclasses.FrozenInstanceError):
    card.activation = "sigmoid"  # type: ignore[misc]


@pytest.mark.parametrize("overrides,needle", [
    (dict(activation="relu"), "ModelCard.activation"),
    (dict(activation=None), "ModelCard.activation"),
    (dict(class_names="prostate"), "ModelCard.class_names"),
    (dict(class_names=()), "ModelCard.class_names"),
    (dict(class_names=("background", "")), "ModelCard.class_names"),
    (dict(class_names=("a", "a")), "ModelCard.class_names"),
    (dict(class_names=("a", 1)), "ModelCard.class_names"),
    (dict(class_names=("only",)), "ModelCard.class_names"),
    (dict(channels="T2W"), "ModelCard.channels"),
    (dict(channels=()), "ModelCard.channels"),
    (dict(channels=("T2W", "T2W", "ADC")), "ModelCard.channels"),
    (dict(spacing=(1.0, 1.0)), "ModelCard.spacing"),
    (dict(spacing=(1.0, 0.0, 3.0)), "ModelCard.spacing"),
    (dict(spacing=(1.0, float("nan"), 3.0)), "ModelCard.spacing"),
    (dict(spacing=(1.0, True, 3.0)), "ModelCard.spacing"),
    (dict(spacing="1 1 3"), "ModelCard.spacing"),
    (dict(normalization=(percentile_zscore(),)), "ModelCard.normalization"),
    (dict(normalization=percentile_zscore()), "ModelCard.normalization"),
    (dict(normalization=({"kind": "minmax"},) * 3), "ModelCard.normalization[0]"),
    (dict(normalization=("zscore",) * 3), "ModelCard.normalization[0]"),
    (dict(normalization=(percentile_zscore(90, 10),) * 3), "ModelCard.normalization[0]"),
    (dict(normalization=(percentile_zscore(), {"kind": "percentile_zscore", "lower": 1},
                         scale(1.0))), "ModelCard.normalization[1]"),
    (dict(normalization=(percentile_zscore(), percentile_zscore(), scale(0.0))),
     "ModelCard.normalization[2]"),
    (dict(normalization=(percentile_zscore(), percentile_zscore(),
                         {"kind": "scale", "divisor": "3000"})), "ModelCard.normalization[2]"),
    (dict(normalization=(percentile_zscore(), {"kind": "none", "extra": 1}, scale(1.0))),
     "ModelCard.normalization[1]"),
    (dict(inference="2d"), "ModelCard.inference"),
    (dict(layout="yxz"), "ModelCard.layout"),
    (dict(slice_context=-1), "ModelCard.slice_context"),
    (dict(slice_context=1.5), "ModelCard.slice_context"),
    (dict(slice_context=1), "ModelCard.slice_context"),  # a volume model is not 2.5D
    (dict(flip_axes=(3,)), "ModelCard.flip_axes"),
    (dict(flip_axes=(0, 0)), "ModelCard.flip_axes"),
    (dict(flip_axes=(True,)), "ModelCard.flip_axes"),
    (dict(flip_axes="0"), "ModelCard.flip_axes"),
    (dict(flip_axes=(-1,)), "ModelCard.flip_axes"),
    (dict(info=[1, 2]), "ModelCard.info"),
    (dict(info={"f": object()}), "ModelCard.info"),
    (dict(info={1: "x"}), "ModelCard.info"),
    (dict(info={"x": float("inf")}), "ModelCard.info"),
])
def test_every_field_is_validated(overrides, needle):
  for build in (lambda: _bpmri(**overrides),
                lambda: ModelCard.from_json({**_bpmri().to_json(), **overrides})):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace(".", r"\.")) as e:
      build()
    assert "\n" not in str(e.value)


def test_sigmoid_needs_two_class_names_and_softmax_at_least_two():
  with pytest.raises(ValueError, match="sigmoid model must be 2 names"):
    _sigmoid(class_names=("background", "prostate", "other"))
  with pytest.raises(ValueError, match="softmax model must be >= 2"):
    _bpmri(class_names=("background",))


def test_from_json_rejects_unknown_and_missing_keys_and_non_dicts():
  d = _bpmri().to_json()
  with pytest.raises(ValueError, match=r"unknown keys \['input_channels'\]"):
    ModelCard.from_json({**d, "input_channels": 3})
  del d["layout"]
  with pytest.raises(ValueError, match=r"missing the keys \['layout'\]"):
    ModelCard.from_json(d)
  with pytest.raises(ValueError, match="must be a dict"):
    ModelCard.from_json([1, 2])  # type: ignore[arg-type]
  # A card exported before 2.5D models existed has no slice_context: a plain 2D model.
  old = _sigmoid().to_json()
  del old["slice_context"]
  assert ModelCard.from_json(old) == _sigmoid()
  # ... and one exported before flip_axes existed does not know what training mirrored.
  old = _sigmoid(flip_axes=(0,)).to_json()
  del old["flip_axes"]
  assert ModelCard.from_json(old).flip_axes is None


def test_flip_axes_are_sorted_and_2d_models_have_two_axes():
  assert _bpmri(flip_axes=[2, 0]).flip_axes == (0, 2)
  assert _sigmoid(flip_axes=np.array([1, 0])).flip_axes == (0, 1)
  with pytest.raises(ValueError, match=r"ModelCard\.flip_axes .* 0\.\.1 .* slice model"):
    _sigmoid(flip_axes=(2,))



def test_normalize_reproduces_the_bpmri_builder():
  rng = np.random.default_rng(0)
  shape = (12, 10, 4)
  t2w = rng.gamma(2.0, 200.0, shape).astype(np.float32)
  dwi = rng.gamma(2.0, 20.0, shape).astype(np.float32)
  adc = rng.uniform(200, 2500, shape).astype(np.float32)
  example = preprocess_case(t2w, dwi, adc, np.zeros(shape, np.uint8), np.zeros(shape, np.uint8),
                            (0.5, 0.5, 3.0), np.eye(4), case_id="x", patient_label=0,
                            target_spacing=None, crop_shape=None)
  got = _bpmri().normalize(np.stack([t2w, dwi, adc], axis=-1))
  assert got.dtype == np.float32 and got.shape == shape + (3,)
  np.testing.assert_array_equal(got, example["image"])


def test_normalize_channel_kinds_and_errors():
  x = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
  np.testing.assert_array_equal(normalize_channel(x, percentile_zscore(1, 99)),
                                normalize_intensity(x, lower=1, upper=99))
  np.testing.assert_array_equal(normalize_channel(x, scale(4.0)), x / 4.0)
  out = normalize_channel(x, no_normalization())
  assert out.dtype == np.float32
  np.testing.assert_array_equal(out, x)
  bad = np.ones((2, 2, 2))
  bad[0, 0, 0] = np.nan
  for spec in (percentile_zscore(), scale(2.0), no_normalization()):
    with pytest.raises(ValueError, match="non-finite"):
      normalize_channel(bad, spec)
  with pytest.raises(ValueError, match="kind"):
    normalize_channel(x, {"kind": "minmax"})
  card = _sigmoid()
  assert card.normalize(x).shape == (2, 3, 4, 1)
  with pytest.raises(ValueError, match=r"\(x, y, z, 3\)"):
    _bpmri().normalize(np.zeros((2, 3, 4, 2)))
  with pytest.raises(ValueError, match="channel 'DWI'"):
    _bpmri().normalize(np.stack([x, np.full(x.shape, np.inf), x], axis=-1))


def test_check_model():
  unet = UNet2D(UNet2DConfig.tversky(width=0.0625))  # 1 output
  _sigmoid().check_model(unet)
  with pytest.raises(ValueError, match="num_classes"):
    _bpmri(channels=("T2W",), normalization=(percentile_zscore(),),
           class_names=("a", "b", "c")).check_model(unet)
  prob = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(2, 3))
  _bpmri().check_model(prob)
  with pytest.raises(ValueError, match="in_channels"):
    _bpmri(channels=("T2W",), normalization=(percentile_zscore(),)).check_model(prob)
