"""A tiny end-to-end run of ``python -m experiments.adaptive_focal`` and its losses."""

import json

import jax.numpy as jnp
import numpy as np

from experiments import adaptive_focal
from jaxseg.losses import ag_bce_loss, deep_supervision_loss, hard_region_mask
from jaxseg.train.checkpoint import load_model

TINY = ["--num-cases", "8", "--num-slices", "4", "--image-size", "32", "--epochs", "1",
        "--samples-per-epoch", "16", "--batch-size", "8", "--no-progress"]


def test_tiny_run_writes_every_output(tmp_path, monkeypatch):
  monkeypatch.setenv("JAXSEG_DATA_DIR", str(tmp_path / "tfds"))
  out = tmp_path / "results"
  result = adaptive_focal.main(TINY + ["--workdir", str(out)])
  for name in ("table.md", "results.json", "training_curves.png", "overlays.png"):
    assert (out / name).stat().st_size > 0, name
  saved = json.loads((out / "results.json").read_text())
  names = ["sigmoid focal", "AG-BCE", "adaptive focal"]
  assert saved["names"] == names
  table = (out / "table.md").read_text()
  assert "Dice in hard regions" in table and "HD95 mm, original*" in table
  losses = [saved["histories"][n][0][-1]["train_loss"] for n in names]
  assert len(set(losses)) == 3  # three different objectives really trained in the one program
  n_cases = len(saved["test_cases"])
  for n in names:
    dice = np.asarray(result["values"][n]["dice"])
    assert dice.shape == (1, n_cases) and np.all((dice >= 0) & (dice <= 1))
    hd = np.asarray(result["values"][n]["hd95"])
    assert np.all(hd[np.isfinite(hd)] >= 0)  # in mm, NaN only when undefined
    e = saved["estimates"][n]["hd95"]
    assert e["n"] + e["n_undefined"] == n_cases
  model, _, card = load_model(out / "models" / "AG-BCE")
  assert type(model).__name__ == "TransUNet" and card.inference == "slices"


def test_ag_bce_is_the_deep_supervision_sum():
  rng = np.random.default_rng(0)
  expert = jnp.asarray(rng.random((2, 16, 16)) > 0.6, jnp.float32)
  non_expert = jnp.asarray(rng.random((2, 16, 16)) > 0.6, jnp.float32)
  heads = [jnp.asarray(rng.normal(size=(2, s, s, 1)), jnp.float32) for s in (2, 4, 8, 16)]
  got = adaptive_focal.ag_bce(heads, {"label": expert, "non_expert": non_expert}, hard_weight=4.0)

  def ag_bce(logits, masks, *, kernel_size):
    hard = hard_region_mask(masks[0], masks[1], kernel_size=kernel_size)
    return ag_bce_loss(logits, masks[0], hard, hard_weight=4.0)

  want = deep_supervision_loss(heads[::-1], (expert, non_expert), ag_bce, weights=[1.0] * 4,
                               kernel_sizes=adaptive_focal.SCALE_KERNELS)
  np.testing.assert_allclose(got, want, rtol=1e-6)
