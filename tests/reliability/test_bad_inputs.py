"""Bad inputs end in a clear error (or the documented value) and lose no earlier result.

One place that walks the whole pipeline -- dataset builds, preprocessing, losses, metrics, the
training loop -- with the inputs that break real runs:

* missing manual directory and unknown dataset config, for every builder and real-data config;
* corrupt or truncated NIfTI, image/label shape mismatch, labels outside the class set, NaN or Inf
  voxels and zero spacing *inside a release* (a build from files): the error names the file or
  case, nothing half-built is left to be loaded, an earlier build in the same data directory is
  untouched, and once the file is fixed the same data directory builds;
* the same defects handed to each builder's ``preprocess_case`` and to the library functions;
* empty masks in metrics (the documented NaN / 0 / 1 values, counted, never dropped silently);
* zero, negative or non-finite spacing; too few cases for the split;
* a non-finite loss during training: the loop stops with a message naming the step, the last good
  checkpoint and ``metrics.jsonl`` stay as they were, and a resumed run on clean data ends exactly
  where an uninterrupted one does.

Unit tests next to each module check its own messages in detail; this suite checks the behaviour
across modules, in one place.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import struct

import flax.linen as nn
import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import optax
import pytest

import datasets
from jaxseg import losses
from jaxseg.data import distance, pipeline, preprocess
from jaxseg.metrics import calibration, detection, overlap, stats, surface
from jaxseg.train.checkpoint import Checkpointer
from jaxseg.train.loop import NonFiniteLossError, TrainConfig, Trainer
from jaxseg.train.state import TrainState

os.environ.setdefault("TFDS_DISABLE_GCS", "1")

# Every builder and its configs that read a real release from a manual directory.
REAL_CONFIGS = [("male_pelvic_mr", "zenodo"), ("micro_us", "microsegnet"),
                ("promise12", "preprocessed"), ("promise12", "original"),
                ("prostatex_bpmri", "prostatex"), ("prostatex_bpmri", "picai"),
                ("prostatex_gland", "prostatex")]
DATASETS = sorted({name for name, _ in REAL_CONFIGS})
TINY_PHANTOM = dict(num_cases=7, phantom_shape=(24, 24, 4), phantom_spacing=(2.0, 2.0, 3.0),
                    target_spacing=(2.0, 2.0, 3.0))


def _snapshot(directory) -> dict[str, int]:
  """``{relative path: mtime_ns}`` of every file under ``directory``."""
  out = {}
  for root, _, files in os.walk(directory):
    for f in files:
      path = os.path.join(root, f)
      out[os.path.relpath(path, directory)] = os.stat(path).st_mtime_ns
  return out


@pytest.fixture
def earlier_build(tmp_path):
  """A data directory holding a finished (tiny phantom) build: ``(data_dir, splits, snapshot)``."""
  data_dir = tmp_path / "tfds"
  splits = datasets.load("male_pelvic_mr", "phantom", data_dir=data_dir, **TINY_PHANTOM)
  return data_dir, splits, _snapshot(_build_dir(data_dir))


def _build_dir(data_dir):
  """Where the earlier build's files are (tfds also keeps a per-dataset ``.config`` folder)."""
  name = datasets.builder_config("male_pelvic_mr", "phantom", **TINY_PHANTOM).name
  return data_dir / "male_pelvic_mr" / name


def _assert_intact(earlier):
  data_dir, splits, snapshot = earlier
  assert snapshot and _snapshot(_build_dir(data_dir)) == snapshot  # not rebuilt, not touched
  again = datasets.load("male_pelvic_mr", "phantom", data_dir=data_dir, **TINY_PHANTOM)
  assert sorted(again) == sorted(splits)
  for split in splits:
    assert [e["case_id"] for e in again[split]] == [e["case_id"] for e in splits[split]]
    for a, b in zip(again[split], splits[split]):
      np.testing.assert_array_equal(a["image"], b["image"])
      np.testing.assert_array_equal(a["label"], b["label"])


# ------------------------------------------------------------------------------------------------
# Missing manual directory, unknown config, too few cases (dataset builds).
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("situation", ["not_given", "missing", "empty"])
@pytest.mark.parametrize("dataset,config", REAL_CONFIGS)
def test_missing_manual_directory(tmp_path, dataset, config, situation):
  manual = {"not_given": None, "missing": tmp_path / "nowhere", "empty": tmp_path / "empty"}
  manual = manual[situation]
  if situation == "empty":
    manual.mkdir()
  with pytest.raises(FileNotFoundError) as error:
    datasets.load(dataset, config, data_dir=tmp_path / "tfds", manual_dir=manual)
  message = str(error.value)
  where = str(manual) if manual is not None else str(tmp_path / "tfds")  # tfds' default folder
  assert where in message and dataset in message and config in message
  assert "Download" in message and "layout" in message  # what to get, and where to put it
  assert not list((tmp_path / "tfds").glob(f"{dataset}/{config}*/*/dataset_info.json"))


@pytest.mark.parametrize("dataset", DATASETS)
def test_unknown_config(tmp_path, dataset):
  with pytest.raises(ValueError, match=r"Unknown config 'nope'; available: \[.*'phantom'|"
                     r"Unknown config 'nope'; available: \[.*'preprocessed'"):
    datasets.load(dataset, "nope", data_dir=tmp_path)


def test_failed_builds_leave_the_earlier_build_untouched(tmp_path, earlier_build):
  data_dir = earlier_build[0]
  with pytest.raises(FileNotFoundError, match="does not exist or is empty"):
    datasets.load("male_pelvic_mr", "zenodo", data_dir=data_dir, manual_dir=tmp_path / "nowhere")
  with pytest.raises(ValueError, match=r"Too few cases .* got 2, need at least 7"):
    datasets.load("male_pelvic_mr", "phantom", data_dir=data_dir, **{**TINY_PHANTOM,
                  "num_cases": 2})
  with pytest.raises(ValueError, match="Unknown config"):
    datasets.load("male_pelvic_mr", "zenodo-v2", data_dir=data_dir)
  with pytest.raises(ValueError, match="target_spacing must be finite and positive"):
    datasets.load("male_pelvic_mr", "phantom", data_dir=data_dir, **{**TINY_PHANTOM,
                  "target_spacing": (2.0, 0.0, 3.0)})
  _assert_intact(earlier_build)


def test_too_few_cases_for_the_split():
  with pytest.raises(ValueError, match=r"got 6, need at least 7"):
    preprocess.split_cases([f"c{i}" for i in range(6)])
  with pytest.raises(ValueError, match=r"got 1, need at least 2"):
    preprocess.split_cases(["only"], fractions=(0.5, 0.5, 0.0))
  assert [len(v) for v in preprocess.split_cases(["a", "b"], fractions=(0.5, 0.5, 0.0)).values()
          ] == [1, 1, 0]
  with pytest.raises(ValueError, match="at least one volume"):
    next(pipeline.patch_batches([], batch_size=2, patch_shape=(4, 4), foreground_prob=0.5,
                                seed=0, epoch=0))


# ------------------------------------------------------------------------------------------------
# A release with one bad case file (male_pelvic_mr, Zenodo layout).
# ------------------------------------------------------------------------------------------------

_UIDS = [f"001{k:03d}" for k in range(7)]
_BAD = "001003"
_GRID = (12, 12, 4)


def _write_case(data, uid, *, kind="ok"):
  """Writes ``{uid}_img.nii[.gz]`` and ``{uid}_mask.nii`` (spacing 0.75 x 0.75 x 3 mm)."""
  for old in data.glob(f"{uid}_*"):
    old.unlink()
  rng = np.random.default_rng(int(uid))
  label = np.zeros(_GRID, np.uint8)
  label[3:8, 4:9, 1:3] = 1 + int(uid) % 8
  image = (200.0 + 40.0 * label + rng.normal(0, 5, _GRID)).astype(np.float32)
  affine = np.diag([0.75, 0.75, 3.0, 1.0])
  if kind == "shape_mismatch":
    label = label[:, :, :3]
  if kind == "label_out_of_range":
    label[0, 0, 0] = 9
  if kind == "nan_voxel":
    image[5, 5, 2] = np.nan
  if kind == "inf_voxel":
    image[5, 5, 2] = np.inf
  image_path = data / f"{uid}_img.nii{'.gz' if kind == 'truncated_gzip' else ''}"
  nib.save(nib.Nifti1Image(image, affine), str(image_path))
  nib.save(nib.Nifti1Image(label, affine), str(data / f"{uid}_mask.nii"))
  if kind == "truncated_gzip":
    raw = image_path.read_bytes()
    image_path.write_bytes(raw[: len(raw) // 2])
  elif kind == "empty_file":
    image_path.write_bytes(b"")
  elif kind == "zero_spacing":  # pixdim[1] (x spacing) is the float32 at byte 76 + 4.
    with open(image_path, "r+b") as f:
      f.seek(80)
      f.write(struct.pack("<f", 0.0))


def _write_release(root, bad_kind):
  data = root / "data"
  data.mkdir(parents=True)
  for uid in _UIDS:
    _write_case(data, uid, kind=bad_kind if uid == _BAD else "ok")
  (root / "institution.txt").write_text("".join(f"{uid} UCL\n" for uid in _UIDS))
  return data


_BAD_FILES = {
    "truncated_gzip": r"001003_img\.nii\.gz \(unreadable, truncated or corrupt\)",
    "empty_file": r"001003_img\.nii \(unreadable, truncated or corrupt\)",
    "zero_spacing": (r"001003_img\.nii: voxel spacing must be finite and positive, "
                     r"got \(0\.0, 0\.75, 3\.0\)"),
    "shape_mismatch": r"case 001003: mask .*001003_mask\.nii has shape \(12, 12, 3\) but image",
    "label_out_of_range": r"case 001003 \(.*001003_mask\.nii\): label values outside 0\.\.8: 9",
    "nan_voxel": r"case 001003: image has 1 non-finite voxel",
    "inf_voxel": r"case 001003: image has 1 non-finite voxel",
}


@pytest.mark.parametrize("kind", sorted(_BAD_FILES))
def test_bad_case_file_fails_the_build_and_the_fixed_release_builds(tmp_path, earlier_build,
                                                                    kind):
  data_dir = earlier_build[0]
  root = tmp_path / "release"
  data = _write_release(root, kind)
  for _ in range(2):  # nothing half-built is loaded the second time: the same error again
    with pytest.raises(ValueError, match=f"(?s){_BAD_FILES[kind]}"):
      datasets.load("male_pelvic_mr", "zenodo", data_dir=data_dir, manual_dir=root)
  assert not list(data_dir.glob("male_pelvic_mr/zenodo/*/dataset_info.json"))
  _assert_intact(earlier_build)

  _write_case(data, _BAD)  # fixed
  splits = datasets.load("male_pelvic_mr", "zenodo", data_dir=data_dir, manual_dir=root)
  assert sorted(e["case_id"] for v in splits.values() for e in v) == _UIDS
  _assert_intact(earlier_build)


# ------------------------------------------------------------------------------------------------
# The same defects given to every builder's preprocess_case.
# ------------------------------------------------------------------------------------------------

_AFFINE = np.diag([1.0, 1.0, 3.0, 1.0])


def _preprocess(dataset, image, label, spacing):
  module = importlib.import_module(f"datasets.{dataset}.{dataset}")
  kw = dict(case_id="case-7")
  if dataset == "male_pelvic_mr":
    return module.preprocess_case(image, label, spacing, _AFFINE, institution="x",
                                  target_spacing=(1.0, 1.0, 3.0), **kw)
  if dataset == "promise12":
    return module.preprocess_case(image, label, spacing, _AFFINE, **kw)
  if dataset == "prostatex_gland":
    return module.preprocess_case(image, label, spacing, _AFFINE, target_spacing=None, **kw)
  if dataset == "micro_us":
    return module.preprocess_case(image, label, label, spacing, _AFFINE, image_size=8, **kw)
  lesions = (label > 0).astype(np.uint8) if label.shape == image.shape else label
  return module.preprocess_case(image, image, image, label, lesions, spacing, _AFFINE,
                                patient_label=0, target_spacing=None, crop_shape=None, **kw)


def _good_case():
  rng = np.random.default_rng(0)
  image = rng.normal(100.0, 10.0, (8, 8, 4)).astype(np.float32)
  label = np.zeros((8, 8, 4), np.uint8)
  label[2:6, 2:6, 1:3] = 1
  return image, label


_DEFECTS = {
    "shape_mismatch": r"case case-7: .*shape \(8, 8, 3\) differs from .*shape \(8, 8, 4\)",
    "label_out_of_range": r"case case-7.*label values outside 0\.\.\d: 9",
    "nan_voxel": r"case case-7: .*non-finite",
    "inf_voxel": r"case case-7: .*non-finite",
    "zero_spacing": r"case case-7: spacing must be .*finite .*positive",
    "negative_spacing": r"case case-7: spacing must be .*finite .*positive",
}
# Builders whose masks are documented as binarised (values > 0 are the structure).
_BINARISED = {"prostatex_gland", "micro_us"}


@pytest.mark.parametrize("defect", sorted(_DEFECTS))
@pytest.mark.parametrize("dataset", DATASETS)
def test_preprocess_case_rejects_defects(dataset, defect):
  image, label = _good_case()
  spacing = (1.0, 1.0, 3.0)
  example = _preprocess(dataset, image, label, spacing)  # the good case passes
  assert np.all(np.isfinite(example["image"]))
  if defect == "shape_mismatch":
    label = label[:, :, :3]
  elif defect == "label_out_of_range":
    label = label.copy()
    label[0, 0, 0] = 9
  elif defect in ("nan_voxel", "inf_voxel"):
    image = image.copy()
    image[1, 2, 3] = np.nan if defect == "nan_voxel" else -np.inf
  else:
    spacing = (0.0, 1.0, 3.0) if defect == "zero_spacing" else (1.0, -1.0, 3.0)
  if defect == "label_out_of_range" and dataset in _BINARISED:
    example = _preprocess(dataset, image, label, spacing)  # documented: mask > 0
    stored = example["label"] if "label" in example else example["expert"]
    assert set(np.unique(stored)) <= {0, 1}
    return
  with pytest.raises(ValueError, match=_DEFECTS[defect]):
    _preprocess(dataset, image, label, spacing)


# ------------------------------------------------------------------------------------------------
# Library functions: shapes, label ranges, non-finite values, spacing.
# ------------------------------------------------------------------------------------------------

_M = np.zeros((6, 6, 3), bool)
_M[1:4, 2:5, 1] = True


@pytest.mark.parametrize("call,match", [
    (lambda: pipeline.Volume(image=np.zeros((6, 6, 3), np.float32),
                             label=np.zeros((6, 6, 2), np.uint8), spacing=(1, 1, 1),
                             case_id="c9"), r"case c9: image \(6, 6, 3\) and label \(6, 6, 2\)"),
    (lambda: preprocess.resample_case(np.zeros((6, 6, 3)), np.zeros((6, 6, 2), np.uint8),
                                      (1, 1, 1), np.eye(4), (1, 1, 1)), "label shape"),
    (lambda: preprocess.validate_label(np.zeros((6, 6, 2)), 3, name="m.nii", shape=(6, 6, 3)),
     r"m\.nii: label shape \(6, 6, 2\) differs from image shape \(6, 6, 3\)"),
    (lambda: overlap.confusion_matrix(np.zeros((4, 4)), np.zeros((4, 5)), num_classes=2),
     "differ in shape"),
    (lambda: surface.hausdorff_distance(_M, _M[:, :, :2], spacing=(1, 1, 1)), "shape"),
    (lambda: losses.softmax_cross_entropy(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 5), int)),
     "labels must have the logits' shape without the class axis"),
    (lambda: losses.soft_dice_loss(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 5), int)),
     "labels must have shape"),
    (lambda: losses.boundary_loss(jnp.zeros((2, 4, 4, 3)), jnp.zeros((2, 4, 4, 1))), "shape"),
])
def test_shape_mismatch_is_an_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_labels_outside_the_class_set():
  with pytest.raises(ValueError, match=r"mask\.nii: label values outside 0\.\.2: -1, 3, 7\."):
    preprocess.validate_label(np.array([[0, 3], [7, -1]]), 3, name="mask.nii")
  many = np.arange(3, 20)
  with pytest.raises(ValueError, match=r"outside 0\.\.2: 3, 4, .*, 12 \.\.\.\."):
    preprocess.validate_label(many, 3)
  with pytest.raises(ValueError, match="not integers"):
    preprocess.validate_label(np.array([0.0, 1.5]), 3)
  # Documented values: metrics do not count out-of-range voxels ...
  cm = np.asarray(overlap.confusion_matrix(np.array([0, 1, 1, 5]), np.array([0, 1, 7, 1]),
                                           num_classes=2))
  np.testing.assert_array_equal(cm, [[1, 0], [0, 1]])
  # ... losses refuse them when the labels are concrete ...
  logits = jnp.asarray(np.random.default_rng(0).normal(size=(1, 2, 2, 3)), jnp.float32)
  bad = jnp.array([[[0, 1], [2, 9]]])
  with pytest.raises(ValueError, match=r"\[0, 3\).*: 9"):
    losses.soft_dice_loss(logits, bad)
  with pytest.raises(ValueError, match=r"\[0, 3\).*: 9"):
    losses.softmax_cross_entropy(logits, bad)
  # ... and under jit (no check possible) give their documented values: an all-zero target row
  # for region losses (a false positive, nothing else), NaN for cross-entropy, which the
  # training loop reports with the step.
  outside = jax.jit(functools.partial(losses.soft_dice_loss, reduction="none"))(logits, bad)
  zero_row = jax.nn.one_hot(jnp.array([[[0, 1], [2, 0]]]), 3).at[0, 1, 1].set(0.0)
  np.testing.assert_allclose(outside, losses.soft_dice_loss(logits, zero_row, reduction="none"),
                             rtol=1e-6)
  assert np.isnan(np.asarray(jax.jit(losses.softmax_cross_entropy)(logits, bad))).all()


@pytest.mark.parametrize("call,match", [
    (lambda: preprocess.normalize_intensity(np.array([1.0, np.nan, np.inf, 2.0])),
     r"image has 2 non-finite \(NaN or Inf\) voxel\(s\) of 4"),
    (lambda: calibration.negative_log_likelihood(np.array([[np.nan, 1.0]]), np.array([1])),
     "NaN or infinite"),
    (lambda: calibration.binary_expected_calibration_error(np.array([0.2, np.inf]),
                                                           np.array([0, 1])), "NaN or infinite"),
    (lambda: detection.extract_lesion_candidates(np.array([[0.5, np.nan]])), "NaN or infinite"),
    (lambda: detection.auroc([0.1, np.nan], [0, 1]), "finite"),
    (lambda: stats.bootstrap_ci(np.array([1.0, np.inf])), "infinite"),
    (lambda: preprocess.validate_label(np.array([0.0, np.nan]), 2), "NaN or Inf"),
])
def test_non_finite_values_are_an_error(call, match):
  with pytest.raises(ValueError, match=match):
    call()


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, -2.0, 1.0), (1.0, 1.0, np.nan),
                                     (np.inf, 1.0, 1.0)])
@pytest.mark.parametrize("call,match", [
    (lambda s: preprocess.resample(np.zeros((4, 4, 4)), s, (1, 1, 1), order=1),
     "spacing must be finite and positive"),
    (lambda s: preprocess.resample(np.zeros((4, 4, 4)), (1, 1, 1), s, order=0),
     "target_spacing must be finite and positive"),
    (lambda s: preprocess.resampled_shape((4, 4, 4), s, (1, 1, 1)), "spacing must be finite"),
    (lambda s: preprocess.resample_affine(np.eye(4), (1, 1, 1), s), "target_spacing must be"),
    (lambda s: preprocess.validate_spacing(s, name="case x: spacing"),
     "case x: spacing must be finite and positive"),
    (lambda s: surface.hausdorff_distance(_M, _M, spacing=s),
     "spacing must be finite and positive"),
    (lambda s: surface.hd95_per_case([_M, _M], [_M, _M], spacing=[(1, 1, 1), s]),
     "case 1: spacing must be finite and positive"),
    (lambda s: distance.signed_distance_map(_M, spacing=s), "spacing must be finite and positive"),
    (lambda s: distance.signed_distance_maps(_M.astype(np.uint8), 2, spacing=s),
     "spacing must be finite and positive"),
])
def test_bad_spacing_is_an_error(call, match, spacing):
  with pytest.raises(ValueError, match=match):
    call(spacing)


# ------------------------------------------------------------------------------------------------
# Empty masks in metrics: the documented values, counted.
# ------------------------------------------------------------------------------------------------


def test_empty_masks_give_the_documented_values():
  empty = np.zeros((6, 6, 3), np.int32)
  one = _M.astype(np.int32)
  # Dice: both empty -> NaN (or 1 with empty="one"); one of them empty -> 0.
  np.testing.assert_array_equal(overlap.dice_per_class(empty, empty, num_classes=2), [1.0, np.nan])
  np.testing.assert_array_equal(
      overlap.dice_per_class(empty, empty, num_classes=2, empty="one"), [1.0, 1.0])
  assert float(overlap.dice_per_class(empty, one, num_classes=2)[1]) == 0.0
  assert float(overlap.dice_per_class(one, empty, num_classes=2)[1]) == 0.0
  assert np.isnan(float(overlap.precision_from_confusion(
      overlap.confusion_matrix(empty, one, num_classes=2))[1]))
  mean, undefined = overlap.nan_mean_with_count(np.array([np.nan, 1.0, 0.5]))
  assert float(mean) == 0.75 and int(undefined) == 1
  # Surface distances: undefined (NaN) when either mask is empty, and counted per case.
  for a, b in ((empty, one), (one, empty), (empty, empty)):
    assert np.isnan(surface.hausdorff_distance(a, b, spacing=(1, 1, 3)))
    assert np.isnan(surface.average_surface_distance(a, b, spacing=(1, 1, 3)))
  result = surface.hd95_per_case([empty, one, one], [one, one, empty], spacing=(1, 1, 3))
  assert result.n_undefined == 2 and result.n_defined == 1 and result.mean_defined() == 0.0
  # Distance maps of an absent class are all zero (no boundary, no signal).
  assert not np.any(distance.signed_distance_map(empty.astype(bool), spacing=(1, 1, 3)))
  # Lesion detection without any lesion: sensitivity-based values and AUROC are NaN.
  zero_maps = [np.zeros((6, 6, 3)), np.zeros((6, 6, 3))]
  result = detection.evaluate_cases(zero_maps, [empty, empty])
  assert result["num_lesions"] == 0 and result["num_fp"] == 0
  for key in ("max_sensitivity", "average_precision", "auroc"):
    assert np.isnan(result[key]), key
  # Bootstrap over cases that are all undefined: NaN, with the count.
  estimate = stats.bootstrap_ci(np.array([np.nan, np.nan]), seed=0)
  assert np.isnan(estimate.value) and estimate.n == 0 and estimate.n_undefined == 2
  with pytest.raises(ValueError, match="empty"):
    calibration.negative_log_likelihood(np.zeros((0, 2)), np.zeros((0,), int))


# ------------------------------------------------------------------------------------------------
# A non-finite loss during training.
# ------------------------------------------------------------------------------------------------


class _PixelClassifier(nn.Module):
  """A 1x1 convolution to 3 classes: the loop's failure handling does not depend on the model."""

  @nn.compact
  def __call__(self, x, *, train=False):
    del train
    return nn.Conv(3, (1, 1), kernel_init=nn.initializers.zeros)(x)


def _volumes():
  rng = np.random.default_rng(0)
  out = []
  for i in range(2):
    label = np.zeros((8, 8, 4), np.uint8)
    label[2:5, 1:6] = 1
    label[5:7, 3:8] = 2
    image = (label + rng.normal(size=label.shape) * 0.5).astype(np.float32)
    out.append(pipeline.Volume(image=image, label=label, spacing=(1.0, 1.0, 3.0),
                               case_id=f"c{i}"))
  return out


@pytest.fixture(scope="module")
def tiny_training():
  """``(trainer, state_fn, batches_fn)``: 2 steps per epoch of a 1x1-conv pixel classifier."""
  model = _PixelClassifier()
  tx = optax.sgd(0.5)
  volumes = _volumes()
  trainer = Trainer(model, tx, lambda logits, batch, _: losses.softmax_cross_entropy(
      logits, batch["label"]))

  def state_fn():
    params = {"Conv_0": {"kernel": jnp.zeros((1, 1, 1, 3)), "bias": jnp.zeros((3,))}}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats={},
                       opt_state=tx.init(params))
    return pipeline.replicate(state, trainer.mesh)

  def batches_fn(poison=None):
    def batches(epoch):
      for i, batch in enumerate(pipeline.patch_batches(
          volumes, batch_size=4, patch_shape=(8, 8), foreground_prob=0.5, seed=0, epoch=epoch,
          samples_per_epoch=8)):
        if poison is not None and (epoch, i) == (1, 1):  # step 4 = 2nd step of epoch 2
          batch["image"][2, 3, 3, 0] = poison
        yield batch
    return batches

  return trainer, state_fn, batches_fn


def _fit(tiny, epochs, *, poison=None, workdir=None, resume=False):
  trainer, state_fn, batches_fn = tiny
  return trainer.fit(state_fn(), batches=batches_fn(poison), evaluate=lambda s: {"dice": 0.5},
                     config=TrainConfig(num_epochs=epochs, progress=False, name="tiny"),
                     workdir=workdir, resume=resume, log=lambda _: None)


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_training, poison):
  after_one = _fit(tiny_training, 1)
  uninterrupted = _fit(tiny_training, 2)
  with pytest.raises(NonFiniteLossError,
                     match=r"\[tiny\] non-finite loss at step 4 \(epoch 2\); the last good "
                     r"checkpoint is .*checkpoints/latest"):
    _fit(tiny_training, 2, poison=poison, workdir=tmp_path)

  latest = Checkpointer(tmp_path / "checkpoints" / "latest")
  assert latest.latest_epoch() == 0
  restored, meta = latest.restore(jax.device_get(after_one.state))
  assert meta["epoch"] == 0 and int(restored.step) == 2
  for a, b in zip(jax.tree.leaves(restored.params), jax.tree.leaves(after_one.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert np.all(np.isfinite(np.asarray(a)))
  latest.close()
  assert Checkpointer(tmp_path / "checkpoints" / "best").latest_epoch() == 0
  with open(tmp_path / "metrics.jsonl") as f:
    assert [json.loads(line)["epoch"] for line in f] == [0]

  resumed = _fit(tiny_training, 2, workdir=tmp_path, resume=True)  # the data fixed
  assert [h["epoch"] for h in resumed.history] == [0, 1]
  for a, b in zip(jax.tree.leaves(resumed.state.params),
                  jax.tree.leaves(uninterrupted.state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
