"""How much faster than one after another any schedule of the same steps can run on this CPU.

``benchmarks.sweep`` compares one program that trains K configurations with the same K trained
one after another. A sweep can only win in two ways: its kernels do the work of a configuration
more cheaply than that configuration's own step does (larger or fused operations), or it keeps
every core busy where one small step, split across the cores, leaves some idle. This benchmark
measures the second's ceiling with the steps of ``benchmarks.sweep``, unchanged, in three
contenders that run side by side (each a long-lived subprocess; rounds alternate, so load hits
all alike):

* ``sequential``: ``benchmarks.sweep``'s baseline, one process on every core, the K
  configurations one after another;
* ``pinned``: one process per core, each pinned to its core before JAX starts (XLA then sizes
  its thread pool to that one core) and training its share of the K configurations one after
  another, all processes at once: every core runs whole steps, none waits for another, and no
  step is split. Nothing is shared, so this is the best that scheduling the same steps can do;
* ``sweep``: the K configurations in one program, as ``Trainer(num_configs=K)`` runs them by
  default here (``sweep_impl`` chosen by its cost model).

A model-step is one optimiser update of one configuration. The last lines read
``scheduling ceiling vs sequential: X.XX`` (pinned / sequential) and the sweep's share of it.
Linux only (``os.sched_setaffinity``).

  python -m benchmarks.sweep_ceiling                  # benchmarks.sweep's defaults
  python -m benchmarks.sweep_ceiling --configs 4 --size 32 --steps 2 --repeats 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.sweep_routes import add_sweep_arguments

LABELS = {
    "sequential": "one after another (benchmarks.sweep's baseline)",
    "pinned": "one after another, one process per core, all at once",
    "sweep": "sweep, one program (the Trainer's default)",
}


def shares(configs: int, cores: list[int]) -> list[tuple[int, list[int]]]:
  """``(core, configuration indices)`` per pinned process: configuration i on core i mod n,
  over at most ``configs`` cores (a core with no configuration gets no process)."""
  used = cores[:configs]
  return [(core, list(range(i, configs, len(used)))) for i, core in enumerate(used)]


def _worker(args) -> None:
  """One contender's process: compile, say ``ready``, then one timed round per ``run`` line."""
  if args.core is not None:
    os.sched_setaffinity(0, {args.core})  # before JAX starts its backend and sizes its pools
  from jaxseg import cpu_flags  # pylint: disable=import-outside-toplevel
  cpu_flags.apply()
  from benchmarks import sweep  # pylint: disable=import-outside-toplevel

  batch = sweep.make_batch(args)
  if args.worker == "sweep":  # the Trainer's default program, chosen when it initialises
    run, trainer = sweep.contender(None, "xla", args, batch)
    impl = trainer.sweep_impl
  else:
    impl = "sequential"
    configs = None if args.only is None else [int(i) for i in args.only.split(",")]
    run, _ = sweep.contender("sequential", "xla", args, batch, configs)
  tic = time.perf_counter()
  run(1)  # compile and warm up
  cores = len(os.sched_getaffinity(0))
  print(f"ready {time.perf_counter() - tic:.3f} {impl} {cores}", flush=True)
  for line in sys.stdin:
    if line.strip() != "run":
      break
    tic = time.perf_counter()
    run(args.steps)
    print(f"done {time.perf_counter() - tic:.6f}", flush=True)


def _one_device_env() -> dict[str, str]:
  """This environment without simulated host devices: every worker is one process, one device
  (a test session's ``--xla_force_host_platform_device_count`` would split its batch)."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split()
           if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join(flags)
  return env


class _Process:
  """A worker subprocess and the lines it answers with."""

  def __init__(self, args, worker: str, core: int | None = None, only: list[int] | None = None):
    argv = [sys.executable, "-m", "benchmarks.sweep_ceiling", "--worker", worker,
            "--configs", str(args.configs), "--width", str(args.width), "--size", str(args.size),
            "--batch", str(args.batch), "--steps", str(args.steps)]
    if core is not None:
      argv += ["--core", str(core), "--only", ",".join(map(str, only))]
    self.name = f"{worker}" + ("" if core is None else f" (core {core})")
    self.log = tempfile.TemporaryFile(mode="w+")
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, bufsize=1, env=_one_device_env())

  def answer(self, word: str) -> list[str]:
    line = self.proc.stdout.readline()
    if not line.startswith(word):
      self.log.seek(0)
      tail = self.log.read()[-2000:]
      raise SystemExit(f"benchmarks.sweep_ceiling: the {self.name} worker failed:\n{tail}")
    return line.split()[1:]

  def send(self, line: str) -> None:
    self.proc.stdin.write(line + "\n")
    self.proc.stdin.flush()

  def close(self) -> None:
    if self.proc.poll() is None:
      try:
        self.send("quit")
        self.proc.wait(timeout=60)
      except (OSError, subprocess.TimeoutExpired):  # a worker that died or hangs: stop it
        self.proc.kill()
        self.proc.wait()
    self.log.close()


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_sweep_arguments(parser)
  parser.add_argument("--worker", choices=("sequential", "sweep"), help=argparse.SUPPRESS)
  parser.add_argument("--core", type=int, help=argparse.SUPPRESS)
  parser.add_argument("--only", help=argparse.SUPPRESS)
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  if args.worker:
    _worker(args)
    return
  if not hasattr(os, "sched_setaffinity"):
    parser.error("pinning processes to cores needs os.sched_setaffinity (Linux); "
                 "run benchmarks.sweep instead")
  if min(args.configs, args.size, args.batch, args.steps, args.repeats) < 1 or args.width <= 0:
    parser.error("--configs, --size, --batch, --steps and --repeats take positive integers, "
                 "--width a positive number")

  # pylint: disable=import-outside-toplevel
  from benchmarks._machine import cpu_name
  cores = sorted(os.sched_getaffinity(0))
  pinned = shares(args.configs, cores)
  # One group at a time, so that no compilation competes with another for the cores.
  starters = {"sequential": lambda: [_Process(args, "sequential")],
              "pinned": lambda: [_Process(args, "sequential", core, only)
                                 for core, only in pinned],
              "sweep": lambda: [_Process(args, "sweep")]}
  groups, compile_s, impl = {}, {}, {}
  try:
    for name, start in starters.items():
      print(f"starting {name} ({LABELS[name]}): compiling", file=sys.stderr, flush=True)
      groups[name] = start()
      answers = [p.answer("ready") for p in groups[name]]
      compile_s[name] = max(float(a[0]) for a in answers)
      impl[name] = answers[0][1]
      if name == "pinned" and any(a[2] != "1" for a in answers):
        raise SystemExit("benchmarks.sweep_ceiling: a pinned worker runs on more than one core "
                         f"(cores seen: {[a[2] for a in answers]}); is the affinity restricted?")
    times = {name: [] for name in groups}
    names = list(groups)
    for r in range(args.repeats):
      for name in names[r % len(names):] + names[:r % len(names)]:
        tic = time.perf_counter()
        for p in groups[name]:
          p.send("run")
        for p in groups[name]:
          p.answer("done")
        times[name].append(time.perf_counter() - tic)
      print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
  finally:
    for procs in groups.values():
      for p in procs:
        p.close()

  throughput = {name: args.configs * args.steps / statistics.median(t)
                for name, t in times.items()}
  processes = {"sequential": f"1 on {len(cores)} cores",
               "pinned": f"{len(pinned)}, one core each",
               "sweep": f"1 on {len(cores)} cores (sweep_impl={impl['sweep']!r})"}
  print(f"sweep ceiling: {args.configs} configs, U-Net width {args.width:g}, batch {args.batch} x "
        f"{args.size}x{args.size}, {args.steps} steps x {args.repeats} repeats (contenders "
        f"alternate); {len(cores)} cores; {cpu_name()}\n")
  print("| contender | processes | model-steps/s | vs sequential | compile + first step s |")
  print("|---|---|---:|---:|---:|")
  for name in groups:
    print(f"| {LABELS[name]} | {processes[name]} | {throughput[name]:.2f} | "
          f"{throughput[name] / throughput['sequential']:.2f}x | {compile_s[name]:.1f} |")
  ceiling = throughput["pinned"] / throughput["sequential"]
  print(f"\nscheduling ceiling vs sequential: {ceiling:.2f}")
  print(f"the sweep reaches {throughput['sweep'] / throughput['pinned']:.0%} of it")


if __name__ == "__main__":
  main()
