"""Tests for datasets._builder: features, phantom seeds, the split by case, the examples."""

import types

import numpy as np
import pytest
import tensorflow_datasets as tfds

import datasets
from datasets import _builder
from datasets import male_pelvic_mr
from jaxseg.data import preprocess


def test_volume_feature():
  f = _builder.volume_feature(np.uint8)
  assert f.shape == (None, None, None) and f.np_dtype == np.uint8
  assert f.to_json_content().encoding == "zlib"
  g = _builder.volume_feature(np.float32, channels=3)
  assert g.shape == (None, None, None, 3) and g.np_dtype == np.float32


def test_geometry_features():
  plain = _builder.geometry_features()
  assert list(plain) == ["spacing", "affine"]
  assert plain["spacing"].shape == (3,) and plain["spacing"].np_dtype == np.float32
  assert plain["affine"].shape == (4, 4) and plain["affine"].np_dtype == np.float64
  assert plain["affine"].to_json_content().encoding == "none"
  raw = _builder.geometry_features(affine_encoding="bytes")["affine"]
  assert raw.to_json_content().encoding == "bytes"


def test_phantom_seeds():
  cfg = types.SimpleNamespace(base_seed=5, num_cases=3)
  assert list(_builder.phantom_seeds(cfg)) == [5, 6, 7]


def _fake_builder(**settings):
  """A stand-in ``self``: a config and a `_generate_examples` that returns the cases."""
  cfg = types.SimpleNamespace(split_fractions=(0.8, 0.1, 0.1), split_seed=42)
  cfg.__dict__.update(settings)
  return types.SimpleNamespace(builder_config=cfg, _generate_examples=list)


def test_split_by_case_is_the_configs_random_split():
  cases = {f"c{i:02d}": i for i in range(20)}
  fake = _fake_builder()
  out = _builder.CaseBuilder._split_by_case(fake, cases)
  expected = preprocess.split_cases(sorted(cases), fractions=(0.8, 0.1, 0.1), seed=42)
  assert list(out) == list(preprocess.SPLITS)
  for name in preprocess.SPLITS:
    assert out[name] == [cases[c] for c in expected[name]]
  assert sorted(v for s in out.values() for v in s) == list(range(20))  # each case once


def test_split_by_case_groups_and_given_split():
  cases = {f"c{i:02d}": i for i in range(20)}
  groups = {c: i % 2 for c, i in cases.items()}
  out = _builder.CaseBuilder._split_by_case(_fake_builder(split_seed=3), cases, groups=groups)
  ids = sorted(cases)
  expected = preprocess.split_cases(ids, fractions=(0.8, 0.1, 0.1), seed=3,
                                    groups=[groups[c] for c in ids])
  for name in preprocess.SPLITS:
    assert out[name] == [cases[c] for c in expected[name]]
  given = {"train": ["c03", "c01"], "validation": [], "test": ["c05"]}
  out = _builder.CaseBuilder._split_by_case(_fake_builder(), cases, split=given)
  assert out == {"train": [3, 1], "test": [5]}  # The empty split is left out.


def test_split_by_case_leaves_out_zero_fraction_splits():
  cases = {f"c{i}": i for i in range(3)}
  out = _builder.CaseBuilder._split_by_case(_fake_builder(split_fractions=(0, 0, 1)), cases)
  assert out == {"test": [0, 1, 2]}


def test_generate_examples_keys_by_case_id_and_dispatches_phantoms_to_the_generator():
  fake = types.SimpleNamespace(
      builder_config=types.SimpleNamespace(source="release"),
      _example=lambda case: {"case_id": f"id-{case}", "x": case * 2},
      _phantom_example=lambda seed: {"case_id": f"phantom-{seed}", "x": -seed})
  out = list(_builder.CaseBuilder._generate_examples(fake, [3, 1]))
  assert out == [("id-3", {"case_id": "id-3", "x": 6}), ("id-1", {"case_id": "id-1", "x": 2})]
  fake.builder_config.source = _builder.PHANTOM
  out = list(_builder.CaseBuilder._generate_examples(fake, [3]))
  assert out == [("phantom-3", {"case_id": "phantom-3", "x": -3})]


def test_phantom_splits_use_the_id_pattern_and_leave_out_excluded_ids(tmp_path):
  splits = datasets.load("male_pelvic_mr", data_dir=tmp_path, num_cases=4,
                         phantom_shape=(16, 16, 4), phantom_spacing=(3.0, 3.0, 3.0),
                         target_spacing=(3.0, 3.0, 3.0), split_fractions=(1.0, 0.0, 0.0),
                         exclude_ids=("phantom-0001",))
  assert [ex["case_id"] for ex in splits["train"]] == [
      "phantom-0000", "phantom-0002", "phantom-0003"]


def test_a_zero_fraction_split_builds_without_it(tmp_path):
  splits = datasets.load("male_pelvic_mr",
      "phantom", data_dir=tmp_path, num_cases=2, phantom_shape=(16, 16, 4),
      phantom_spacing=(3.0, 3.0, 3.0), target_spacing=(3.0, 3.0, 3.0),
      split_fractions=(1.0, 0.0, 0.0),
  )
  assert list(splits) == ["train"]
  assert [ex["case_id"] for ex in splits["train"]] == ["phantom-0000", "phantom-0001"]


def test_info_records_the_config():
  cfg = datasets.builder_config("male_pelvic_mr", "phantom", num_cases=3)
  builder = male_pelvic_mr.MalePelvicMr(config=cfg, data_dir="/nonexistent-jaxseg-test")
  info = builder.info
  assert info.metadata["config_fingerprint"] == cfg.fingerprint()
  assert info.metadata["settings"] == cfg.settings()
  assert list(info.features) == ["image", "label", "case_id", "institution", "spacing", "affine"]


def test_case_builder_is_not_registered():
  assert "case_builder" not in tfds.list_builders(with_community_datasets=False)
  with pytest.raises(NotImplementedError):
    _builder.CaseBuilder._example(None, 0)
