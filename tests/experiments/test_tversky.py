"""A tiny end-to-end run of ``python -m experiments.tversky`` through the runner, and its losses."""

import json

import jax.numpy as jnp
import numpy as np

from experiments import tversky
from jaxseg.losses import sigmoid_binary_cross_entropy, tversky_loss
from jaxseg.train.checkpoint import load_model

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
  assert model.config.num_classes == 1 and model.config.batch_norm
  assert (out / "runs" / "main" / "BCE" / "tensorboard").is_dir()  # sequential: one run per loss
  # jaxseg.predict segments a NIfTI volume with the exported model.
  import nibabel as nib
  from jaxseg import predict
  image = np.random.default_rng(0).normal(size=(40, 36, 5)).astype(np.float32)
  nib.save(nib.Nifti1Image(image, np.diag([4.0, 4.0, 6.0, 1.0])), tmp_path / "case.nii.gz")
  assert predict.main(["--checkpoint", str(out / "models" / "BCE"), "--input",
                       str(tmp_path / "case.nii.gz"), "--output", str(tmp_path / "seg.nii.gz")]) == 0
  assert nib.load(tmp_path / "seg.nii.gz").shape == (40, 36, 5)


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
