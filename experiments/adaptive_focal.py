"""Study ``adaptive_focal``: sigmoid focal vs AG-BCE vs adaptive focal on micro-ultrasound (seed 003).

Reproduces the MicroSegNet loss comparison: a TransUNet-style model with four deep-supervision
heads segments the prostate capsule on micro-ultrasound slices, trained with
- sigmoid focal loss (alpha 0.25, gamma 2; a single sigmoid, unlike the original code),
- annotation-guided BCE (hard region = expert XOR non-expert, dilated per scale; weight 4),
- the adaptive focal loss (gamma = sample difficulty + annotation variability, stop-gradient),
each summed over the four heads with equal weights and hard-region dilations 1, 2, 3, 4 from the
coarsest head to the finest, under the protocol of :mod:`experiments.runner` (config:
``experiments/configs/adaptive_focal.py``).

Usage::

  python -m experiments.adaptive_focal                     # phantom, CPU preset
  python -m experiments.adaptive_focal --preset paper      # 224 x 224, R50-ViT-B/16 sizes (GPU)
  python -m experiments.adaptive_focal --data microsegnet --manual-dir DIR

Metrics per test patient (REFERENCE §4, as MicroSegNet's evaluation): Dice averaged over the
patient's slices, then over patients (:func:`jaxseg.metrics.overlap.per_slice_dice`; slices where
both masks are empty are skipped, and with the original rule also slices where either is); HD95 in mm per slice (max of the two directed 95th
percentiles; slices where both masks are empty skipped), averaged over the slices; HD95 as the
original code computed it (medpy: the 95th percentile of both directions pooled, slices where
either mask is empty skipped); Dice inside the hard regions.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from experiments import runner
from jaxseg.losses.annotation import adaptive_focal_loss, ag_bce_loss, hard_region_mask
from jaxseg.losses.focal import sigmoid_focal_loss
from jaxseg.losses.supervision import deep_supervision_loss
from jaxseg.metrics import overlap, surface
from jaxseg.report import figures

SCALE_KERNELS = (4, 3, 2, 1)  # hard-region dilation per head, fine -> coarse (224, 112, 56, 28)


def _supervised(per_scale):
  """A loss over the four heads: the model returns coarse -> fine, the loss wants fine -> coarse."""

  def loss(outputs, batch, **params):
    heads = tuple(outputs)[::-1]

    def scale(logits, masks, *, kernel_size):
      expert, non_expert = masks
      return per_scale(logits, expert, non_expert, kernel_size=kernel_size, **params)

    return deep_supervision_loss(heads, (batch["label"], batch["non_expert"]), scale,
                                 weights=[1.0] * len(heads),
                                 kernel_sizes=SCALE_KERNELS[:len(heads)])
  return loss


@_supervised
def focal(logits, expert, non_expert, *, kernel_size):
  return sigmoid_focal_loss(logits, expert.astype(logits.dtype), alpha=0.25, gamma=2.0)


@_supervised
def ag_bce(logits, expert, non_expert, *, kernel_size, hard_weight):
  hard = hard_region_mask(expert, non_expert, kernel_size=kernel_size)
  return ag_bce_loss(logits, expert.astype(logits.dtype), hard, hard_weight=hard_weight)


@_supervised
def adaptive_focal(logits, expert, non_expert, *, kernel_size):
  hard = hard_region_mask(expert, non_expert, kernel_size=kernel_size)
  disagreement = jnp.logical_xor(expert > 0, non_expert > 0).astype(logits.dtype)
  return adaptive_focal_loss(logits, expert.astype(logits.dtype), hard, disagreement)


class AdaptiveFocal(runner.Study):
  name = "adaptive_focal"
  title = "Sigmoid focal vs AG-BCE vs adaptive focal (test split)"
  metrics = (("dice", "Dice"), ("dice_original", "Dice, original*"), ("hd95", "HD95 mm"),
             ("hd95_original", "HD95 mm, original*"), ("hard_dice", "Dice in hard regions"))

  def check(self, cfg) -> None:
    if cfg.image_size < 16:
      raise runner.ConfigError(f"image_size = {cfg.image_size} is not allowed: an integer >= 16")
    cfg.model.overrides.image_size = cfg.image_size
    cfg.data.settings.image_size = cfg.image_size
    cfg.train.patch = (cfg.image_size, cfg.image_size)

  def configurations(self, cmp):
    return [runner.LossConfig("sigmoid focal", focal),
            runner.LossConfig("AG-BCE", ag_bce, {"hard_weight": cmp.cfg.hard_weight}),
            runner.LossConfig("adaptive focal", adaptive_focal)]

  def case_metrics(self, cmp, predictions, volumes):
    preds = [p.astype(np.uint8) for p in self.labels(cmp, predictions)]
    truths = [v.label.astype(np.uint8) for v in volumes]
    hard = [np.asarray(hard_region_mask(v.label[None] > 0, v.extras["non_expert"][None] > 0,
                                        kernel_size=SCALE_KERNELS[0]))[0] for v in volumes]
    cms = np.stack([np.asarray(overlap.confusion_matrix(p, t, num_classes=2))
                    for p, t in zip(preds, truths)])
    hard_cms = np.stack([np.asarray(overlap.confusion_matrix(p * h, t * h, num_classes=2))
                         for p, t, h in zip(preds, truths, hard)])
    spacing = [tuple(v.spacing) for v in volumes]
    return {
        "dice": np.array([float(overlap.per_slice_dice(p, t).value)
                          for p, t in zip(preds, truths)]),
        "dice_original": np.array([float(overlap.per_slice_dice(
            p, t, skip_empty_slices="either").value) for p, t in zip(preds, truths)]),
        "dice_pooled": np.asarray(overlap.dice_from_confusion(cms))[:, 1],
        "hd95": surface.hd95_per_case(preds, truths, spacing=spacing, per_slice=True,
                                      skip_empty_slices="both").values,
        "hd95_original": surface.hd95_per_case(preds, truths, spacing=spacing,
                                               **surface.MICROSEGNET_HD95).values,
        "hard_dice": np.asarray(overlap.dice_from_confusion(hard_cms))[:, 1]}

  def report(self, cmp, result):
    volume = cmp.test_cases[0]
    z = sorted(np.argsort(volume.label.sum((0, 1)))[::-1][:3])
    probs = {n: result["predictions"][0][n].probs[0] for n in result["names"]}
    figures.plot_contour_overlays(
        os.path.join(cmp.workdir, "overlays.png"), [volume.channels_image[..., k, 0] for k in z],
        [volume.label[..., k] for k in z], {n: [p[..., k] for k in z] for n, p in probs.items()},
        row_titles=[f"{volume.case_id} slice {k}" for k in z], truth_label="expert",
        threshold=cmp.cfg.eval.threshold, axes=runner.slice_axes(volume))
    return ["\nDice: per slice, averaged over a patient's slices where truth or prediction is "
            "non-empty (a slice with one empty mask scores 0), then over patients; the Dice of "
            "all slices pooled is in results.json (`dice_pooled`). HD95: per slice, the larger of the two "
            "directed 95th percentiles in mm, slices where both masks are empty skipped (a slice "
            "with one empty mask makes the patient undefined), averaged over slices. "
            "*Original (MicroSegNet's code): slices where either mask is empty skipped; HD95 is "
            "medpy's (95th percentile of both directions pooled). Hard regions: expert XOR non-expert annotation, "
            "dilated with the finest head's kernel."]


STUDY = AdaptiveFocal()


def main(argv: Sequence[str] | None = None):
  return runner.main(STUDY, argv, prog="python -m experiments.adaptive_focal",
                     config="experiments.configs.adaptive_focal",
                     description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
  main(sys.argv[1:])
