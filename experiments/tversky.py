"""Study ``tversky``: BCE-with-logits vs Tversky losses on the prostate gland (seed 002).

Reproduces "Tversky loss vs BCE for prostate gland segmentation": a 2D U-Net (DoubleConv with BN,
64..512 + 1024 bottleneck, transposed-conv up, one sigmoid output) trained with BCE and with the
Tversky loss for alpha in {0.25, 0.35, 0.45, 0.5, 0.65, 0.75, 0.85}, beta = 1 - alpha (alpha weights
false positives), under the comparison protocol of :mod:`experiments.runner` (config:
``experiments/configs/tversky.py``).

Usage::

  python -m experiments.tversky                                   # phantom, CPU preset
  python -m experiments.tversky --data promise12 --manual-dir ../shared/data/promise12
  python -m experiments.tversky --data prostatex --manual-dir DIR --preset paper

Metrics per test case (threshold 0.5 on the sigmoid): Dice, precision, recall. A case whose model
predicts nothing has an undefined precision; it is counted as undefined in the precision column
and every cell says over how many cases it is computed. F1 is the paper's Eq. 4, the harmonic mean
of the mean precision and the mean recall, computed over the cases where *both* are defined (per
case, F1 would equal Dice). Figures: precision and recall against alpha with CIs, and every
model's contour on the same test slices. The Spearman correlations of precision and of recall
with alpha (over the Tversky models' per-case values) say whether the expected trade-off shows.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats

from experiments import runner
from jaxseg.metrics import overlap, stats
from jaxseg.report import figures


bce = runner.registered_loss("binary_cross_entropy")


def make_tversky(smooth: float):
  """Seed 002's Tversky loss (one index per batch, beta = 1 - alpha passed by the sweep)."""
  return runner.registered_loss("tversky", smooth=smooth)


def f1_of_means(precision: np.ndarray, recall: np.ndarray) -> float:
  """Harmonic mean of the mean precision and the mean recall (the paper's F1, Eq. 4)."""
  p, r = float(np.mean(precision)), float(np.mean(recall))
  return 2 * p * r / (p + r) if p + r > 0 else float("nan")


class Tversky(runner.Study):
  name = "tversky"
  title = "BCE vs Tversky on the prostate gland (test split)"
  metrics = (("dice", "Dice"), ("precision", "precision"), ("recall", "recall"))

  def check(self, cfg) -> None:
    for a in cfg.alphas:
      if not 0.0 <= a <= 1.0:
        raise runner.ConfigError(f"alphas = {tuple(cfg.alphas)} is not allowed: each alpha in "
                                 "[0, 1]")
    if not cfg.bce and not cfg.alphas:
      raise runner.ConfigError("nothing to train: set --alphas or keep --bce true")

  def configurations(self, cmp):
    out = [runner.LossConfig("BCE", bce, info={"alpha": None})] if cmp.cfg.bce else []
    tversky = make_tversky(cmp.cfg.smooth)
    return out + [runner.LossConfig(f"Tversky α={a:g}", tversky, {"alpha": a, "beta": 1.0 - a},
                                    info={"alpha": float(a)}) for a in cmp.cfg.alphas]

  def case_metrics(self, cmp, predictions, volumes):
    cms = np.stack([np.asarray(overlap.confusion_matrix(p, v.label, num_classes=2))
                    for p, v in zip(self.labels(cmp, predictions), volumes)])
    return {"dice": np.asarray(overlap.dice_from_confusion(cms))[:, 1],
            "precision": np.asarray(overlap.precision_from_confusion(cms))[:, 1],
            "recall": np.asarray(overlap.recall_from_confusion(cms))[:, 1]}

  def statistic_labels(self, cmp):
    return (("f1", "F1 (Eq. 4)"),)

  def study_statistics(self, cmp, predictions, volumes, values):
    both = ~(np.isnan(values["precision"]) | np.isnan(values["recall"]))
    if not both.any():
      return {"f1": stats.Estimate(np.nan, np.nan, np.nan, 0, int(both.size))}
    e = stats.bootstrap_ci_paired([values["precision"][both], values["recall"][both]],
                                  f1_of_means, num_resamples=cmp.cfg.eval.num_resamples,
                                  seed=cmp.cfg.seed)
    return {"f1": stats.Estimate(e.value, e.low, e.high, int(both.sum()),
                                 int(both.size - both.sum()), e.n_resamples_undefined)}

  def report(self, cmp, result):
    workdir, names = cmp.workdir, result["names"]
    alphas = {c["name"]: c.get("alpha") for c in result["configurations"]}
    tversky = [n for n in names if alphas[n] is not None]
    lines = []
    if tversky:
      est = result["estimates"]
      for metrics, filename in ((("precision", "recall"), "precision_recall_vs_alpha.png"),
                                (("dice",), "dice_vs_alpha.png")):
        figures.plot_metric_vs_parameter(
            os.path.join(workdir, filename), [alphas[n] for n in tversky],
            {m: [est[n][m] for n in tversky] for m in metrics},
            parameter_label="Tversky α (weight of false positives; β = 1 − α)",
            baselines={m: est["BCE"][m] for m in metrics} if "BCE" in est else None)
    if len(tversky) >= 3:
      lines.append("\nSpearman correlation with α over the Tversky models' per-case values "
                   "(every seed and test case; undefined values left out):\n")
      for metric in ("precision", "recall"):
        xs, ys = [], []
        for n in tversky:
          v = result["values"][n][metric].ravel()
          xs += [alphas[n]] * int(np.isfinite(v).sum())
          ys += list(v[np.isfinite(v)])
        rho, p = scipy_stats.spearmanr(xs, ys)
        lines.append(f"- {metric}: ρ = {rho:+.3f} (p = {p:.2g}, n = {len(ys)})")
        result.setdefault("spearman", {})[metric] = {"rho": float(rho), "p": float(p),
                                                     "n": len(ys)}
    volume = cmp.test_cases[0]
    z = sorted(np.argsort(volume.label.sum((0, 1)))[::-1][:3])
    probs = {n: result["predictions"][0][n].probs[0] for n in names}
    figures.plot_contour_overlays(
        os.path.join(workdir, "contours.png"), [volume.channels_image[..., k, 0] for k in z],
        [volume.label[..., k] for k in z], {n: [p[..., k] for k in z] for n, p in probs.items()},
        row_titles=[f"{volume.case_id} slice {k}" for k in z], threshold=cmp.cfg.eval.threshold, axes=runner.slice_axes(volume))
    return lines


STUDY = Tversky()


def main(argv: Sequence[str] | None = None):
  return runner.main(STUDY, argv, prog="python -m experiments.tversky",
                     config="experiments.configs.tversky", description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
  main(sys.argv[1:])
