"""A tiny end-to-end run of ``python -m experiments.hierarchical`` (all stages, minutes -> seconds)."""

import csv
import json

import numpy as np

from experiments import hierarchical
from jaxseg.train.checkpoint import load_model

TINY = ["--num-cases", "8", "--phantom-shape", "48", "48", "12", "--spacing", "3", "3", "6",
        "--width", "0.0625", "--epochs", "2", "--search-epochs", "1", "--alphas", "1", "10",
        "--samples-per-epoch", "16", "--batch-size", "8", "--patch", "32", "32", "--no-progress"]


def test_tiny_run_writes_every_output_and_resumes(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  results = hierarchical.main(TINY + ["--workdir", str(out)])

  for name in ("table.md", "results.json", "penalty_matrix.csv", "hierarchical_confusion.png",
               "penalty_matrix.png", "overlay.png", "training_curves.png"):
    assert (out / name).stat().st_size > 0, name
  table = (out / "table.md").read_text()
  for row in ("bladder", "neurovascular_bundle", "prostate (TZ ∪ CG)", "mean foreground"):
    assert row in table
  assert "hierarchical (α = " in table

  saved = json.loads((out / "results.json").read_text())
  assert saved["alpha"] in (1.0, 10.0) and set(saved["alpha_search"]) == {"1", "10"}
  assert len(saved["test_cases"]) == 1
  dice = np.array(saved["test"]["flat"]["dice"], dtype=float)
  assert dice.shape == (1, 9)
  assert np.all((dice[~np.isnan(dice)] >= 0) & (dice[~np.isnan(dice)] <= 1))
  assert len(saved["history"]["flat"]) == 2
  # The chosen alpha's run continues its 1-epoch search run: 2 epochs, the first one shared.
  hier = saved["history"]["hierarchical"]
  assert len(hier) == 2
  search_log = out / "runs" / f"search_alpha{saved['alpha']:g}" / "metrics.jsonl"
  first = json.loads(search_log.read_text().splitlines()[0])
  assert hier[0]["train_loss"] == first["train_loss"]

  with open(out / "penalty_matrix.csv") as f:
    rows = list(csv.reader(f))
  penalty = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
  assert penalty.shape == (9, 9)
  np.testing.assert_allclose(penalty, penalty.T, atol=1e-4)
  assert penalty.max() == 1.0 and np.all(penalty[0] == 0) and penalty[4, 5] == 0

  model, variables, metadata = load_model(out / "models" / "hierarchical")
  assert metadata["activation"] == "softmax" and metadata["spacing"] == [3.0, 3.0, 6.0]
  assert model.config.num_classes == 9

  # Every run finished: resuming loads the checkpoints and reproduces the same test results.
  again = hierarchical.main(TINY + ["--workdir", str(out), "--resume"])
  assert again["alpha"] == results["alpha"]
  np.testing.assert_array_equal(np.asarray(again["test"]["hierarchical"]["confusion_matrix"]),
                                np.asarray(results["test"]["hierarchical"]["confusion_matrix"]))
