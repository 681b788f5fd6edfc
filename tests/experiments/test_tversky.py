"""A tiny end-to-end run of ``python -m experiments.tversky`` through the runner, and its losses."""

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from experiments import runner, tversky
from jaxseg.losses import sigmoid_binary_cross_entropy, tversky_loss
from jaxseg.train.checkpoint import load_model

PROMISE12_NIFTI = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
                   / "promise12_nifti" / "Case00.nii.gz")
TINY = ["--num-cases", "8", "--data.settings.phantom_shape", "48", "48", "8",
        "--data.settings.phantom_spacing", "4", "4", "6", "--width", "0.0625", "--epochs", "2",
        "--samples-per-epoch", "16", "--batch-size", "8", "--patch", "32", "32",
        "--alphas", "0.25", "0.75", "--no-progress"]


def test_tiny_run_writes_every_output(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  result = tversky.main(TINY + ["--workdir", str(out)])
  assert result["names"] == ["BCE", "Tversky α=0.25", "Tversky α=0.75"]
  for name in ("table.md", "results.json", "training_curves.png", "contours.png",
               "precision_recall_vs_alpha.png", "dice_vs_alpha.png"):
    assert (out / name).stat().st_size > 0, name
  table = (out / "table.md").read_text()
  assert table.count("| Tversky α=") == 4 and "| BCE |" in table  # rows + difference rows
  assert "Tversky α=0.75 − BCE" in table and "(n=1" in table
  saved = json.loads((out / "results.json").read_text())
  assert len(saved["histories"]["BCE"][0]) == 2
  # The BCE and Tversky configurations really trained differently (same initialisation).
  assert (saved["histories"]["BCE"][0][-1]["train_loss"]
          != saved["histories"]["Tversky α=0.25"][0][-1]["train_loss"])
  for name in saved["names"]:
    est = saved["estimates"][name]
    assert 0.0 <= est["dice"]["value"] <= 1.0 and est["dice"]["n"] + est["dice"]["n_undefined"] == 1
    # The per-case values behind the estimates are kept, (seeds, cases).
    assert np.asarray(saved["values"][name]["dice"]).shape == (1, 1)
  model, _, card = load_model(out / "models" / "Tversky_alpha0.75")
  assert card.activation == "sigmoid" and card.info["alpha"] == 0.75
  assert card.inference == "slices" and card.layout == "xyz" and card.channels == ("T2W",)
  assert card.flip_axes == (0,)  # trained with left-right flips only: what --tta flips mirrors
  assert model.config.num_classes == 1 and model.config.batch_norm
  assert (out / "runs" / "main" / "BCE" / "tensorboard").is_dir()  # sequential: one run per loss
  # jaxseg.predict segments a real T2W NIfTI volume (PROMISE12 case 00, 128 x 128 x 64 at
  # 1.09 x 1.09 x 1.62 mm) with the exported model, with and without test-time mirroring: the
  # labels come back on the input's grid with its affine.
  import nibabel as nib
  from jaxseg import predict
  case = PROMISE12_NIFTI if PROMISE12_NIFTI.exists() else tmp_path / "case.nii.gz"
  if not PROMISE12_NIFTI.exists():  # the shared data are absent: a random volume instead
    image = np.random.default_rng(0).normal(size=(40, 36, 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.diag([4.0, 4.0, 6.0, 1.0])), case)
  source = nib.load(case)
  for extra in ([], ["--tta", "flips"]):
    seg_path = tmp_path / f"seg{len(extra)}.nii.gz"
    assert predict.main(["--checkpoint", str(out / "models" / "BCE"), "--input", str(case),
                         "--output", str(seg_path), *extra]) == 0
    seg = nib.load(seg_path)
    assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
    assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}


def test_two_seeds_in_one_sweep(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  flags = [f for f in TINY]
  flags[flags.index("--epochs") + 1] = "1"
  result = tversky.main(flags + ["--alphas", "0.5", "--seeds", "2", "--train.mode", "sweep",
                                 "--workdir", str(out)])
  values = result["values"]["BCE"]["dice"]
  assert values.shape == (2, 1)
  # Two seeds, two initialisations: the runs differ.
  first = [h[0]["train_loss"] for h in result["histories"]["BCE"]]
  assert len(first) == 2 and first[0] != first[1]
  assert (out / "models" / "BCE" / "seed0").is_dir() and (out / "models" / "BCE" / "seed1").is_dir()
  assert "cases × seeds" in (out / "table.md").read_text()


def test_slice_context_trains_a_2_5d_model_that_predict_reads(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  flags = [f for f in TINY]
  flags[flags.index("--epochs") + 1] = "1"
  tversky.main(flags + ["--alphas", "none", "--model.slice_context", "1", "--workdir", str(out)])
  model, variables, card = load_model(out / "models" / "BCE")
  assert card.slice_context == 1 and card.model_channels == 3
  # The first convolution was built for 3 input channels (the slice and its two neighbours);
  # no other layer of this 1/16-width U-Net (4, 8, ... channels) has 3 or 1 input channels.
  from flax import traverse_util
  inputs = sorted(int(v.shape[2]) for k, v in traverse_util.flatten_dict(variables["params"]).items()
                  if k[-1] == "kernel" and v.ndim == 4)
  assert inputs.count(3) == 1 and 1 not in inputs, inputs
  import nibabel as nib
  from jaxseg import predict
  image = np.random.default_rng(0).normal(size=(40, 36, 5)).astype(np.float32)
  nib.save(nib.Nifti1Image(image, np.diag([4.0, 4.0, 6.0, 1.0])), tmp_path / "case.nii.gz")
  assert predict.main(["--checkpoint", str(out / "models" / "BCE"), "--input",
                       str(tmp_path / "case.nii.gz"), "--output", str(tmp_path / "seg.nii.gz")]) == 0
  assert nib.load(tmp_path / "seg.nii.gz").shape == (40, 36, 5)


PROMISE12 = Path(__file__).parents[2] / ".." / "shared" / "data" / "promise12"


def test_promise12_gets_the_real_mri_preset():
  cfg, _ = runner.parse(["--data", "promise12"], prog="t", config="experiments.configs.tversky",
                        description="")
  assert cfg.model.overrides.width == 0.125 and tuple(cfg.train.patch) == (128, 128)
  assert cfg.train.schedule == "cosine" and cfg.train.samples_per_epoch is None
  assert cfg.eval.largest_component and tuple(cfg.data.settings.get("split_fractions", ())) == ()
  assert cfg.eval.tta and cfg.train.flip_prob > 0  # test-time mirroring of the flip it trained
  assert tuple(cfg.data.sources.promise12.settings.split_fractions) == (0.72, 0.08, 0.2)
  # The phantom keeps its own preset; flags still win over the source's preset.
  phantom, _ = runner.parse([], prog="t", config="experiments.configs.tversky", description="")
  assert tuple(phantom.train.patch) == (96, 96) and not phantom.eval.largest_component
  cfg, _ = runner.parse(["--data", "promise12", "--width", "0.25", "--alphas", "none",
                         "--folds", "5"], prog="t", config="experiments.configs.tversky",
                        description="")
  assert cfg.model.overrides.width == 0.25 and tuple(cfg.alphas) == () and cfg.split.folds == 5


def test_promise12_real_cases_tiny_run_and_predict_in_their_layout(tmp_path, monkeypatch):
  """Four real PROMISE12 cases (2 train / 1 validation / 1 test), a few steps; the exported model
  segments the PROMISE12-layout arrays into arrays of the same shape and names."""
  if not PROMISE12.is_dir():
    pytest.skip(f"real PROMISE12 npy files not found at {PROMISE12}")
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  manual, images = tmp_path / "promise12", tmp_path / "images"
  manual.mkdir()
  images.mkdir()
  for k in range(4):
    for kind in ("image", "label"):
      os.symlink((PROMISE12 / f"{kind}_train{k:02d}.npy").resolve(),
                 manual / f"{kind}_train{k:02d}.npy")
    if k < 2:
      os.symlink((PROMISE12 / f"image_train{k:02d}.npy").resolve(),
                 images / f"image_train{k:02d}.npy")
  out = tmp_path / "results"
  result = tversky.main(["--data", "promise12", "--manual-dir", str(manual),
                         "--data.settings.split_fractions", "0.5", "0.25", "0.25",
                         "--alphas", "0.75", "--width", "0.0625", "--epochs", "1",
                         "--samples-per-epoch", "16", "--no-progress", "--workdir", str(out)])
  saved = json.loads((out / "results.json").read_text())
  assert [len(saved["folds"][0][k]) for k in ("train", "validation", "test")] == [2, 1, 1]
  assert result["names"] == ["BCE", "Tversky α=0.75"]
  # Raw, largest-component and mirrored (TTA) metrics, all per test case.
  assert {"dice", "precision", "recall", "dice_lcc", "recall_lcc",
          "dice_tta"} <= set(result["values"]["BCE"])
  assert result["values"]["BCE"]["dice_tta"].shape == (1, 1)
  table = (out / "table.md").read_text()
  assert "Dice (LCC)" in table and "largest connected component" in table
  assert "Dice (TTA)" in table
  assert "Data `promise12`: 2 training / 1 validation / 1 test cases" in table
  _, _, card = load_model(out / "models" / "BCE")
  assert card.layout == "zyx" and card.inference == "slices"
  from jaxseg import predict
  assert predict.main(["--checkpoint", str(out / "models" / "BCE"), "--input", str(images),
                       "--output", str(tmp_path / "segs")]) == 0
  assert sorted(os.listdir(tmp_path / "segs")) == ["image_train00.npy", "image_train01.npy"]
  for name in os.listdir(tmp_path / "segs"):
    seg = np.load(tmp_path / "segs" / name)
    assert seg.shape == np.load(images / name).shape == (32, 128, 128)
    assert seg.dtype == np.uint8 and set(np.unique(seg).tolist()) <= {0, 1}


def test_losses_are_bce_and_tversky():
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.random((2, 8, 8)) > 0.7, jnp.int32)
  batch = {"label": labels}
  np.testing.assert_allclose(tversky.bce(logits, batch),
                             sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)),
                             rtol=1e-6)
  np.testing.assert_allclose(tversky.make_tversky(1.0)(logits, batch, alpha=0.3, beta=0.7),
                             tversky_loss(logits, labels.astype(jnp.float32), alpha=0.3,
                                          beta=0.7, smooth=1.0), rtol=1e-6)
  np.testing.assert_allclose(tversky.f1_of_means(np.array([0.5, 1.0]), np.array([1.0, 0.5])),
                             2 * 0.75 * 0.75 / 1.5)


def test_folds_with_held_out_cases_report_the_fold_ensemble(tmp_path, monkeypatch):
  """--holdout sets cases aside from every fold; the fold models and their ensemble are tested
  on them, through the exported models and jaxseg.inference (sliding 2D windows, mirroring)."""
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  flags = [f for f in TINY]
  flags[flags.index("--epochs") + 1] = "1"
  flags[flags.index("--alphas") + 1:flags.index("--alphas") + 3] = ["none"]
  result = tversky.main(flags + ["--folds", "2", "--holdout", "0.25", "--window", "patch",
                                 "--tta", "true", "--workdir", str(out)])
  saved = json.loads((out / "results.json").read_text())
  held_out = saved["holdout"]["cases"]
  assert len(held_out) == 2
  for fold in saved["folds"]:
    assert not set(held_out) & set(fold["train"] + fold["validation"] + fold["test"])
  # The 8 cases: each either held out or tested in exactly one fold.
  assert len(set(held_out + saved["test_cases"])) == len(held_out + saved["test_cases"]) == 8
  rows = result["holdout"]["values"]["BCE"][0]
  assert list(rows) == ["fold 0", "fold 1", "ensemble of 2"]
  for values in rows.values():
    assert values.shape == (2,) and np.all((values >= 0) & (values <= 1) | np.isnan(values))
  table = (out / "table.md").read_text()
  assert "on 2 held-out cases that no fold trained, validated or tested on" in table
  assert "| BCE | ensemble of 2 |" in table and "| BCE | fold 1 |" in table
  # --tta true: the same models' test cases mirrored, as columns and as a paired effect.
  assert "| Dice (TTA) |" in table and "Effect of test-time mirroring" in table
  assert "| Dice (TTA) mean | Dice (TTA) median | Dice (TTA) min |" in table  # per fold too
  effect = result["tta_effect"]["BCE"]["dice"]
  tta, plain = result["values"]["BCE"]["dice_tta"], result["values"]["BCE"]["dice"]
  assert tta.shape == plain.shape == (1, 6)
  np.testing.assert_allclose(effect.value, np.nanmean(tta - plain), rtol=1e-9)
  _, _, card = load_model(out / "models" / "BCE" / "fold0")
  assert card.window == (32, 32)  # --window patch: 2D sliding windows of the training patch
