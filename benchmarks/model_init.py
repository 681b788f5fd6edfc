"""Time to a fresh train state: ``create_train_state`` run eagerly vs ``Trainer.init`` (compiled).

Run eagerly, every initialiser and every optimiser-state zero is its own small XLA program,
compiled on first use; ``Trainer.init`` compiles the whole initialisation as one program. Each
study's ``cpu`` preset model is initialised once per mode, each in a fresh process (so neither
mode inherits the other's compilation cache), and the two states are compared leaf by leaf.

  python -m benchmarks.model_init                      # every study
  python -m benchmarks.model_init --studies tversky    # one
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import numpy as np

from benchmarks._machine import cpu_name

MODES = ("eager", "compiled")


def _one(study: str, mode: str, out: str) -> None:
  """Child process: build the study's cpu-preset trainer, initialise once, save the leaves."""
  from benchmarks.accelerator import build
  from jaxseg.train.state import create_train_state

  setup = build(study, preset="cpu", batch_size=1)
  trainer = setup.trainer
  key = jax.random.key(0)
  start = time.perf_counter()
  if mode == "eager":
    inputs = trainer.model_inputs({k: jax.numpy.asarray(v[:1]) for k, v in setup.batch.items()})
    state = create_train_state(trainer.model, trainer.tx, inputs, key,
                               ema=trainer.ema_decay is not None)
  else:
    state = trainer.init(key, setup.batch)
  state = jax.block_until_ready(state)
  seconds = time.perf_counter() - start
  leaves = [np.asarray(x) for x in jax.tree.leaves(state)]
  np.savez(out, *leaves)
  with open(out + ".json", "w") as f:
    json.dump({"seconds": seconds, "model": setup.model_label(),
               "params": int(sum(np.size(x) for x in jax.tree.leaves(state.params)))}, f)


def _run(study: str, mode: str, tmp: str) -> dict:
  out = os.path.join(tmp, f"{study.replace('/', '-')}-{mode}.npz")
  subprocess.run([sys.executable, "-m", "benchmarks.model_init", "--child", study, mode, out],
                 check=True, env={**os.environ, "JAXSEG_KEEP_MALLOC": "1"})
  with open(out + ".json") as f:
    info = json.load(f)
  with np.load(out) as z:
    info["leaves"] = [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]
  return info


def main(argv: Sequence[str] | None = None) -> int:
  from benchmarks.accelerator import select

  parser = argparse.ArgumentParser(prog="python -m benchmarks.model_init",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--studies", default=None, help="comma-separated (default: every study)")
  parser.add_argument("--child", nargs=3, metavar=("STUDY", "MODE", "OUT"), help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    _one(*args.child)
    return 0
  print(f"CPU: {cpu_name()}; jax {jax.__version__}; each cell one fresh process")
  print()
  print("| study | model (cpu preset) | params | eager s | compiled s | ratio | max abs diff |")
  print("|---|---|---|---|---|---|---|")
  with tempfile.TemporaryDirectory() as tmp:
    for study in select(args.studies):
      eager, compiled = (_run(study, mode, tmp) for mode in MODES)
      if len(eager["leaves"]) != len(compiled["leaves"]):
        raise SystemExit(f"{study}: the two states have different leaves")
      diff = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                 if a.size else 0.0 for a, b in zip(eager["leaves"], compiled["leaves"]))
      print(f"| {study} | {eager['model']} | {eager['params']:,} | {eager['seconds']:.1f} | "
            f"{compiled['seconds']:.1f} | {eager['seconds'] / compiled['seconds']:.2f}x | "
            f"{diff:.1e} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
