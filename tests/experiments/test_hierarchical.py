"""A tiny end-to-end run of ``python -m experiments.hierarchical`` (all stages, minutes -> seconds)."""

import csv
import json

import numpy as np

from experiments import hierarchical
from jaxseg.train.checkpoint import load_model

TINY = ["--num-cases", "8", "--phantom-shape", "48", "48", "12",
        "--data.settings.phantom_spacing", "3", "3", "6",
        "--data.settings.target_spacing", "3", "3", "6", "--width", "0.0625", "--epochs", "2",
        "--search-epochs", "1", "--alphas", "1", "10", "--samples-per-epoch", "16",
        "--batch-size", "8", "--patch", "32", "32", "--no-progress"]


def test_tiny_run_writes_every_output_and_resumes(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  # The matrix built from the training labels (the phantom's own default is Table 1's).
  results = hierarchical.main(TINY + ["--penalty", "data", "--workdir", str(out)])

  for name in ("table.md", "results.json", "penalty_matrix.csv", "hierarchical_confusion.png",
               "penalty_matrix.png", "overlay.png", "training_curves.png"):
    assert (out / name).stat().st_size > 0, name
  table = (out / "table.md").read_text()
  for column in ("Dice BL", "Dice NVB", "Dice prostate (TZ ∪ CG)", "mean foreground Dice"):
    assert column in table
  assert "| metric | flat | hierarchical α=" in table
  assert "Penalty matrix: built from the centroids" in table
  saved = json.loads((out / "results.json").read_text())
  assert saved["alpha"] in (1.0, 10.0) and set(saved["alpha_search"]) == {"1", "10"}
  assert saved["names"] == ["flat", f"hierarchical α={saved['alpha']:g}"]
  assert len(saved["test_cases"]) == 1
  for name in saved["names"]:
    dice = np.asarray(results["values"][name]["mean_foreground_dice"])
    assert dice.shape == (1, 1) and 0 <= dice[0, 0] <= 1
    assert len(saved["histories"][name][0]) == 2
  with open(out / "penalty_matrix.csv") as f:
    rows = list(csv.reader(f))
  penalty = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
  assert penalty.shape == (9, 9)
  np.testing.assert_allclose(penalty, penalty.T, atol=1e-4)
  assert penalty.max() == 1.0 and np.all(penalty[0] == 0) and penalty[4, 5] == 0

  model, _, card = load_model(out / "models" / "flat")
  assert card.activation == "softmax" and card.spacing == (3.0, 3.0, 6.0)
  assert model.config.num_classes == 9 and len(card.class_names) == 9

  # Every run finished: resuming loads the checkpoints and reproduces the same test results.
  again = hierarchical.main(TINY + ["--penalty", "data", "--workdir", str(out), "--resume"])
  assert again["alpha"] == results["alpha"]
  for name in saved["names"]:
    np.testing.assert_array_equal(again["values"][name]["mean_foreground_dice"],
                                  results["values"][name]["mean_foreground_dice"])
