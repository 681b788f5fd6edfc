"""Study ``hierarchical``: flat vs hierarchical cross-entropy on 9-class male-pelvis MR (seed 000).

Reproduces "Improving Prostate Segmentation through Hierarchical Loss Penalisation": a 2D U-Net
(64/128/256, bilinear up, no BN) trained with plain cross-entropy (flat) and with
``CE * (1 + alpha * D[y, argmax p])``, where ``D`` is an anatomical penalty matrix built from the
centroids of the training labels. ``alpha`` is chosen by a short search on validation Dice, every
candidate starting from the same fresh initialisation (the original code did not reset weights).

Usage::

  python -m experiments.hierarchical                      # phantom data, CPU preset
  python -m experiments.hierarchical --preset paper       # the paper's settings (GPU)
  python -m experiments.hierarchical --data zenodo --manual-dir /path/to/zenodo_7013610

Writes ``results/hierarchical/``: ``table.md``, ``results.json``, ``penalty_matrix.csv``, figures,
and per-run checkpoints and ``metrics.jsonl`` under ``runs/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxseg import hierarchy
from experiments._common import (Override, add_common_arguments, add_overrides, banner,
                                 export_model, given_overrides, predict_logits, to_volumes)
from jaxseg.data.pipeline import Volume, patch_batches
from jaxseg.losses.hierarchical import expected_cost_cross_entropy, hierarchical_cross_entropy
from jaxseg.metrics import overlap
from jaxseg.models.unet2d import UNet2D, UNet2DConfig
from jaxseg.report import figures, tables
from jaxseg.train.loop import TrainConfig, Trainer

NUM_CLASSES = len(hierarchy.PELVIS_CLASSES)
NAMES = hierarchy.PELVIS_ABBREVIATIONS


@dataclasses.dataclass(frozen=True)
class Preset:
  """Settings of one run of the study (``cpu`` and ``paper`` below; flags override fields)."""

  width: float
  patch: tuple[int, int]
  batch_size: int
  epochs: int
  search_epochs: int
  alphas: tuple[float, ...]
  learning_rate: float
  foreground_prob: float
  samples_per_epoch: int | None
  eval_batch: int
  data: dict[str, Any]


PRESETS = {
    # Minutes on 2 CPU cores: quarter width, phantoms generated at 1.5 mm in-plane, 64x64 slices.
    "cpu": Preset(width=0.25, patch=(64, 64), batch_size=8, epochs=12, search_epochs=3,
                  alphas=(1.0, 3.0, 5.0, 10.0), learning_rate=1e-3, foreground_prob=0.8,
                  samples_per_epoch=384, eval_batch=8,
                  data={"num_cases": 30, "phantom_shape": (96, 96, 24),
                        "phantom_spacing": (1.5, 1.5, 3.0), "target_spacing": (1.5, 1.5, 3.0)}),
    # The paper: full width, 50 epochs, Adam 1e-3, 16 slices of 192x192 per batch, p_fg 0.8,
    # alpha searched with 5-epoch runs, data at 0.75 x 0.75 x 3 mm.
    "paper": Preset(width=1.0, patch=(192, 192), batch_size=16, epochs=50, search_epochs=5,
                    alphas=(1.0, 3.0, 5.0, 10.0), learning_rate=1e-3, foreground_prob=0.8,
                    samples_per_epoch=None, eval_batch=16, data={}),
}


PRESET_FLAGS = (
    Override("epochs"), Override("search_epochs"), Override("alphas", float, "+"),
    Override("width", float, help="channel multiplier of the U-Net"), Override("batch_size"),
    Override("patch", int, 2), Override("learning_rate", float), Override("samples_per_epoch"))
DATA_FLAGS = (Override("num_cases", help="number of phantom cases"),
              Override("phantom_shape", int, 3))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.hierarchical",
      description=__doc__.split("\n\n")[0],
      formatter_class=argparse.ArgumentDefaultsHelpFormatter)
  add_common_arguments(parser, presets=PRESETS, data=("phantom", "zenodo"),
                       workdir=os.path.join("results", "hierarchical"))
  parser.add_argument("--penalty", choices=("data", "paper"), default="data",
                      help="penalty matrix: built from the training labels, or the paper's Table 1")
  parser.add_argument("--form", choices=("argmax", "expected"), default="argmax",
                      help="argmax: the paper's CE*(1+alpha*D[y,argmax]); expected: Galdran's "
                      "CE + alpha*E[D] (alpha plays lambda's role)")
  parser.add_argument("--alpha", type=float, default=None,
                      help="skip the search and use this alpha")
  add_overrides(parser, PRESET_FLAGS + DATA_FLAGS)
  parser.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                      help="voxel spacing in mm of the data (phantoms are generated at it)")
  return parser.parse_args(argv)


def resolve_preset(args: argparse.Namespace) -> Preset:
  preset = PRESETS[args.preset]
  changes = given_overrides(args, PRESET_FLAGS)
  data = dict(preset.data) if args.data == "phantom" else {
      k: v for k, v in preset.data.items() if k == "target_spacing"}
  data.update(given_overrides(args, DATA_FLAGS))
  if args.spacing:
    data["target_spacing"] = tuple(args.spacing)
    if args.data == "phantom":
      data["phantom_spacing"] = tuple(args.spacing)
  changes["data"] = data
  return dataclasses.replace(preset, **changes)


def load_volumes(args: argparse.Namespace, preset: Preset) -> dict[str, list[Volume]]:
  from datasets import male_pelvic_mr  # pylint: disable=import-outside-toplevel
  if args.data == "zenodo" and not args.manual_dir:
    raise SystemExit("--data zenodo needs --manual-dir DIR holding the Zenodo 7013610 release "
                     f"({male_pelvic_mr.ZENODO_URL}): DIR/data/{{uid}}_img.nii, "
                     "DIR/data/{uid}_mask.nii and DIR/institution.txt")
  return to_volumes(male_pelvic_mr.load(args.data, data_dir=args.data_dir,
                                        manual_dir=args.manual_dir, **preset.data))


def segment(trainer: Trainer, state, volumes: Sequence[Volume], preset: Preset) -> list[np.ndarray]:
  """Arg-max label maps of whole volumes, slice by slice."""
  return [np.argmax(l, axis=-1)
          for l in predict_logits(trainer, state, volumes, batch_size=preset.eval_batch)]


def confusion_per_case(predictions: Sequence[np.ndarray], volumes: Sequence[Volume]) -> np.ndarray:
  return np.stack([np.asarray(overlap.confusion_matrix(p, v.label, num_classes=NUM_CLASSES))
                   for p, v in zip(predictions, volumes)])


def summarise(cms: np.ndarray, penalty: np.ndarray) -> dict[str, Any]:
  """Per-case Dice of every class, the prostate superclass and the foreground mean; costs."""
  dice = np.asarray(overlap.dice_from_confusion(cms))  # (cases, C)
  prostate = np.asarray(overlap.dice_from_confusion(
      overlap.merge_classes(cms, [hierarchy.PROSTATE_SUPERCLASS])))[:, hierarchy.PROSTATE_SUPERCLASS[0]]
  foreground, undefined = overlap.nan_mean_with_count(dice[:, 1:], axis=1)
  total = cms.sum(0)
  return {
      "dice": dice, "prostate_dice": prostate, "mean_foreground_dice": foreground,
      "undefined_classes_per_case": undefined,
      "confusion_matrix": total,
      "hierarchical_confusion_matrix": np.asarray(
          overlap.hierarchical_confusion_matrix(total, penalty)),
      "expected_hierarchical_cost": np.asarray(overlap.expected_hierarchical_cost(cms, penalty)),
  }


def make_evaluator(trainer: Trainer, volumes: Sequence[Volume], preset: Preset):
  def evaluate(state) -> dict[str, float]:
    cms = confusion_per_case(segment(trainer, state, volumes, preset), volumes)
    dice = np.asarray(overlap.dice_from_confusion(cms))
    mean, _ = overlap.nan_mean_with_count(dice[:, 1:])
    return {"dice": float(mean)}
  return evaluate


def write_table(path: str, flat: dict[str, Any], hier: dict[str, Any], alpha: float,
                info: str) -> str:
  rows = []
  for c in range(1, NUM_CLASSES):
    f, h = flat["dice"][:, c], hier["dice"][:, c]
    rows.append([hierarchy.PELVIS_CLASSES[c], tables.mean_std(f), tables.mean_std(h),
                 tables.signed(np.nanmean(h) - np.nanmean(f))])
  for key, name in (("prostate_dice", "**prostate (TZ ∪ CG)**"),
                    ("mean_foreground_dice", "**mean foreground**")):
    rows.append([name, tables.mean_std(flat[key]), tables.mean_std(hier[key]),
                 tables.signed(np.nanmean(hier[key]) - np.nanmean(flat[key]))])
  rows.append(["expected hierarchical cost (lower is better)",
               tables.mean_std(flat["expected_hierarchical_cost"], 4),
               tables.mean_std(hier["expected_hierarchical_cost"], 4),
               tables.signed(np.nanmean(hier["expected_hierarchical_cost"])
                             - np.nanmean(flat["expected_hierarchical_cost"]), 4)])
  text = (f"# Flat vs hierarchical cross-entropy (test split)\n\n{info}\n\n"
          "Dice per test case, mean ± std (\"undef.\": cases where the class is absent from both "
          "truth and prediction, excluded from the mean).\n\n"
          + tables.markdown_table(["class", "flat (α = 0)", f"hierarchical (α = {alpha:g})", "Δ"],
                                  rows))
  with open(path, "w") as f:
    f.write(text)
  return text


def overlay_figure(path: str, volume: Volume, predictions: dict[str, np.ndarray]) -> None:
  prostate = np.isin(volume.label, hierarchy.PROSTATE_SUPERCLASS).sum((0, 1))
  slices = sorted(np.argsort(prostate)[-3:][::-1].tolist())
  image = volume.channels_image[..., 0]
  figures.plot_label_overlays(
      [image[..., z] for z in slices],
      {"truth": [volume.label[..., z] for z in slices],
       **{name: [p[..., z] for z in slices] for name, p in predictions.items()}},
      path, class_names=NAMES, row_titles=[f"{volume.case_id} z={z}" for z in slices])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  args = parse_args(argv)
  preset = resolve_preset(args)
  tic = time.perf_counter()
  workdir = args.workdir
  os.makedirs(workdir, exist_ok=True)
  banner("hierarchical", args)

  volumes = load_volumes(args, preset)
  train, val, test = volumes["train"], volumes["validation"], volumes["test"]
  print(f"cases: {len(train)} train / {len(val)} validation / {len(test)} test; "
        f"volume {train[0].label.shape} at {train[0].spacing} mm "
        f"({time.perf_counter() - tic:.0f}s)", flush=True)

  if args.penalty == "paper":
    penalty = np.array(hierarchy.PAPER_PENALTY_MATRIX)
  else:
    penalty = hierarchy.penalty_matrix_from_labels([v.label for v in train],
                                                   [v.spacing for v in train])
  tables.write_matrix_csv(os.path.join(workdir, "penalty_matrix.csv"), penalty, NAMES)

  if args.form == "argmax":
    def loss_fn(logits, batch, params):
      return hierarchical_cross_entropy(logits, batch["label"], penalty=penalty,
                                        alpha=params["alpha"])
  else:
    def loss_fn(logits, batch, params):
      return expected_cost_cross_entropy(logits, batch["label"], cost=penalty,
                                         lam=params["alpha"])

  model = UNet2D(UNet2DConfig.hierarchical(width=preset.width, num_classes=NUM_CLASSES))
  trainer = Trainer(model, optax.adam(preset.learning_rate), loss_fn)
  if preset.batch_size % trainer.mesh.devices.size:
    raise SystemExit(f"--batch-size {preset.batch_size} must be a multiple of the "
                     f"{trainer.mesh.devices.size} devices")

  def batches(epoch):
    return patch_batches(train, batch_size=preset.batch_size, patch_shape=preset.patch,
                         foreground_prob=preset.foreground_prob, seed=args.seed, epoch=epoch,
                         samples_per_epoch=preset.samples_per_epoch)

  init_key = jax.random.key(args.seed)
  sample = next(iter(batches(0)))
  evaluate = make_evaluator(trainer, val, preset)

  def run(name: str, alpha: float, epochs: int, continue_from: str | None = None):
    state = trainer.init(init_key, sample)  # the same fresh initialisation for every run
    run_dir = os.path.join(workdir, "runs", name)
    resume = args.resume
    if continue_from is not None and not (resume and os.path.exists(run_dir)):
      # The search run with this alpha is exactly this run's first epochs (same initialisation,
      # data order and constant learning rate): continue it instead of repeating them.
      shutil.rmtree(run_dir, ignore_errors=True)
      shutil.copytree(os.path.join(workdir, "runs", continue_from), run_dir)
      resume = True
    return trainer.fit(state, batches=batches, evaluate=evaluate, loss_params={"alpha": alpha},
                       config=TrainConfig(num_epochs=epochs, seed=args.seed, name=name,
                                          progress=not args.no_progress),
                       workdir=run_dir, resume=resume)

  flat = run("flat", 0.0, preset.epochs)
  search = {}
  if args.alpha is None:
    for alpha in preset.alphas:
      result = run(f"search_alpha{alpha:g}", alpha, preset.search_epochs)
      search[alpha] = result.best_metric
    alpha = max(search, key=search.get)
    print("alpha search (validation mean foreground Dice): "
          + ", ".join(f"{a:g}: {d:.4f}" for a, d in search.items()) + f" -> alpha = {alpha:g}",
          flush=True)
  else:
    alpha = args.alpha
  search_run = (f"search_alpha{alpha:g}"
                if alpha in search and preset.search_epochs <= preset.epochs else None)
  hier = run(f"hierarchical_alpha{alpha:g}", alpha, preset.epochs, continue_from=search_run)

  for name, result, a in (("flat", flat, 0.0), ("hierarchical", hier, alpha)):
    export_model(os.path.join(workdir, "models", name), trainer, result.best_state,
                 spacing=train[0].spacing, activation="softmax",
                 class_names=hierarchy.PELVIS_CLASSES, alpha=a, best_epoch=result.best_epoch)

  predictions = {"flat": segment(trainer, flat.best_state, test, preset),
                 "hierarchical": segment(trainer, hier.best_state, test, preset)}
  summary = {name: summarise(confusion_per_case(p, test), penalty)
             for name, p in predictions.items()}

  elapsed = time.perf_counter() - tic
  info = (f"Preset `{args.preset}`, data `{args.data}` ({len(train)}/{len(val)}/{len(test)} "
          f"train/val/test cases), U-Net width ×{preset.width:g}, {preset.epochs} epochs, "
          f"penalty `{args.penalty}`, form `{args.form}`; α searched over "
          f"{list(preset.alphas) if search else 'n/a'} with {preset.search_epochs}-epoch runs; "
          f"wall time {elapsed / 60:.1f} min on {jax.device_count()} {jax.devices()[0].platform} "
          "device(s).")
  table = write_table(os.path.join(workdir, "table.md"), summary["flat"], summary["hierarchical"],
                      alpha, info)
  figures.plot_matrices(
      {f"flat (α = 0)": summary["flat"]["hierarchical_confusion_matrix"],
       f"hierarchical (α = {alpha:g})": summary["hierarchical"]["hierarchical_confusion_matrix"]},
      NAMES, os.path.join(workdir, "hierarchical_confusion.png"),
      title="Hierarchical confusion matrix: counts × (1 + D), test split")
  figures.plot_matrices({"penalty matrix D": penalty}, NAMES,
                        os.path.join(workdir, "penalty_matrix.png"), log=False, fmt=".2f")
  overlay_figure(os.path.join(workdir, "overlay.png"), test[0],
                 {f"flat": predictions["flat"][0], "hierarchical": predictions["hierarchical"][0]})
  figures.plot_training_curves({"flat": flat.history, f"hierarchical α={alpha:g}": hier.history},
                               os.path.join(workdir, "training_curves.png"))

  results = {
      "preset": args.preset, "data": args.data, "settings": dataclasses.asdict(preset),
      "penalty_source": args.penalty, "form": args.form, "alpha": alpha,
      "alpha_search": {f"{a:g}": d for a, d in search.items()},
      "class_names": list(hierarchy.PELVIS_CLASSES),
      "test_cases": [v.case_id for v in test], "penalty_matrix": penalty,
      "best_epoch": {"flat": flat.best_epoch, "hierarchical": hier.best_epoch},
      "history": {"flat": flat.history, "hierarchical": hier.history},
      "test": {name: {k: v for k, v in s.items()} for name, s in summary.items()},
      "wall_time_s": elapsed,
  }
  tables.write_json(os.path.join(workdir, "results.json"), results)
  print(table)
  print(f"results written to {os.path.abspath(workdir)} ({elapsed / 60:.1f} min)", flush=True)
  return results


if __name__ == "__main__":
  main(sys.argv[1:])
