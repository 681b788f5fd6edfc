"""Study ``hierarchical``: flat vs hierarchical cross-entropy on 9-class male-pelvis MR (seed 000).

Reproduces "Improving Prostate Segmentation through Hierarchical Loss Penalisation": a 2D U-Net
(64/128/256, bilinear up, no BN) trained with plain cross-entropy (flat) and with
``CE * (1 + alpha * D[y, argmax p])``, where ``D`` is an anatomical penalty matrix built from the
centroids of the training labels (:func:`jaxseg.hierarchy.penalty_matrix_from_labels`) or the
paper's Table 1 (``--penalty paper``, the default on phantoms, whose anatomy does not give Table
1's ordering: ``python -m benchmarks.penalty_matrix``; ``table.md`` says which matrix a run used).
``alpha`` is chosen by a search on validation cases: every
candidate trains for ``search_epochs`` from the same fresh initialisation (the original code did
not reset weights), and the best validation mean foreground Dice wins. Flat and hierarchical
models are then compared under the protocol of :mod:`experiments.runner` (config:
``experiments/configs/hierarchical.py``).

Usage::

  python -m experiments.hierarchical                      # phantom data, CPU preset
  python -m experiments.hierarchical --preset paper       # the paper's settings (GPU)
  python -m experiments.hierarchical --data zenodo --manual-dir /path/to/zenodo_7013610

Metrics per test case: Dice of each of the 8 foreground classes, of the prostate superclass
(TZ u CG) and their mean (classes absent from truth and prediction are undefined and left out),
and the expected hierarchical cost. Also written: ``penalty_matrix.csv`` and its figure, the
hierarchical confusion matrices and label overlays.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

from experiments import runner
from jaxseg import hierarchy
from jaxseg.metrics import overlap
from jaxseg.report import figures, tables

NAMES = hierarchy.PELVIS_ABBREVIATIONS
NUM_CLASSES = len(hierarchy.PELVIS_CLASSES)


def _lam_as_alpha(fn):
  """The expected-cost form names its weight ``lam``; the study's α drives it."""
  def loss(outputs, batch, *, alpha):
    return fn(outputs, batch, lam=alpha)
  return loss


class Hierarchical(runner.Study):
  name = "hierarchical"
  title = "Flat vs hierarchical cross-entropy (test split)"
  metrics = (tuple((f"dice_{NAMES[c]}", f"Dice {NAMES[c]}") for c in range(1, NUM_CLASSES))
             + (("prostate_dice", "Dice prostate (TZ ∪ CG)"),
                ("mean_foreground_dice", "mean foreground Dice"),
                ("expected_cost", "expected hierarchical cost ↓")))

  def check(self, cfg) -> None:
    if cfg.penalty not in ("data", "paper"):
      raise runner.ConfigError(f"penalty = {cfg.penalty!r} is not allowed: 'data' or 'paper'")
    if cfg.form not in ("argmax", "expected"):
      raise runner.ConfigError(f"form = {cfg.form!r} is not allowed: 'argmax' or 'expected'")
    if cfg.alpha is None and (not cfg.alphas or min(cfg.alphas) < 0 or cfg.search_epochs < 1):
      raise runner.ConfigError(f"alphas = {tuple(cfg.alphas)} / search_epochs = "
                               f"{cfg.search_epochs} are not allowed: alphas >= 0 and "
                               "search_epochs >= 1 (or give --alpha)")

  def configurations(self, cmp):
    cfg, train = cmp.cfg, cmp.folds[0].train
    if cfg.penalty == "paper":
      self.penalty = np.array(hierarchy.PAPER_PENALTY_MATRIX)
    else:
      self.penalty = hierarchy.penalty_matrix_from_labels([v.label for v in train],
                                                          [v.spacing for v in train])
    tables.write_matrix_csv(os.path.join(cmp.workdir, "penalty_matrix.csv"), self.penalty, NAMES)
    penalty = self.penalty

    # Both forms from the loss registry; alpha is passed per configuration (one compiled step).
    loss = (runner.registered_loss("hierarchical_cross_entropy", penalty=penalty)
            if cfg.form == "argmax" else
            runner.registered_loss("expected_cost_cross_entropy", cost=penalty))
    if cfg.form != "argmax":
      loss = _lam_as_alpha(loss)

    self.search = {}
    alpha = cfg.alpha
    if alpha is None:
      candidates = [runner.LossConfig(f"α={a:g}", loss, {"alpha": a}) for a in cfg.alphas]
      fits, _ = cmp.train(candidates, cmp.folds[0], name="search", epochs=cfg.search_epochs)
      # Mean over seeds of each candidate's best validation metric.
      self.search = {a: float(np.mean([row[i].best_metric for row in fits]))
                     for i, a in enumerate(cfg.alphas)}
      alpha = max(self.search, key=self.search.get)
      cmp.log("alpha search (validation mean foreground Dice): "
              + ", ".join(f"{a:g}: {d:.4f}" for a, d in self.search.items())
              + f" -> alpha = {alpha:g}")
    self.alpha = float(alpha)
    return [runner.LossConfig("flat", loss, {"alpha": 0.0}, info={"alpha": 0.0}),
            runner.LossConfig(f"hierarchical α={alpha:g}", loss, {"alpha": float(alpha)},
                              info={"alpha": float(alpha)})]

  def _confusions(self, cmp, predictions, volumes):
    return np.stack([np.asarray(overlap.confusion_matrix(p, v.label, num_classes=NUM_CLASSES))
                     for p, v in zip(self.labels(cmp, predictions), volumes)])

  def case_metrics(self, cmp, predictions, volumes):
    cms = self._confusions(cmp, predictions, volumes)
    dice = np.asarray(overlap.dice_from_confusion(cms))
    superclass = hierarchy.PROSTATE_SUPERCLASS
    prostate = np.asarray(overlap.dice_from_confusion(
        overlap.merge_classes(cms, [superclass])))[:, superclass[0]]
    foreground, _ = overlap.nan_mean_with_count(dice[:, 1:], axis=1)
    out = {f"dice_{NAMES[c]}": dice[:, c] for c in range(1, NUM_CLASSES)}
    out.update(prostate_dice=prostate, mean_foreground_dice=np.asarray(foreground),
               expected_cost=np.asarray(overlap.expected_hierarchical_cost(cms, self.penalty)))
    return out

  def report(self, cmp, result):
    workdir, names = cmp.workdir, result["names"]
    volumes = cmp.test_cases
    first = {n: result["predictions"][0][n] for n in names}
    matrices = {n: np.asarray(overlap.hierarchical_confusion_matrix(
        self._confusions(cmp, first[n], volumes).sum(0), self.penalty)) for n in names}
    figures.plot_matrices(matrices, NAMES, os.path.join(workdir, "hierarchical_confusion.png"),
                          title="Hierarchical confusion matrix: counts × (1 + D), test split")
    figures.plot_matrices({"penalty matrix D": self.penalty}, NAMES,
                          os.path.join(workdir, "penalty_matrix.png"), log=False, fmt=".2f")
    volume = volumes[0]
    area = np.isin(volume.label, hierarchy.PROSTATE_SUPERCLASS).sum((0, 1))
    z = sorted(np.argsort(area)[-3:][::-1].tolist())
    labels = {n: self.labels(cmp, first[n])[0] for n in names}
    figures.plot_label_overlays(
        [volume.channels_image[..., k, 0] for k in z],
        {"truth": [volume.label[..., k] for k in z],
         **{n: [l[..., k] for k in z] for n, l in labels.items()}},
        os.path.join(workdir, "overlay.png"), class_names=NAMES,
        row_titles=[f"{volume.case_id} slice {k}" for k in z], axes=runner.slice_axes(volume))
    result.update(alpha=self.alpha, alpha_search={f"{a:g}": d for a, d in self.search.items()},
                  penalty_matrix=self.penalty, penalty_source=cmp.cfg.penalty)
    source = ("the paper's Table 1" if cmp.cfg.penalty == "paper" else
              "built from the centroids of the training labels (REFERENCE §1; "
              "`penalty_matrix.csv`); Spearman against the paper's Table 1 "
              f"{hierarchy.penalty_rank_agreement(self.penalty):.2f} over its 21 pairs")
    search = (", ".join(f"{a:g}: {d:.3f}" for a, d in self.search.items()) if self.search
              else "not run (alpha given)")
    return [f"\nPenalty matrix: {source}; form `{cmp.cfg.form}`. α search (validation mean "
            f"foreground Dice after {cmp.cfg.search_epochs} epochs): {search} → α = "
            f"{self.alpha:g}. Dice of a class absent from both truth and prediction is "
            "undefined for that case."]


STUDY = Hierarchical()


def main(argv: Sequence[str] | None = None):
  return runner.main(STUDY, argv, prog="python -m experiments.hierarchical",
                     config="experiments.configs.hierarchical",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
  main(sys.argv[1:])
