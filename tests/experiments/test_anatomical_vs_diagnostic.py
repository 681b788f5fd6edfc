"""A tiny end-to-end run of ``python -m experiments.anatomical_vs_diagnostic`` and its helpers."""

import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from experiments import anatomical_vs_diagnostic as avd
from jaxseg.data.distance import signed_distance_maps
from jaxseg.losses import (dice_boundary_loss, downsample_labels, softmax_cross_entropy,
                           softmax_focal_loss)
from jaxseg.metrics import calibration, detection, overlap

TINY = ["--num-cases", "8", "--crop", "16", "16", "8", "--patch", "16", "16", "4", "--epochs",
        "2", "--samples-per-epoch", "4", "--batch-size", "4", "--folds", "2", "--mc-samples", "2",
        "--eval-batch", "4", "--no-progress"]


@pytest.mark.slow
def test_tiny_run_writes_every_output(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  avd.main(TINY + ["--workdir", str(out)])
  names = ["table.md", "results.json", "froc.png"] + [
      f"{kind}_{task}.png" for task in avd.TASKS
      for kind in ("histograms", "reliability", "overlays")]
  for name in names:
    assert (out / name).stat().st_size > 0, name
  saved = json.loads((out / "results.json").read_text())
  assert saved["tasks"] == list(avd.TASKS) and saved["losses"] == list(avd.LOSSES)
  # Folds: disjoint, every patient held out exactly once.
  held_out = [c for fold in saved["folds"] for c in fold]
  assert sorted(held_out) == sorted(saved["case_ids"]) and len(saved["case_ids"]) == 8
  table = (out / "table.md").read_text()
  for task in avd.TASKS:
    for loss in avd.LOSSES:
      assert f"| {task} | {loss} |" in table, (task, loss)
  for task in avd.TASKS:
    results = saved["results"][task]
    # The four configurations really trained on different objectives.
    losses = [results[loss]["history"][0][-1]["train_loss"] for loss in avd.LOSSES]
    assert len(set(losses)) == 4, losses
    # Model selection on the validation patients: the soft Dice of every epoch is recorded and
    # the selected epoch is the one that maximises it, per loss and fold.
    for loss in avd.LOSSES:
      for history, best in zip(results[loss]["history"], results[loss]["best_epochs"]):
        soft = [h["val_soft_dice"] for h in history]
        assert all(0.0 <= v <= 1.0 for v in soft) and "val_hard_dice" in history[0]
        assert best == int(np.argmax(soft)), (loss, soft, best)
    for loss in avd.LOSSES:
      est = results[loss]["estimates"]
      assert est["NLL"]["value"] > 0
      assert 0.0 <= est["ECE"]["value"] <= 1.0
      for name, e in est.items():
        if name.endswith(("Dice WG", "Dice TZ", "Dice PZ", "Dice csPCa")) or name in (
            "AUROC", "max sensitivity", "AP"):
          if e["value"] is not None:
            assert 0.0 <= e["value"] <= 1.0, (task, loss, name, e)
            assert e["low"] <= e["value"] + 1e-9 and e["value"] <= e["high"] + 1e-9
      assert len(results[loss]["per_case"]["nll"]) == 8
  diag = saved["results"]["diagnostic"]["CE"]["estimates"]
  assert {"AUROC", "pAUC-FROC", "max sensitivity", "AP"} <= set(diag)
  if diag["pAUC-FROC"]["value"] is not None:
    assert 0.0 <= diag["pAUC-FROC"]["value"] <= 2.4
  model_dir = out / "models" / "anatomical" / "dice_boundary" / "fold0"
  assert model_dir.exists()


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
  @parameterized.product(task=avd.TASKS, index=(0, 1, 2, 3), with_heads=(False, True))
  def test_selector_matches_library_loss(self, task, index, with_heads):
    spec = avd.TASK_SPECS[task]
    outputs, batch = self._case(spec, with_heads)
    beta = 10.0
    loss_fn = avd.make_loss_fn(spec, beta=beta)
    select = jnp.eye(len(avd.LOSSES))[index]
    got = self.variant(loss_fn)(outputs, batch, {"select": select})
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
    spec = avd.TASK_SPECS["anatomical"]
    outputs, batch = self._case(spec, with_heads=False)
    outputs["kl"] = jnp.zeros(2)
    loss_fn = avd.make_loss_fn(spec, beta=10.0)
    select = {"select": jnp.eye(4)[3]}
    base = loss_fn(outputs, batch, select)
    shifted = loss_fn(outputs, {**batch, "sdm": batch["sdm"] + 1.0}, select)
    # The boundary term is mean_i sum_c p_ic phi_ic: adding 1 to phi adds mean_i (p_i1 + p_i2).
    probs = jax.nn.softmax(outputs["logits"], -1)
    np.testing.assert_allclose(shifted - base, probs[..., 1:].sum(-1).mean((1, 2, 3)), rtol=1e-4)
    # Only the Dice+boundary configuration sees the maps.
    for i in range(3):
      sel = {"select": jnp.eye(4)[i]}
      np.testing.assert_allclose(loss_fn(outputs, batch, sel),
                                 loss_fn(outputs, {**batch, "sdm": batch["sdm"] + 1.0}, sel))

  def test_balanced_weights_follow_the_class_order(self):
    # Anatomical: background, TZ, PZ = 0.05, 0.30, 0.65; diagnostic: background 0.75, csPCa 0.25.
    self.assertEqual(avd.TASK_SPECS["anatomical"].class_names, ("background", "TZ", "PZ"))
    self.assertEqual(avd.TASK_SPECS["anatomical"].alpha, (0.05, 0.30, 0.65))
    self.assertEqual(avd.TASK_SPECS["diagnostic"].alpha, (0.75, 0.25))
    self.assertEqual(avd.TASK_SPECS["anatomical"].channels, (0,))
    self.assertEqual(avd.TASK_SPECS["diagnostic"].channels, (0, 1, 2))


def test_make_folds_is_a_stratified_partition():
  labels = np.array([0] * 7 + [1] * 5)
  folds = avd.make_folds(labels, 3, seed=0)
  assert sorted(np.concatenate(folds).tolist()) == list(range(12))
  assert sorted(len(f) for f in folds) == [4, 4, 4]
  for f in folds:
    assert 1 <= labels[f].sum() <= 2  # 5 positives over 3 folds: 1 or 2 each
  again = avd.make_folds(labels, 3, seed=0)
  assert all(np.array_equal(a, b) for a, b in zip(folds, again))
  with pytest.raises(ValueError):
    avd.make_folds(labels, 1, seed=0)
  with pytest.raises(ValueError):
    avd.make_folds(labels, 13, seed=0)
  with pytest.raises(ValueError):
    avd.make_folds([], 2, seed=0)


def test_split_validation_is_stratified_and_disjoint():
  labels = np.array([0, 1] * 8)
  rest = np.arange(2, 16)
  train, val = avd.split_validation(rest, labels, 0.25, seed=0)
  assert sorted(np.concatenate([train, val]).tolist()) == rest.tolist()
  assert not set(train) & set(val)
  assert len(val) in (3, 4) and 1 <= labels[val].sum() <= 2
  with pytest.raises(ValueError, match="validation_fraction"):
    avd.split_validation(rest, labels, 1.0, seed=0)


def test_min_lesion_voxels_keeps_the_picai_volume():
  assert avd.min_lesion_voxels((0.5, 0.5, 3.0)) == 10
  assert avd.min_lesion_voxels((1.0, 1.0, 3.0)) == 2
  assert avd.min_lesion_voxels((2.0, 2.0, 4.0)) == 0
