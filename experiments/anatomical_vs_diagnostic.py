"""Study ``anatomical_vs_diagnostic``: CE vs balanced CE vs focal vs Dice+boundary (seed 001).

Reproduces Saha et al., "Anatomical and Diagnostic Bayesian Segmentation in Prostate MRI -- Should
Different Clinical Objectives Mandate Different Loss Functions?" (REFERENCE §2): a probabilistic
3D attention U-Net (:mod:`jaxseg.models.prob_unet3d`, deep supervision on) trained on two tasks,
**anatomical** (zones {background, TZ, PZ} from T2W; reported for WG = TZ u PZ, TZ, PZ) and
**diagnostic** (csPCa from T2W, DWI and ADC), with four losses per voxel:

* ``CE``; ``balanced CE`` ``alpha_c y_c (-log p_c)``, alpha = [0.05, 0.30, 0.65] (zones) and
  [0.75, 0.25] (csPCa); ``focal`` ``sum_c alpha_c y_c (1 - p_c)^2 (-log p_c)``, the same alpha;
* ``Dice+boundary``: soft foreground Dice ``1 - 2 sum(y p) / (sum(y + p) + 1e-5)`` plus the Kervadec
  boundary term ``mean_i sum_c p_ic phi_ic`` with signed distance maps ``phi`` (mm, negative
  inside) computed once per label volume (:func:`jaxseg.data.distance.signed_distance_maps`).

Every loss is summed over the deep-supervision heads with nnU-Net's weights; labels are max-pooled
to a coarse head and the distance maps min-pooled (``-maxpool(-phi)``). The objective is the
negative ELBO per output voxel, ``L_seg + beta * KL / N`` with beta = 10, so that beta keeps its
meaning whatever the patch size. Each task is one comparison of :mod:`experiments.runner` (config:
``experiments/configs/anatomical_vs_diagnostic.py``): K-fold cross-validation by patient,
stratified by csPCa, a stratified validation part of each fold's training patients selecting
each loss's epoch by the pooled soft Dice of WG or csPCa, held-out patients predicted with MC
samples (prior and dropout; the same keys for every loss).

Metrics per patient: NLL, soft and hard Dice per region (diagnostic Dice over patients with
csPCa); study-level: top-label ECE (15 bins, voxels pooled), and for csPCa PI-CAI's lesion
detection (:mod:`jaxseg.metrics.detection`: candidates > ``min_voxels`` voxels, 7.5 mm^3 at the
preset's spacing), patient AUROC, pAUC-FROC over 0.1-2.5 FP per patient, maximum sensitivity
and AP. Deviations from the paper: patches smaller than the crop; of the paper's augmentations
only the flip and intensity changes (rotations and scalings would make the distance maps
inexact).

Usage::

  python -m experiments.anatomical_vs_diagnostic                     # phantom, CPU preset
  python -m experiments.anatomical_vs_diagnostic --preset paper      # 160 x 160 x 20 (GPU)
  python -m experiments.anatomical_vs_diagnostic --data prostatex --manual-dir DIR
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import os
import sys
from collections.abc import Sequence

import jax
import numpy as np

from experiments import runner
from jaxseg.data.distance import signed_distance_maps
from jaxseg.data.pipeline import Volume
from jaxseg import losses as jax_losses
from jaxseg.losses.boundary import dice_boundary_loss
from jaxseg.losses.supervision import deep_supervision_loss, elbo_loss
from jaxseg.metrics import calibration, detection, overlap, stats
from jaxseg.report import figures

ECE_BINS = 15
PICAI_MIN_VOXELS, PICAI_VOXEL_MM3 = 10, 0.5 * 0.5 * 3.0   # PI-CAI candidates: 10 voxels of 0.75 mm^3


@dataclasses.dataclass(frozen=True)
class Task:
  name: str
  label_key: str
  class_names: tuple[str, ...]
  channels: tuple[int, ...]
  alpha: tuple[float, ...]
  regions: tuple[tuple[str, tuple[int, ...]], ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


TASKS = {
    "anatomical": Task("anatomical", "zones", ("background", "TZ", "PZ"), (0,),
                       (0.05, 0.30, 0.65), (("WG", (1, 2)), ("TZ", (1,)), ("PZ", (2,)))),
    "diagnostic": Task("diagnostic", "lesions", ("background", "csPCa"), (0, 1, 2),
                       (0.75, 0.25), (("csPCa", (1,)),)),
}


def _elbo(per_scale, beta):
  """Deep supervision (labels max-pooled, distances min-pooled) plus beta * KL per output voxel."""

  def loss(outputs, batch, **params):
    heads = (outputs["logits"], *outputs["deep_supervision"])
    seg = deep_supervision_loss(heads, (batch["label"], -batch["sdm"]),
                                lambda l, m: per_scale(l, m[0], -m[1], **params))
    return elbo_loss(seg, outputs["kl"] / float(np.prod(outputs["logits"].shape[1:-1])), beta=beta)
  return loss


def _registered(name: str, **hyperparameters):
  """A registry loss (``jaxseg.losses.get``) as a per-scale ``(logits, labels, sdm)`` loss."""
  fn = jax_losses.get(name, **hyperparameters)
  return lambda l, y, d: fn(l, y)


def losses(task: Task, beta: float) -> list[runner.LossConfig]:
  alpha = np.asarray(task.alpha, np.float32)
  return [
      runner.LossConfig("CE", _elbo(_registered("cross_entropy"), beta)),
      runner.LossConfig("balanced CE", _elbo(
          _registered("cross_entropy", class_weights=alpha), beta)),
      runner.LossConfig("focal", _elbo(_registered("focal", alpha=alpha, gamma=2.0), beta)),
      runner.LossConfig("Dice+boundary", _elbo(
          lambda l, y, d: dice_boundary_loss(l, y, d, w_region=1.0, w_boundary=1.0,
                                             include_background=False, smooth_nr=0.0,
                                             smooth_dr=1e-5), beta)),
  ]


def min_lesion_voxels(spacing: Sequence[float]) -> int:
  """PI-CAI's 10-voxel candidate minimum at 0.5 x 0.5 x 3 mm, as voxels of ``spacing``."""
  return int(round(PICAI_MIN_VOXELS * PICAI_VOXEL_MM3 / float(np.prod(spacing))))


class TaskStudy(runner.Study):
  """One task of the study as a comparison."""

  chance = {"AUROC": 0.5}  # a patient score that knows nothing ranks at random

  def __init__(self, task: Task):
    self.task = task
    self.name = f"anatomical_vs_diagnostic/{task.name}"
    self.title = f"{task.name.capitalize()} task: four losses, held-out folds pooled"
    self.metrics = (("nll", "NLL"),) + tuple(
        (f"{kind}_dice_{r}", f"{kind} Dice {r}") for kind in ("soft", "hard")
        for r, _ in task.regions)

  def configurations(self, cmp):
    return losses(self.task, cmp.cfg.beta)

  def volumes(self, cmp, examples):
    out = []
    k = self.task.num_classes
    for e in examples:
      label = np.asarray(e[self.task.label_key]).astype(np.int32)
      spacing = tuple(float(s) for s in e["spacing"])
      out.append(Volume(image=np.asarray(e["image"], np.float32)[..., list(self.task.channels)],
                        label=label, spacing=spacing, case_id=str(e["case_id"]),
                        affine=None if e.get("affine") is None else np.asarray(e["affine"]),
                        extras={"sdm": signed_distance_maps(label, k, spacing=spacing),
                                "patient_label": int(np.asarray(e["patient_label"]))}))
    return out

  def model_inputs(self, cmp):
    k = self.task.num_classes
    return lambda batch: (batch["image"], jax.nn.one_hot(batch["label"], k))

  def _cms(self, predictions, volumes):
    k = self.task.num_classes
    soft = [np.asarray(overlap.soft_confusion_matrix(p, v.label))
            for p, v in zip(predictions.probs, volumes)]
    hard = [np.asarray(overlap.confusion_matrix(np.argmax(p, -1), v.label, num_classes=k))
            for p, v in zip(predictions.probs, volumes)]
    return soft, hard

  def validate(self, cmp, predictions, volumes):
    classes = self.task.regions[0][1]
    soft, hard = self._cms(predictions, volumes)
    return {name: float(np.nan_to_num(overlap.region_dice(sum(cm), classes)))
            for name, cm in (("soft_dice", soft), ("hard_dice", hard))}

  def case_metrics(self, cmp, predictions, volumes):
    soft, hard = self._cms(predictions, volumes)
    positive = np.array([bool(v.label.any()) for v in volumes])
    out = {"nll": np.array([calibration.negative_log_likelihood(p, v.label)
                            for p, v in zip(predictions.probs, volumes)])}
    for kind, cms in (("soft", soft), ("hard", hard)):
      for region, classes in self.task.regions:
        values = np.array([float(overlap.region_dice(cm, classes)) for cm in cms])
        if self.task.name == "diagnostic":
          values = np.where(positive, values, np.nan)  # Dice over the patients with csPCa
        out[f"{kind}_dice_{region}"] = values
    fg = [np.argmax(p, -1) > 0 for p in predictions.probs]
    out["mean_std_foreground"] = np.array(
        [float(np.sqrt(np.maximum(v, 0)).max(-1)[m].mean()) if m.any() else np.nan
         for v, m in zip(predictions.variances or [np.zeros_like(p) for p in predictions.probs],
                         fg)])
    return out

  def statistic_labels(self, cmp):
    extra = (("AUROC", "AUROC"), ("pAUC-FROC", "pAUC-FROC"),
             ("max sensitivity", "max sensitivity"), ("AP", "AP"))
    return (("ECE", "ECE"),) + (extra if self.task.name == "diagnostic" else ())

  def study_statistics(self, cmp, predictions, volumes, values):
    boot = dict(num_resamples=cmp.cfg.eval.num_resamples, seed=cmp.cfg.seed)
    diagrams = [calibration.reliability_diagram(p, v.label, num_bins=ECE_BINS)
                for p, v in zip(predictions.probs, volumes)]
    pooled = lambda d: calibration.ece_from_diagram(calibration.pool_reliability_diagrams(d))
    out = {"ECE": stats.bootstrap_ci_paired([diagrams], pooled, **boot)}
    self.reliability = getattr(self, "reliability", {})
    self.reliability[id(predictions)] = calibration.pool_reliability_diagrams(diagrams)
    if self.task.name == "diagnostic":
      min_voxels = min_lesion_voxels(volumes[0].spacing)
      det = detection.evaluate_cases([p[..., 1] for p in predictions.probs],
                                     [v.label for v in volumes], min_voxels=min_voxels)
      pair = functools.partial(stats.bootstrap_ci_paired, **boot)
      out["AUROC"] = pair([det["case_scores"], det["case_labels"]], detection.auroc)
      for name, key in (("pAUC-FROC", "pauc"), ("max sensitivity", "max_sensitivity"),
                        ("AP", "average_precision")):
        out[name] = pair([det["case_results"]], lambda r, key=key: detection.froc(r)[key])
      grid = np.geomspace(0.05, max(2.5, float(det["fp_per_case"][-1])), 60)
      low, high = detection.froc_bootstrap_band(det["case_results"], grid, **boot)
      self.froc = getattr(self, "froc", {})
      self.froc[id(predictions)] = {"fp_per_case": det["fp_per_case"],
                                    "sensitivity": det["sensitivity"], "band_fp": grid,
                                    "band_low": low, "band_high": high}
    return out

  def report(self, cmp, result):
    workdir, names, task = cmp.workdir, result["names"], self.task
    preds = {n: result["predictions"][0][n] for n in names}
    probs = {n: p.probs for n, p in preds.items()}
    figures.plot_probability_histograms(
        {n: {name: np.concatenate([p[..., c][np.argmax(p, -1) == c] for p in probs[n]])
             for c, name in enumerate(task.class_names) if c} for n in names},
        os.path.join(workdir, "histograms.png"),
        title=f"{task.name}: probability of the predicted class over the predicted segments")
    figures.plot_reliability_diagrams(
        {n: self.reliability[id(preds[n])] for n in names},
        os.path.join(workdir, "reliability.png"),
        ece={n: result["study_statistics"][n][0]["ECE"].value for n in names},
        title=f"{task.name}: top-label reliability (held-out voxels)")
    volumes = cmp.test_cases
    order = sorted(range(len(volumes)), key=lambda i: (not volumes[i].label.any(), i))[:3]
    rows = [(i, int(np.argmax((volumes[i].label > 0).sum((0, 1))))) for i in order]
    images = [volumes[i].channels_image[..., z, 0] for i, z in rows]
    titles = [f"{volumes[i].case_id} slice {z}" for i, z in rows]
    path = os.path.join(workdir, "overlays.png")
    if task.name == "anatomical":
      labels = {"truth": [volumes[i].label[..., z] for i, z in rows],
                **{n: [np.argmax(probs[n][i][..., z, :], -1) for i, z in rows] for n in names}}
      figures.plot_label_overlays(images, labels, path, class_names=task.class_names,
                                  row_titles=titles, axes=runner.slice_axes(volumes[0]))
    else:
      figures.plot_probability_overlays(
          images, {n: [probs[n][i][..., z, 1] for i, z in rows] for n in names}, path,
          contours=[volumes[i].label[..., z] for i, z in rows], row_titles=titles,
          axes=runner.slice_axes(volumes[0]))
      figures.plot_froc_curves({n: self.froc[id(preds[n])] for n in names},
                               os.path.join(workdir, "froc.png"),
                               title="csPCa FROC (held-out patients, bootstrap 95% bands)")
    return ["\nNLL: mean voxel negative log-likelihood per patient; ECE: top-label, "
            f"{ECE_BINS} bins, voxels pooled (bootstrap over patients); soft Dice from the mean "
            "MC probabilities, hard Dice from their argmax; WG = TZ ∪ PZ."
            + (" csPCa Dice over the patients with csPCa in the crop; AUROC: patient score = max "
               "of the csPCa map; pAUC-FROC over 0.1–2.5 FP per patient (max 2.4); lesions are "
               "PI-CAI candidates hit at IoU ≥ 0.1." if task.name == "diagnostic" else "")]


class AnatomicalVsDiagnostic:
  """Both tasks, each one comparison in ``<workdir>/<task>/``, and one ``table.md`` of both."""

  def check(self, cfg) -> None:
    unknown = set(cfg.tasks) - set(TASKS)
    if unknown or not cfg.tasks:
      raise runner.ConfigError(f"tasks = {tuple(cfg.tasks)} is not allowed: one or more of "
                               f"{', '.join(TASKS)}")
    if cfg.split.folds < 2:
      raise runner.ConfigError(f"split.folds = {cfg.split.folds} is not allowed: >= 2 "
                               "(the study is cross-validated)")

  def run(self, cfg):
    results, parts = {}, ["# Anatomical vs diagnostic segmentation losses (seed 001)\n"]
    for name in cfg.tasks:
      c = task_config(cfg, name)
      c.workdir = os.path.join(cfg.workdir, name)
      results[name] = runner.Comparison(c, TaskStudy(TASKS[name])).run()
      with open(os.path.join(c.workdir, "table.md")) as f:
        parts.append(f.read().replace("# ", "## ", 1))
    with open(os.path.join(cfg.workdir, "table.md"), "w") as f:
      f.write("\n".join(parts))
    return results


def task_config(cfg, name: str):
  """The study's config for one task: its classes, label, input channels and normalisation."""
  task = TASKS[name]
  c = copy.deepcopy(cfg)
  c.model.overrides.num_classes = task.num_classes
  c.model.overrides.in_channels = len(task.channels)
  c.model.class_names = task.class_names
  c.data.label_key = task.label_key
  source = c.data.sources[c.data.source]
  source.channels = tuple(source.channels[i] for i in task.channels)
  source.normalization = tuple(source.normalization[i] for i in task.channels)
  return c


STUDY = AnatomicalVsDiagnostic()


def main(argv: Sequence[str] | None = None):
  return runner.main(STUDY, argv, prog="python -m experiments.anatomical_vs_diagnostic",
                     config="experiments.configs.anatomical_vs_diagnostic",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
  main(sys.argv[1:])
