"""Throughput of a vmapped 8-configuration sweep vs the same 8 configurations one after another.

Both use the seed-002 U-Net (BatchNorm, one sigmoid output) and the Tversky/BCE loss of
``experiments.tversky``; the sweep trains all configurations in one compiled program
(``Trainer(num_configs=8)``), the baseline trains each with its own ``Trainer`` step in turn.
Each mode runs with every convolution implementation of ``UNet2DConfig.conv_impl`` (``xla``:
XLA's convolutions, which ``vmap`` turns into grouped ones; ``im2col``: patch-matrix products,
which ``vmap`` turns into batched matrix products). Reports model-steps per second (one optimiser
update of one configuration = one model-step), median over repeats after compilation, with the
contenders alternating in every repeat; the last line compares the best of each mode:
``sweep speedup vs sequential: X.XX``.

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

from benchmarks._machine import cpu_name
from benchmarks.sweep_routes import add_sweep_arguments
from experiments.configs.tversky import PAPER_ALPHAS
from experiments.runner import LossConfig, sweep_loss
from experiments.tversky import bce, make_tversky
from jaxseg.models.layers import CONV_IMPLS
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


def _contender(sweep: bool, conv_impl: str, args, batch):
  """A function that runs ``steps`` steps of every configuration, as a sweep or in turn."""
  model = UNet2D(UNet2DConfig.tversky(width=args.width, conv_impl=conv_impl))
  tx = optax.adam(1e-4)
  key = jax.random.key(0)
  if sweep:
    trainer = Trainer(model, tx, loss_fn, num_configs=args.configs)
    state = [trainer.init(key, batch)]
    params = _params(args.configs, True)

    def run(steps):
      for _ in range(steps):
        state[0], metrics = trainer.step(state[0], batch, params, key)
      jax.block_until_ready(metrics["loss"])
    return run
  trainer = Trainer(model, tx, loss_fn)
  states = [trainer.init(key, batch) for _ in range(args.configs)]
  params = _params(args.configs, False)

  def run(steps):
    for i in range(args.configs):
      for _ in range(steps):
        states[i], metrics = trainer.step(states[i], batch, params[i], key)
    jax.block_until_ready(metrics["loss"])
  return run


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_sweep_arguments(parser)
  parser.add_argument("--conv-impls", default=",".join(CONV_IMPLS),
                      help="comma-separated UNet2DConfig.conv_impl values to time in both modes")
  args = parser.parse_args(argv)
  impls = [i for i in args.conv_impls.split(",") if i]
  if not impls or any(i not in CONV_IMPLS for i in impls):
    parser.error(f"--conv-impls takes a comma-separated subset of {CONV_IMPLS}")

  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(args.batch, args.size, args.size, 1)).astype(np.float32),
           "label": (rng.random((args.batch, args.size, args.size)) > 0.9).astype(np.int32)}
  contenders = {(mode, impl): _contender(mode == "sweep", impl, args, batch)
                for mode in ("sweep", "sequential") for impl in impls}
  for run in contenders.values():
    run(1)  # compile and warm up
  times = {name: [] for name in contenders}
  for r in range(args.repeats):  # contenders alternate (order rotates), so load hits all alike
    names = list(contenders)
    for name in names[r % len(names):] + names[:r % len(names)]:
      tic = time.perf_counter()
      contenders[name](args.steps)
      times[name].append(time.perf_counter() - tic)
  median = {name: statistics.median(t) for name, t in times.items()}

  model_steps = args.configs * args.steps
  device = f"{jax.device_count()} x {jax.devices()[0].device_kind}"
  print(f"sweep benchmark: {args.configs} configs, U-Net width {args.width:g}, batch "
        f"{args.batch} x {args.size}x{args.size}, {args.steps} steps x {args.repeats} repeats "
        f"(contenders alternate), {device}; {cpu_name()}\n")
  print("| mode | convolutions | model-steps/s | seconds per sweep step |")
  print("|---|---|---:|---:|")
  label = {"sweep": "vmapped sweep (one program)", "sequential": "one after another"}
  for (mode, impl), t in median.items():
    print(f"| {label[mode]} | {impl} | {model_steps / t:.2f} | {t / args.steps:.3f} |")
  best = {mode: min((t, impl) for (m, impl), t in median.items() if m == mode)
          for mode in ("sweep", "sequential")}
  print(f"\nbest sweep: {best['sweep'][1]} convolutions; best one after another: "
        f"{best['sequential'][1]} convolutions")
  print(f"sweep speedup vs sequential: {best['sequential'][0] / best['sweep'][0]:.2f}")


if __name__ == "__main__":
  main()
