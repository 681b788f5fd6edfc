"""Study ``anatomical_vs_diagnostic``: CE vs balanced CE vs focal vs Dice+boundary (seed 001).

Reproduces Saha et al., "Anatomical and Diagnostic Bayesian Segmentation in Prostate MRI -- Should
Different Clinical Objectives Mandate Different Loss Functions?" (REFERENCE §2): a probabilistic
3D attention U-Net (:mod:`jaxseg.models.prob_unet3d`, deep supervision on) is trained on two
tasks with four segmentation losses,

* **anatomical**: zones {background, TZ, PZ} from T2W only; reported for WG = TZ u PZ, TZ, PZ;
* **diagnostic**: csPCa {background, csPCa} from T2W, DWI and ADC;

with the losses (per voxel, mean over voxels)

* ``CE``: softmax cross-entropy;
* ``balanced CE``: ``alpha_c y_c (-log p_c)`` (:func:`jaxseg.losses.softmax_cross_entropy` with
  class weights), alpha = [0.05, 0.30, 0.65] (background, TZ, PZ) and [0.75, 0.25]
  (background, csPCa) -- the study's values, in class order;
* ``focal``: ``sum_c alpha_c y_c (1 - p_c)^2 (-log p_c)``, the same alpha, gamma = 2 (exact
  log-probabilities, no clipping);
* ``Dice+boundary``: soft Dice over the foreground channels ``1 - 2 sum(y p) / (sum(y + p) +
  1e-5)`` plus the Kervadec boundary term ``mean_i sum_c p_ic phi_ic`` (weights 1 and 1, as the
  study). The signed distance maps ``phi`` (mm, negative inside) are computed once per label
  volume, with its spacing, in the input pipeline (:func:`jaxseg.data.distance.
  signed_distance_maps`), carried as ``Volume.extras["sdm"]`` and cropped with the patches.

Every loss is summed over the deep-supervision heads with nnU-Net's weights (``1/2^i``,
normalised, finest first); labels are max-pooled to a coarse head, and the distance maps are
*min*-pooled (a coarse voxel is inside an object as soon as one of its voxels is, consistent
with the max-pooled labels), implemented as ``-maxpool(-phi)``.

ELBO and the scale of the KL term. The model's ``kl`` is ``KL(q || p)`` summed over every latent
voxel, channel and level, while the segmentation losses are means over voxels. We minimise the
negative ELBO divided by the number ``N`` of output voxels of the patch::

  loss = L_seg + beta * KL / N,     beta = 10 (the study's weight)

i.e. the KL *per output voxel*. For the cross-entropy this is exactly the ELBO (summed NLL + KL)
scaled by 1/N, so beta keeps its meaning as a weight against the reconstruction term whatever
the patch size; with the summed KL against a voxel-mean loss, beta = 10 would instead make the
KL ~10^4-10^5 times heavier and collapse the posterior onto the prior.

The four losses train as ONE sweep per task and fold (``Trainer(num_configs=4)``, a one-hot
``loss_params["select"]`` picks each configuration's loss): the same initialisation (one key per
task, reused for every fold), the same batches, Adam with AMSGrad and cosine decay (REFERENCE §2).
K-fold cross-validation splits *patients* (stratified by patient label; the same folds for both
tasks and all losses). Within each fold a stratified ``validation_fraction`` of the training patients is
held back for model selection: after every epoch a deterministic pass (prior mean, no dropout)
segments the whole validation volumes, and the epoch with the best pooled soft Dice of the task's
first region (WG, or csPCa) is kept, per loss. The held-out fold is predicted with those weights by
:func:`~jaxseg.models.prob_unet3d.mc_predict` (prior samples and MC dropout; the same keys for
every loss) giving the mean probability and variance per voxel. Metrics pool the held-out
predictions of all folds, so every patient is evaluated once, and 95% CIs are percentile
bootstraps over patients:

* NLL (mean voxel NLL per patient), top-label ECE (15 bins; voxels pooled over the resampled
  patients), soft Dice (probabilities) and hard Dice (argmax) per zone -- the anatomical task
  reports WG, TZ, PZ; the diagnostic task csPCa, over the patients with csPCa in the crop;
* diagnostic only, PI-CAI semantics (:mod:`jaxseg.metrics.detection`): lesion candidates of the
  csPCa probability map (dynamic-fast threshold, 26-connectivity, > ``min_voxels`` voxels,
  at most 5), hit at IoU >= 0.1; patient-level AUROC with score = max of the map; FROC partial
  area over 0.1-2.5 FP per patient (linear axis, maximum 2.4), maximum sensitivity and AP.
  ``min_voxels`` keeps PI-CAI's 10 voxels of 0.5 x 0.5 x 3 mm as a physical volume (7.5 mm^3):
  ``round(7.5 mm^3 / voxel volume)`` at the preset's spacing.

Usage::

  python -m experiments.anatomical_vs_diagnostic                     # phantom, CPU preset
  python -m experiments.anatomical_vs_diagnostic --preset paper      # 160 x 160 x 20 (GPU)
  python -m experiments.anatomical_vs_diagnostic --data prostatex --manual-dir DIR
  python -m experiments.anatomical_vs_diagnostic --data picai --manual-dir DIR

Writes ``results/anatomical_vs_diagnostic/``: ``table.md`` (per task and loss: NLL, ECE, soft and
hard Dice per zone; AUROC, pAUC-FROC, maximum sensitivity, AP -- all with 95% CIs),
``results.json`` (settings, folds, per-patient values, FROC curves, training histories),
figures ``histograms_{task}.png`` (probabilities over the predicted segments, as the paper's
appendix), ``reliability_{task}.png``, ``froc.png`` (with bootstrap 95% bands) and
``overlays_{task}.png``, and the selected models under
``models/{task}/{ce,balanced_ce,focal,dice_boundary}/fold{k}``.

Augmentation (:mod:`jaxseg.data.augment`): left-right flips (``Mirror``), which move the distance
maps with the labels and keep them exact, and a per-channel intensity scale and shift plus
Gaussian noise (``IntensityJitter``, ``preset.jitter`` = (scale std, shift std, noise std)).

Deviations from the paper (documented, deliberate): nnU-Net-style patches smaller than the crop
(foreground-centred with probability ``foreground_prob``) instead of whole crops; of the paper's
augmentations (noise, horizontal flip, rotation +-7.5 deg, translation and scaling 0-15%, gamma,
simulated poor scans) only the flip and the intensity changes: rotations and scalings would make
the distance maps, computed once per volume, inexact.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments._common import (Override, add_common_arguments, add_overrides, banner,
                                 export_model, given_overrides)
from jaxseg.data.augment import Compose, IntensityJitter, Mirror
from jaxseg.data.distance import signed_distance_maps
from jaxseg.data.pipeline import Volume, patch_batches, replicate, shard_batch
from jaxseg.losses.boundary import dice_boundary_loss
from jaxseg.losses.cross_entropy import softmax_cross_entropy
from jaxseg.losses.focal import softmax_focal_loss
from jaxseg.losses.supervision import deep_supervision_loss, elbo_loss
from jaxseg.metrics import calibration, detection, overlap, stats
from jaxseg.models.prob_unet3d import ProbAttentionUNet3D, ProbUNet3DConfig, mc_predict
from jaxseg.report import figures, tables
from jaxseg.train.loop import TrainConfig, Trainer

LOSSES = ("CE", "balanced CE", "focal", "Dice+boundary")
TASKS = ("anatomical", "diagnostic")
FOCAL_GAMMA = 2.0
DICE_EPS = 1e-5            # Saha et al.: 1 - 2 sum(y p) / (sum(y + p) + eps)
DB_WEIGHTS = (1.0, 1.0)    # (Dice, boundary): the study sums the two terms
ECE_BINS = 15
PICAI_MIN_VOXELS = 10      # PI-CAI candidate size, voxels of 0.5 x 0.5 x 3 mm
PICAI_VOXEL_MM3 = 0.5 * 0.5 * 3.0


@dataclasses.dataclass(frozen=True)
class Task:
  """One segmentation task of the study.

  Attributes:
    name: ``"anatomical"`` or ``"diagnostic"``.
    label_key: feature of ``prostatex_bpmri`` holding the label map.
    class_names: names of the classes, background first.
    channels: image channels used (indices into T2W, DWI, ADC).
    alpha: class weights of balanced CE and focal loss, in class order.
    regions: reported regions: name -> the classes it merges.
  """

  name: str
  label_key: str
  class_names: tuple[str, ...]
  channels: tuple[int, ...]
  alpha: tuple[float, ...]
  regions: tuple[tuple[str, tuple[int, ...]], ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


TASK_SPECS = {
    "anatomical": Task("anatomical", "zones", ("background", "TZ", "PZ"), (0,),
                       (0.05, 0.30, 0.65), (("WG", (1, 2)), ("TZ", (1,)), ("PZ", (2,)))),
    "diagnostic": Task("diagnostic", "lesions", ("background", "csPCa"), (0, 1, 2),
                       (0.75, 0.25), (("csPCa", (1,)),)),
}


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of one run of the study (flags override fields)."""

  model: str
  patch: tuple[int, int, int]
  batch_size: int
  epochs: int
  samples_per_epoch: int | None
  learning_rate: float
  final_learning_rate: float
  folds: int
  mc_samples: int
  beta: float
  foreground_prob: float
  flip_prob: float
  jitter: tuple[float, float, float]
  validation_fraction: float
  eval_batch: int
  model_overrides: dict[str, Any]
  data: dict[str, dict[str, Any]]


_CPU_GRID = {"target_spacing": (2.0, 2.0, 4.0), "crop_shape": (32, 32, 12)}
PRESETS = {
    # Minutes on 2 CPU cores: ProbUNet3DConfig.cpu at half width (filters 4, 8, 16; convolutions
    # as patch matrices) with dropout 0.2 / 0.1 (the paper's 0.5 / 0.25 starves so small a model),
    # 40 phantom patients rendered directly at 2 x 2 x 4 mm on a 32 x 32 x 12 grid (64 x 64 x 48
    # mm around the gland), patches of 24 x 24 x 8, batch 2 (the study's), 12 epochs of 32 steps,
    # a larger learning rate than the study's for so few steps, 2 folds (a quarter of each fold's
    # training patients for validation), 4 MC samples.
    "cpu": Preset(model="cpu", patch=(24, 24, 8), batch_size=2, epochs=12, samples_per_epoch=64,
                  learning_rate=1e-2, final_learning_rate=1e-5, folds=2, mc_samples=4, beta=10.0,
                  foreground_prob=0.5, flip_prob=0.5, jitter=(0.1, 0.1, 0.05),
                  validation_fraction=0.25, eval_batch=4,
                  model_overrides={"filters": (4, 8, 16), "dropout_rate": 0.2,
                                   "final_dropout_rate": 0.1},
                  data={"phantom": {"num_cases": 40, "phantom_shape": (32, 32, 12),
                                    "phantom_spacing": (2.0, 2.0, 4.0), **_CPU_GRID},
                        "prostatex": dict(_CPU_GRID), "picai": dict(_CPU_GRID)}),
    # The study: ProbUNet3DConfig.paper, 160 x 160 x 20 crops at 0.5 x 0.5 x 3 mm, batch 2, Adam
    # (AMSGrad) with cosine decay 1e-4 -> 1e-7, 5-fold CV, 100 MC samples, beta = 10. Patches of
    # 128 x 128 x 20 (the whole crop is predicted).
    "paper": Preset(model="paper", patch=(128, 128, 20), batch_size=2, epochs=100,
                    samples_per_epoch=None, learning_rate=1e-4, final_learning_rate=1e-7,
                    folds=5, mc_samples=100, beta=10.0, foreground_prob=0.5, flip_prob=0.5,
                    jitter=(0.1, 0.1, 0.05), validation_fraction=0.2, eval_batch=2,
                    model_overrides={},
                    data={"phantom": {}, "prostatex": {}, "picai": {}}),
}


PRESET_FLAGS = (Override("epochs"), Override("batch_size"), Override("learning_rate", float),
                Override("samples_per_epoch"), Override("folds"), Override("mc_samples"),
                Override("beta", float), Override("eval_batch"), Override("patch", int, 3))
DATA_FLAGS = (Override("num_cases"),
              Override("crop_shape", int, 3, flag="--crop",
                       help="centre crop of every volume (the dataset's crop_shape)"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m experiments.anatomical_vs_diagnostic",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_common_arguments(parser, presets=PRESETS, data=("phantom", "prostatex", "picai"),
                       workdir=os.path.join("results", "anatomical_vs_diagnostic"))
  parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS),
                      help="tasks to run")
  add_overrides(parser, PRESET_FLAGS + DATA_FLAGS)
  return parser.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> Preset:
  preset = PRESETS[args.preset]
  changes = given_overrides(args, PRESET_FLAGS)
  data = given_overrides(args, DATA_FLAGS)
  if "num_cases" in data and args.data != "phantom":
    raise SystemExit("--num-cases applies to --data phantom only")
  changes["data"] = {args.data: {**preset.data[args.data], **data}}
  preset = dataclasses.replace(preset, **changes)
  if preset.folds < 2:
    raise SystemExit(f"--folds must be >= 2, got {preset.folds}")
  return preset


# -- data ----------------------------------------------------------------------------------------


def load_examples(args: argparse.Namespace, preset: Preset) -> list[dict[str, Any]]:
  """Every patient of the dataset (one split holding all; the folds are made here)."""
  from datasets import prostatex_bpmri  # pylint: disable=import-outside-toplevel
  if args.data != "phantom" and not args.manual_dir:
    layout = (prostatex_bpmri.PROSTATEX_LAYOUT if args.data == "prostatex"
              else prostatex_bpmri.PICAI_LAYOUT)
    raise SystemExit(f"--data {args.data} needs --manual-dir DIR laid out as\n{layout}")
  splits = prostatex_bpmri.load(args.data, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                split_fractions=(1.0, 0.0, 0.0), **preset.data[args.data])
  return sorted((e for s in splits.values() for e in s), key=lambda e: e["case_id"])


def make_folds(labels: Sequence[int], num_folds: int, *, seed: int) -> list[np.ndarray]:
  """K folds of case indices, stratified by label (each label's cases dealt round-robin).

  Cases of each label are shuffled with ``np.random.default_rng(seed)`` and dealt to the folds in
  turn, continuing where the previous label stopped, so fold sizes differ by at most one and each
  fold gets its share of every label to within one case.

  Returns:
    ``num_folds`` sorted index arrays, disjoint, together covering ``range(len(labels))``.
  """
  labels = np.asarray(labels)
  if labels.ndim != 1 or labels.size == 0:
    raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
  if not 2 <= num_folds <= labels.size:
    raise ValueError(f"num_folds must be in [2, {labels.size}] (the number of cases), got "
                     f"{num_folds}")
  rng = np.random.default_rng(seed)
  folds: list[list[int]] = [[] for _ in range(num_folds)]
  position = 0
  for value in np.unique(labels):
    for index in rng.permutation(np.flatnonzero(labels == value)):
      folds[position % num_folds].append(int(index))
      position += 1
  return [np.sort(np.asarray(f, np.int64)) for f in folds]


def task_volumes(examples: Sequence[Mapping[str, Any]], task: Task) -> list[Volume]:
  """Volumes of one task: its channels, its label, and the label's signed distance maps.

  ``extras["sdm"]`` is ``(x, y, z, C - 1)`` float32: the signed distance map (mm, with the case's
  spacing) of every foreground class, computed once per label volume on the whole crop.
  """
  volumes = []
  for e in examples:
    label = np.asarray(e[task.label_key]).astype(np.int32)
    spacing = tuple(float(s) for s in e["spacing"])
    sdm = signed_distance_maps(label, task.num_classes, spacing=spacing)
    volumes.append(Volume(image=np.asarray(e["image"], np.float32)[..., list(task.channels)],
                          label=label, spacing=spacing, case_id=str(e["case_id"]),
                          affine=np.asarray(e["affine"]) if e.get("affine") is not None else None,
                          extras={"sdm": sdm,
                                  "patient_label": int(np.asarray(e["patient_label"]))}))
  return volumes


# -- loss ----------------------------------------------------------------------------------------


def make_loss_fn(task: Task, *, beta: float) -> Callable[..., jax.Array]:
  """The sweep's loss: ``loss_params["select"]`` is a one-hot over :data:`LOSSES`.

  ``loss_fn(outputs, batch, params)`` with the model's outputs dict (``logits``,
  ``deep_supervision`` fine -> coarse, ``kl``) and a batch holding ``label`` ``(B, x, y, z)`` and
  ``sdm`` ``(B, x, y, z, C - 1)``; returns ``(B,)`` values ``select . L_seg + beta * kl / N``
  (see the module docstring).
  """
  alpha = np.asarray(task.alpha, np.float32)

  def per_scale(logits, labels):
    label, neg_sdm = labels
    sdm = -neg_sdm  # min-pooled signed distances (see the module docstring)
    return jnp.stack([
        softmax_cross_entropy(logits, label),
        softmax_cross_entropy(logits, label, class_weights=alpha),
        softmax_focal_loss(logits, label, alpha=alpha, gamma=FOCAL_GAMMA),
        dice_boundary_loss(logits, label, sdm, w_region=DB_WEIGHTS[0], w_boundary=DB_WEIGHTS[1],
                           include_background=False, smooth_nr=0.0, smooth_dr=DICE_EPS),
    ], axis=-1)  # (batch, 4)

  def loss_fn(outputs, batch, params):
    heads = (outputs["logits"], *outputs["deep_supervision"])
    per_loss = deep_supervision_loss(heads, (batch["label"], -batch["sdm"]), per_scale)
    num_voxels = float(np.prod(outputs["logits"].shape[1:-1]))
    return elbo_loss(per_loss @ params["select"], outputs["kl"] / num_voxels, beta=beta)

  return loss_fn


def model_inputs(num_classes: int) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
  """``batch -> (image, one-hot label)``: the posterior net sees the label in training."""
  return lambda batch: (batch["image"], jax.nn.one_hot(batch["label"], num_classes))


# -- inference -----------------------------------------------------------------------------------


def _chunks(images: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
  """Fixed-size chunks (the last one padded by repetition) and their number of real rows."""
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    yield chunk, n


def mc_probabilities(mc_fn: Callable[..., tuple[jax.Array, jax.Array]], variables: Any,
                     volumes: Sequence[Volume], *, key: jax.Array, batch_size: int,
                     mesh: jax.sharding.Mesh) -> tuple[list[np.ndarray], list[np.ndarray]]:
  """MC mean probabilities and variances ``(x, y, z, C)`` of whole volumes.

  ``mc_fn(variables, images, key)`` is a jitted :func:`mc_predict`; chunk ``i`` uses
  ``fold_in(key, i)``, so the same key gives every loss the same samples of noise.
  """
  images = np.stack([v.channels_image for v in volumes]).astype(np.float32)
  means, variances = [], []
  for i, (chunk, n) in enumerate(_chunks(images, batch_size)):
    sharded = shard_batch({"image": chunk}, mesh)["image"]
    mean, var = mc_fn(variables, sharded, jax.random.fold_in(key, i))
    means.extend(np.asarray(mean)[:n])
    variances.extend(np.asarray(var)[:n])
  return means, variances


# -- metrics -------------------------------------------------------------------------------------


def pooled_ece(diagrams: Sequence[Mapping[str, np.ndarray]]) -> float:
  """Top-label ECE of the voxels of all the cases (their reliability diagrams pooled)."""
  return calibration.ece_from_diagram(calibration.pool_reliability_diagrams(diagrams))


def _estimate(e: stats.Estimate) -> dict[str, Any]:
  return dataclasses.asdict(e)


def evaluate_task(task: Task, volumes: Sequence[Volume], probs: Sequence[np.ndarray],
                  variances: Sequence[np.ndarray], *, min_voxels: int, seed: int,
                  num_resamples: int = 2000) -> dict[str, Any]:
  """Per-patient values and bootstrap 95% CIs of one (task, loss) over the held-out patients."""
  labels = [v.label for v in volumes]
  nll = np.array([calibration.negative_log_likelihood(p, y) for p, y in zip(probs, labels)])
  diagrams = [calibration.reliability_diagram(p, y, num_bins=ECE_BINS)
              for p, y in zip(probs, labels)]
  soft_cms = [np.asarray(overlap.soft_confusion_matrix(p, y)) for p, y in zip(probs, labels)]
  hard_cms = [np.asarray(overlap.confusion_matrix(np.argmax(p, -1), y,
                                                  num_classes=task.num_classes))
              for p, y in zip(probs, labels)]
  positive = np.array([bool(np.any(y)) for y in labels])
  out: dict[str, Any] = {"per_case": {"nll": nll}, "estimates": {}}
  ci = functools.partial(stats.bootstrap_ci, num_resamples=num_resamples, seed=seed)
  out["estimates"]["NLL"] = ci(nll)
  out["estimates"]["ECE"] = stats.bootstrap_ci_paired([diagrams], pooled_ece,
                                                      num_resamples=num_resamples, seed=seed)
  for kind, cms in (("soft", soft_cms), ("hard", hard_cms)):
    for region, classes in task.regions:
      values = np.array([float(overlap.region_dice(cm, classes)) for cm in cms])
      if task.name == "diagnostic":
        values = np.where(positive, values, np.nan)  # Dice over the patients with csPCa
      out["per_case"][f"{kind}_dice_{region}"] = values
      out["estimates"][f"{kind} Dice {region}"] = ci(values)
  foreground = [np.argmax(p, -1) > 0 for p in probs]
  out["per_case"]["mean_std_foreground"] = np.array(
      [float(np.sqrt(np.maximum(v, 0)).max(-1)[m].mean()) if m.any() else np.nan
       for v, m in zip(variances, foreground)])
  out["reliability"] = calibration.pool_reliability_diagrams(diagrams)
  out["ece"] = pooled_ece(diagrams)
  out["nll"] = float(np.mean(nll))
  if task.name == "diagnostic":
    lesion_probs = [p[..., 1] for p in probs]
    det = detection.evaluate_cases(lesion_probs, labels, min_voxels=min_voxels)
    results = det["case_results"]
    pair = functools.partial(stats.bootstrap_ci_paired, num_resamples=num_resamples, seed=seed)
    out["estimates"]["AUROC"] = pair([det["case_scores"], det["case_labels"]], detection.auroc)
    for name, key in (("pAUC-FROC", "pauc"), ("max sensitivity", "max_sensitivity"),
                      ("AP", "average_precision")):
      out["estimates"][name] = pair([results], lambda r, key=key: detection.froc(r)[key])
    grid = np.geomspace(0.05, max(2.5, float(det["fp_per_case"][-1])), 60)
    low, high = detection.froc_bootstrap_band(results, grid, num_resamples=num_resamples,
                                              seed=seed)
    out["froc"] = {"fp_per_case": det["fp_per_case"], "sensitivity": det["sensitivity"],
                   "band_fp": grid, "band_low": low, "band_high": high,
                   "num_lesions": det["num_lesions"], "num_cases": det["num_cases"]}
    out["per_case"]["case_score"] = det["case_scores"]
    out["per_case"]["case_label"] = det["case_labels"]
  return out


# -- report --------------------------------------------------------------------------------------


ANATOMICAL_COLUMNS = ("NLL", "ECE", "soft Dice WG", "soft Dice TZ", "soft Dice PZ",
                      "hard Dice WG", "hard Dice TZ", "hard Dice PZ")
DIAGNOSTIC_COLUMNS = ("NLL", "ECE", "soft Dice csPCa", "hard Dice csPCa", "AUROC", "pAUC-FROC",
                      "max sensitivity", "AP")


def write_table(path: str, results: Mapping[str, Mapping[str, Mapping[str, Any]]],
                info: str) -> str:
  """``table.md``: one table per task, one row per (task, loss), estimates with 95% CIs."""
  parts = [f"# Anatomical vs diagnostic segmentation losses (seed 001)\n\n{info}\n"]
  for task_name, columns, note in (
      ("anatomical", ANATOMICAL_COLUMNS,
       "Zones from T2W. NLL: mean voxel negative log-likelihood per patient; ECE: top-label, "
       f"{ECE_BINS} bins, voxels pooled; soft Dice from the mean MC probabilities, hard Dice from "
       "their argmax; WG = TZ u PZ."),
      ("diagnostic", DIAGNOSTIC_COLUMNS,
       "csPCa from T2W + DWI + ADC. Dice over the patients with csPCa in the crop; AUROC: patient "
       "score = max of the csPCa probability map; pAUC-FROC: area under the FROC over 0.1-2.5 "
       "false positives per patient (max 2.4); maximum sensitivity and AP at lesion level "
       "(PI-CAI candidates, IoU >= 0.1).")):
    if task_name not in results:
      continue
    rows = []
    for loss in LOSSES:
      est = results[task_name][loss]["estimates"]
      rows.append([task_name, loss] + [_format(est[c]) for c in columns])
    parts.append(f"## {task_name}\n\n{note}\n\n"
                 + tables.markdown_table(["task", "loss", *columns], rows))
  parts.append("Values: estimate [95% CI], percentile bootstrap over patients (2000 resamples); "
               "held-out predictions of all folds pooled, every patient once. (n=k): the value "
               "is defined for k patients only (Dice: patients with csPCa in the crop).\n")
  text = "\n".join(parts)
  with open(path, "w") as f:
    f.write(text)
  return text


def _format(e: stats.Estimate) -> str:
  text = e.format(3) if np.isfinite(e.value) else "undefined"
  return text + (f" (n={e.n})" if e.n_undefined else "")


def _histogram_values(task: Task, probs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
  """Per foreground class: its probability on the voxels predicted as that class."""
  out = {}
  for c, name in enumerate(task.class_names):
    if c:
      out[name] = np.concatenate([p[..., c][np.argmax(p, -1) == c] for p in probs])
  return out


def _overlay_rows(task: Task, volumes: Sequence[Volume], count: int = 3) -> list[tuple[int, int]]:
  """(case index, slice) pairs: cases with foreground first, each at its largest slice."""
  order = sorted(range(len(volumes)), key=lambda i: (not volumes[i].label.any(), i))[:count]
  return [(i, int(np.argmax((volumes[i].label > 0).sum((0, 1))))) for i in order]


def write_figures(workdir: str, task: Task, volumes: Sequence[Volume],
                  probs: Mapping[str, Sequence[np.ndarray]],
                  results: Mapping[str, Mapping[str, Any]]) -> list[str]:
  written = []
  path = os.path.join(workdir, f"histograms_{task.name}.png")
  figures.plot_probability_histograms(
      {loss: _histogram_values(task, probs[loss]) for loss in LOSSES}, path,
      title=f"{task.name}: probability of the predicted class over the predicted segments")
  written.append(path)
  path = os.path.join(workdir, f"reliability_{task.name}.png")
  figures.plot_reliability_diagrams({loss: results[loss]["reliability"] for loss in LOSSES}, path,
                                    ece={loss: results[loss]["ece"] for loss in LOSSES},
                                    title=f"{task.name}: top-label reliability (held-out voxels)")
  written.append(path)
  rows = _overlay_rows(task, volumes)
  images = [volumes[i].channels_image[..., z, 0] for i, z in rows]
  titles = [f"{volumes[i].case_id} z={z}" for i, z in rows]
  path = os.path.join(workdir, f"overlays_{task.name}.png")
  if task.name == "anatomical":
    labels = {"truth": [volumes[i].label[..., z] for i, z in rows]}
    labels.update({loss: [np.argmax(probs[loss][i][..., z, :], -1) for i, z in rows]
                   for loss in LOSSES})
    figures.plot_label_overlays(images, labels, path, class_names=task.class_names,
                                row_titles=titles)
  else:
    figures.plot_probability_overlays(
        images, {loss: [probs[loss][i][..., z, 1] for i, z in rows] for loss in LOSSES}, path,
        contours=[volumes[i].label[..., z] for i, z in rows], row_titles=titles)
  written.append(path)
  if task.name == "diagnostic":
    path = os.path.join(workdir, "froc.png")
    figures.plot_froc_curves({loss: results[loss]["froc"] for loss in LOSSES}, path,
                             title="csPCa FROC (held-out patients, bootstrap 95% bands)")
    written.append(path)
  return written


# -- main ----------------------------------------------------------------------------------------


def split_validation(train: np.ndarray, labels: Sequence[int], fraction: float, *,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Splits a fold's training cases into (training, validation), stratified by label.

  The validation part is one of ``round(1 / fraction)`` stratified folds (:func:`make_folds`) of
  ``train``: about ``fraction`` of the cases, with each label's share.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
  parts = make_folds(np.asarray(labels)[train], min(len(train), max(2, round(1 / fraction))),
                     seed=seed)
  validation = np.sort(train[parts[0]])
  return np.setdiff1d(train, validation), validation


def _validation_dice(trainer: Trainer, volumes: Sequence[Volume], task: Task, *,
                     batch_size: int) -> Callable[[Any], dict[str, float]]:
  """``state -> {"soft_dice", "hard_dice"}`` of the task's first region on whole validation volumes.

  Deterministic pass (prior mean, no dropout) on every validation volume; the (soft and hard)
  confusion matrices are pooled over the volumes, so a validation set without csPCa still gives a
  value. WG for the anatomical task, csPCa for the diagnostic one. The soft Dice picks each
  configuration's best epoch: unlike the hard Dice it rises while the lesion probabilities grow
  below 0.5, so early epochs with no lesion voxel predicted are not all tied at 0.
  """
  images = np.stack([v.channels_image for v in volumes]).astype(np.float32)
  labels = np.stack([v.label for v in volumes])
  classes = task.regions[0][1]

  def evaluate(state):
    logits_fn = trainer.logits_fn(state)
    soft = np.zeros((task.num_classes,) * 2)
    hard = np.zeros((task.num_classes,) * 2, np.int64)
    for start, (chunk, n) in zip(range(0, len(images), batch_size), _chunks(images, batch_size)):
      sharded = shard_batch({"image": chunk}, trainer.mesh)["image"]
      probs = np.asarray(jax.nn.softmax(logits_fn(sharded)["logits"], -1))[:n]
      truth = labels[start:start + n]
      soft += np.asarray(overlap.soft_confusion_matrix(probs, truth))
      hard += np.asarray(overlap.confusion_matrix(np.argmax(probs, -1), truth,
                                                  num_classes=task.num_classes))
    return {name: float(np.nan_to_num(overlap.region_dice(cm, classes)))
            for name, cm in (("soft_dice", soft), ("hard_dice", hard))}

  return evaluate


def run_task(task: Task, volumes: Sequence[Volume], folds: Sequence[np.ndarray], *,
             args: argparse.Namespace, preset: Preset, workdir: str, log: Callable[[str], None]
             ) -> dict[str, Any]:
  """Trains the 4-loss sweep on every fold; returns held-out MC predictions in case order."""
  config_fn = ProbUNet3DConfig.cpu if preset.model == "cpu" else ProbUNet3DConfig.paper
  model = ProbAttentionUNet3D(config_fn(task.num_classes, len(task.channels),
                                        **preset.model_overrides))
  n_dev = jax.device_count()
  if preset.batch_size % n_dev:
    raise SystemExit(f"--batch-size {preset.batch_size} must be a multiple of the {n_dev} devices")
  eval_batch = -(-preset.eval_batch // n_dev) * n_dev
  samples = preset.samples_per_epoch
  largest_train = max(len(volumes) - len(f) for f in folds)
  steps_per_epoch = max(1, (samples or largest_train) // preset.batch_size)
  schedule = optax.cosine_decay_schedule(
      init_value=preset.learning_rate, decay_steps=steps_per_epoch * preset.epochs,
      alpha=preset.final_learning_rate / preset.learning_rate)
  trainer = Trainer(model, optax.amsgrad(schedule), make_loss_fn(task, beta=preset.beta),
                    model_inputs=model_inputs(task.num_classes), num_configs=len(LOSSES))
  loss_params = {"select": np.eye(len(LOSSES), dtype=np.float32)}
  mc_fn = jax.jit(functools.partial(mc_predict, model, num_samples=preset.mc_samples))
  augment = Compose([Mirror(probs=(preset.flip_prob,)),
                     IntensityJitter(scale_std=preset.jitter[0], shift_std=preset.jitter[1],
                                     noise_std=preset.jitter[2])])
  patient_labels = [int(v.extras["patient_label"]) for v in volumes]

  def batches_for(train: Sequence[Volume]):
    def batches(epoch):
      return patch_batches(train, batch_size=preset.batch_size, patch_shape=preset.patch,
                           foreground_prob=preset.foreground_prob, seed=args.seed,
                           epoch=epoch, samples_per_epoch=samples, augment=augment)
    return batches

  initial = None
  probs: dict[str, list] = {loss: [None] * len(volumes) for loss in LOSSES}
  variances: dict[str, list] = {loss: [None] * len(volumes) for loss in LOSSES}
  histories: dict[str, list] = {loss: [] for loss in LOSSES}
  best_epochs: dict[str, list] = {loss: [] for loss in LOSSES}
  for k, held_out in enumerate(folds):
    tic = time.perf_counter()
    rest = np.setdiff1d(np.arange(len(volumes)), held_out)
    train_idx, val_idx = split_validation(rest, patient_labels, preset.validation_fraction,
                                          seed=args.seed + k)
    train = [volumes[i] for i in train_idx]
    validation = [volumes[i] for i in val_idx]
    test = [volumes[i] for i in held_out]
    batches = batches_for(train)
    if initial is None:  # one initialisation per task, shared by every loss and fold
      state = trainer.init(jax.random.key(args.seed), next(iter(batches(0))))
      initial = jax.device_get(state)
    else:
      state = replicate(initial, trainer.mesh)
    name = f"{task.name} fold {k + 1}/{len(folds)}"
    log(f"[{name}] {len(train)} training / {len(validation)} validation / {len(test)} held-out "
        f"patients")
    fits = trainer.fit(state, batches=batches, loss_params=loss_params,
                       evaluate=_validation_dice(trainer, validation, task, batch_size=eval_batch),
                       config=TrainConfig(num_epochs=preset.epochs, seed=args.seed, name=name,
                                          select_metric="soft_dice",
                                          progress=not args.no_progress),
                       workdir=os.path.join(workdir, "runs", task.name, f"fold{k}"),
                       resume=args.resume, log=log)
    key = jax.random.fold_in(jax.random.key(args.seed + 1), k)
    for loss, fit in zip(LOSSES, fits):
      mean, var = mc_probabilities(mc_fn, fit.best_state.variables, test, key=key,
                                   batch_size=eval_batch, mesh=trainer.mesh)
      for i, m, v in zip(held_out, mean, var):
        probs[loss][i], variances[loss][i] = m, v
      histories[loss].append(fit.history)
      best_epochs[loss].append(fit.best_epoch)
      export_model(os.path.join(workdir, "models", task.name, _slug(loss), f"fold{k}"), trainer,
                   fit.best_state, spacing=volumes[0].spacing, activation="softmax",
                   class_names=task.class_names, input_channels=len(task.channels),
                   normalization={"kind": "prostatex_bpmri", "t2w_dwi": "percentile_zscore "
                                  "(0.5, 99.5)", "adc": "divided by 3000"},
                   task=task.name, loss=loss, fold=k, epoch=fit.best_epoch,
                   held_out=[v.case_id for v in test],
                   validation=[v.case_id for v in validation], inference="mc_predict (3D)")
    log(f"[{name}] best epochs {dict(zip(LOSSES, (f.best_epoch + 1 for f in fits)))}; done in "
        f"{time.perf_counter() - tic:.0f}s")
  return {"probs": probs, "variances": variances, "histories": histories,
          "best_epochs": best_epochs}


def _slug(name: str) -> str:
  return name.replace("+", "_").replace(" ", "_").lower()


def min_lesion_voxels(spacing: Sequence[float]) -> int:
  """PI-CAI's 10-voxel candidate minimum at 0.5 x 0.5 x 3 mm, as voxels of ``spacing``."""
  return int(round(PICAI_MIN_VOXELS * PICAI_VOXEL_MM3 / float(np.prod(spacing))))


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  preset = resolve_preset(args)
  tic = time.perf_counter()
  workdir = args.workdir
  os.makedirs(workdir, exist_ok=True)
  banner("anatomical_vs_diagnostic", args)

  examples = load_examples(args, preset)
  if len(examples) < preset.folds:
    raise SystemExit(f"{len(examples)} patients are too few for {preset.folds} folds")
  patient_labels = [int(np.asarray(e["patient_label"])) for e in examples]
  folds = make_folds(patient_labels, preset.folds, seed=args.seed)
  case_ids = [str(e["case_id"]) for e in examples]
  spacing = tuple(float(s) for s in examples[0]["spacing"])
  min_voxels = min_lesion_voxels(spacing)
  print(f"patients: {len(examples)} ({sum(patient_labels)} with csPCa), {preset.folds} folds of "
        f"{[len(f) for f in folds]}; crop {examples[0]['image'].shape[:3]} at {spacing} mm; "
        f"lesion candidates > {min_voxels} voxels ({time.perf_counter() - tic:.0f}s)", flush=True)

  results: dict[str, dict[str, Any]] = {}
  saved: dict[str, Any] = {}
  written = []
  for task_name in args.tasks:
    task = TASK_SPECS[task_name]
    volumes = task_volumes(examples, task)
    run = run_task(task, volumes, folds, args=args, preset=preset, workdir=workdir, log=print)
    results[task_name] = {
        loss: evaluate_task(task, volumes, run["probs"][loss], run["variances"][loss],
                            min_voxels=min_voxels, seed=args.seed)
        for loss in LOSSES}
    written += write_figures(workdir, task, volumes, run["probs"], results[task_name])
    saved[task_name] = {
        loss: {"estimates": {k: _estimate(e) for k, e in r["estimates"].items()},
               "per_case": r["per_case"], "froc": r.get("froc"),
               "reliability": r["reliability"], "history": run["histories"][loss],
               "best_epochs": run["best_epochs"][loss]}
        for loss, r in results[task_name].items()}

  elapsed = time.perf_counter() - tic
  info = (f"Preset `{args.preset}`, data `{args.data}`: {len(examples)} patients "
          f"({sum(patient_labels)} with csPCa), {preset.folds}-fold cross-validation by patient "
          f"(stratified by csPCa; the same folds for both tasks and all losses). Probabilistic 3D "
          f"attention U-Net `{preset.model}` with deep supervision, patches "
          f"{'x'.join(map(str, preset.patch))} at {spacing} mm, batch {preset.batch_size}, "
          f"{preset.epochs} epochs, Adam (AMSGrad) cosine {preset.learning_rate:g} -> "
          f"{preset.final_learning_rate:g}, ELBO with beta = {preset.beta:g} on the KL per output "
          f"voxel; the four losses trained as one sweep from the same initialisation; held-out "
          f"folds predicted with {preset.mc_samples} MC samples (prior + dropout), last epoch; "
          f"wall time {elapsed / 60:.1f} min on {jax.device_count()} "
          f"{jax.devices()[0].platform} device(s).")
  table = write_table(os.path.join(workdir, "table.md"), results, info)
  tables.write_json(os.path.join(workdir, "results.json"), {
      "preset": args.preset, "data": args.data, "settings": dataclasses.asdict(preset),
      "losses": list(LOSSES), "tasks": list(args.tasks), "case_ids": case_ids,
      "patient_labels": patient_labels, "folds": [[case_ids[i] for i in f] for f in folds],
      "min_lesion_voxels": min_voxels, "results": saved, "figures": [os.path.basename(p)
                                                                     for p in written],
      "wall_time_s": elapsed})
  print(table)
  print(f"results written to {os.path.abspath(workdir)} ({elapsed / 60:.1f} min)", flush=True)
  return {"results": results, "case_ids": case_ids, "folds": folds}


if __name__ == "__main__":
  main(sys.argv[1:])
