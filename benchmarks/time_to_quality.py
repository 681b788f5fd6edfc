"""Time to quality on real MRI: the tversky study's CPU preset on the shared PROMISE12 cases.

Three runs of ``python -m experiments.tversky --data promise12`` (the real-MRI CPU preset of
``experiments/configs/tversky.py``), each timed from the command line to its ``table.md``:

* ``default``: all 8 configurations (BCE + 7 Tversky alphas) on the 25 / 3 / 7 split;
* ``bce``: BCE alone (``--alphas none``), the same split;
* ``cv``: BCE alone, 5-fold cross-validation by case over all 35 cases (``--folds 5``): every
  case is held out once, by a model that never saw it.

Prints one markdown table: run, configurations, wall time, test cases, and the test Dice of BCE
plain, after keeping the largest connected component (LCC) and with test-time mirroring (TTA),
each as mean / median / min over cases; for ``cv`` one more table with the figures of each fold.
The wall time is the runner's own (``results.json``), so ``--report`` can print the table of
runs made earlier.

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


#: Per-case Dice columns of ``results.json``: plain, after keeping the largest connected
#: component, and with test-time mirroring (``eval.tta``); a run without one prints "—".
COLUMNS = (("dice", "BCE Dice"), ("dice_lcc", "BCE Dice (LCC)"), ("dice_tta", "BCE Dice (TTA)"))


def _columns(values, cols=None) -> str:
  cells = []
  for key, _ in COLUMNS:
    if key not in values:
      cells.append("—")
      continue
    v = np.asarray(values[key], float)
    cells.append(_stats((v if cols is None else v[:, cols]).ravel()))
  return " | ".join(cells)


def _report(workdir: str, runs) -> None:
  print(f"\nCPU: {cpu_name()}, {os.cpu_count()} cores; load average at the end: "
        f"{os.getloadavg()[0]:.2f}\n")
  header = " | ".join(f"{label} mean / median / min" for _, label in COLUMNS)
  print(f"| run | configurations | wall time | test cases | {header} |")
  print("|---|---:|---:|---:|" + "---|" * len(COLUMNS))
  folds_rows = []
  for run in runs:
    path = os.path.join(workdir, run, "results.json")
    if not os.path.exists(path):
      print(f"| {run} | — | not run | — |" + " — |" * len(COLUMNS))
      continue
    with open(path) as f:
      r = json.load(f)
    values = r["values"][r["baseline"]]
    n = np.asarray(values["dice"], float).size
    print(f"| {run} | {len(r['names'])} | {r['wall_time_s'] / 60:.1f} min | {n} | "
          f"{_columns(values)} |")
    if len(r["folds"]) > 1:
      position = {c: i for i, c in enumerate(r["test_cases"])}
      for i, fold in enumerate(r["folds"]):
        cols = [position[c] for c in fold["test"]]
        folds_rows.append(f"| {run} | {i} | {len(fold['train'])} / {len(fold['validation'])} / "
                          f"{len(fold['test'])} | {_columns(values, cols)} |")
  if folds_rows:
    print(f"\n| run | fold | train / validation / test cases | {header} |")
    print("|---|---:|---|" + "---|" * len(COLUMNS))
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
