"""A tiny end-to-end run of ``python -m experiments.tversky`` and its metric helpers."""

import json

import numpy as np

from experiments import tversky
from jaxseg.train.checkpoint import load_model

TINY = ["--num-cases", "8", "--phantom-shape", "48", "48", "8", "--spacing", "4", "4", "6",
        "--width", "0.0625", "--epochs", "2", "--samples-per-epoch", "16", "--batch-size", "8",
        "--patch", "32", "32", "--alphas", "0.25", "0.75", "--no-progress"]


def test_tiny_sweep_writes_every_output(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  result = tversky.main(TINY + ["--workdir", str(out)])
  assert result["names"] == ["BCE", "Tversky α=0.25", "Tversky α=0.75"]
  for name in ("table.md", "results.json", "training_curves.png", "contours.png",
               "precision_recall_vs_alpha.png", "dice_f1_vs_alpha.png"):
    assert (out / name).stat().st_size > 0, name
  table = (out / "table.md").read_text()
  assert table.count("| Tversky α=") == 2 and "| BCE |" in table
  saved = json.loads((out / "results.json").read_text())
  assert len(saved["history"]["BCE"]) == 2
  # The BCE and Tversky configurations really trained differently inside the one program.
  assert saved["history"]["BCE"][-1]["train_loss"] != saved["history"]["Tversky α=0.25"][-1][
      "train_loss"]
  for entry in saved["test"].values():
    assert 0.0 <= entry["dice"]["value"] <= 1.0
  model, _, metadata = load_model(out / "models" / "Tversky_alpha0.75")
  assert metadata["activation"] == "sigmoid" and metadata["alpha"] == 0.75
  assert model.config.num_classes == 1 and model.config.batch_norm


def test_case_metrics_and_f1():
  # Case 1: TP 3, FP 1, FN 2; case 2: empty truth and prediction.
  cms = np.array([[[10, 1], [2, 3]], [[16, 0], [0, 0]]])
  m = tversky.case_metrics(cms)
  np.testing.assert_allclose(m["dice"][0], 6 / 9)
  np.testing.assert_allclose(m["precision"][0], 3 / 4)
  np.testing.assert_allclose(m["recall"][0], 3 / 5)
  assert np.isnan(m["dice"][1]) and np.isnan(m["precision"][1])
  np.testing.assert_allclose(tversky.f1_of_means(np.array([0.5, 1.0]), np.array([1.0, 0.5])),
                             2 * 0.75 * 0.75 / 1.5)


def test_loss_selects_bce_or_tversky():
  import jax.numpy as jnp
  from jaxseg.losses import sigmoid_binary_cross_entropy, tversky_loss
  rng = np.random.default_rng(0)
  logits = jnp.asarray(rng.normal(size=(2, 8, 8, 1)), jnp.float32)
  labels = jnp.asarray(rng.random((2, 8, 8)) > 0.7, jnp.int32)
  batch = {"label": labels}
  bce = tversky.loss_fn(logits, batch, {"bce": 1.0, "alpha": 0.3, "beta": 0.7})
  tv = tversky.loss_fn(logits, batch, {"bce": 0.0, "alpha": 0.3, "beta": 0.7})
  np.testing.assert_allclose(bce, sigmoid_binary_cross_entropy(logits, labels.astype(jnp.float32)),
                             rtol=1e-6)
  np.testing.assert_allclose(tv, tversky_loss(logits, labels.astype(jnp.float32), alpha=0.3,
                                              beta=0.7), rtol=1e-6)
