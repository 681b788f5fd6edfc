"""A tiny end-to-end run of ``python -m experiments.anatomical_vs_diagnostic`` and its helpers."""

import json
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from experiments import anatomical_vs_diagnostic as avd
from jaxseg.data.preprocess import make_folds, split_validation
from jaxseg.data.distance import signed_distance_maps
from jaxseg.losses import (dice_boundary_loss, downsample_labels, softmax_cross_entropy,
                           softmax_focal_loss)
from jaxseg.metrics import calibration, detection, overlap

REAL_EXAMS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "prostatex_sample"
              / "converted_nifti")
TINY = ["--num-cases", "8", "--crop", "16", "16", "8", "--patch", "16", "16", "4", "--epochs",
        "2", "--samples-per-epoch", "4", "--batch-size", "4", "--folds", "2", "--mc-samples", "2",
        "--eval-batch", "4", "--tasks", "diagnostic", "--no-progress"]


@pytest.mark.slow
def test_tiny_run_writes_every_output(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  results = avd.main(TINY + ["--workdir", str(out)])
  task_dir = out / "diagnostic"
  for name in ("table.md", "results.json", "froc.png", "histograms.png", "reliability.png",
               "overlays.png", "training_curves.png"):
    assert (task_dir / name).stat().st_size > 0, name
  saved = json.loads((task_dir / "results.json").read_text())
  assert saved["names"] == ["CE", "balanced CE", "focal", "Dice+boundary"]
  # Folds: every patient held out exactly once, validation disjoint from training and test.
  held_out = [c for f in saved["folds"] for c in f["test"]]
  assert sorted(held_out) == sorted(saved["test_cases"]) and len(held_out) == 8
  for f in saved["folds"]:
    assert not set(f["train"]) & set(f["validation"]) and not set(f["validation"]) & set(f["test"])
  # Each loss's selected epoch is the argmax of its validation soft Dice.
  for name in saved["names"]:
    for history, best in zip(saved["histories"][name], saved["best_epochs"][name]):
      soft = [h["val_soft_dice"] for h in history]
      assert best == int(np.argmax(soft))
  table = (out / "table.md").read_text()
  assert "best validation soft_dice" in table and "last epoch" not in table
  for loss in saved["names"]:
    assert f"| {loss} |" in table
  assert "(n=8" in table  # every cell says how many patients are behind it
  # Per fold: mean / median / min over each fold's 4 held-out patients, per loss.
  task_table = (task_dir / "table.md").read_text()
  assert "Per fold" in task_table
  assert "of sweep (vmap) training" in task_table  # auto: a model without convolutions
  for loss in saved["names"]:
    assert f"| {loss} | 0 | 4 |" in task_table and f"| {loss} | 1 | 4 |" in task_table
  # The exported models are what jaxseg.predict reads (model card validated on load).
  from jaxseg.train.checkpoint import load_model
  model, _, card = load_model(task_dir / "models" / "CE" / "fold0")
  assert card.channels == ("T2W", "DWI", "ADC") and card.inference == "volume"
  assert card.normalization[2]["kind"] == "scale"
  assert results["diagnostic"]["names"][0] == "CE"
  # ... and jaxseg.predict segments a 3-channel NIfTI volume with it, on the input's grid.
  import nibabel as nib
  from jaxseg import predict
  image = np.random.default_rng(0).normal(size=(16, 16, 8, 3)).astype(np.float32)
  affine = np.diag([2.0, 2.0, 4.0, 1.0])
  nib.save(nib.Nifti1Image(image, affine), tmp_path / "exam.nii.gz")
  assert predict.main(["--checkpoint", str(task_dir / "models" / "CE" / "fold0"), "--input",
                       str(tmp_path / "exam.nii.gz"), "--output", str(tmp_path / "seg.nii.gz")]) == 0
  seg = nib.load(tmp_path / "seg.nii.gz")
  assert seg.shape == (16, 16, 8) and np.allclose(seg.affine, affine)
  assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
  # A real ProstateX exam, one file per channel: T2W 384 x 384 x 19 at 0.5 x 0.5 x 3 mm, DWI
  # (high b) and ADC 84 x 128 x 19 at 2 x 2 x 3 mm, resampled onto the T2W grid through their
  # affines; the 3D model predicts it in sliding windows of its 16 x 16 x 4 training patch, as an
  # ensemble of the two fold models, with MC samples. The label map has the T2W's shape and affine.
  assert card.window == (16, 16, 4)
  exam = sorted(REAL_EXAMS.glob("*ProstateX-0000_t2w.nii.gz")) if REAL_EXAMS.is_dir() else []
  if exam:
    stem = str(exam[0])[:-len("t2w.nii.gz")]
    out_path = tmp_path / "exam_seg.nii.gz"
    assert predict.main(["--checkpoint", str(task_dir / "models" / "CE"),
                         "--input", stem + "t2w.nii.gz", "--input", stem + "hbv.nii.gz",
                         "--input", stem + "adc.nii.gz", "--output", str(out_path),
                         "--mc-samples", "2"]) == 0
    t2w = nib.load(stem + "t2w.nii.gz")
    seg = nib.load(out_path)
    assert seg.shape == t2w.shape == (384, 384, 19) and np.allclose(seg.affine, t2w.affine)
    mean = np.asarray(nib.load(tmp_path / "exam_seg_mean.nii.gz").dataobj)
    assert mean.shape == (384, 384, 19, 2)
    np.testing.assert_allclose(mean.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(seg.dataobj), np.argmax(mean, -1))


class LossSelectorTest(chex.TestCase):
  """The one-hot selector picks exactly the library loss, deep supervision and KL included."""

  def _case(self, task, with_heads):
    rng = np.random.default_rng(0)
    c = task.num_classes
    label = np.zeros((2, 8, 8, 4), np.int32)
    label[:, 2:6, 2:6, 1:3] = 1
    if c == 3:
      label[:, 3:5, 3:5, 1:3] = 2
    label[1, :2, :, :] = 0
    sdm = np.stack([signed_distance_maps(l, c, spacing=(1.0, 1.0, 2.0)) for l in label])
    logits = jnp.asarray(rng.normal(size=(2, 8, 8, 4, c)), jnp.float32)
    heads = ((jnp.asarray(rng.normal(size=(2, 4, 4, 4, c)), jnp.float32),) if with_heads else ())
    kl = jnp.asarray([0.5, 2.0], jnp.float32)
    outputs = {"logits": logits, "deep_supervision": heads, "kl": kl}
    return outputs, {"label": jnp.asarray(label), "sdm": jnp.asarray(sdm)}

  def _library(self, task, index, logits, label, sdm):
    alpha = jnp.asarray(task.alpha)
    if index == 0:
      return softmax_cross_entropy(logits, label)
    if index == 1:
      return softmax_cross_entropy(logits, label, class_weights=alpha)
    if index == 2:
      return softmax_focal_loss(logits, label, alpha=alpha, gamma=2.0)
    return dice_boundary_loss(logits, label, sdm, w_region=1.0, w_boundary=1.0,
                              smooth_nr=0.0, smooth_dr=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.product(task=tuple(avd.TASKS), index=(0, 1, 2, 3), with_heads=(False, True))
  def test_selector_matches_library_loss(self, task, index, with_heads):
    spec = avd.TASKS[task]
    outputs, batch = self._case(spec, with_heads)
    beta = 10.0
    loss_fn = avd.losses(spec, beta)[index].fn
    got = self.variant(loss_fn)(outputs, batch)
    want = self._library(spec, index, outputs["logits"], batch["label"], batch["sdm"])
    if with_heads:
      # nnU-Net weights 2/3, 1/3; labels max-pooled, distance maps min-pooled by (2, 2, 1).
      coarse_label = downsample_labels(batch["label"], (2, 2, 1))
      coarse_sdm = -downsample_labels(-batch["sdm"], (2, 2, 1), spatial_dims=3)
      coarse = self._library(spec, index, outputs["deep_supervision"][0], coarse_label,
                             coarse_sdm)
      want = 2.0 / 3.0 * want + 1.0 / 3.0 * coarse
    want = want + beta * outputs["kl"] / (8 * 8 * 4)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6)

  def test_dice_boundary_branch_uses_the_distance_maps(self):
    spec = avd.TASKS["anatomical"]
    outputs, batch = self._case(spec, with_heads=False)
    outputs["kl"] = jnp.zeros(2)
    fns = [c.fn for c in avd.losses(spec, 10.0)]
    base = fns[3](outputs, batch)
    shifted = fns[3](outputs, {**batch, "sdm": batch["sdm"] + 1.0})
    # The boundary term is mean_i sum_c p_ic phi_ic: adding 1 to phi adds mean_i (p_i1 + p_i2).
    probs = jax.nn.softmax(outputs["logits"], -1)
    np.testing.assert_allclose(shifted - base, probs[..., 1:].sum(-1).mean((1, 2, 3)), rtol=1e-4)
    # Only the Dice+boundary configuration sees the maps.
    for fn in fns[:3]:
      np.testing.assert_allclose(fn(outputs, batch), fn(outputs, {**batch, "sdm": batch["sdm"] + 1.0}))

  def test_balanced_weights_follow_the_class_order(self):
    # Anatomical: background, TZ, PZ = 0.05, 0.30, 0.65; diagnostic: background 0.75, csPCa 0.25.
    self.assertEqual(avd.TASKS["anatomical"].class_names, ("background", "TZ", "PZ"))
    self.assertEqual(avd.TASKS["anatomical"].alpha, (0.05, 0.30, 0.65))
    self.assertEqual(avd.TASKS["diagnostic"].alpha, (0.75, 0.25))
    self.assertEqual(avd.TASKS["anatomical"].channels, (0,))
    self.assertEqual(avd.TASKS["diagnostic"].channels, (0, 1, 2))


def test_make_folds_is_a_stratified_partition():
  labels = np.array([0] * 7 + [1] * 5)
  folds = make_folds(labels, 3, seed=0)
  assert sorted(np.concatenate(folds).tolist()) == list(range(12))
  assert sorted(len(f) for f in folds) == [4, 4, 4]
  for f in folds:
    assert 1 <= labels[f].sum() <= 2  # 5 positives over 3 folds: 1 or 2 each
  again = make_folds(labels, 3, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(folds, again))
  with pytest.raises(ValueError):
    make_folds(labels, 1, seed=0)
  with pytest.raises(ValueError):
    make_folds(labels, 13, seed=0)
  with pytest.raises(ValueError):
    make_folds([], 2, seed=0)


def test_split_validation_is_stratified_and_disjoint():
  labels = np.array([0, 1] * 8)
  rest = np.arange(2, 16)
  train, val = split_validation(rest, labels, 0.25, seed=0)
  assert sorted(np.concatenate([train, val]).tolist()) == rest.tolist()
  assert not set(train) & set(val)
  assert len(val) in (3, 4) and 1 <= labels[val].sum() <= 2
  with pytest.raises(ValueError, match="validation_fraction"):
    split_validation(rest, labels, 1.0, seed=0)


def test_min_lesion_voxels_keeps_the_picai_volume():
  assert avd.min_lesion_voxels((0.5, 0.5, 3.0)) == 10
  assert avd.min_lesion_voxels((1.0, 1.0, 3.0)) == 2
  assert avd.min_lesion_voxels((2.0, 2.0, 4.0)) == 0
