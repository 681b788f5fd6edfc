"""The one loss-comparison runner: every study, and a researcher's own comparison, is a config.

A *comparison* trains several loss configurations under one fair protocol and reports how they
differ on held-out cases:

1. **Data** through the dataset builders (``datasets/``): a phantom config by default, or a real
   release read from ``data.manual_dir``. Cases are split by the builder (train / validation /
   test), or into K folds by case (``split.folds``), each fold holding back a validation part of
   its training cases.
2. **Training.** Every configuration (loss x seed) starts from its seed's initialisation and sees
   the same batches in the same order. ``train.mode = "sweep"`` trains them as one compiled
   program (``Trainer(num_configs=K)``; ``train.sweep_impl``: the configurations vmapped, or one
   copy of the step each, the default on CPUs for models with convolutions, which vmap makes
   slow grouped ones);
   ``"sequential"`` trains them one after another with the same compiled step (identical
   protocol).
3. **Model selection** on validation cases only: each configuration keeps its epoch with the best
   validation metric (``Study.validate``).
4. **Export** of each selected model with its :class:`jaxseg.model_card.ModelCard`, so that
   ``python -m jaxseg.predict`` can use it.
5. **Prediction** of the test cases through :mod:`jaxseg.inference` (slice-wise 2D, 2.5D with
   ``model.slice_context`` neighbouring slices as channels, whole-volume 3D, or MC sampling).
6. **Evaluation** through the study's per-case metrics (NaN = undefined) and study-level
   statistics, then one summary: mean with a bootstrap 95% CI over cases and seeds
   (:func:`jaxseg.metrics.stats.bootstrap_ci_runs`), the number of values behind every cell and
   how many were undefined, and each loss's paired difference from the baseline (the first loss)
   with its bootstrap CI. With ``eval.largest_component`` every per-case metric is also reported
   after nnU-Net's largest-connected-component post-processing (columns "(LCC)"), and with
   ``eval.tta`` with test-time mirroring of the same models (columns "(TTA)"); with K folds a
   per-fold table gives the mean, median and minimum of the first metric, and with
   ``split.holdout_fraction`` each fold model and the fold ensemble are tested on cases outside
   every fold.
7. **Report**: ``results.json``, ``table.md``, ``training_curves.png`` and the study's figures.

A source in ``data.sources`` may carry a ``preset``: config changes (nested like the config) that
the source in effect (the config's default source, or ``--data <source>``) applies before the
command-line flags, for settings that belong to the data (the tversky study's real-MRI preset for
``promise12``, the hierarchical study's Table-1 penalty on its phantom).

A study module supplies a :class:`Study` (its losses, metrics, report and any study-specific step)
and a config file ``experiments/configs/<study>.py`` with ``get_config("cpu" | "paper")``.
:func:`main` is the command line of every study and of ``python -m experiments.compare``.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import os
import re
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

import datasets
from jaxseg import cli, inference, losses
from jaxseg.data import augment as augment_lib
from jaxseg.data.pipeline import FOREGROUND_SAMPLING, PatchLoader, Volume
from jaxseg.data.preprocess import make_folds, split_validation
from jaxseg.errors import ConfigError
from jaxseg.metrics import overlap, stats
from jaxseg.model_card import ModelCard
from jaxseg.report import figures, tables
from jaxseg.train.checkpoint import save_model
from jaxseg.train.loop import SWEEP_IMPLS, FitResult, TrainConfig, Trainer

PERCENTILE_ZSCORE = {"kind": "percentile_zscore", "lower": 0.5, "upper": 99.5}

# Meaning of the fields every comparison config has (``--help`` prints them with their values).
FIELD_HELP = {
    "name": "name of the comparison (results go to results/compare/<name> by default)",
    "workdir": "output directory",
    "seed": "seed of the initialisation, the data order and the bootstrap",
    "seeds": "training runs per loss, with seeds seed, seed+1, ... (CIs cover cases and seeds)",
    "resume": "continue interrupted runs from their latest checkpoints",
    "progress": "show progress bars",
    "data.source": "dataset: the synthetic phantom or a real release read from data.manual_dir",
    "data.manual_dir": "directory holding the real data in its published layout",
    "data.data_dir": "tfds data directory (default $JAXSEG_DATA_DIR or ~/.cache/jaxseg/tfds)",
    "model.name": "registered model (jaxseg.models.REGISTRY)",
    "model.preset": "classmethod of the model's config giving its architecture",
    "model.slice_context": "2.5D: neighbouring slices on each side given to a 2D model as extra "
                           "channels (0: plain 2D)",
    "train.mode": "sweep: all configurations as one compiled program; sequential: one after another",
    "train.sweep_impl": "a sweep's program: auto (on CPUs unroll for a model with convolutions, "
                        "vmap for one without; vmap elsewhere), vmap (the configurations as a "
                        "vmapped axis) or unroll (one copy of the step each)",
    "train.epochs": "number of training epochs (>= 1)",
    "train.batch_size": "global batch size (>= 1, a multiple of the device count)",
    "train.patch": "training patch (h, w) for 2D models or (h, w, d) for 3D models",
    "train.foreground_prob": "probability of centring a patch on a foreground voxel",
    "train.foreground_sampling": "voxel (any foreground voxel) or class (a present foreground "
                                 "class uniformly, then one of its voxels: nnU-Net)",
    "train.samples_per_epoch": "samples per epoch (None: every slice, or every case for 3D)",
    "train.workers": "Grain worker processes that sample and augment batches (0: in this process)",
    "train.optimizer": "adam, amsgrad or sgd",
    "train.learning_rate": "peak learning rate",
    "train.final_learning_rate": "learning rate at the end of a cosine schedule",
    "train.schedule": "constant, cosine or poly (power train.power), over all training steps",
    "train.power": "power of the poly schedule",
    "train.momentum": "SGD momentum",
    "train.weight_decay": "decoupled weight decay (0: none)",
    "train.patience": "early stopping after this many epochs without improvement (None: never)",
    "train.flip_prob": "probability of a left-right flip per sample",
    "train.vertical_flip_prob": "probability of an anterior-posterior flip per sample (2D only)",
    "train.max_degrees": "largest in-plane rotation in degrees (2D only)",
    "train.scale": "range (low, high) of the random zoom of a slice (2D only; 1 1: none)",
    "train.jitter": "intensity augmentation (scale std, shift std, noise std); zeros: none",
    "train.select_metric": "validation metric that selects each configuration's epoch",
    "train.ema_decay": "exponential moving average of the weights, evaluated, selected and "
                       "exported instead of the raw weights (decay per step; 0: none)",
    "train.checkpoint_every": "epochs between checkpoints (1: every epoch; the last epoch is "
                              "always saved, a resumed run redoes the epochs after the last one)",
    "split.folds": "K-fold cross-validation by case (0: the builder's train/validation/test split)",
    "split.validation_fraction": "share of each fold's training cases held back for validation",
    "split.stratify": "case feature the folds are stratified by (empty: none)",
    "split.holdout_fraction": "with K folds: share of the cases set aside from every fold; each "
                              "fold model and the fold ensemble (probabilities averaged) are "
                              "tested on them (0: none)",
    "eval.batch_size": "slices or volumes per inference call",
    "eval.threshold": "probability threshold of sigmoid models",
    "eval.mc_samples": "MC samples per test case for probabilistic models (0: deterministic)",
    "eval.window": "how a test volume meets the model: 'patch' (Gaussian-weighted sliding windows "
                   "of the training patch, nnU-Net's inference), 'whole' (the whole slice or "
                   "volume in one call) or 'auto' (patch for 3D models, whole for 2D ones)",
    "eval.overlap": "overlap of neighbouring sliding windows, in [0, 1)",
    "eval.tta": "also report every test metric with test-time mirroring (the probabilities "
                "averaged over every mirroring of the axes training flipped), for the same models",
    "eval.largest_component": "also report every test metric after keeping each class's largest "
                              "connected component (nnU-Net's post-processing)",
    "eval.num_resamples": "bootstrap resamples of every confidence interval",
}


def flip_axes(cfg: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The spatial axes training flips: 0 (x, left-right) with ``train.flip_prob > 0``, 1 (y,
  anterior-posterior) with ``train.vertical_flip_prob > 0`` (2D models)."""
  t = cfg.train
  return tuple(a for a, p in ((0, t.flip_prob), (1, t.get("vertical_flip_prob", 0.0))) if p > 0)


def base_config() -> ml_collections.ConfigDict:
  """The fields every comparison has, with neutral defaults; a study config fills them in."""
  c = ml_collections.ConfigDict()
  c.name = "comparison"
  c.workdir = ""
  c.seed = 0
  c.seeds = 1
  c.resume = False
  c.progress = True
  c.data = ml_collections.ConfigDict()
  c.data.source = "phantom"
  c.data.manual_dir = ""
  c.data.data_dir = ""
  # source -> {"builder": module under datasets/, "config": builder config name, "layout": npy
  # layout of the release ("xyz" or "zyx"), "channels": names, "settings": builder settings}
  c.data.sources = {}
  c.data.settings = ml_collections.ConfigDict()   # user overrides of the chosen source's settings
  c.data.label_key = "label"
  c.model = ml_collections.ConfigDict()
  c.model.name = "UNet2D"
  c.model.preset = ""
  c.model.overrides = ml_collections.ConfigDict()
  c.model.activation = "sigmoid"
  c.model.class_names = ("background", "foreground")
  c.model.slice_context = 0
  c.train = ml_collections.ConfigDict()
  c.train.mode = "sweep"
  c.train.sweep_impl = "auto"
  c.train.epochs = 10
  c.train.batch_size = 8
  c.train.patch = (64, 64)
  c.train.foreground_prob = 0.5
  c.train.foreground_sampling = "voxel"
  c.train.samples_per_epoch = ml_collections.config_dict.placeholder(int)
  c.train.workers = 0
  c.train.optimizer = "adam"
  c.train.learning_rate = 1e-3
  c.train.final_learning_rate = 0.0
  c.train.schedule = "constant"
  c.train.power = 0.9
  c.train.momentum = 0.9
  c.train.weight_decay = 0.0
  c.train.patience = ml_collections.config_dict.placeholder(int)
  c.train.flip_prob = 0.0
  c.train.vertical_flip_prob = 0.0
  c.train.max_degrees = 0.0
  c.train.scale = (1.0, 1.0)
  c.train.jitter = (0.0, 0.0, 0.0)
  c.train.select_metric = "dice"
  c.train.ema_decay = 0.0
  c.train.checkpoint_every = 1
  c.split = ml_collections.ConfigDict()
  c.split.folds = 0
  c.split.validation_fraction = 0.25
  c.split.stratify = ""
  c.split.holdout_fraction = 0.0
  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 8
  c.eval.threshold = 0.5
  c.eval.mc_samples = 0
  c.eval.window = "auto"
  c.eval.overlap = 0.5
  c.eval.tta = False
  c.eval.largest_component = False
  c.eval.num_resamples = 2000
  # The level each loss must reach on a metric or study statistic (higher is better) before the
  # comparison means something at this preset: ``{key: level}``, e.g. the paper's level;
  # table.md says which losses reached it.
  c.eval.levels = ml_collections.ConfigDict()
  return c


# ------------------------------------------------------------------------------------------------
# Configurations and the study interface.
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LossConfig:
  """One loss configuration of a comparison.

  Attributes:
    name: shown in tables (e.g. ``"Tversky α=0.75"``).
    fn: ``fn(outputs, batch, **params) -> (batch,)`` per-example losses, where ``outputs`` are the
      model's training outputs and ``batch`` holds ``image``, ``label`` and any dense extras.
    params: scalar hyperparameters passed to ``fn`` as arrays (so configurations that share
      ``fn`` differ only in data, and share one compiled step).
    info: anything else recorded with the configuration (e.g. ``{"alpha": 0.75}``).
  """

  name: str
  fn: Callable[..., jax.Array]
  params: Mapping[str, float] = dataclasses.field(default_factory=dict)
  info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def registered_loss(name: str, **hyperparameters: Any) -> Callable[..., jax.Array]:
  """A :class:`LossConfig` ``fn`` for a loss of the registry (``jaxseg.losses.get``).

  ``registered_loss("tversky", smooth=1.0)`` is ``fn(outputs, batch, **params)`` applying the
  registered loss to ``(outputs, batch["label"])``; ``params`` (e.g. a swept ``alpha``) are passed
  at call time. Unknown names or hyperparameters fail here, when the config is read.
  """
  loss = losses.get(name, **hyperparameters)

  def fn(outputs, batch, **params):
    return loss(outputs, batch["label"], **params)

  fn.__name__ = name
  return fn


@dataclasses.dataclass
class Predictions:
  """Test (or validation) predictions of one trained configuration, in case order.

  ``probs[i]`` is ``(x, y, z)`` foreground probabilities (sigmoid models) or ``(x, y, z, K)``
  class probabilities (softmax models); ``variances`` the MC variances when sampled.
  """

  probs: list[np.ndarray]
  variances: list[np.ndarray] | None = None


class Study:
  """What a study adds to the protocol. Subclass and override what differs.

  The defaults fit a binary sigmoid or multi-class softmax segmentation: validation by pooled
  foreground Dice, per-case Dice, no extra figures.
  """

  name = "comparison"
  title = "Loss comparison"
  #: ``(key, column label)`` of the per-case metrics (in table order).
  metrics: tuple[tuple[str, str], ...] = (("dice", "Dice"),)
  #: ``key -> value`` of a metric or study statistic that a model guessing at random reaches
  #: (AUROC: 0.5). A loss whose CI includes it is flagged in ``table.md`` as not informative.
  chance: Mapping[str, float] = {}

  def configurations(self, cmp: "Comparison") -> list[LossConfig]:
    losses = cmp.cfg.get("losses")
    if not losses:
      raise ConfigError(f"{cmp.cfg.name}: the config defines no losses (config.losses)")
    return [l if isinstance(l, LossConfig) else LossConfig(**l) for l in losses]

  def volumes(self, cmp: "Comparison", examples: Sequence[Mapping[str, Any]]) -> list[Volume]:
    key = cmp.cfg.data.label_key
    return [Volume.from_example({**e, "label": e[key]} if key != "label" else e)
            for e in examples]

  def model_inputs(self, cmp: "Comparison") -> Callable[[Mapping[str, Any]], tuple] | None:
    return None

  def labels(self, cmp: "Comparison", predictions: Predictions) -> list[np.ndarray]:
    """Hard label maps of the predictions (threshold or argmax)."""
    if cmp.cfg.model.activation == "sigmoid":
      return [(p > cmp.cfg.eval.threshold).astype(np.int32) for p in predictions.probs]
    return [np.argmax(p, -1).astype(np.int32) for p in predictions.probs]

  def validate(self, cmp: "Comparison", predictions: Predictions,
               volumes: Sequence[Volume]) -> dict[str, float]:
    """Validation metrics of one configuration: by default ``dice``, the pooled foreground Dice."""
    k = len(cmp.cfg.model.class_names)
    cm = sum(np.asarray(overlap.confusion_matrix(p, v.label, num_classes=k))
             for p, v in zip(self.labels(cmp, predictions), volumes))
    dice = np.asarray(overlap.dice_from_confusion(cm))[1:]
    return {"dice": float(np.nan_to_num(np.nanmean(dice)) if np.isfinite(dice).any() else 0.0)}

  def case_metrics(self, cmp: "Comparison", predictions: Predictions,
                   volumes: Sequence[Volume]) -> dict[str, np.ndarray]:
    """``key -> (cases,)`` per-case values (NaN = undefined) for every key of :attr:`metrics`."""
    k = len(cmp.cfg.model.class_names)
    cms = np.stack([np.asarray(overlap.confusion_matrix(p, v.label, num_classes=k))
                    for p, v in zip(self.labels(cmp, predictions), volumes)])
    dice = np.asarray(overlap.dice_from_confusion(cms))[:, 1:]
    with np.errstate(invalid="ignore"):
      return {"dice": np.where(np.isnan(dice).all(1), np.nan, np.nanmean(dice, 1))
              if k > 2 else dice[:, 0]}

  def study_statistics(self, cmp: "Comparison", predictions: Predictions,
                       volumes: Sequence[Volume], values: Mapping[str, np.ndarray]
                       ) -> dict[str, stats.Estimate]:
    """Statistics that are not means of per-case values (e.g. AUROC), with bootstrap CIs."""
    return {}

  def statistic_labels(self, cmp: "Comparison") -> tuple[tuple[str, str], ...]:
    """``(key, column label)`` of :meth:`study_statistics`."""
    return ()

  def report(self, cmp: "Comparison", result: dict[str, Any]) -> list[str]:
    """Writes the study's own figures and returns extra lines for ``table.md``."""
    return []


# ------------------------------------------------------------------------------------------------
# Validation of a config (before anything runs).
# ------------------------------------------------------------------------------------------------


def _check(ok: bool, field: str, value: Any, allowed: str) -> None:
  if not ok:
    raise ConfigError(f"{field} = {value!r} is not allowed: {allowed}")


def validate_config(cfg: ml_collections.ConfigDict) -> None:
  """Checks every generic field; raises :class:`ConfigError` naming field, value and what is allowed."""
  n_dev = jax.device_count()
  t = cfg.train
  _check(isinstance(t.epochs, int) and t.epochs >= 1, "train.epochs", t.epochs, "an integer >= 1")
  _check(isinstance(t.batch_size, int) and t.batch_size >= 1 and t.batch_size % n_dev == 0,
         "train.batch_size", t.batch_size, f"an integer >= 1 and a multiple of the {n_dev} devices")
  _check(isinstance(cfg.seeds, int) and cfg.seeds >= 1, "seeds", cfg.seeds, "an integer >= 1")
  _check(t.mode in ("sweep", "sequential"), "train.mode", t.mode, "'sweep' or 'sequential'")
  _check(t.get("sweep_impl", "auto") in ("auto", *SWEEP_IMPLS), "train.sweep_impl",
         t.get("sweep_impl"), "'auto', " + " or ".join(repr(i) for i in SWEEP_IMPLS))
  for name in ("foreground_prob", "flip_prob", "vertical_flip_prob"):
    v = t[name]
    _check(0.0 <= v <= 1.0, f"train.{name}", v, "a probability in [0, 1]")
  _check(0.0 < cfg.eval.threshold < 1.0, "eval.threshold", cfg.eval.threshold,
         "a probability in (0, 1)")
  _check(t.learning_rate > 0, "train.learning_rate", t.learning_rate, "a number > 0")
  _check(t.optimizer in ("adam", "amsgrad", "sgd"), "train.optimizer", t.optimizer,
         "'adam', 'amsgrad' or 'sgd'")
  _check(t.schedule in ("constant", "cosine", "poly"), "train.schedule", t.schedule,
         "'constant', 'cosine' or 'poly'")
  _check(len(t.patch) in (2, 3) and all(int(p) >= 1 for p in t.patch), "train.patch",
         tuple(t.patch), "2 (2D) or 3 (3D) positive sizes")
  context = cfg.model.get("slice_context", 0)
  _check(isinstance(context, int) and context >= 0 and (context == 0 or len(t.patch) == 2),
         "model.slice_context", context, "an integer >= 0, and 0 for 3D models")
  _check(t.samples_per_epoch is None or t.samples_per_epoch >= t.batch_size,
         "train.samples_per_epoch", t.samples_per_epoch, "None or >= train.batch_size")
  _check(isinstance(t.workers, int) and t.workers >= 0, "train.workers", t.workers,
         "an integer >= 0")
  _check(t.patience is None or t.patience >= 1, "train.patience", t.patience, "None or >= 1")
  _check(isinstance(t.checkpoint_every, int) and not isinstance(t.checkpoint_every, bool)
         and t.checkpoint_every >= 1, "train.checkpoint_every", t.checkpoint_every,
         "an integer >= 1 (1: every epoch)")
  _check(0.0 <= t.ema_decay < 1.0, "train.ema_decay", t.ema_decay,
         "a decay in [0, 1) (0: no parameter average; e.g. 0.99)")
  _check(len(t.jitter) == 3 and all(j >= 0 for j in t.jitter), "train.jitter", tuple(t.jitter),
         "three standard deviations >= 0")
  _check(t.foreground_sampling in FOREGROUND_SAMPLING, "train.foreground_sampling",
         t.foreground_sampling, " or ".join(FOREGROUND_SAMPLING))
  for key, level in cfg.eval.levels.items():
    _check(isinstance(level, (int, float)) and not isinstance(level, bool)
           and np.isfinite(level), f"eval.levels.{key}", level, "a finite number")
  _check(len(t.scale) == 2 and 0 < t.scale[0] <= t.scale[1], "train.scale", tuple(t.scale),
         "two zoom factors 0 < low <= high (1 1: no zoom)")
  _check(tuple(t.scale) == (1.0, 1.0) or len(t.patch) == 2, "train.scale", tuple(t.scale),
         "1 1 for 3D patches (zooms are 2D only)")
  _check(isinstance(cfg.eval.batch_size, int) and cfg.eval.batch_size >= 1, "eval.batch_size",
         cfg.eval.batch_size, "an integer >= 1")
  _check(cfg.eval.mc_samples >= 0, "eval.mc_samples", cfg.eval.mc_samples, "an integer >= 0")
  _check(cfg.eval.window in ("auto", "patch", "whole"), "eval.window", cfg.eval.window,
         "'auto', 'patch' or 'whole'")
  _check(0.0 <= cfg.eval.overlap < 1.0, "eval.overlap", cfg.eval.overlap, "a number in [0, 1)")
  _check(not cfg.eval.tta or flip_axes(cfg), "eval.tta", cfg.eval.tta,
         "False when training flips no axis (train.flip_prob = train.vertical_flip_prob = 0): "
         "test-time mirroring needs a model trained on mirrored images")
  _check(cfg.eval.num_resamples >= 100, "eval.num_resamples", cfg.eval.num_resamples,
         "an integer >= 100")
  _check(cfg.split.folds == 0 or cfg.split.folds >= 2, "split.folds", cfg.split.folds,
         "0 (the builder's split) or >= 2")
  _check(0.0 <= cfg.split.holdout_fraction < 1.0 and (
      cfg.split.holdout_fraction == 0.0 or cfg.split.folds >= 2), "split.holdout_fraction",
         cfg.split.holdout_fraction, "a fraction in [0, 1), and 0 without split.folds")
  _check(0.0 < cfg.split.validation_fraction < 1.0, "split.validation_fraction",
         cfg.split.validation_fraction, "a fraction in (0, 1)")
  sources = cfg.data.sources
  _check(cfg.data.source in sources, "data.source", cfg.data.source,
         f"one of {', '.join(sources)}")
  source = sources[cfg.data.source]
  known = datasets.builder_config(source["builder"], source["config"]).settings()
  for key in list(source.get("settings", {})) + list(cfg.data.settings):
    _check(key in known, f"data.settings.{key}", cfg.data.settings.get(key, "(preset)"),
           f"a setting of {source['builder']}/{source['config']}: {', '.join(sorted(known))}")


# ------------------------------------------------------------------------------------------------
# The comparison.
# ------------------------------------------------------------------------------------------------


def slice_axes(volume: Volume) -> tuple[str, str]:
  """Anatomical directions of a volume's axial-slice axes, for :func:`figures.display_slice`."""
  return figures.slice_axes(volume.affine) if volume.affine is not None else figures.RAS_AXIAL


def _slug(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9.=-]+", "_", name.replace("α=", "alpha").replace("+", "_")).strip("_")


def _sweep_impl(t: ml_collections.ConfigDict) -> str | None:
  """``train.sweep_impl`` as :class:`Trainer` takes it (``None``: the Trainer chooses)."""
  impl = t.get("sweep_impl", "auto")
  return None if impl == "auto" else impl


def _optimizer(t: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  lr = t.learning_rate
  if t.schedule == "cosine":
    lr = optax.cosine_decay_schedule(lr, decay_steps=total_steps,
                                     alpha=t.final_learning_rate / t.learning_rate)
  elif t.schedule == "poly":
    lr = optax.polynomial_schedule(init_value=lr, end_value=t.final_learning_rate,
                                   power=t.power, transition_steps=total_steps)
  if t.optimizer == "sgd":
    tx = optax.sgd(lr, momentum=t.momentum or None)
  elif t.optimizer == "amsgrad":
    tx = optax.amsgrad(lr)
  else:
    tx = optax.adam(lr)
  return optax.chain(optax.add_decayed_weights(t.weight_decay), tx) if t.weight_decay else tx


def _augment(t: ml_collections.ConfigDict) -> augment_lib.Augment | None:
  steps = []
  zooms = tuple(t.scale) != (1.0, 1.0)
  if len(t.patch) == 2 and (t.max_degrees or zooms or t.flip_prob or t.vertical_flip_prob):
    steps.append(augment_lib.FlipRotate(max_degrees=t.max_degrees, horizontal_prob=t.flip_prob,
                                        vertical_prob=t.vertical_flip_prob,
                                        scale=tuple(t.scale)))
  elif t.flip_prob:
    steps.append(augment_lib.Mirror(probs=(t.flip_prob,)))
  if any(t.jitter):
    steps.append(augment_lib.IntensityJitter(scale_std=t.jitter[0], shift_std=t.jitter[1],
                                             noise_std=t.jitter[2]))
  if not steps:
    return None
  return steps[0] if len(steps) == 1 else augment_lib.Compose(steps)


def sweep_loss(configs: Sequence[LossConfig]):
  """One loss for all configurations: ``(loss_fn, params)`` with ``params[i]`` configuration i's.

  ``loss_fn(outputs, batch, p) = sum_f p["select"][f] * fn_f(outputs, batch, **p["hp"][f])`` over
  the distinct loss functions ``fn_f``; ``params[i]["select"]`` is the one-hot of configuration
  ``i``'s function and ``params[i]["hp"][f]`` its hyperparameters (for the functions it does not
  use, those of the first configuration that does, so every term stays finite). Stacked over the
  configurations, ``params`` are the ``loss_params`` of a sweep.
  """
  fns = []
  for c in configs:
    if c.fn not in fns:
      fns.append(c.fn)
  params = []
  for c in configs:
    hp = []
    for fn in fns:
      users = [o for o in configs if o.fn is fn]
      keys = sorted({k for o in users for k in o.params})
      default = users[0].params
      source = c.params if c.fn is fn else default
      hp.append({k: np.float32(source.get(k, default.get(k, 0.0))) for k in keys})
    params.append({"select": np.eye(len(fns), dtype=np.float32)[fns.index(c.fn)], "hp": hp})

  def loss_fn(outputs, batch, p):
    total = 0.0
    for f, fn in enumerate(fns):
      total = total + p["select"][f] * fn(outputs, batch, **p["hp"][f])
    return total

  return loss_fn, params


@dataclasses.dataclass
class Fold:
  """Volumes of one fold: training, validation (model selection) and test (held out)."""

  train: list[Volume]
  validation: list[Volume]
  test: list[Volume]
  index: int = 0


class Comparison:
  """One run of a comparison config: data, training, selection, export, evaluation, report."""

  def __init__(self, cfg: ml_collections.ConfigDict, study: Study, *,
               log: Callable[[str], None] | None = None):
    self.cfg = cfg
    self.study = study
    # Flushed, so progress shows when the output goes to a file (``> run.log``).
    self.log = log or functools.partial(print, flush=True)
    self.workdir = cfg.workdir or os.path.join("results", "compare", cfg.name)
    source = cfg.data.sources[cfg.data.source]
    self.source = source
    self._trainers: dict[int, Trainer] = {}
    self.model = self._build_model()
    self.holdout: list[Volume] = []  # cases outside every fold (split.holdout_fraction)

  # -- data ------------------------------------------------------------------------------------
  def data_settings(self) -> dict[str, Any]:
    settings = dict(self.source.get("settings", {}))
    settings.update({k: tuple(v) if isinstance(v, list) else v
                     for k, v in self.cfg.data.settings.items()})
    return settings

  def load(self) -> list[Fold]:
    """The folds: one (the builder's split) or ``split.folds`` by case."""
    settings = self.data_settings()
    if self.cfg.split.folds:
      settings.setdefault("split_fractions", (1.0, 0.0, 0.0))
    builder, config = self.source["builder"], self.source["config"]
    splits = datasets.load(builder, config, data_dir=self.cfg.data.data_dir or None,
                           manual_dir=self.cfg.data.manual_dir or None, **settings)
    if "channels" not in self.source:  # names that come with the data (nnunet's dataset.json)
      self._use_data_names(datasets.metadata(builder, config,
                                             data_dir=self.cfg.data.data_dir or None, **settings))
    if not self.cfg.split.folds:
      v = {name: self.study.volumes(self, examples) for name, examples in splits.items()}
      for name in ("train", "validation", "test"):
        if not v.get(name):
          raise ConfigError(f"the {name} split of {self.cfg.data.source} is empty: use more "
                            f"cases (data.settings) or split.folds")
      return [Fold(v["train"], v["validation"], v["test"])]
    examples = sorted((e for s in splits.values() for e in s), key=lambda e: str(e["case_id"]))
    volumes = self.study.volumes(self, examples)
    k = self.cfg.split.folds
    if len(volumes) < 2 * k:
      raise ConfigError(f"split.folds = {k} needs at least {2 * k} cases, the data have "
                        f"{len(volumes)}")
    key = self.cfg.split.stratify
    strata = [int(np.asarray(v.extras[key])) if key else 0 for v in volumes]
    if self.cfg.split.holdout_fraction:
      cv, holdout = split_validation(np.arange(len(volumes)), strata,
                                     self.cfg.split.holdout_fraction,
                                     seed=self.cfg.seed + HOLDOUT_SEED_OFFSET)
      self.holdout = [volumes[j] for j in holdout]
      volumes, strata = [volumes[j] for j in cv], [strata[j] for j in cv]
      if len(volumes) < 2 * k:
        raise ConfigError(f"split.folds = {k} needs at least {2 * k} cases besides the "
                          f"{len(holdout)} held out (split.holdout_fraction), the data have "
                          f"{len(volumes)}")
    folds = []
    for i, held_out in enumerate(make_folds(strata, k, seed=self.cfg.seed)):
      rest = np.setdiff1d(np.arange(len(volumes)), held_out)
      train, val = split_validation(rest, strata, self.cfg.split.validation_fraction,
                                    seed=self.cfg.seed + i)
      folds.append(Fold([volumes[j] for j in train], [volumes[j] for j in val],
                        [volumes[j] for j in held_out], index=i))
    return folds

  def _use_data_names(self, meta: Mapping[str, Any]) -> None:
    """Checks the data's class count against the model's; the data's channels go on the cards."""
    data, model = tuple(meta.get("class_names") or ()), tuple(self.cfg.model.class_names)
    if data and len(data) != len(model):
      raise ConfigError(
          f"data.source = {self.cfg.data.source!r} has {len(data)} classes ({', '.join(data)}) "
          f"but the model has {len(model)} (model.class_names = {model}): use a dataset with "
          f"{len(model)} classes, or a config whose model and losses fit {len(data)}")
    if meta.get("channel_names"):
      self.source = {**dict(self.source.items()), "channels": tuple(meta["channel_names"])}

  # -- model and training ----------------------------------------------------------------------
  def _build_model(self):
    from jaxseg import models  # pylint: disable=import-outside-toplevel
    if self.cfg.model.name not in models.REGISTRY:
      raise ConfigError(f"model.name = {self.cfg.model.name!r} is not allowed: one of "
                        f"{', '.join(models.REGISTRY)}")
    module_cls, config_cls = models.REGISTRY[self.cfg.model.name]
    overrides = {k: tuple(v) if isinstance(v, list) else v
                 for k, v in self.cfg.model.overrides.items()}
    try:
      config = (getattr(config_cls, self.cfg.model.preset)(**overrides) if self.cfg.model.preset
                else config_cls(**overrides))
    except TypeError as e:
      raise ConfigError(f"model.overrides: {e}") from None
    return module_cls(config)

  def trainer(self, configs: Sequence[LossConfig], steps_per_epoch: int,
              num_configs: int | None) -> Trainer:
    """A trainer of ``configs``' loss whose schedule spans ``epochs * steps_per_epoch`` steps.

    Cached by the loss functions, the steps and the sweep size, so the folds of a
    cross-validation (and a search followed by the comparison with the same losses) reuse one
    compiled step.
    """
    fns = tuple(dict.fromkeys(c.fn for c in configs))
    key = (fns, steps_per_epoch, num_configs)
    if key not in self._trainers:
      tx = _optimizer(self.cfg.train, steps_per_epoch * self.cfg.train.epochs)
      self._trainers[key] = Trainer(self.model, tx, sweep_loss(configs)[0],
                                    model_inputs=self.study.model_inputs(self)
                                    or (lambda b: (b["image"],)),
                                    num_configs=num_configs,
                                    ema_decay=self.cfg.train.ema_decay or None,
                                    sweep_impl=_sweep_impl(self.cfg.train))
    return self._trainers[key]

  def loader(self, train: Sequence[Volume], epochs: int) -> PatchLoader:
    """The Grain input of a fold's training cases (every configuration sees its batches)."""
    t = self.cfg.train
    context = self.cfg.model.slice_context
    if context:  # 2.5D: the neighbouring slices become channels, as predict_slices gives them
      train = [dataclasses.replace(v, image=inference.stack_slice_context(v.channels_image,
                                                                          context))
               for v in train]
    return PatchLoader(train, batch_size=t.batch_size, patch_shape=tuple(t.patch),
                       foreground_prob=t.foreground_prob, seed=self.cfg.seed, num_epochs=epochs,
                       samples_per_epoch=t.samples_per_epoch, augment=_augment(t),
                       workers=t.workers, foreground_sampling=t.foreground_sampling)

  def train(self, configs: Sequence[LossConfig], fold: Fold, *, name: str,
            epochs: int | None = None) -> tuple[list[list[FitResult]], Trainer]:
    """Trains every configuration x seed on ``fold``; returns ``(fits[seed][config], trainer)``.

    Each seed ``s`` initialises from ``key(seed + s)``, shared by every loss; every configuration
    sees the same batches. Selection: the epoch with the best ``train.select_metric`` of
    :meth:`Study.validate` on the fold's validation cases.
    """
    epochs = epochs or self.cfg.train.epochs
    params = sweep_loss(configs)[1]
    with self.loader(fold.train, epochs) as batches:
      return self._train(configs, fold, name=name, epochs=epochs, params=params,
                         batches=batches)

  def _train(self, configs: Sequence[LossConfig], fold: Fold, *, name: str, epochs: int,
             params: list[Any], batches: PatchLoader) -> tuple[list[list[FitResult]], Trainer]:
    cfg, t = self.cfg, self.cfg.train
    steps = batches.num_batches
    sample = batches.sample()
    seeds = [cfg.seed + s for s in range(cfg.seeds)]
    run_dir = os.path.join(self.workdir, "runs", name)
    train_config = dict(num_epochs=epochs, seed=cfg.seed, select_metric=t.select_metric,
                        patience=t.patience, progress=cfg.progress,
                        checkpoint_every=t.checkpoint_every)
    fits: list[list[FitResult]] = []
    if t.mode == "sweep":
      k = len(configs) * len(seeds)
      trainer = self.trainer(configs, steps, k)
      inits = [jax.device_get(trainer.init(jax.random.key(s), sample)) for s in seeds]
      n = len(configs)
      state = jax.tree.map(lambda *xs: np.concatenate([x[:n] for x in xs]), *inits)
      stacked = jax.tree.map(lambda *xs: np.stack(xs), *[params[i % n] for i in range(k)])
      results = trainer.fit(trainer.place(state), batches=batches,
                            evaluate=self._evaluator(trainer, fold.validation),
                            loss_params=stacked, workdir=run_dir, resume=cfg.resume,
                            config=TrainConfig(name=name, **train_config), log=self.log)
      fits = [results[s * n:(s + 1) * n] for s in range(len(seeds))]
    else:
      trainer = self.trainer(configs, steps, None)
      for s in seeds:
        init = trainer.init(jax.random.key(s), sample)
        row = []
        for c, p in zip(configs, params):
          tag = f"{name}/{_slug(c.name)}" + (f"/seed{s}" if cfg.seeds > 1 else "")
          row.append(trainer.fit(jax.tree.map(jnp.copy, init), batches=batches,
                                 evaluate=self._evaluator(trainer, fold.validation),
                                 loss_params=p, workdir=os.path.join(self.workdir, "runs", tag),
                                 resume=cfg.resume, config=TrainConfig(name=tag, **train_config),
                                 log=self.log))
        fits.append(row)
    return fits, trainer

  def _evaluator(self, trainer: Trainer, volumes: Sequence[Volume]):
    def evaluate(state):
      return self.study.validate(self, self.predict(trainer, state, volumes, mc=False), volumes)
    return evaluate

  # -- inference -------------------------------------------------------------------------------
  @property
  def card_inference(self) -> str:
    return "slices" if len(self.cfg.train.patch) == 2 else "volume"

  @property
  def window(self) -> tuple[int, ...] | None:
    """The inference window of the exported models and of every evaluation (None: whole)."""
    mode = self.cfg.eval.window
    if mode == "auto":
      mode = "whole" if self.card_inference == "slices" else "patch"
    return tuple(int(p) for p in self.cfg.train.patch) if mode == "patch" else None

  def predict(self, trainer: Trainer, state, volumes: Sequence[Volume], *, mc: bool = True,
              key: jax.Array | None = None, flips: Sequence[int] = ()) -> Predictions:
    """Probabilities of whole volumes through :mod:`jaxseg.inference`, as predict does them.

    Every volume goes through :func:`jaxseg.inference.predict_distribution`, the function behind
    ``python -m jaxseg.predict``, with the exported card (its window: :attr:`window`), the
    mirrorings of ``flips`` (test-time augmentation), and ``eval.mc_samples`` stochastic passes
    (mean and variance) when ``mc``.
    """
    e = self.cfg.eval
    card = self.card(volumes, {})
    samples = int(e.mc_samples) if mc else 0
    key = jax.random.key(self.cfg.seed + 1) if key is None else key
    probs, variances = [], []
    for i, v in enumerate(volumes):
      pred = inference.predict_distribution(
          [(self.model, state.variables, card)], v.channels_image, batch_size=int(e.batch_size),
          mesh=trainer.mesh, overlap=float(e.overlap), flips=tuple(flips), mc_samples=samples,
          key=jax.random.fold_in(key, i))
      probs.append(pred.mean)
      variances.append(pred.variance)
    return Predictions(probs, variances if samples else None)

  @property
  def flips(self) -> tuple[int, ...]:
    """Axes mirrored at test time (``eval.tta``): those training flipped, the only mirrorings
    the model was taught to be invariant to (x with ``train.flip_prob``, y with
    ``train.vertical_flip_prob``)."""
    return flip_axes(self.cfg) if self.cfg.eval.tta else ()

  def card(self, volumes: Sequence[Volume], info: Mapping[str, Any]) -> ModelCard:
    channels = tuple(self.source.get("channels", ("image",)))
    return ModelCard(
        activation=self.cfg.model.activation, class_names=tuple(self.cfg.model.class_names),
        channels=channels, spacing=tuple(float(s) for s in volumes[0].spacing),
        normalization=tuple(self.source.get("normalization", (PERCENTILE_ZSCORE,) * len(channels))),
        inference=self.card_inference, layout=self.source.get("layout", "xyz"),
        slice_context=self.cfg.model.slice_context, window=self.window,
        flip_axes=flip_axes(self.cfg),
        info={"study": self.study.name, "data": self.cfg.data.source, **info})

  # -- the whole protocol ----------------------------------------------------------------------
  def run(self) -> dict[str, Any]:
    cfg = self.cfg
    tic = time.perf_counter()
    os.makedirs(self.workdir, exist_ok=True)
    self.log(f"jaxseg {self.study.name}: data={cfg.data.source} seeds={cfg.seeds} "
             f"devices={jax.device_count()} ({jax.devices()[0].platform}) -> {self.workdir}")
    folds = self.load()
    self.folds = folds
    f0 = folds[0]
    self.log(f"cases: {len(f0.train)} train / {len(f0.validation)} validation / "
             f"{len(f0.test)} test" + (f" per fold, {len(folds)} folds" if len(folds) > 1 else "")
             + f"; volume {f0.train[0].label.shape} at "
             f"{tuple(round(s, 4) for s in f0.train[0].spacing)} mm "
             f"({time.perf_counter() - tic:.0f}s)")
    configs = self.study.configurations(self)
    names = [c.name for c in configs]
    if len(set(names)) != len(names):
      raise ConfigError(f"loss names must be distinct, got {names}")
    test_ids = [v.case_id for f in folds for v in f.test]
    order = np.argsort(test_ids, kind="stable")
    test_cases = [v for f in folds for v in f.test]
    test_cases = [test_cases[i] for i in order]
    per_seed: list[dict[str, Predictions]] = [
        {n: Predictions([], []) for n in names} for _ in range(cfg.seeds)]
    mirrored: list[dict[str, Predictions]] = [  # eval.tta: the same models, mirrored test cases
        {n: Predictions([], []) for n in names} for _ in range(cfg.seeds)]
    histories: dict[str, list] = {n: [] for n in names}
    best_epochs: dict[str, list] = {n: [] for n in names}
    exported: dict[str, list[list[str]]] = {n: [[] for _ in range(cfg.seeds)] for n in names}
    for fold in folds:
      name = f"fold{fold.index}" if len(folds) > 1 else "main"
      fits, trainer = self.train(configs, fold, name=name)
      for s, row in enumerate(fits):
        for c, fit in zip(configs, row):
          path = os.path.join(self.workdir, "models", _slug(c.name))
          if cfg.seeds > 1:
            path = os.path.join(path, f"seed{cfg.seed + s}")
          if len(folds) > 1:
            path = os.path.join(path, f"fold{fold.index}")
          info = {"loss": c.name, **dict(c.info), "seed": cfg.seed + s,
                  "best_epoch": fit.best_epoch, "fold": fold.index,
                  "validation_cases": [v.case_id for v in fold.validation],
                  "test_cases": [v.case_id for v in fold.test],
                  "selected_by": f"validation {cfg.train.select_metric}"}
          save_model(path, model=self.model, variables=fit.best_state.variables,
                     card=self.card(fold.train, info))
          exported[c.name][s].append(path)
          for preds, flips in ((per_seed, ()), (mirrored, self.flips))[:2 if cfg.eval.tta else 1]:
            pred = self.predict(trainer, fit.best_state, fold.test, flips=flips,
                                key=jax.random.fold_in(jax.random.key(cfg.seed + 1), fold.index))
            preds[s][c.name].probs.extend(pred.probs)
            if pred.variances is not None:
              preds[s][c.name].variances.extend(pred.variances)
          histories[c.name].append(fit.history)
          best_epochs[c.name].append(fit.best_epoch)
        self.log(f"[{name}] seed {cfg.seed + s}: best epochs "
                 + ", ".join(f"{c.name} {f.best_epoch + 1}" for c, f in zip(configs, row)))
    for preds in per_seed + (mirrored if cfg.eval.tta else []):
      for p in preds.values():
        p.probs = [p.probs[i] for i in order]
        p.variances = [p.variances[i] for i in order] if p.variances else None
    self.test_cases = test_cases
    result = self.evaluate(configs, per_seed, test_cases,
                           mirrored=mirrored if cfg.eval.tta else None)
    result.update(histories=histories, best_epochs=best_epochs, predictions=per_seed,
                  configurations=[{"name": c.name, **dict(c.info)} for c in configs],
                  test_cases=[v.case_id for v in test_cases],
                  folds=[{"train": [v.case_id for v in f.train],
                          "validation": [v.case_id for v in f.validation],
                          "test": [v.case_id for v in f.test]} for f in folds])
    if self.holdout:
      result["holdout"] = self.evaluate_holdout(names, exported)
    extra = self.study.report(self, result)
    figures.plot_training_curves({n: h[0] for n, h in histories.items()},
                                 os.path.join(self.workdir, "training_curves.png"),
                                 metric=f"val_{cfg.train.select_metric}")
    result["wall_time_s"] = time.perf_counter() - tic
    table = self.write_table(result, extra)
    tables.write_json(os.path.join(self.workdir, "results.json"), {
        "config": cfg.to_dict() if not cfg.get("losses") else
        {k: v for k, v in cfg.to_dict().items() if k != "losses"},
        **{k: v for k, v in result.items() if k not in ("predictions",)}})
    self.log(table)
    self.log(f"results written to {os.path.abspath(self.workdir)} "
             f"({result['wall_time_s'] / 60:.1f} min)")
    return result

  # -- evaluation ------------------------------------------------------------------------------
  def evaluate_holdout(self, names: Sequence[str], exported: Mapping[str, Sequence[Sequence[str]]]
                       ) -> dict[str, Any]:
    """Each fold model and the fold ensemble on the held-out cases (``split.holdout_fraction``).

    The exported models are read back and run through
    :func:`jaxseg.inference.predict_distribution`, as ``python -m jaxseg.predict --checkpoint
    models/<loss>`` runs them: the ensemble averages the K fold models' probabilities (sigmoid
    or softmax), with the evaluation's window and MC samples. Returns the held-out
    case ids and, per loss and seed, the study's first per-case metric of every fold model and
    of the ensemble.
    """
    from jaxseg.train.checkpoint import load_model  # pylint: disable=import-outside-toplevel
    e = self.cfg.eval
    metric = self.study.metrics[0][0]
    key = jax.random.key(self.cfg.seed + 2)
    out: dict[str, Any] = {"cases": [v.case_id for v in self.holdout], "metric": metric,
                           "values": {}}
    for n in names:
      out["values"][n] = []
      for paths in exported[n]:
        members = [load_model(p) for p in paths]
        rows = {}
        for label, group in ([(f"fold {i}", [m]) for i, m in enumerate(members)]
                             + [(f"ensemble of {len(members)}", members)]):
          preds = [inference.predict_distribution(
              group, v.channels_image, batch_size=int(e.batch_size), overlap=float(e.overlap),
              mc_samples=int(e.mc_samples), key=jax.random.fold_in(key, j))
                   for j, v in enumerate(self.holdout)]
          case = self.study.case_metrics(
              self, Predictions([p.mean for p in preds],
                                [p.variance for p in preds] if e.mc_samples else None),
              self.holdout)
          rows[label] = np.asarray(case[metric], np.float64)
        out["values"][n].append(rows)
    self.log(f"held-out cases: {len(self.holdout)}; fold models and their ensemble evaluated")
    return out

  def _holdout_table(self, holdout: Mapping[str, Any]) -> list[str]:
    """Lines of the held-out table: each fold model, then the ensemble, per loss (and seed)."""
    label = dict(self.study.metrics)[holdout["metric"]]
    boot = dict(num_resamples=self.cfg.eval.num_resamples, seed=self.cfg.seed)
    headers = ["loss", "model", label, "median", "min"]
    rows = []
    for n, per_seed in holdout["values"].items():
      for s, models in enumerate(per_seed):
        for model, v in models.items():
          finite = v[np.isfinite(v)]
          name = n if len(per_seed) == 1 else f"{n} (seed {self.cfg.seed + s})"
          rows.append([name, model, stats.format_estimate(stats.bootstrap_ci(v, **boot))]
                      + ([f"{np.median(finite):.3f}", f"{np.min(finite):.3f}"] if finite.size
                         else ["—", "—"]))
    return ["", f"Fold models and their ensemble (probabilities averaged) on "
            f"{len(holdout['cases'])} held-out cases that no fold trained, validated or tested "
            f"on (split.holdout_fraction):", "", tables.markdown_table(headers, rows)]

  def evaluate(self, configs: Sequence[LossConfig], per_seed: Sequence[Mapping[str, Predictions]],
               volumes: Sequence[Volume], *,
               mirrored: Sequence[Mapping[str, Predictions]] | None = None) -> dict[str, Any]:
    """Per-case values ``(seeds, cases)``, estimates with CIs, paired differences from the baseline.

    ``mirrored``: the same models' predictions with test-time mirroring (``eval.tta``); their
    metrics are reported next to the plain ones, under the key suffix :data:`TTA_SUFFIX`.
    """
    cfg = self.cfg
    names = [c.name for c in configs]
    boot = dict(num_resamples=cfg.eval.num_resamples, seed=cfg.seed)
    values = {n: {} for n in names}
    study_stats = {n: [] for n in names}
    for s, preds in enumerate(per_seed):
      for n in names:
        case = self.study.case_metrics(self, preds[n], volumes)
        if cfg.eval.largest_component:
          lcc = self.study.case_metrics(self, self.largest_component(preds[n]), volumes)
          case.update({f"{k}{LCC_SUFFIX}": v for k, v in lcc.items()})
        if mirrored is not None:
          tta = self.study.case_metrics(self, mirrored[s][n], volumes)
          case.update({f"{k}{TTA_SUFFIX}": v for k, v in tta.items()})
        for key, v in case.items():
          values[n].setdefault(key, []).append(np.asarray(v, np.float64))
        study_stats[n].append(self.study.study_statistics(self, preds[n], volumes, case))
    values = {n: {k: np.stack(v) for k, v in d.items()} for n, d in values.items()}
    estimates = {n: {k: stats.bootstrap_ci_runs(v, **boot) for k, v in d.items()}
                 for n, d in values.items()}
    baseline = names[0]
    differences = {}
    for n in names[1:]:
      differences[n] = {k: stats.bootstrap_ci_runs(values[n][k] - values[baseline][k], **boot)
                        for k in values[n]}
    result = {"names": names, "baseline": baseline, "values": values, "estimates": estimates,
              "differences": differences, "study_statistics": study_stats}
    if mirrored is not None:  # the effect of mirroring, per loss: TTA - plain, paired by case
      result["tta_effect"] = {
          n: {k: stats.bootstrap_ci_runs(values[n][f"{k}{TTA_SUFFIX}"] - values[n][k], **boot)
              for k, _ in self.study.metrics if f"{k}{TTA_SUFFIX}" in values[n]}
          for n in names}
    return result

  def largest_component(self, predictions: Predictions) -> Predictions:
    """``predictions`` post-processed so that their hard labels keep only each class's largest
    connected component (:func:`jaxseg.inference.keep_largest_component`): removed voxels get
    probability 0 (sigmoid) or background probability 1 (softmax)."""
    probs = []
    for p, label in zip(predictions.probs, self.study.labels(self, predictions)):
      removed = (label > 0) & (inference.keep_largest_component(label) == 0)
      if self.cfg.model.activation == "sigmoid":
        probs.append(np.where(removed, 0.0, p).astype(p.dtype))
      else:
        probs.append(np.where(removed[..., None], np.eye(p.shape[-1], dtype=p.dtype)[0], p))
    return Predictions(probs, predictions.variances)

  def metric_columns(self) -> list[tuple[str, str]]:
    """``(key, label)`` of the table's per-case metrics, post-processed ones included."""
    columns = list(self.study.metrics)
    if self.cfg.eval.largest_component:
      columns += [(f"{k}{LCC_SUFFIX}", f"{label} (LCC)") for k, label in self.study.metrics]
    if self.cfg.eval.tta:
      columns += [(f"{k}{TTA_SUFFIX}", f"{label} (TTA)") for k, label in self.study.metrics]
    return columns

  def _fold_table(self, result: Mapping[str, Any], metrics: Sequence[tuple[str, str]]
                  ) -> list[str]:
    """Lines of the per-fold table: mean, median and minimum over each fold's held-out cases."""
    position = {case: i for i, case in enumerate(result["test_cases"])}
    headers = ["loss", "fold", "cases"] + [f"{label} {s}" for _, label in metrics
                                           for s in ("mean", "median", "min")]
    rows = []
    for n in result["names"]:
      for i, fold in enumerate(self.folds):
        cols = [position[v.case_id] for v in fold.test]
        row = [n, str(i), ""]
        for k, _ in metrics:
          v = result["values"][n][k][:, cols].ravel()
          v = v[np.isfinite(v)]
          row[2] = f"{v.size}" + (f" ({len(cols) * self.cfg.seeds - v.size} undef.)"
                                  if v.size < len(cols) * self.cfg.seeds else "")
          row += ([f"{np.mean(v):.3f}", f"{np.median(v):.3f}", f"{np.min(v):.3f}"] if v.size
                  else ["—"] * 3)
        rows.append(row)
    return ["", "Per fold (each fold's held-out cases" + (" and seeds" if self.cfg.seeds > 1
                                                        else "") + "):", "",
            tables.markdown_table(headers, rows)]

  def _estimate(self, result: Mapping[str, Any], name: str, key: str) -> stats.Estimate | None:
    """A loss's estimate of a metric or study statistic (first seed of the statistics)."""
    if key in result["estimates"][name]:
      return result["estimates"][name][key]
    per = [s[key] for s in result["study_statistics"][name] if key in s]
    return per[0] if per else None

  def level_lines(self, result: Mapping[str, Any]) -> list[str]:
    """``table.md``'s verdict: which losses reach ``eval.levels``, which sit at chance."""
    names = result["names"]
    labels = {**dict(self.metric_columns()), **dict(self.study.statistic_labels(self))}
    lines = []
    for key, level in self.cfg.eval.levels.items():
      got = {n: self._estimate(result, n, key) for n in names}
      if all(e is None for e in got.values()):  # another task's metric (one config, two tasks)
        continue
      reached = [f"{n} ({e.value:.3f})" for n, e in got.items() if e and e.value >= level]
      missed = [f"{n} ({e.value:.3f})" if e else f"{n} (undefined)"
                for n, e in got.items() if not (e and e.value >= level)]
      lines.append(f"- {labels.get(key, key)} ≥ {level:g}: "
                   + (f"reached by {', '.join(reached)}" if reached else "reached by no loss")
                   + (f"; **not reached** by {', '.join(missed)}" if missed else ""))
    for key, level in self.study.chance.items():
      at_chance = [n for n in names if (e := self._estimate(result, n, key)) is not None
                   and np.isfinite(e.low) and e.low <= level <= e.high]
      if at_chance:
        lines.append(f"- **{labels.get(key, key)} CI includes chance ({level:g}) for "
                     f"{', '.join(at_chance)}: this comparison is not informative at this "
                     "preset** for these losses.")
    return (["", "Level reached (`eval.levels`: the level at which this comparison means "
             "something at this preset; a CI that includes chance means it does not):", ""]
            + lines if lines else [])

  def write_table(self, result: Mapping[str, Any], extra: Sequence[str]) -> str:
    cfg = self.cfg
    names = result["names"]
    metrics = [m for m in self.metric_columns() if m[0] in result["values"][names[0]]]
    stat_labels = self.study.statistic_labels(self)

    def stat_cell(n, key):
      per = [s[key] for s in result["study_statistics"][n] if key in s]
      if not per:
        return "—"
      if len(per) == 1:
        return stats.format_estimate(per[0])
      vals = [e.value for e in per]
      return (f"{np.mean(vals):.3f} (seeds: {min(vals):.3f}–{max(vals):.3f}; "
              f"n={per[0].n} cases)")

    headers = ["loss"] + [label for _, label in metrics] + [label for _, label in stat_labels]
    rows = [[n] + [stats.format_estimate(result["estimates"][n][k]) for k, _ in metrics]
            + [stat_cell(n, k) for k, _ in stat_labels] for n in names]
    diff_headers = ["difference"] + [label for _, label in metrics]
    diff_rows = [[f"{n} − {result['baseline']}"]
                 + [stats.format_estimate(result["differences"][n][k], signed=True)
                    for k, _ in metrics] for n in names[1:]]
    if len(headers) > 7:  # many metrics: one row per metric reads better
      headers, rows = ["metric"] + names, [list(r) for r in zip(*[headers[1:]] + [r[1:] for r in rows])]
      if diff_rows:
        diff_headers, diff_rows = (["metric"] + [r[0] for r in diff_rows],
                                   [list(r) for r in zip(*[diff_headers[1:]]
                                                         + [r[1:] for r in diff_rows])])
    folds = self.folds
    split = (f"{len(folds)}-fold cross-validation by case (each fold: "
             f"{len(folds[0].train)} training / {len(folds[0].validation)} validation / "
             f"{len(folds[0].test)} held-out cases; every case tested once)" if len(folds) > 1
             else f"{len(folds[0].train)} training / {len(folds[0].validation)} validation / "
             f"{len(folds[0].test)} test cases")
    t = cfg.train
    impls = sorted({tr.sweep_impl for tr in self._trainers.values()
                    if tr.num_configs and tr.sweep_impl})
    mode = f"{t.mode} ({', '.join(impls)})" if impls else t.mode  # sweeps: vmap or unroll
    info = (f"Data `{cfg.data.source}`: {split}. Model `{cfg.model.name}`"
            f"{' (' + cfg.model.preset + ')' if cfg.model.preset else ''}; {t.epochs} epochs "
            f"max of {mode} training, {t.optimizer} {t.learning_rate:g} ({t.schedule}), batch "
            f"{t.batch_size} of {'×'.join(map(str, t.patch))}; {cfg.seeds} seed(s) per loss from "
            f"seed {cfg.seed}; every loss starts from its seed's initialisation and sees the "
            f"same batches; each model is the epoch with the best validation "
            f"{t.select_metric} (validation cases only); wall time "
            f"{result['wall_time_s'] / 60:.1f} min on {jax.device_count()} "
            f"{jax.devices()[0].platform} device(s).")
    unit = "cases × seeds" if cfg.seeds > 1 else "cases"
    text = [f"# {self.study.title}\n", info, "",
            f"Mean over test {unit} with a percentile-bootstrap 95% CI "
            f"({cfg.eval.num_resamples} resamples over {unit}); n = values behind the cell, "
            "undef. = values that were undefined and left out."
            + (" (LCC): after keeping each class's largest connected component (nnU-Net's "
               "post-processing); the other columns are the raw predictions."
               if cfg.eval.largest_component else "")
            + (f" (TTA): the same models with test-time mirroring (probabilities averaged over "
               f"the {len(inference.flip_sets(self.flips))} mirrorings of axes "
               f"{', '.join('xyz'[a] for a in self.flips)}, the axes training flipped)."
               if cfg.eval.tta else "")
            + (f" Test volumes are predicted in Gaussian-weighted sliding windows of "
               f"{'×'.join(map(str, self.window))} (overlap {cfg.eval.overlap:g})."
               if self.window else ""), "",
            tables.markdown_table(headers, rows)]
    if diff_rows:
      text += [f"Paired difference from the baseline ({result['baseline']}), per test case"
               + (" and seed" if cfg.seeds > 1 else "") + ", with a bootstrap 95% CI; cases "
               "where either value is undefined are left out.", "",
               tables.markdown_table(diff_headers, diff_rows)]
    if result.get("tta_effect"):
      labels = dict(self.study.metrics)
      keys = list(next(iter(result["tta_effect"].values())))
      text += ["", "Effect of test-time mirroring, per loss: (TTA) − plain on the same models and "
               "test cases, with a bootstrap 95% CI.", "",
               tables.markdown_table(["loss"] + [labels[k] for k in keys],
                                     [[n] + [stats.format_estimate(e[k], signed=True)
                                             for k in keys]
                                      for n, e in result["tta_effect"].items()])]
    if len(folds) > 1:
      first = self.study.metrics[0][0]  # the first metric, plain, with LCC and with TTA
      text += self._fold_table(result, [m for m in metrics if m[0] in
                                        (first, first + LCC_SUFFIX, first + TTA_SUFFIX)])
    if result.get("holdout"):
      text += self._holdout_table(result["holdout"])
    text += self.level_lines(result)
    text += list(extra)
    out = "\n".join(text).rstrip() + "\n"
    with open(os.path.join(self.workdir, "table.md"), "w") as f:
      f.write(out)
    return out


# ------------------------------------------------------------------------------------------------
# Command line.
# ------------------------------------------------------------------------------------------------

#: The held-out cases are drawn with ``seed + HOLDOUT_SEED_OFFSET``, a stream apart from the folds'.
HOLDOUT_SEED_OFFSET = 100_003

#: Key suffix of the metrics computed after largest-component post-processing.
LCC_SUFFIX = "_lcc"

#: Key suffix of the metrics of the test-time-mirrored predictions (``eval.tta``).
TTA_SUFFIX = "_tta"

#: Flags README documents, as aliases of config fields.
COMMON_ALIASES = {
    "--data": "data.source", "--manual-dir": "data.manual_dir", "--data-dir": "data.data_dir",
    "--workdir": "workdir", "--seed": "seed", "--seeds": "seeds", "--epochs": "train.epochs",
    "--batch-size": "train.batch_size", "--folds": "split.folds",
    "--largest-component": "eval.largest_component", "--tta": "eval.tta",
    "--window": "eval.window", "--holdout": "split.holdout_fraction",
}


def _leaves(c: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key in sorted(c.keys()):
    value = c[key]
    path = f"{prefix}{key}"
    if key in ("sources", "losses"):
      continue
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_leaves(value, path + "."))
    else:
      out[path] = value
  return out


def _parse_value(text: str, current: Any, field: str) -> Any:
  if text.lower() in ("none", "null"):
    return () if isinstance(current, (tuple, list)) else None  # "--alphas none": no alphas
  if isinstance(current, bool):
    if text.lower() in ("1", "true", "yes"):
      return True
    if text.lower() in ("0", "false", "no"):
      return False
    raise ConfigError(f"{field} = {text!r} is not allowed: true or false")
  if isinstance(current, (tuple, list)):
    items = [s for s in re.split(r"[,\s]+", text.strip("()[] ")) if s]
    kind = type(current[0]) if current else float
    try:
      return tuple(kind(s) if kind is not bool else s.lower() == "true" for s in items)
    except ValueError:
      raise ConfigError(f"{field} = {text!r} is not allowed: values of type "
                        f"{kind.__name__}") from None
  kind = type(current) if current is not None else None
  for attempt in ((kind,) if kind in (int, float, str) else (int, float, str)):
    try:
      return attempt(text)
    except ValueError:
      continue
  raise ConfigError(f"{field} = {text!r} is not allowed: a value of type {kind.__name__}")


def _set(c: ml_collections.ConfigDict, path: str, value: Any) -> None:
  *parents, leaf = path.split(".")
  for p in parents:
    c = c[p]
  with c.ignore_type():
    c[leaf] = value


def load_config_file(path: str, arg: str | None = None) -> tuple[ml_collections.ConfigDict, Any]:
  """``(get_config(arg), module)`` of a config file (a path, or ``experiments.configs.X``)."""
  if os.path.exists(path):
    spec = importlib.util.spec_from_file_location(f"jaxseg_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
  else:
    try:
      module = importlib.import_module(path)
    except ModuleNotFoundError:
      raise ConfigError(f"config {path!r} not found: give a config file path, e.g. "
                        f"experiments/configs/example_own_loss.py") from None
  if not hasattr(module, "get_config"):
    raise ConfigError(f"config {path} has no get_config() function")
  cfg = module.get_config(arg) if arg is not None else module.get_config()
  return cfg, module


def parse(argv: Sequence[str] | None, *, prog: str, config: str | None,
          description: str) -> tuple[ml_collections.ConfigDict, Any]:
  """Config and config module from the command line.

  ``--preset`` picks ``get_config(preset)`` (``cpu`` or ``paper``); ``--config FILE`` another
  config file. Every leaf field can be set as ``--train.epochs 3`` (``--help`` lists them with
  the preset's value and meaning), and README's flags are aliases (``--epochs``).
  """
  argv = list(sys.argv[1:] if argv is None else argv)
  pre = argparse.ArgumentParser(add_help=False)
  pre.add_argument("--preset", default="cpu")
  pre.add_argument("--config", default=config)
  pre.add_argument("--data", default=None)
  known, _ = pre.parse_known_args(argv)
  if known.config is None:
    raise ConfigError("give a comparison config: --config FILE (e.g. "
                      "experiments/configs/example_own_loss.py)")
  if known.preset not in ("cpu", "paper"):
    raise ConfigError(f"--preset {known.preset!r} is not allowed: cpu or paper")
  cfg, module = load_config_file(known.config, known.preset)
  if known.data is not None and known.data in cfg.data.sources:
    cfg.data.source = known.data
  source = cfg.data.sources.get(cfg.data.source, {})
  if source.get("preset"):  # the source's changes (nested like the config), default source too
    for k, v in _leaves(source.preset).items():
      _set(cfg, k, v)
  aliases = {**COMMON_ALIASES, **getattr(module, "ALIASES", {})}
  helps = {**FIELD_HELP, **getattr(module, "HELP", {})}
  leaves = _leaves(cfg)
  source_settings = cfg.data.sources.get(cfg.data.source, {}).get("settings", {})
  for key, value in source_settings.items():
    leaves.setdefault(f"data.settings.{key}", value)
  parser = argparse.ArgumentParser(prog=prog, description=description,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                      help="cpu: minutes on 2 CPU cores; paper: the published settings (GPU)")
  parser.add_argument("--config", default=config, help="comparison config file")
  parser.add_argument("--resume", action="store_true", help=FIELD_HELP["resume"])
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")
  inverse = {}
  for flag, field in aliases.items():
    inverse.setdefault(field, []).append(flag)
  group = parser.add_argument_group("config fields (preset value in brackets)")
  for field, value in leaves.items():
    if field in ("resume", "progress"):
      continue
    flags = [f"--{field}"] + inverse.get(field, [])
    choices = f" {{{', '.join(cfg.data.sources)}}}" if field == "data.source" else ""
    many = isinstance(value, (tuple, list))
    group.add_argument(*flags, dest=field, default=None, metavar="V", nargs="+" if many else None,
                       help=f"{helps.get(field, helps.get(field.split('.')[-1], ''))}{choices} "
                       f"[{value!r}]".strip())
  for flag, field in aliases.items():  # aliases of fields that the config does not show
    if field not in leaves:
      group.add_argument(flag, dest=field, default=None, metavar="V", help=helps.get(field, ""))
  args = parser.parse_args(argv)
  for field in list(leaves) + [f for f in aliases.values() if f not in leaves]:
    if field in ("resume", "progress"):
      continue
    text = getattr(args, field, None)
    if text is None:
      continue
    if isinstance(text, list):
      text = " ".join(text)
    current = leaves.get(field)
    if field.startswith("data.settings.") and field not in leaves:
      current = None
    _set(cfg, field, _parse_value(text, current, field))
  cfg.resume = bool(args.resume)
  cfg.progress = cfg.progress and not args.no_progress
  if not cfg.workdir:
    cfg.workdir = os.path.join("results", cfg.name)
  return cfg, module


def main(study: Study | None, argv: Sequence[str] | None = None, *, prog: str,
         config: str | None, description: str = "") -> Any:
  """Command line of a study (or of ``experiments.compare`` when ``study`` is None)."""

  def run(argv):
    cfg, module = parse(argv, prog=prog, config=config, description=description)
    chosen = study or getattr(module, "STUDY", None) or Study()
    if hasattr(chosen, "check"):
      chosen.check(cfg)
    validate_config(cfg)
    if not cfg.progress:
      import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
      tfds.disable_progress_bar()
    return chosen.run(cfg) if hasattr(chosen, "run") else Comparison(cfg, chosen).run()

  return cli.run(run, argv, prog=prog)
