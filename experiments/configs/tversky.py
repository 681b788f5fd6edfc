"""Config of ``python -m experiments.tversky`` (seed 002): BCE vs Tversky on the prostate gland.

``cpu``: minutes on 2 CPU cores (a 1/16-width U-Net on 64x64 slices of 40 phantom cases).
``paper``: the published settings (full width, whole 384x384 slices, Adam 1e-4, batch 16, early
stopping with patience 3, rotations of +-35 degrees, flips 0.5 / 0.1).
"""

from __future__ import annotations

from experiments.runner import base_config

PAPER_ALPHAS = (0.25, 0.35, 0.45, 0.5, 0.65, 0.75, 0.85)

HELP = {
    "alphas": "Tversky alphas (weight of false positives; beta = 1 - alpha)",
    "bce": "train the BCE baseline (first row and baseline of the differences)",
    "smooth": "smoothing term of the Tversky index",
}
ALIASES = {"--alphas": "alphas", "--num-cases": "data.settings.num_cases",
           "--width": "model.overrides.width", "--patch": "train.patch",
           "--learning-rate": "train.learning_rate", "--patience": "train.patience",
           "--samples-per-epoch": "train.samples_per_epoch"}


def get_config(preset: str = "cpu"):
  c = base_config()
  c.name = "tversky"
  c.alphas = PAPER_ALPHAS
  c.bce = True
  c.smooth = 1.0
  c.model.name = "UNet2D"
  c.model.preset = "tversky"
  c.model.activation = "sigmoid"
  c.model.class_names = ("background", "prostate")
  c.data.sources = {
      "phantom": {"builder": "prostatex_gland", "config": "phantom", "channels": ("T2W",),
                  "settings": {"num_cases": 40, "phantom_shape": (96, 96, 16),
                               "phantom_spacing": (2.0, 2.0, 3.0)}},
      "promise12": {"builder": "promise12", "config": "preprocessed", "channels": ("T2W",),
                    "layout": "zyx", "settings": {}},
      "prostatex": {"builder": "prostatex_gland", "config": "prostatex", "channels": ("T2W",),
                    "settings": {"target_spacing": (1.0, 1.0, 3.0)}},
  }
  if preset == "cpu":
    c.model.overrides.width = 0.0625
    # One configuration after another: on a CPU the vmapped sweep of this U-Net runs at 0.51x
    # (BENCHMARKS.md, sweep); the protocol (initialisation, batches, selection) is the same.
    c.train.update(mode="sequential", epochs=8, batch_size=8, patch=(64, 64), learning_rate=1e-3,
                   foreground_prob=0.5, samples_per_epoch=256, flip_prob=0.5)
    c.eval.batch_size = 16
  else:
    c.model.overrides.width = 1.0
    c.train.update(mode="sweep", epochs=100, batch_size=16, patch=(384, 384), learning_rate=1e-4,
                   foreground_prob=0.0, samples_per_epoch=None, patience=3, max_degrees=35.0,
                   flip_prob=0.5, vertical_flip_prob=0.1)
    c.eval.batch_size = 16
    c.data.sources.phantom.settings = {"phantom_shape": (384, 384, 16),
                                       "phantom_spacing": (0.5, 0.5, 3.0)}
    c.data.sources.prostatex.settings = {}
  return c
