"""Config of ``python -m experiments.adaptive_focal`` (seed 003): MicroSegNet's loss comparison.

``cpu``: minutes on 2 CPU cores (a tiny TransUNet at 64 x 64, 24 phantom patients of 8 slices).
``paper``: MicroSegNet's settings (224 x 224, R50-ViT-B/16 sizes, batch 8, 10 epochs, SGD 0.01
with momentum 0.9, weight decay 1e-4, poly decay 0.9).
"""

from __future__ import annotations

from experiments.runner import base_config

HELP = {"image_size": "input size of the model and of the resampled slices",
        "hard_weight": "weight of the hard regions in AG-BCE"}
ALIASES = {"--image-size": "image_size", "--hard-weight": "hard_weight",
           "--num-cases": "data.settings.num_cases", "--num-slices": "data.settings.num_slices",
           "--learning-rate": "train.learning_rate",
           "--samples-per-epoch": "train.samples_per_epoch"}


def get_config(preset: str = "cpu"):
  c = base_config()
  c.name = "adaptive_focal"
  c.hard_weight = 4.0
  c.model.name = "TransUNet"
  c.model.activation = "sigmoid"
  c.model.class_names = ("background", "prostate")
  c.train.update(optimizer="sgd", momentum=0.9, weight_decay=1e-4, schedule="poly", power=0.9,
                 final_learning_rate=0.0, learning_rate=0.01, foreground_prob=0.0, batch_size=8)
  c.data.sources = {
      "phantom": {"builder": "micro_us", "config": "phantom", "channels": ("micro-US",),
                  "settings": {}},
      "microsegnet": {"builder": "micro_us", "config": "microsegnet", "channels": ("micro-US",),
                      "settings": {}},
  }
  if preset == "cpu":
    c.image_size = 64
    c.model.preset = "cpu"
    c.train.update(epochs=30, samples_per_epoch=256, mode="sweep")
    c.data.sources.phantom.settings = {"num_cases": 24, "num_slices": 8}
    c.eval.batch_size = 8
    c.eval.levels = {"dice": 0.84}  # the level this preset has reached on its phantom
  else:
    c.image_size = 224
    c.model.preset = "paper"
    c.train.update(epochs=10, samples_per_epoch=None)
    c.eval.batch_size = 16
  return c
