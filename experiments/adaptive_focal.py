"""Study ``adaptive_focal``: sigmoid focal vs AG-BCE vs adaptive focal on micro-ultrasound (seed 003).

Reproduces the MicroSegNet loss comparison: a TransUNet-style model with four deep-supervision
heads segments the prostate capsule on micro-ultrasound slices, trained with
- sigmoid focal loss (alpha 0.25, gamma 2; a single sigmoid, unlike the original code),
- annotation-guided BCE (hard region = expert XOR non-expert, dilated per scale; weight 4),
- the adaptive focal loss (gamma = sample difficulty + annotation variability, stop-gradient),
each summed over the four heads with equal weights and hard-region dilations 1, 2, 3, 4 from the
coarsest head to the finest. The three configurations train as one compiled sweep: the same
initialisation and data order for all, SGD (momentum 0.9, weight decay 1e-4, poly decay 0.9).

Usage::

  python -m experiments.adaptive_focal                     # phantom, CPU preset
  python -m experiments.adaptive_focal --preset paper      # 224 x 224, R50-ViT-B/16 sizes (GPU)
  python -m experiments.adaptive_focal --data microsegnet --manual-dir DIR

Writes ``results/adaptive_focal/``: ``table.md`` (per test case Dice and HD95 in mm for the three
losses, then mean with a bootstrap 95% CI, and Dice inside the hard regions), ``results.json``,
``training_curves.png``, ``overlays.png`` and the best models under ``models/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from experiments._common import (Override, add_common_arguments, add_overrides,  # noqa: E402
                                 banner, export_model, given_overrides, predict_logits,
                                 to_volumes)
from jaxseg.data.pipeline import Volume, patch_batches  # noqa: E402
from jaxseg.losses.annotation import adaptive_focal_loss, ag_bce_loss, hard_region_mask  # noqa: E402
from jaxseg.losses.focal import sigmoid_focal_loss  # noqa: E402
from jaxseg.losses.supervision import deep_supervision_loss, downsample_labels  # noqa: E402
from jaxseg.metrics import overlap, stats, surface  # noqa: E402
from jaxseg.models.transunet import TransUNet, TransUNetConfig  # noqa: E402
from jaxseg.report import figures, tables  # noqa: E402
from jaxseg.train.loop import TrainConfig, Trainer  # noqa: E402

LOSSES = ("sigmoid focal", "AG-BCE", "adaptive focal")
SCALE_KERNELS = (4, 3, 2, 1)  # hard-region dilation per head, fine -> coarse (224, 112, 56, 28)


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of one run of the study (flags override fields)."""

  model: str
  image_size: int
  batch_size: int
  epochs: int
  learning_rate: float
  samples_per_epoch: int | None
  hard_weight: float
  eval_batch: int
  data: dict[str, dict[str, Any]]


PRESETS = {
    # Minutes on 2 CPU cores: a tiny TransUNet at 64 x 64, 24 phantom patients of 8 slices.
    "cpu": Preset(model="cpu", image_size=64, batch_size=8, epochs=30, learning_rate=0.01,
                  samples_per_epoch=256, hard_weight=4.0, eval_batch=8,
                  data={"phantom": {"num_cases": 24, "num_slices": 8}, "microsegnet": {}}),
    # MicroSegNet: 224 x 224, R50-ViT-B/16 sizes, batch 8, 10 epochs, SGD 0.01, seed 1234.
    "paper": Preset(model="paper", image_size=224, batch_size=8, epochs=10, learning_rate=0.01,
                    samples_per_epoch=None, hard_weight=4.0, eval_batch=16,
                    data={"phantom": {}, "microsegnet": {}}),
}


PRESET_FLAGS = (Override("epochs"), Override("batch_size"), Override("learning_rate", float),
                Override("samples_per_epoch"), Override("image_size"),
                Override("hard_weight", float))
DATA_FLAGS = (Override("num_cases"), Override("num_slices"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m experiments.adaptive_focal",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_common_arguments(parser, presets=PRESETS, data=("phantom", "microsegnet"),
                       workdir=os.path.join("results", "adaptive_focal"))
  add_overrides(parser, PRESET_FLAGS + DATA_FLAGS)
  return parser.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> Preset:
  preset = PRESETS[args.preset]
  changes = given_overrides(args, PRESET_FLAGS)
  data = {**preset.data[args.data], **given_overrides(args, DATA_FLAGS),
          "image_size": changes.get("image_size", preset.image_size)}
  changes["data"] = {args.data: data}
  return dataclasses.replace(preset, **changes)


def load_volumes(args: argparse.Namespace, preset: Preset) -> dict[str, list[Volume]]:
  from datasets import micro_us  # pylint: disable=import-outside-toplevel
  if args.data == "microsegnet" and not args.manual_dir:
    raise SystemExit("--data microsegnet needs --manual-dir DIR holding the Zenodo 10475293 "
                     "release (train/micro_ultrasound_scans/microUS_train_XX.nii.gz, ...)")
  return to_volumes(micro_us.load(args.data, data_dir=args.data_dir, manual_dir=args.manual_dir,
                                  **preset.data[args.data]))


def make_loss_fn(hard_weight: float):
  """One loss for the sweep: ``params["select"]`` is a one-hot over :data:`LOSSES`."""

  def per_scale(logits, masks, *, kernel_size):
    expert, non_expert = masks
    hard = hard_region_mask(expert, non_expert, kernel_size=kernel_size)
    disagreement = jnp.logical_xor(expert > 0, non_expert > 0).astype(logits.dtype)
    target = expert.astype(logits.dtype)
    return jnp.stack([
        sigmoid_focal_loss(logits, target, alpha=0.25, gamma=2.0),
        ag_bce_loss(logits, target, hard, hard_weight=hard_weight),
        adaptive_focal_loss(logits, target, hard, disagreement),
    ], axis=-1)  # (batch, 3)

  def loss_fn(outputs, batch, params):
    heads = tuple(outputs)[::-1]  # the model returns coarse -> fine; the loss wants fine -> coarse
    masks = (batch["label"], batch["non_expert"])
    per_loss = deep_supervision_loss(heads, masks, per_scale, weights=[1.0] * len(heads),
                                     kernel_sizes=SCALE_KERNELS[:len(heads)])
    return per_loss @ params["select"]

  return loss_fn


def evaluate_cases(probabilities: Sequence[np.ndarray], volumes: Sequence[Volume]
                   ) -> dict[str, Any]:
  """Per-case Dice (pooled over slices), per-slice-mean HD95 in mm, Dice in the hard regions."""
  preds = [(p > 0.5).astype(np.uint8) for p in probabilities]
  truths = [v.label.astype(np.uint8) for v in volumes]
  cms = np.stack([np.asarray(overlap.confusion_matrix(p, t, num_classes=2))
                  for p, t in zip(preds, truths)])
  hard = [np.asarray(hard_region_mask(v.label[None] > 0, v.extras["non_expert"][None] > 0,
                                      kernel_size=SCALE_KERNELS[0]))[0] for v in volumes]
  hard_cms = np.stack([np.asarray(overlap.confusion_matrix(p * h, t * h, num_classes=2))
                       for p, t, h in zip(preds, truths, hard)])
  out = {"dice": np.asarray(overlap.dice_from_confusion(cms))[:, 1],
         "hard_dice": np.asarray(overlap.dice_from_confusion(hard_cms))[:, 1]}
  for key, skip in (("hd95", "both"), ("hd95_skip_either", "either")):
    # Per slice (last axis) with the in-plane spacing, then the mean over the case's slices.
    result = surface.hd95_per_case(preds, truths, spacing=[tuple(v.spacing) for v in volumes],
                                   per_slice=True, skip_empty_slices=skip)
    out[key] = result.values
    out[f"{key}_undefined"] = result.n_undefined
  return out


def write_table(path: str, cases: Sequence[str], results: dict[str, dict[str, Any]], seed: int,
                info: str) -> str:
  rows = []
  for i, case in enumerate(cases):
    rows.append([case] + [f"{results[n]['dice'][i]:.3f} / {results[n]['hd95'][i]:.2f}"
                          for n in LOSSES])
  def ci(n, key):
    return stats.bootstrap_ci(np.asarray(results[n][key], np.float64), seed=seed).format(3)
  rows.append(["**mean Dice [95% CI]**"] + [ci(n, "dice") for n in LOSSES])
  rows.append(["**mean HD95 mm [95% CI]**"] + [ci(n, "hd95") for n in LOSSES])
  rows.append(["HD95, original convention*"] + [ci(n, "hd95_skip_either") for n in LOSSES])
  rows.append(["Dice inside hard regions"] + [ci(n, "hard_dice") for n in LOSSES])
  rows.append(["cases with undefined HD95"] + [str(results[n]["hd95_undefined"]) for n in LOSSES])
  text = (f"# Sigmoid focal vs AG-BCE vs adaptive focal (test split)\n\n{info}\n\n"
          "Per test case: Dice (all slices pooled) / HD95 in mm (95th-percentile Hausdorff, max "
          "of both directions, per slice then averaged over the case's slices; slices where both "
          "masks are empty are skipped, a slice with one empty mask makes the case undefined). "
          "*Original convention: slices where either mask is empty are skipped (MicroSegNet). "
          "Hard regions: expert XOR non-expert annotation, dilated with the finest head's kernel."
          "\n\n" + tables.markdown_table(["case"] + list(LOSSES), rows))
  with open(path, "w") as f:
    f.write(text)
  return text


def plot_overlays(path: str, volume: Volume, probabilities: dict[str, np.ndarray]) -> None:
  area = volume.label.sum((0, 1))
  slices = sorted(np.argsort(area)[::-1][:3])
  colours = ("tab:blue", "tab:orange", "tab:green")
  fig, axes = plt.subplots(1, len(slices), figsize=(4 * len(slices), 4.3), squeeze=False)
  for ax, z in zip(axes[0], slices):
    ax.imshow(volume.channels_image[..., z, 0].T, cmap="gray")
    ax.contour(volume.label[..., z].T, levels=[0.5], colors="red", linewidths=2)
    for colour, (name, p) in zip(colours, probabilities.items()):
      ax.contour(p[..., z].T, levels=[0.5], colors=colour, linewidths=1)
    ax.set_title(f"{volume.case_id} slice {z}", fontsize=9)
    ax.axis("off")
  handles = [matplotlib.lines.Line2D([], [], color="red", lw=2, label="expert")] + [
      matplotlib.lines.Line2D([], [], color=c, label=n) for c, n in zip(colours, probabilities)]
  fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  preset = resolve_preset(args)
  tic = time.perf_counter()
  workdir = args.workdir
  os.makedirs(workdir, exist_ok=True)
  banner("adaptive_focal", args)

  volumes = load_volumes(args, preset)
  train, val, test = volumes["train"], volumes["validation"], volumes["test"]
  print(f"patients: {len(train)} train / {len(val)} validation / {len(test)} test; stack "
        f"{train[0].label.shape} at {tuple(round(s, 4) for s in train[0].spacing)} mm "
        f"({time.perf_counter() - tic:.0f}s)", flush=True)

  config_fn = TransUNetConfig.cpu if preset.model == "cpu" else TransUNetConfig.paper
  model = TransUNet(config_fn(image_size=preset.image_size))
  steps_per_epoch = max(1, (preset.samples_per_epoch or sum(v.label.shape[-1] for v in train))
                        // preset.batch_size)
  schedule = optax.polynomial_schedule(init_value=preset.learning_rate, end_value=0.0, power=0.9,
                                       transition_steps=steps_per_epoch * preset.epochs)
  tx = optax.chain(optax.add_decayed_weights(1e-4),
                   optax.sgd(schedule, momentum=0.9))
  trainer = Trainer(model, tx, make_loss_fn(preset.hard_weight), num_configs=len(LOSSES))
  loss_params = {"select": np.eye(len(LOSSES), dtype=np.float32)}

  def batches(epoch):
    return patch_batches(train, batch_size=preset.batch_size,
                         patch_shape=(preset.image_size, preset.image_size), foreground_prob=0.0,
                         seed=args.seed, epoch=epoch, samples_per_epoch=preset.samples_per_epoch)

  def probabilities(state, cases):
    return [np.asarray(jax.nn.sigmoid(l[..., 0]))
            for l in predict_logits(trainer, state, cases, batch_size=preset.eval_batch)]

  def evaluate(state):
    cms = [np.asarray(overlap.confusion_matrix((p > 0.5).astype(np.int32), v.label,
                                               num_classes=2))
           for p, v in zip(probabilities(state, val), val)]
    return {"dice": float(overlap.dice_from_confusion(np.sum(cms, 0))[1])}

  state = trainer.init(jax.random.key(args.seed), next(iter(batches(0))))
  fits = trainer.fit(state, batches=batches, evaluate=evaluate, loss_params=loss_params,
                     config=TrainConfig(num_epochs=preset.epochs, seed=args.seed, name="sweep",
                                        progress=not args.no_progress),
                     workdir=os.path.join(workdir, "runs", "sweep"), resume=args.resume)

  results, test_probabilities = {}, {}
  for name, fit in zip(LOSSES, fits):
    export_model(os.path.join(workdir, "models", name.replace(" ", "_")), trainer, fit.best_state,
                 spacing=train[0].spacing, activation="sigmoid",
                 class_names=("background", "prostate"), loss=name, best_epoch=fit.best_epoch)
    test_probabilities[name] = probabilities(fit.best_state, test)
    results[name] = evaluate_cases(test_probabilities[name], test)

  elapsed = time.perf_counter() - tic
  info = (f"Preset `{args.preset}`, data `{args.data}` ({len(train)}/{len(val)}/{len(test)} "
          f"train/val/test patients), TransUNet `{preset.model}` at {preset.image_size}², "
          f"{preset.epochs} epochs, SGD {preset.learning_rate:g} (momentum 0.9, wd 1e-4, poly "
          f"0.9), batch {preset.batch_size}; the three losses trained as one sweep from the same "
          f"initialisation; best epoch by validation Dice; wall time {elapsed / 60:.1f} min on "
          f"{jax.device_count()} {jax.devices()[0].platform} device(s).")
  cases = [v.case_id for v in test]
  table = write_table(os.path.join(workdir, "table.md"), cases, results, args.seed, info)
  figures.plot_training_curves({n: f.history for n, f in zip(LOSSES, fits)},
                               os.path.join(workdir, "training_curves.png"))
  plot_overlays(os.path.join(workdir, "overlays.png"), test[0],
                {n: p[0] for n, p in test_probabilities.items()})
  tables.write_json(os.path.join(workdir, "results.json"), {
      "preset": args.preset, "data": args.data, "settings": dataclasses.asdict(preset),
      "losses": list(LOSSES), "test_cases": cases,
      "best_epoch": {n: f.best_epoch for n, f in zip(LOSSES, fits)},
      "history": {n: f.history for n, f in zip(LOSSES, fits)},
      "test": results, "wall_time_s": elapsed})
  print(table)
  print(f"results written to {os.path.abspath(workdir)} ({elapsed / 60:.1f} min)", flush=True)
  return {"results": results, "test_cases": cases}


if __name__ == "__main__":
  main(sys.argv[1:])
