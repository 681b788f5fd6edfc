"""Study ``tversky``: BCE-with-logits vs Tversky losses on the prostate gland (seed 002).

Reproduces "Tversky loss vs BCE for prostate gland segmentation": a 2D U-Net (DoubleConv with BN,
64..512 + 1024 bottleneck, transposed-conv up, one sigmoid output) trained with BCE and with the
Tversky loss for alpha in {0.25, 0.35, 0.45, 0.5, 0.65, 0.75, 0.85}, beta = 1 - alpha (alpha weights
false positives). All eight configurations train as ONE compiled program (a sweep: stacked
parameters, vmapped step, the same initialisation and batches for every configuration).

Usage::

  python -m experiments.tversky                                   # phantom, CPU preset
  python -m experiments.tversky --data promise12 --manual-dir ../shared/data/promise12
  python -m experiments.tversky --data prostatex --manual-dir DIR --preset paper

Writes ``results/tversky/``: ``table.md`` (Dice, precision, recall, F1 per loss with bootstrap 95%
CIs over test cases), ``results.json``, figures, and the best model of every configuration under
``models/`` (usable with ``python -m jaxseg.predict``).
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
from jaxseg.data.augment import FlipRotate  # noqa: E402
from jaxseg.data.pipeline import Volume, patch_batches  # noqa: E402
from jaxseg.losses.cross_entropy import sigmoid_binary_cross_entropy  # noqa: E402
from jaxseg.losses.region import tversky_loss  # noqa: E402
from jaxseg.metrics import overlap, stats  # noqa: E402
from jaxseg.models.unet2d import UNet2D, UNet2DConfig  # noqa: E402
from jaxseg.report import figures, tables  # noqa: E402
from jaxseg.train.loop import TrainConfig, Trainer  # noqa: E402

PAPER_ALPHAS = (0.25, 0.35, 0.45, 0.5, 0.65, 0.75, 0.85)


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of one run of the study (flags override fields)."""

  width: float
  patch: tuple[int, int]
  batch_size: int
  epochs: int
  patience: int | None
  learning_rate: float
  foreground_prob: float
  samples_per_epoch: int | None
  max_degrees: float
  eval_batch: int
  data: dict[str, dict[str, Any]]


PRESETS = {
    # Minutes on 2 CPU cores: 1/16 width, 64x64 slices of phantoms at 1.5 mm, 8 configurations.
    "cpu": Preset(width=0.0625, patch=(64, 64), batch_size=8, epochs=8, patience=None,
                  learning_rate=1e-3, foreground_prob=0.5, samples_per_epoch=256,
                  max_degrees=0.0, eval_batch=16,
                  data={"phantom": {"num_cases": 40, "phantom_shape": (96, 96, 16),
                                    "phantom_spacing": (2.0, 2.0, 3.0)},
                        "promise12": {}, "prostatex": {"target_spacing": (1.0, 1.0, 3.0)}}),
    # The paper: Adam 1e-4, batch 16, up to 100 epochs with early stopping (patience 3), rotations
    # of +-35 degrees, flips (horizontal 0.5, vertical 0.1), full width, whole 384x384 slices.
    "paper": Preset(width=1.0, patch=(384, 384), batch_size=16, epochs=100, patience=3,
                    learning_rate=1e-4, foreground_prob=0.0, samples_per_epoch=None,
                    max_degrees=35.0, eval_batch=16,
                    data={"phantom": {"phantom_shape": (384, 384, 16),
                                      "phantom_spacing": (0.5, 0.5, 3.0)},
                          "promise12": {}, "prostatex": {}}),
}


PRESET_FLAGS = (Override("epochs"), Override("width", float), Override("batch_size"),
                Override("learning_rate", float), Override("samples_per_epoch"),
                Override("patience"), Override("patch", int, 2))
DATA_FLAGS = (Override("num_cases"), Override("phantom_shape", int, 3),
              Override("phantom_spacing", float, 3, flag="--spacing",
                       help="phantom voxel spacing in mm"))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(prog="python -m experiments.tversky",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_common_arguments(parser, presets=PRESETS, data=("phantom", "promise12", "prostatex"),
                       workdir=os.path.join("results", "tversky"))
  parser.add_argument("--alphas", type=float, nargs="+", default=list(PAPER_ALPHAS),
                      help="Tversky alphas (beta = 1 - alpha)")
  parser.add_argument("--no-bce", action="store_true", help="leave the BCE baseline out")
  add_overrides(parser, PRESET_FLAGS + DATA_FLAGS)
  return parser.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> Preset:
  preset = PRESETS[args.preset]
  changes = given_overrides(args, PRESET_FLAGS)
  changes["data"] = {args.data: {**preset.data[args.data], **given_overrides(args, DATA_FLAGS)}}
  return dataclasses.replace(preset, **changes)


def load_volumes(args: argparse.Namespace, preset: Preset) -> dict[str, list[Volume]]:
  overrides = preset.data[args.data]
  if args.data == "promise12":
    from datasets import promise12  # pylint: disable=import-outside-toplevel
    if not args.manual_dir:
      raise SystemExit("--data promise12 needs --manual-dir DIR with image_trainNN.npy / "
                       "label_trainNN.npy (e.g. ../shared/data/promise12)")
    return to_volumes(promise12.load("preprocessed", data_dir=args.data_dir,
                                     manual_dir=args.manual_dir, **overrides))
  from datasets import prostatex_gland  # pylint: disable=import-outside-toplevel
  if args.data == "prostatex" and not args.manual_dir:
    raise SystemExit("--data prostatex needs --manual-dir DIR in the PROSTATEx_masks layout "
                     "(Files/prostate/mask_prostate/..., T2 images)")
  return to_volumes(prostatex_gland.load(args.data, data_dir=args.data_dir,
                                         manual_dir=args.manual_dir, **overrides))


def configurations(args: argparse.Namespace) -> tuple[list[str], dict[str, np.ndarray]]:
  """Names and stacked loss parameters of the sweep (BCE first, then one per alpha)."""
  names, bce, alpha = [], [], []
  if not args.no_bce:
    names.append("BCE")
    bce.append(1.0)
    alpha.append(0.5)
  for a in args.alphas:
    if not 0.0 <= a <= 1.0:
      raise SystemExit(f"Tversky alpha must be in [0, 1], got {a}")
    names.append(f"Tversky α={a:g}")
    bce.append(0.0)
    alpha.append(a)
  if not names:
    raise SystemExit("nothing to train: give --alphas or keep the BCE baseline")
  alpha = np.asarray(alpha, np.float32)
  return names, {"bce": np.asarray(bce, np.float32), "alpha": alpha, "beta": 1.0 - alpha}


def loss_fn(logits, batch, params):
  """BCE when ``params["bce"] == 1``, Tversky(alpha, beta) when 0: one function for the sweep."""
  labels = batch["label"].astype(jnp.float32)
  bce = sigmoid_binary_cross_entropy(logits, labels)
  tversky = tversky_loss(logits, labels, alpha=params["alpha"], beta=params["beta"], smooth=1.0)
  return params["bce"] * bce + (1.0 - params["bce"]) * tversky


def binary_confusions(probabilities: Sequence[np.ndarray], volumes: Sequence[Volume],
                      threshold: float = 0.5) -> np.ndarray:
  """``(cases, 2, 2)`` confusion matrices of thresholded probabilities."""
  return np.stack([np.asarray(overlap.confusion_matrix((p > threshold).astype(np.int32),
                                                       v.label, num_classes=2))
                   for p, v in zip(probabilities, volumes)])


def case_metrics(cms: np.ndarray) -> dict[str, np.ndarray]:
  """Per-case Dice, precision and recall of the foreground (NaN where undefined)."""
  return {"dice": np.asarray(overlap.dice_from_confusion(cms))[:, 1],
          "precision": np.asarray(overlap.precision_from_confusion(cms))[:, 1],
          "recall": np.asarray(overlap.recall_from_confusion(cms))[:, 1]}


def f1_of_means(precision: np.ndarray, recall: np.ndarray) -> float:
  """Harmonic mean of the mean precision and the mean recall (the paper's F1, Eq. 4)."""
  p, r = np.nanmean(precision), np.nanmean(recall)
  return float(2 * p * r / (p + r)) if p + r > 0 else float("nan")


def summarise(cms: np.ndarray, seed: int) -> dict[str, Any]:
  per_case = case_metrics(cms)
  out = {name: stats.bootstrap_ci(values, seed=seed) for name, values in per_case.items()}
  valid = ~(np.isnan(per_case["precision"]) | np.isnan(per_case["recall"]))
  out["f1"] = stats.bootstrap_ci_paired(
      [per_case["precision"][valid], per_case["recall"][valid]],
      lambda p, r: f1_of_means(p, r), seed=seed)
  pooled = cms.sum(0)
  out["pooled"] = {"dice": float(overlap.dice_from_confusion(pooled)[1]),
                   "precision": float(overlap.precision_from_confusion(pooled)[1]),
                   "recall": float(overlap.recall_from_confusion(pooled)[1])}
  out["per_case"] = per_case
  return out


def write_table(path: str, names: list[str], summary: dict[str, dict[str, Any]],
                info: str) -> str:
  rows = []
  for name in names:
    s = summary[name]
    rows.append([name] + [s[m].format(3) for m in ("dice", "precision", "recall", "f1")]
                + [f"{s['pooled']['dice']:.3f}"])
  undefined = {name: int(summary[name]["dice"].n_undefined) for name in names}
  text = (f"# BCE vs Tversky on the prostate gland (test split)\n\n{info}\n\n"
          "Per-case mean with a bootstrap 95% CI over test cases. F1 is the harmonic mean of the "
          "mean precision and the mean recall (the paper's Eq. 4; per case, F1 equals Dice). "
          "Pooled Dice counts every test voxel together. Threshold 0.5 on the sigmoid.\n\n"
          + tables.markdown_table(["loss", "Dice", "precision", "recall", "F1", "pooled Dice"],
                                  rows))
  if any(undefined.values()):
    text += f"\nUndefined (empty truth and prediction) cases per loss: {undefined}\n"
  with open(path, "w") as f:
    f.write(text)
  return text


def plot_vs_alpha(path: str, names: list[str], alphas: list[float | None],
                  summary: dict[str, dict[str, Any]], metrics: Sequence[str]) -> None:
  fig, ax = plt.subplots(figsize=(5.5, 3.8))
  tversky = [(a, n) for a, n in zip(alphas, names) if a is not None]
  for metric, colour in zip(metrics, ("tab:blue", "tab:orange")):
    xs = [a for a, _ in tversky]
    est = [summary[n][metric] for _, n in tversky]
    ax.errorbar(xs, [e.value for e in est],
                yerr=[[e.value - e.low for e in est], [e.high - e.value for e in est]],
                marker="o", capsize=3, label=metric, color=colour)
    if "BCE" in summary:
      ax.axhline(summary["BCE"][metric].value, ls="--", color=colour, alpha=0.6,
                 label=f"{metric} (BCE)")
  ax.set(xlabel="Tversky α (weight of false positives; β = 1 − α)", ylabel="test value")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_contours(path: str, volume: Volume, probabilities: dict[str, np.ndarray]) -> None:
  """Every model's 0.5 contour and the truth on the same test slices."""
  area = volume.label.sum((0, 1))
  slices = np.argsort(area)[::-1][:3]
  image = volume.channels_image[..., 0]
  fig, axes = plt.subplots(1, len(slices), figsize=(4.2 * len(slices), 4.4), squeeze=False)
  colours = plt.cm.viridis(np.linspace(0, 1, len(probabilities)))
  for ax, z in zip(axes[0], sorted(slices)):
    ax.imshow(np.rot90(image[..., z]), cmap="gray")
    ax.contour(np.rot90(volume.label[..., z]), levels=[0.5], colors="red", linewidths=2)
    for colour, (name, p) in zip(colours, probabilities.items()):
      ax.contour(np.rot90(p[..., z]), levels=[0.5], colors=[colour], linewidths=1)
    ax.set_title(f"{volume.case_id} z={z}", fontsize=9)
    ax.axis("off")
  handles = [matplotlib.lines.Line2D([], [], color="red", lw=2, label="truth")] + [
      matplotlib.lines.Line2D([], [], color=c, label=n) for c, n in zip(colours, probabilities)]
  fig.legend(handles=handles, loc="lower center", ncol=min(5, len(handles)), fontsize=7)
  fig.tight_layout(rect=(0, 0.1, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  preset = resolve_preset(args)
  tic = time.perf_counter()
  workdir = args.workdir
  os.makedirs(workdir, exist_ok=True)
  banner("tversky", args)
  names, loss_params = configurations(args)
  alphas = [None if b else float(a) for b, a in zip(loss_params["bce"], loss_params["alpha"])]

  volumes = load_volumes(args, preset)
  train, val, test = volumes["train"], volumes["validation"], volumes["test"]
  print(f"cases: {len(train)} train / {len(val)} validation / {len(test)} test; volume "
        f"{train[0].label.shape} at {train[0].spacing} mm ({time.perf_counter() - tic:.0f}s)",
        flush=True)

  model = UNet2D(UNet2DConfig.tversky(width=preset.width))
  tx = optax.adam(preset.learning_rate)
  trainer = Trainer(model, tx, loss_fn, num_configs=len(names))
  augment = FlipRotate(max_degrees=preset.max_degrees, horizontal_prob=0.5,
                       vertical_prob=0.1 if preset.max_degrees else 0.0)

  def batches(epoch):
    return patch_batches(train, batch_size=preset.batch_size, patch_shape=preset.patch,
                         foreground_prob=preset.foreground_prob, seed=args.seed, epoch=epoch,
                         samples_per_epoch=preset.samples_per_epoch, augment=augment)

  def probabilities(state, cases):
    return [jax.nn.sigmoid(l[..., 0]).__array__()
            for l in predict_logits(trainer, state, cases, batch_size=preset.eval_batch)]

  def evaluate(state):
    cms = binary_confusions(probabilities(state, val), val)
    return {"dice": float(overlap.dice_from_confusion(cms.sum(0))[1])}

  state = trainer.init(jax.random.key(args.seed), next(iter(batches(0))))
  results = trainer.fit(state, batches=batches, evaluate=evaluate, loss_params=loss_params,
                        config=TrainConfig(num_epochs=preset.epochs, seed=args.seed, name="sweep",
                                           patience=preset.patience,
                                           progress=not args.no_progress),
                        workdir=os.path.join(workdir, "runs", "sweep"), resume=args.resume)

  summary, test_probabilities = {}, {}
  for name, alpha, result in zip(names, alphas, results):
    export_model(os.path.join(workdir, "models", name.replace(" ", "_").replace("α=", "alpha")),
                 trainer, result.best_state, spacing=train[0].spacing, activation="sigmoid",
                 class_names=("background", "prostate"), loss=name, alpha=alpha,
                 best_epoch=result.best_epoch)
    test_probabilities[name] = probabilities(result.best_state, test)
    summary[name] = summarise(binary_confusions(test_probabilities[name], test), args.seed)

  elapsed = time.perf_counter() - tic
  info = (f"Preset `{args.preset}`, data `{args.data}` ({len(train)}/{len(val)}/{len(test)} "
          f"train/val/test cases; test cases: {', '.join(v.case_id for v in test)}), U-Net width "
          f"×{preset.width:g}, {preset.epochs} epochs max, Adam {preset.learning_rate:g}, batch "
          f"{preset.batch_size} of {preset.patch[0]}×{preset.patch[1]}; {len(names)} "
          f"configurations trained as one sweep; best epoch by validation Dice; wall time "
          f"{elapsed / 60:.1f} min on {jax.device_count()} {jax.devices()[0].platform} device(s).")
  table = write_table(os.path.join(workdir, "table.md"), names, summary, info)
  figures.plot_training_curves({n: r.history for n, r in zip(names, results)},
                               os.path.join(workdir, "training_curves.png"))
  plot_vs_alpha(os.path.join(workdir, "precision_recall_vs_alpha.png"), names, alphas, summary,
                ("precision", "recall"))
  plot_vs_alpha(os.path.join(workdir, "dice_f1_vs_alpha.png"), names, alphas, summary,
                ("dice", "f1"))
  plot_contours(os.path.join(workdir, "contours.png"), test[0],
                {n: p[0] for n, p in test_probabilities.items()})

  tables.write_json(os.path.join(workdir, "results.json"), {
      "preset": args.preset, "data": args.data, "settings": dataclasses.asdict(preset),
      "configurations": [{"name": n, "alpha": a} for n, a in zip(names, alphas)],
      "test_cases": [v.case_id for v in test],
      "best_epoch": {n: r.best_epoch for n, r in zip(names, results)},
      "history": {n: r.history for n, r in zip(names, results)},
      "test": {n: {**{m: dataclasses.asdict(s[m]) for m in ("dice", "precision", "recall", "f1")},
                   "pooled": s["pooled"], "per_case": s["per_case"]}
               for n, s in summary.items()},
      "wall_time_s": elapsed})
  print(table)
  print(f"results written to {os.path.abspath(workdir)} ({elapsed / 60:.1f} min)", flush=True)
  return {"summary": summary, "names": names, "test_cases": [v.case_id for v in test]}


if __name__ == "__main__":
  main(sys.argv[1:])
