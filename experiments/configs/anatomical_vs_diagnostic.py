"""Config of ``python -m experiments.anatomical_vs_diagnostic`` (seed 001, Saha et al.).

``cpu``: minutes on 2 CPU cores: ``ProbUNet3DConfig.cpu`` at half width (filters 4, 8, 16;
convolutions as patch matrices) with dropout 0.2 / 0.1 (the paper's 0.5 / 0.25 starves so small a
model), 40 phantom patients rendered at 2 x 2 x 4 mm on a 32 x 32 x 12 grid, patches of
24 x 24 x 8, batch 2, 12 epochs of 32 steps, a larger learning rate than the study's for so few
steps, 2 folds (a quarter of each fold's training patients for validation), 4 MC samples.
``paper``: ``ProbUNet3DConfig.paper``, 160 x 160 x 20 crops at 0.5 x 0.5 x 3 mm, patches of
128 x 128 x 20, batch 2, Adam (AMSGrad) with cosine decay 1e-4 -> 1e-7 over 100 epochs, 5-fold CV,
100 MC samples, beta = 10.
"""

from __future__ import annotations

from experiments.runner import base_config

HELP = {"tasks": "tasks to run: anatomical (zones from T2W) and/or diagnostic (csPCa, bpMRI)",
        "beta": "weight of the KL term per output voxel in the ELBO"}
ALIASES = {"--tasks": "tasks", "--beta": "beta",
           "--mc-samples": "eval.mc_samples", "--eval-batch": "eval.batch_size",
           "--patch": "train.patch", "--learning-rate": "train.learning_rate",
           "--samples-per-epoch": "train.samples_per_epoch",
           "--num-cases": "data.settings.num_cases", "--crop": "data.settings.crop_shape"}


def get_config(preset: str = "cpu"):
  c = base_config()
  c.name = "anatomical_vs_diagnostic"
  c.tasks = ("anatomical", "diagnostic")
  c.beta = 10.0
  c.model.name = "ProbAttentionUNet3D"
  c.model.preset = preset
  c.model.activation = "softmax"
  c.train.update(optimizer="amsgrad", schedule="cosine", batch_size=2, foreground_prob=0.5,
                 flip_prob=0.5, jitter=(0.1, 0.1, 0.05), select_metric="soft_dice",
                 mode="sweep")
  c.split.stratify = "patient_label"
  bpmri = ("T2W", "DWI", "ADC")
  norm = ({"kind": "percentile_zscore", "lower": 0.5, "upper": 99.5},) * 2 + (
      {"kind": "scale", "divisor": 3000.0},)
  c.data.sources = {
      name: {"builder": "prostatex_bpmri", "config": name, "channels": bpmri,
             "normalization": norm, "settings": {}}
      for name in ("phantom", "prostatex", "picai")}
  if preset == "cpu":
    grid = {"target_spacing": (2.0, 2.0, 4.0), "crop_shape": (32, 32, 12)}
    c.model.overrides = {"filters": (4, 8, 16), "dropout_rate": 0.2, "final_dropout_rate": 0.1}
    # train.sweep_impl auto gives vmap: the patch-matrix model has no convolutions, so its
    # epochs are no faster unrolled and its 4 copies compiled 2.6x longer (BENCHMARKS.md,
    # "Sweep vs one after another", stop 31)
    c.train.update(patch=(24, 24, 8), epochs=12, samples_per_epoch=64, learning_rate=1e-2,
                   final_learning_rate=1e-5)
    c.split.update(folds=2, validation_fraction=0.25)
    c.eval.update(mc_samples=4, batch_size=4)
    # A phantom should be easier than real ProstateX (paper: patient AUROC 0.76-0.78).
    c.eval.levels = {"hard_dice_WG": 0.85, "AUROC": 0.80}
    c.data.sources.phantom.settings = {"num_cases": 40, "phantom_shape": (32, 32, 12),
                                       "phantom_spacing": (2.0, 2.0, 4.0), **grid}
    c.data.sources.prostatex.settings = dict(grid)
    c.data.sources.picai.settings = dict(grid)
  else:
    c.train.update(patch=(128, 128, 20), epochs=100, samples_per_epoch=None,
                   learning_rate=1e-4, final_learning_rate=1e-7)
    c.split.update(folds=5, validation_fraction=0.2)
    c.eval.update(mc_samples=100, batch_size=2)
  return c
