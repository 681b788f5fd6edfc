"""Config of ``python -m experiments.tversky`` (seed 002): BCE vs Tversky on the prostate gland.

``cpu``: minutes on 2 CPU cores (a 1/8-width U-Net on whole 96x96 slices of 40 phantom cases,
16 epochs of 512 slices, 80% of them drawn on the gland, cosine schedule; sized by measurement,
BENCHMARKS.md "CPU presets that learn their task"). With ``--data promise12`` the ``cpu`` preset
is the real-MRI one (``sources.promise12.preset``): a 1/8-width U-Net on whole 128x128 T2
slices, 36 epochs of every slice of the 25 training cases with 80% of the samples drawn on the
gland, cosine schedule, flips, rotations, zooms of 0.7-1.4 and intensity jitter, a moving
average of the weights (decay 0.995) for validation and export, and the test metrics reported
raw, after keeping the largest connected component and with test-time mirroring (BENCHMARKS.md,
"Time to quality on real MRI", says what each setting bought).
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
      # 25 / 3 / 7 cases by case, fixed by the builder's split seed (the builder's own default
      # is 28 / 4 / 3; seven test cases give the comparison a usable CI).
      "promise12": {"builder": "promise12", "config": "preprocessed", "channels": ("T2W",),
                    "layout": "zyx", "settings": {"split_fractions": (0.72, 0.08, 0.2)}},
      "prostatex": {"builder": "prostatex_gland", "config": "prostatex", "channels": ("T2W",),
                    "settings": {"target_spacing": (1.0, 1.0, 3.0)}},
  }
  if preset == "cpu":
    c.model.overrides.width = 0.125
    # One configuration after another: on a CPU the vmapped sweep of this U-Net runs at 0.56x
    # (BENCHMARKS.md, sweep); the protocol (initialisation, batches, selection) is the same.
    c.train.update(mode="sequential", epochs=16, batch_size=8, patch=(96, 96), learning_rate=1e-3,
                   schedule="cosine", foreground_prob=0.8, samples_per_epoch=512, flip_prob=0.5)
    c.eval.batch_size = 16
    # The paper's BCE reaches Dice 0.856 on ProstateX: below 0.85 a comparison shows little.
    c.eval.levels = {"dice": 0.85}
    # Real 128x128 T2 slices (PROMISE12): sized by measurement (BENCHMARKS.md, "time to quality
    # on real MRI"); the phantom numbers above do not transfer to real anatomy.
    c.data.sources.promise12.preset = {
        "model": {"overrides": {"width": 0.125}},
        "train": {"patch": (128, 128), "epochs": 36, "samples_per_epoch": None,
                  "foreground_prob": 0.8, "schedule": "cosine", "learning_rate": 1e-3,
                  "max_degrees": 15.0, "scale": (0.7, 1.4), "jitter": (0.1, 0.1, 0.0),
                  # Validation, selection and export on a moving average of the weights: on 3
                  # validation cases the raw weights' Dice swings by up to 0.3 between epochs.
                  "ema_decay": 0.995,
                  # Checkpoints every 6 epochs (and at the last): the same results, ~13 s less
                  # per configuration (BENCHMARKS.md, "Checkpoints"); a killed run resumes
                  # with at most 6 epochs to redo.
                  "checkpoint_every": 6},
        # Test metrics also with test-time mirroring (the left-right flip training used), the
        # same models: +0.009 to +0.014 Dice in four cross-validations (BENCHMARKS.md).
        "eval": {"largest_component": True, "tta": True, "levels": {"dice_tta": 0.85}},
        # --folds 5: 7 held-out cases per fold, and of the other 28, 25 train / 3 validation
        # (as the builder's split).
        "split": {"validation_fraction": 0.1}}
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
