"""A tiny end-to-end run of ``python -m experiments.adaptive_focal`` and its losses."""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from experiments import adaptive_focal
from jaxseg.losses import ag_bce_loss, deep_supervision_loss, hard_region_mask
from jaxseg.train.checkpoint import load_model

PROMISE12_NIFTI = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
                   / "promise12_nifti" / "Case00.nii.gz")
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
  assert "of sweep (unroll) training" in table  # the program that produced the table, on CPU
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
  # jaxseg.predict segments a real T2W NIfTI volume (PROMISE12 case 00) with the exported
  # TransUNet, and its dropout gives Monte-Carlo samples: mean, variance and entropy maps on the
  # input's grid.
  if PROMISE12_NIFTI.exists():
    import nibabel as nib
    from jaxseg import predict
    seg_path = tmp_path / "seg.nii.gz"
    assert predict.main(["--checkpoint", str(out / "models" / "AG-BCE"), "--input",
                         str(PROMISE12_NIFTI), "--output", str(seg_path), "--mc-samples",
                         "2"]) == 0
    source = nib.load(PROMISE12_NIFTI)
    seg = nib.load(seg_path)
    assert seg.shape == source.shape and np.allclose(seg.affine, source.affine)
    mean = np.asarray(nib.load(tmp_path / "seg_mean.nii.gz").dataobj)
    variance = np.asarray(nib.load(tmp_path / "seg_variance.nii.gz").dataobj)
    entropy = np.asarray(nib.load(tmp_path / "seg_entropy.nii.gz").dataobj)
    assert mean.shape == variance.shape == entropy.shape == source.shape
    np.testing.assert_array_equal(np.asarray(seg.dataobj), (mean > 0.5).astype(np.uint8))
    assert variance.max() > 0 and variance.min() >= 0  # two dropout samples differ somewhere
    assert np.all((entropy >= 0) & (entropy <= np.log(2) + 1e-6))


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
