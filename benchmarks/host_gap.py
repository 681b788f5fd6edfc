"""Does the training loop wait on the host? Step throughput with and without it (issue 13).

The tversky study's CPU preset (seed-002 U-Net at width 1/16, batches of 8 phantom patches of
64x64 from the Grain ``PatchLoader`` with its augmentation: flips, rotations and intensity
jitter), trained through ``Trainer.fit`` with a no-op validation, in two loop settings:

* *waits on the host* (the loop before issue 13): the step's loss is copied to the host after
  every step (``TrainConfig(log_every=1)``) and the next batch is built and placed on the device
  only after that (``prefetch=0``);
* *does not wait* (the defaults): losses stay on the device and are fetched every 50 steps,
  and a background thread builds and places the next 2 batches while a step runs.

Also timed alone: the input pipeline (host batches per second) and the compiled step on a batch
already on the device. Epochs alternate between the two settings (a load change hits both); the
first epoch of each compiles and is not counted.

Usage: ``python -m benchmarks.host_gap [--epochs 4] [--steps 32]``
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import jax
import numpy as np

from benchmarks._machine import cpu_name, load_average
from experiments import runner, tversky
from experiments.configs import tversky as tversky_config
from jaxseg.data.pipeline import shard_batch
from jaxseg.train.loop import TrainConfig


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--epochs", type=int, default=4, help="timed epochs per setting")
  p.add_argument("--steps", type=int, default=32, help="steps per epoch")
  args = p.parse_args(argv)
  cfg = tversky_config.get_config("cpu")
  cfg.train.samples_per_epoch = args.steps * cfg.train.batch_size
  cfg.train.epochs = 2 * (args.epochs + 1) + 1  # + the epoch timed for the pipeline alone
  cfg.progress = False
  with tempfile.TemporaryDirectory() as tmp:
    cfg.data.data_dir = tmp
    cfg.workdir = tmp
    cmp = runner.Comparison(cfg, tversky.STUDY, log=lambda _: None)
    fold = cmp.load()[0]
    configs = cmp.study.configurations(cmp)[:1]  # BCE
    print(f"Trainer.fit on the tversky CPU preset (BCE; batch {cfg.train.batch_size} of "
          f"{'x'.join(map(str, cfg.train.patch))}, {args.steps} steps per epoch); CPU: "
          f"{cpu_name()}, {os.cpu_count()} cores; {jax.device_count()} device(s); jax "
          f"{jax.__version__}; load average {load_average()}", flush=True)
    with cmp.loader(fold.train, cfg.train.epochs) as loader:
      trainer = cmp.trainer(configs, loader.num_batches, None)
      params = runner.sweep_loss(configs)[1][0]
      state = trainer.init(jax.random.key(0), loader.sample())
      settings = {"waits on the host (log_every=1, prefetch=0)": dict(log_every=1, prefetch=0),
                  "does not wait (log_every=50, prefetch=2)": dict(log_every=50, prefetch=2)}
      seconds = {name: [] for name in settings}
      epoch = 0
      for round_ in range(args.epochs + 1):
        for name, loop in settings.items():
          one_epoch = lambda e, epoch=epoch: loader(epoch)  # the same data for both settings
          tic = time.perf_counter()
          state = trainer.fit(state, batches=one_epoch, evaluate=lambda s: {"dice": 0.0},
                              loss_params=params, log=lambda _: None,
                              config=TrainConfig(num_epochs=1, progress=False, **loop)).state
          jax.block_until_ready(state)
          if round_:  # the first round compiles
            seconds[name].append(time.perf_counter() - tic)
          epoch += 1
      # The two halves alone: host batches, and steps on a batch already on the device.
      tic = time.perf_counter()
      host = list(loader(epoch))
      t_host = (time.perf_counter() - tic) / len(host)
      placed = shard_batch(host[0], trainer.mesh)
      key = jax.random.key(0)
      state, metrics = trainer._step(state, placed, params, key)  # compiled already; warm
      jax.block_until_ready(metrics)
      tic = time.perf_counter()
      for _ in range(len(host)):
        state, metrics = trainer._step(state, placed, params, key)
      jax.block_until_ready(metrics)
      t_step = (time.perf_counter() - tic) / len(host)
  print()
  print("| loop | s per epoch (median) | steps/s | vs waiting |")
  print("|---|---:|---:|---:|")
  base = statistics.median(next(iter(seconds.values())))
  for name, values in seconds.items():
    s = statistics.median(values)
    print(f"| {name} | {s:.2f} | {args.steps / s:.1f} | {base / s:.2f}x |")
  print(f"| input pipeline alone (host) | {t_host * args.steps:.2f} | {1 / t_host:.1f} | — |")
  print(f"| train step alone (batch on the device) | {t_step * args.steps:.2f} | "
        f"{1 / t_step:.1f} | — |")
  print(f"\nload average after: {load_average()}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
