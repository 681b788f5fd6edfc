"""Throughput of a vmapped 8-configuration sweep vs the same 8 configurations one after another.

Both use the seed-002 U-Net (BatchNorm, one sigmoid output) and the Tversky/BCE loss of
``experiments.tversky``; the sweep trains all configurations in one compiled program
(``Trainer(num_configs=8)``), the baseline trains each with its own ``Trainer`` step in turn.
Reports model-steps per second (one optimiser update of one configuration = one model-step),
median over repeats, after compilation.

  python -m benchmarks.sweep                       # CPU-sized defaults
  python -m benchmarks.sweep --width 1 --size 128 --batch 16 --steps 20   # e.g. on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
import optax

from experiments.configs.tversky import PAPER_ALPHAS
from experiments.runner import LossConfig, sweep_loss
from experiments.tversky import bce, make_tversky
from jaxseg.models.unet2d import UNet2D, UNet2DConfig
from jaxseg.train.loop import Trainer


def _loss(k: int):
  """The tversky study's sweep loss over BCE and k - 1 Tversky alphas, and per-config params."""
  tversky = make_tversky(1.0)
  configs = [LossConfig("BCE", bce)] + [
      LossConfig(f"T{a}", tversky, {"alpha": a, "beta": 1.0 - a}) for a in PAPER_ALPHAS[:k - 1]]
  return sweep_loss(configs)


loss_fn = _loss(8)[0]


def _params(k: int, sweep: bool):
  params = _loss(k)[1]
  return jax.tree.map(lambda *xs: np.stack(xs), *params) if sweep else params


def _time(fn, steps: int, repeats: int) -> float:
  fn(1)  # compile and warm up
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    fn(steps)
    times.append(time.perf_counter() - tic)
  return statistics.median(times)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--configs", type=int, default=8)
  parser.add_argument("--width", type=float, default=0.0625)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)
  args = parser.parse_args(argv)

  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(args.batch, args.size, args.size, 1)).astype(np.float32),
           "label": (rng.random((args.batch, args.size, args.size)) > 0.9).astype(np.int32)}
  model = UNet2D(UNet2DConfig.tversky(width=args.width))
  tx = optax.adam(1e-4)
  key = jax.random.key(0)

  sweep = Trainer(model, tx, loss_fn, num_configs=args.configs)
  sweep_state = [sweep.init(key, batch)]
  sweep_params = _params(args.configs, True)

  def run_sweep(steps):
    for _ in range(steps):
      sweep_state[0], metrics = sweep.step(sweep_state[0], batch, sweep_params, key)
    jax.block_until_ready(metrics["loss"])

  single = Trainer(model, tx, loss_fn)
  states = [single.init(key, batch) for _ in range(args.configs)]
  params = _params(args.configs, False)

  def run_sequential(steps):
    for i in range(args.configs):
      for _ in range(steps):
        states[i], metrics = single.step(states[i], batch, params[i], key)
    jax.block_until_ready(metrics["loss"])

  t_sweep = _time(run_sweep, args.steps, args.repeats)
  t_seq = _time(run_sequential, args.steps, args.repeats)
  model_steps = args.configs * args.steps
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"sweep benchmark: {args.configs} configs, U-Net width {args.width:g}, batch "
        f"{args.batch} x {args.size}x{args.size}, {args.steps} steps x {args.repeats} repeats, "
        f"{device}\n")
  print("| mode | model-steps/s | seconds per sweep step |")
  print("|---|---|---|")
  print(f"| vmapped sweep (one program) | {model_steps / t_sweep:.2f} | {t_sweep / args.steps:.3f} |")
  print(f"| one after another | {model_steps / t_seq:.2f} | {t_seq / args.steps:.3f} |")
  print(f"\nsweep speed-up: {t_seq / t_sweep:.2f}x")


if __name__ == "__main__":
  main()
