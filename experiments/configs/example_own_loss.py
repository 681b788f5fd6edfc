"""Compare your own loss: a log-cosh Dice loss against BCE and soft Dice on the gland phantom.

Run it with::

  python -m experiments.compare --config experiments/configs/example_own_loss.py

Everything a comparison needs is in this file: the data (the prostate-gland phantom), the model
(a narrow 2D U-Net with one sigmoid output), the training protocol, and the losses. A loss is a
few lines of JAX: ``fn(outputs, batch, **params) -> (batch,)`` per-example values, where
``outputs`` are the model's logits and ``batch["label"]`` the integer mask. Every loss trains
from the same initialisation on the same batches; each keeps its epoch with the best validation
Dice; the table reports test Dice, precision and recall with bootstrap CIs and the paired
difference from the first loss (the baseline). Results: ``results/compare/example_own_loss/``.

``--data nnunet --manual-dir DIR`` runs the same comparison on your own binary dataset in
nnU-Net's raw layout (``datasets/nnunet``; e.g. PROMISE12 converted by
``benchmarks/promise12_to_nnunet.py``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from experiments.runner import LossConfig, Study, base_config, registered_loss
from experiments.tversky import Tversky


def log_cosh_dice(logits, batch, *, smooth):
  """Jadon (2020): log(cosh(1 - Dice)) of the soft foreground Dice, per example."""
  p = jax.nn.sigmoid(logits[..., 0])
  y = batch["label"].astype(p.dtype)
  axes = tuple(range(1, p.ndim))
  dice = (2 * jnp.sum(p * y, axes) + smooth) / (jnp.sum(p, axes) + jnp.sum(y, axes) + smooth)
  return jnp.log(jnp.cosh(1.0 - dice))


class BinaryComparison(Tversky):
  """The Tversky study's binary metrics (Dice, precision, recall, F1) for this file's losses."""

  name = "example_own_loss"
  title = "BCE vs soft Dice vs log-cosh Dice on the gland phantom (test split)"
  def check(self, cfg) -> None:  # no alphas to check
    pass

  configurations = Study.configurations


STUDY = BinaryComparison()


def get_config(preset: str = "cpu"):
  c = base_config()
  c.name = "example_own_loss"
  c.workdir = "results/compare/example_own_loss"
  # Library losses by name (`jaxseg.losses.names()`; docs/losses.md), yours as a function.
  c.losses = [LossConfig("BCE", registered_loss("binary_cross_entropy")),
              LossConfig("soft Dice", registered_loss("dice", activation="sigmoid")),
              LossConfig("log-cosh Dice", log_cosh_dice, {"smooth": 1.0})]
  c.model.update(name="UNet2D", preset="tversky", activation="sigmoid",
                 class_names=("background", "prostate"))
  c.model.overrides.width = 0.0625
  c.data.sources = {"phantom": {"builder": "prostatex_gland", "config": "phantom",
                                "channels": ("T2W",),
                                "settings": {"num_cases": 40, "phantom_shape": (96, 96, 16),
                                             "phantom_spacing": (2.0, 2.0, 3.0)}},
                     # Your own binary dataset in nnU-Net's raw layout (--manual-dir DIR);
                     # channel and class names come from its dataset.json.
                     "nnunet": {"builder": "nnunet", "config": "raw",
                                "settings": {"split_fractions": (0.8, 0.1, 0.1),
                                             "clip_percentiles": (0.5, 99.5)}}}
  c.train.update(mode="sequential", epochs=6 if preset == "cpu" else 50, batch_size=8,
                 patch=(64, 64), learning_rate=1e-3, foreground_prob=0.5, samples_per_epoch=256,
                 flip_prob=0.5)
  c.eval.batch_size = 16
  return c
