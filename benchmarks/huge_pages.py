"""Huge pages for XLA's buffers: the same training run with and without them, side by side.

``python -m experiments.<study>`` re-executes itself once with ``GLIBC_TUNABLES=
glibc.malloc.hugetlb=1`` (``jaxseg.cpu_flags.use_huge_pages``): XLA:CPU mallocs every step's
large buffers afresh, glibc serves them as new memory maps, and without huge pages the kernel
faults them in and zeroes them 4 KB at a time. This benchmark runs one training command
alternately in both settings (``hugetlb=1`` and ``hugetlb=0``: 4 KB pages; the child never
re-executes because the tunable is already set), ``--rounds`` times each, and prints:

* the median seconds per training epoch over the epochs after the first (which compiles), read
  from the run's ``metrics.jsonl`` (the loop's own timing of its steps and input pipeline);
* the child's minor page faults and user / system CPU time for the whole run
  (``resource.getrusage(RUSAGE_CHILDREN)``);
* whether the two settings gave the same per-case test values and validation curves (they must:
  only where the memory comes from changes).

Default command: the tversky study's real-MRI preset (``--data promise12``), BCE alone, 3 epochs.

  python -m benchmarks.huge_pages                                        # promise12, BCE, 3 epochs
  python -m benchmarks.huge_pages --manual-dir ../shared/data/promise12 --epochs 4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks._machine import cpu_name, load_average
from jaxseg import cpu_flags

SETTINGS = {"huge pages (hugetlb=1, the default)": cpu_flags.MALLOC_TUNABLE,
            "4 KB pages (hugetlb=0)": "glibc.malloc.hugetlb=0"}


def _run(tunable: str, workdir: str, args) -> dict:
  env = dict(os.environ, GLIBC_TUNABLES=tunable)
  cmd = [sys.executable, "-m", "experiments.tversky", "--data", "promise12", "--manual-dir",
         args.manual_dir, "--alphas", "none", "--train.epochs", str(args.epochs), "--workdir",
         workdir, "--no-progress"]
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  tic = time.perf_counter()
  subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
  wall = time.perf_counter() - tic
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  with open(os.path.join(workdir, "runs", "main", "BCE", "metrics.jsonl")) as f:
    records = [json.loads(line) for line in f]
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  curves = [{k: v for k, v in r.items() if k != "seconds"} for r in records]
  return {"epoch_s": [r["seconds"] for r in records[1:]], "wall": wall,
          "faults": after.ru_minflt - before.ru_minflt,
          "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
          "results": (results["values"], curves)}


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--manual-dir", default=os.path.join("..", "shared", "data", "promise12"))
  parser.add_argument("--epochs", type=int, default=3, help="epochs per run (the first compiles)")
  parser.add_argument("--rounds", type=int, default=2, help="runs per setting, alternating")
  args = parser.parse_args(argv)
  if args.epochs < 2 or args.rounds < 1:
    parser.error("--epochs must be >= 2 (the first is not timed) and --rounds >= 1")
  if not os.path.isdir(args.manual_dir):
    parser.error(f"--manual-dir {args.manual_dir} is not a directory; give the PROMISE12 npy "
                 "files (image_trainNN.npy, label_trainNN.npy)")
  libc = " ".join(platform.libc_ver()).strip() or "unknown libc"
  print(f"python -m experiments.tversky --data promise12 --alphas none --train.epochs "
        f"{args.epochs}, {args.rounds} run(s) per setting, alternating; CPU: {cpu_name()}, "
        f"{os.cpu_count()} cores; {libc}; transparent huge pages: "
        f"{cpu_flags.thp_mode() or 'not available'}; load average {load_average()}", flush=True)
  runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
  with tempfile.TemporaryDirectory() as tmp:
    for r in range(args.rounds):
      names = list(SETTINGS) if r % 2 == 0 else list(SETTINGS)[::-1]
      for name in names:
        run = _run(SETTINGS[name], os.path.join(tmp, f"{r}-{len(runs[name])}-{name[:4]}"), args)
        runs[name].append(run)
        print(f"  round {r + 1}/{args.rounds}, {name}: {run['wall']:.1f} s, epochs "
              + ", ".join(f"{s:.2f}" for s in run["epoch_s"]), flush=True)
  print(f"\nload average after: {load_average()}\n")
  print("| setting | timed epochs | median s/epoch | minor page faults per run | user CPU s "
        "per run | system CPU s per run | wall s per run |")
  print("|---|---:|---:|---:|---:|---:|---:|")
  medians = {}
  for name, rs in runs.items():
    epochs = [s for r in rs for s in r["epoch_s"]]
    medians[name] = statistics.median(epochs)
    mean = lambda key: statistics.mean(r[key] for r in rs)  # noqa: E731
    print(f"| {name} | {len(epochs)} | {medians[name]:.2f} | {mean('faults'):,.0f} | "
          f"{mean('user'):.1f} | {mean('sys'):.1f} | {mean('wall'):.1f} |")
  all_results = [r["results"] for rs in runs.values() for r in rs]
  same = all(x == all_results[0] for x in all_results)
  print(f"\nper-case test values and validation curves identical across all runs: "
        f"{'yes' if same else 'NO'}")
  base, new = medians[list(SETTINGS)[1]], medians[list(SETTINGS)[0]]
  print(f"huge pages speedup per epoch: {base / new:.2f}")


if __name__ == "__main__":
  main()
