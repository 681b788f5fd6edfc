"""Where a CPU train step of the studies' 2D U-Nets goes, and what jaxseg's own layers buy.

One ``jaxseg.train.loop.Trainer`` step (jit, Adam 1e-3) of a study's 2D U-Net at its CPU preset
(``--preset tversky``: the seed-002 U-Net with BatchNorm and 2x2 transposed up-convolutions, one
sigmoid output, binary cross entropy, as ``experiments.tversky --data promise12`` trains it;
``--preset hierarchical``: the seed-000 U-Net, bilinear up, 9 classes, softmax cross entropy).
Contenders, in one process, alternating round by round:

* ``jaxseg``: the library's model as it is (``jaxseg.models.layers.ConvTranspose``, whose 2x2
  stride-2 up-convolutions run as one matrix product, and ``max_pool_blocks``, a reshape-max);
* ``flax-layers``: the same model with flax's ``nn.ConvTranspose`` and ``nn.max_pool`` swapped
  back in (the model of stop 24 and before; same parameter names, same initial weights);
* ``im2col``: ``jaxseg`` with ``UNet2DConfig(conv_impl="im2col")`` (3x3 convolutions as patch
  matrices).

Prints the median and minimum wall time per step and the process CPU time per step of each,
then, for ``--profile`` (default ``jaxseg``), the top XLA thunks of one step from a
``jax.profiler`` trace, grouped by kind and one by one.

  python -m benchmarks.step_profile                                # tversky, width 1/8, 128x128
  python -m benchmarks.step_profile --preset hierarchical --width 0.25 --size 64
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import glob
import gzip
import json
import os
import re
import statistics
import tempfile
import time

from jaxseg import cpu_flags

cpu_flags.apply()  # before JAX starts its backend, as every jaxseg entry point does

import flax.linen as nn  # pylint: disable=wrong-import-position
import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import optax  # pylint: disable=wrong-import-position

from benchmarks._machine import cpu_name, load_average  # pylint: disable=wrong-import-position
from jaxseg import losses  # pylint: disable=wrong-import-position
from jaxseg.data.pipeline import shard_batch  # pylint: disable=wrong-import-position
from jaxseg.models import unet2d  # pylint: disable=wrong-import-position
from jaxseg.train.loop import Trainer  # pylint: disable=wrong-import-position

CONTENDERS = ("jaxseg", "flax-layers", "im2col")


@contextlib.contextmanager
def _flax_layers():
  """Builds the U-Net with flax's transposed convolution and max pooling (stop 24's model)."""
  saved = unet2d.ConvTranspose, unet2d.max_pool_blocks
  unet2d.ConvTranspose = lambda f, k, s, dtype: nn.ConvTranspose(f, k, strides=s, dtype=dtype)
  unet2d.max_pool_blocks = lambda x, w: nn.max_pool(x, w, strides=w)
  try:
    yield
  finally:
    unet2d.ConvTranspose, unet2d.max_pool_blocks = saved


def _loss(preset: str):
  if preset == "tversky":
    return lambda out, batch, p: optax.sigmoid_binary_cross_entropy(
        out[..., 0], batch["label"].astype(out.dtype)).mean(axis=(1, 2))
  return lambda out, batch, p: losses.softmax_cross_entropy(out, batch["label"])


def _batch(args):
  rng = np.random.default_rng(0)
  classes = 2 if args.preset == "tversky" else 9
  return {"image": rng.normal(size=(args.batch, args.size, args.size, 1)).astype(np.float32),
          "label": rng.integers(0, classes, (args.batch, args.size, args.size)).astype(np.int32)}


def _contender(name: str, args, batch):
  """``(step, state)``: a function doing ``n`` steps, and its first state."""
  cfg = getattr(unet2d.UNet2DConfig, args.preset)(
      width=args.width, conv_impl="im2col" if name == "im2col" else "xla")
  with _flax_layers() if name == "flax-layers" else contextlib.nullcontext():
    trainer = Trainer(unet2d.UNet2D(cfg), optax.adam(1e-3), _loss(args.preset))
    state = [trainer.init(jax.random.key(0), batch)]
    key = jax.random.key(1)

    def run(n: int):
      for _ in range(n):
        state[0], metrics = trainer.step(state[0], batch, None, key)
      return metrics["loss"].block_until_ready()

    run(2)  # compile (inside the swap: the model is traced here) and warm up
  return trainer, state, run


def _profile(trainer, state, batch, steps: int, top: int) -> None:
  hlo = trainer._step.lower(  # pylint: disable=protected-access
      state[0], shard_batch(batch, trainer.mesh), None, jax.random.key(1)).compile().as_text()
  kinds = {}
  for line in hlo.splitlines():  # thunk name -> (output shape, HLO op)
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) ([\w-]+)\(", line)
    if match:
      kinds[match.group(1)] = (match.group(2).split("{")[0], match.group(3))
  key = jax.random.key(1)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      for _ in range(steps):
        state[0], metrics = trainer.step(state[0], batch, None, key)
        metrics["loss"].block_until_ready()
    (path,) = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  total, by_kind = collections.Counter(), collections.Counter()
  for e in events:
    if e["name"].startswith(("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool")):
      continue
    ms = e["dur"] / 1e3 / steps
    total[e["name"]] += ms
    shape, op = kinds.get(e["name"], ("", "?"))
    kind = "convolution" if op == "convolution" or "convolution" in e["name"] else op
    by_kind[kind] += ms
  traced = sum(total.values())
  print(f"\n| thunk kind | ms/step | share of traced |\n|---|---:|---:|")
  for kind, ms in by_kind.most_common():
    print(f"| {kind} | {ms:.1f} | {ms / traced:.0%} |")
  print(f"\n| XLA thunk | output | op | ms/step | share of traced |\n|---|---|---|---:|---:|")
  for name, ms in total.most_common(top):
    shape, op = kinds.get(name, ("", "?"))
    print(f"| {name} | {shape} | {op} | {ms:.2f} | {ms / traced:.1%} |")
  print(f"\n{traced:.1f} ms/step of traced thunks (summed over threads); convolutions that run "
        "inside the thunk executor without a trace annotation are not in these tables.")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--preset", choices=("tversky", "hierarchical"), default="tversky")
  parser.add_argument("--width", type=float, default=0.125)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=10, help="timed steps per contender per round")
  parser.add_argument("--repeats", type=int, default=3, help="rounds (contenders alternate)")
  parser.add_argument("--contenders", default=",".join(CONTENDERS))
  parser.add_argument("--profile", default="jaxseg", help="contender to profile ('' for none)")
  parser.add_argument("--top", type=int, default=15)
  args = parser.parse_args(argv)
  names = [n for n in args.contenders.split(",") if n]
  if not names or any(n not in CONTENDERS for n in names):
    parser.error(f"--contenders takes a comma-separated subset of {CONTENDERS}")
  if args.profile and args.profile not in names:
    parser.error(f"--profile {args.profile!r} is not among --contenders")

  batch = _batch(args)
  runs = {name: _contender(name, args, batch) for name in names}
  wall = {name: [] for name in names}
  cpu = {name: [] for name in names}
  for r in range(args.repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
      run = runs[name][2]
      for _ in range(args.steps):
        tic, tic_cpu = time.perf_counter(), time.process_time()
        run(1)
        wall[name].append(time.perf_counter() - tic)
        cpu[name].append(time.process_time() - tic_cpu)
      time.sleep(0.5)  # let the thread pool go idle between contenders
  print(f"step profile: {args.preset} U-Net, width {args.width:g}, batch {args.batch} x "
        f"{args.size}x{args.size}, Adam; {args.repeats} rounds x {args.steps} steps per contender "
        f"(alternating); {cpu_name()}, {os.cpu_count()} cores; load {load_average()}\n")
  print("| contender | median ms/step | min ms/step | CPU ms/step | vs flax-layers |")
  print("|---|---:|---:|---:|---:|")
  base = statistics.median(wall["flax-layers"]) if "flax-layers" in wall else None
  for name in names:
    med = statistics.median(wall[name])
    ratio = f"{base / med:.2f}x" if base else "—"
    print(f"| {name} | {med * 1e3:.1f} | {min(wall[name]) * 1e3:.1f} | "
          f"{statistics.median(cpu[name]) * 1e3:.1f} | {ratio} |")
  if args.profile:
    trainer, state, _ = runs[args.profile]
    print(f"\nprofile of `{args.profile}`:")
    _profile(trainer, state, batch, 5, args.top)


if __name__ == "__main__":
  main()
