"""Throughput of an 8-configuration sweep in one program vs the same 8 configurations in turn.

All use the seed-002 U-Net (BatchNorm, one sigmoid output) and the Tversky/BCE loss of
``experiments.tversky``. A sweep trains all configurations in one compiled program
(``Trainer(num_configs=8, sweep_impl=...)``: ``vmap``, the configurations as a vmapped axis, or
``unroll``, one copy of the step per configuration); the baseline trains each with its own
``Trainer`` step in turn. Each mode runs with every convolution implementation of
``UNet2DConfig.conv_impl`` (``xla``: XLA's convolutions, which ``vmap`` turns into grouped ones;
``im2col``: patch-matrix products, which ``vmap`` turns into batched matrix products). Reports
model-steps per second (one optimiser update of one configuration = one model-step), median over
repeats after compilation, with the contenders alternating in every repeat, and each contender's
compilation plus first step; the last lines compare the best sweep with the best sequential
contender, round by round (``per round: A to B over N rounds``, the spread of the ratio on this
machine) and over the medians: ``sweep speedup vs sequential: X.XX``.

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
from jaxseg.train.loop import SWEEP_IMPLS, Trainer


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


MODES = (*SWEEP_IMPLS, "sequential")
LABELS = {"vmap": "vmapped sweep (one program)", "unroll": "unrolled sweep (one program)",
          "sequential": "one after another"}


def make_batch(args) -> dict:
  """The one batch every contender trains on: ``--batch`` random images of ``--size`` squared."""
  rng = np.random.default_rng(0)
  return {"image": rng.normal(size=(args.batch, args.size, args.size, 1)).astype(np.float32),
          "label": (rng.random((args.batch, args.size, args.size)) > 0.9).astype(np.int32)}


def default_sweep_impl(args, batch) -> str:
  """The ``sweep_impl`` that ``Trainer(num_configs=K)`` chooses for this model here."""
  trainer = Trainer(UNet2D(UNet2DConfig.tversky(width=args.width)), optax.adam(1e-4), loss_fn,
                    num_configs=args.configs)
  trainer.init(jax.random.key(0), batch)  # the Trainer chooses when it sees the model's inputs
  return trainer.sweep_impl


def contender(mode: str | None, conv_impl: str, args, batch, configs=None):
  """``(run, trainer)``: ``run(steps)`` runs ``steps`` steps of every configuration, as a sweep
  (``mode``: the Trainer's ``sweep_impl``, None for its default, chosen at ``init``) or in turn
  (``"sequential"``; ``configs``: the indices of the configurations to train, default all
  ``args.configs``)."""
  model = UNet2D(UNet2DConfig.tversky(width=args.width, conv_impl=conv_impl))
  tx = optax.adam(1e-4)
  key = jax.random.key(0)
  if mode != "sequential":
    trainer = Trainer(model, tx, loss_fn, num_configs=args.configs, sweep_impl=mode)
    state = [trainer.init(key, batch)]
    params = _params(args.configs, True)

    def run(steps):
      for _ in range(steps):
        state[0], metrics = trainer.step(state[0], batch, params, key)
      jax.block_until_ready(metrics["loss"])
    return run, trainer
  trainer = Trainer(model, tx, loss_fn)
  configs = range(args.configs) if configs is None else configs
  states = {i: trainer.init(key, batch) for i in configs}
  params = _params(args.configs, False)

  def run(steps):
    for i in configs:
      for _ in range(steps):
        states[i], metrics = trainer.step(states[i], batch, params[i], key)
    jax.block_until_ready(metrics["loss"])
  return run, trainer


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_sweep_arguments(parser)
  parser.add_argument("--conv-impls", default=",".join(CONV_IMPLS),
                      help="comma-separated UNet2DConfig.conv_impl values to time in both modes")
  parser.add_argument("--modes", default=",".join(MODES),
                      help="comma-separated subset of " + ",".join(MODES) + " (the sweeps are "
                           "Trainer(num_configs=K, sweep_impl=...); one or both, and sequential)")
  args = parser.parse_args(argv)
  impls = [i for i in args.conv_impls.split(",") if i]
  if not impls or any(i not in CONV_IMPLS for i in impls):
    parser.error(f"--conv-impls takes a comma-separated subset of {CONV_IMPLS}")
  modes = [m for m in args.modes.split(",") if m]
  if "sequential" not in modes or len(modes) < 2 or any(m not in MODES for m in modes):
    parser.error(f"--modes takes sequential and at least one of {', '.join(SWEEP_IMPLS)}")

  batch = make_batch(args)
  contenders = {(mode, impl): contender(mode, impl, args, batch)[0]
                for mode in modes for impl in impls}
  compile_s = {}
  for name, run in contenders.items():
    tic = time.perf_counter()
    run(1)  # compile and warm up
    compile_s[name] = time.perf_counter() - tic
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
  print("| mode | convolutions | model-steps/s | seconds per sweep step | "
        "compile + first step s |")
  print("|---|---|---:|---:|---:|")
  for (mode, impl), t in median.items():
    print(f"| {LABELS[mode]} | {impl} | {model_steps / t:.2f} | {t / args.steps:.3f} | "
          f"{compile_s[mode, impl]:.1f} |")
  sweeps = [(t, mode, impl) for (mode, impl), t in median.items() if mode != "sequential"]
  best_sweep = min(sweeps)
  best_seq = min((t, impl) for (mode, impl), t in median.items() if mode == "sequential")
  default = default_sweep_impl(args, batch)
  print(f"\nbest sweep: {LABELS[best_sweep[1]]}, {best_sweep[2]} convolutions (the Trainer's "
        f"default here: sweep_impl={default!r}); best one after another: {best_seq[1]} "
        f"convolutions")
  # The same two contenders round by round (in one round they run seconds apart):
  # how far one run's ratio can move on this machine.
  rounds = [seq / sweep for seq, sweep in zip(times["sequential", best_seq[1]],
                                              times[best_sweep[1], best_sweep[2]])]
  print(f"per round: {min(rounds):.2f} to {max(rounds):.2f} over {len(rounds)} rounds")
  print(f"sweep speedup vs sequential: {best_seq[0] / best_sweep[0]:.2f}")


if __name__ == "__main__":
  main()
