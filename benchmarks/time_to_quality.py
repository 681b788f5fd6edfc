"""Time to quality on real MRI: the tversky study's CPU preset on the shared PROMISE12 cases.

Three runs of ``python -m experiments.tversky --data promise12`` (the real-MRI CPU preset of
``experiments/configs/tversky.py``), each timed from the command line to its ``table.md``:

* ``default``: all 8 configurations (BCE + 7 Tversky alphas) on the 25 / 3 / 7 split;
* ``bce``: BCE alone (``--alphas none``), the same split;
* ``cv``: BCE alone, 5-fold cross-validation by case over all 35 cases (``--folds 5``): every
  case is held out once, by a model that never saw it.

Prints one markdown table: run, configurations, wall time, test cases, and the mean test Dice
of BCE raw and after keeping the largest connected component (LCC), with mean / median / min
over cases; for ``cv`` one more table with the figures of each fold. The wall time is the
runner's own (``results.json``), so ``--report`` can print the table of runs made earlier.

  python -m benchmarks.time_to_quality --manual-dir ../shared/data/promise12          # all three
  python -m benchmarks.time_to_quality --manual-dir ../shared/data/promise12 --runs cv
  python -m benchmarks.time_to_quality --report                    # table of finished runs only
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

from benchmarks._machine import cpu_name

RUNS = {
    "default": [],
    "bce": ["--alphas", "none"],
    "cv": ["--alphas", "none", "--folds", "5"],
}


def _stats(v: np.ndarray) -> str:
  v = v[np.isfinite(v)]
  if not v.size:
    return "—"
  return f"{v.mean():.3f} / {np.median(v):.3f} / {v.min():.3f}"


def _report(workdir: str, runs) -> None:
  print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores; load average at the end: "
        f"{os.getloadavg()[0]:.2f}\n")
  print("| run | configurations | wall time | test cases | BCE Dice mean / median / min "
        "| BCE Dice (LCC) mean / median / min |")
  print("|---|---:|---:|---:|---|---|")
  folds_rows = []
  for run in runs:
    path = os.path.join(workdir, run, "results.json")
    if not os.path.exists(path):
      print(f"| {run} | — | not run | — | — | — |")
      continue
    with open(path) as f:
      r = json.load(f)
    values = r["values"][r["baseline"]]
    dice = np.asarray(values["dice"], float).ravel()
    lcc = np.asarray(values.get("dice_lcc", [np.nan]), float).ravel()
    print(f"| {run} | {len(r['names'])} | {r['wall_time_s'] / 60:.1f} min | {dice.size} | "
          f"{_stats(dice)} | {_stats(lcc)} |")
    if len(r["folds"]) > 1:
      position = {c: i for i, c in enumerate(r["test_cases"])}
      for i, fold in enumerate(r["folds"]):
        cols = [position[c] for c in fold["test"]]
        d = np.asarray(values["dice"], float)[:, cols].ravel()
        l = np.asarray(values.get("dice_lcc", np.full((1, len(position)), np.nan)),
                       float)[:, cols].ravel()
        folds_rows.append(f"| {run} | {i} | {len(fold['train'])} / {len(fold['validation'])} / "
                          f"{len(fold['test'])} | {_stats(d)} | {_stats(l)} |")
  if folds_rows:
    print("\n| run | fold | train / validation / test cases | BCE Dice mean / median / min "
          "| BCE Dice (LCC) mean / median / min |")
    print("|---|---:|---|---|---|")
    print("\n".join(folds_rows))


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manual-dir", default=os.path.join("..", "shared", "data", "promise12"))
  parser.add_argument("--workdir", default=os.path.join("results", "time_to_quality"))
  parser.add_argument("--runs", nargs="+", choices=tuple(RUNS), default=tuple(RUNS))
  parser.add_argument("--report", action="store_true", help="only print the table of finished runs")
  args = parser.parse_args(argv)
  if not args.report:
    if not os.path.isdir(args.manual_dir):
      sys.exit(f"time_to_quality: error: --manual-dir {args.manual_dir} is not a directory; give "
               "the PROMISE12 npy files (image_trainNN.npy, label_trainNN.npy)")
    for run in args.runs:
      cmd = [sys.executable, "-m", "experiments.tversky", "--data", "promise12", "--manual-dir",
             args.manual_dir, "--workdir", os.path.join(args.workdir, run), "--no-progress",
             *RUNS[run]]
      print("$ " + " ".join(cmd[1:]), flush=True)
      subprocess.run(cmd, check=True)
  _report(args.workdir, args.runs)


if __name__ == "__main__":
  main()
