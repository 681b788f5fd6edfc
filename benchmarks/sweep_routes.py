"""Other ways to run K configurations as one program on a CPU, against one after another.

The same seed-002 U-Net step as ``benchmarks.sweep`` (BatchNorm, one sigmoid output, BCE, Adam),
written here as a plain function of ``(params, batch_stats, opt_state)`` so that the routes can be
compared without the library's ``Trainer`` (which only knows ``vmap``):

* ``vmap``: the configurations as a vmapped axis (what ``Trainer(num_configs=K)`` does);
* ``unrolled``: a Python loop over the configurations under one ``jit`` (K independent copies of
  the step in one program, which XLA's thunk executor may run concurrently);
* ``folded``: the configurations folded into the channels of one network
  (``benchmarks/_folded_unet.py``): every per-channel operation runs once for all of them, and a
  convolution of at most ``--fold-max`` channels per configuration runs as one dense convolution
  with a block-diagonal kernel (``K`` times the FLOPs, no feature groups), wider ones as ``K``
  convolutions on channel slices;
* ``sequential``: one jitted step per configuration, in turn (the baseline);
* with ``--devices 2`` (``--xla_force_host_platform_device_count``): ``vmap`` and ``unrolled``
  under ``shard_map`` over a ``config`` axis of the host devices, K / devices per device.

Prints model-steps per second per route (median over rounds; routes alternate) and the ratio to
``sequential``. Run once with the default threads, once pinned to one core (``taskset -c 0``) to
see how much the second core gives a single step.

  python -m benchmarks.sweep_routes
  python -m benchmarks.sweep_routes --devices 2
  taskset -c 0 python -m benchmarks.sweep_routes --routes sequential
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time


def add_sweep_arguments(parser: argparse.ArgumentParser) -> None:
  """The model and timing flags that this benchmark shares with ``benchmarks.sweep`` (this
  module imports no JAX at its top, so it can set ``XLA_FLAGS`` before the backend starts)."""
  parser.add_argument("--configs", type=int, default=8)
  parser.add_argument("--width", type=float, default=0.0625)
  parser.add_argument("--size", type=int, default=64)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--steps", type=int, default=5)
  parser.add_argument("--repeats", type=int, default=3)


ROUTES = ("vmap", "unrolled", "folded", "sequential")


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_sweep_arguments(parser)
  parser.add_argument("--devices", type=int, default=1, help="host CPU devices (config axis)")
  parser.add_argument("--routes", default="vmap,unrolled,sequential",
                      help=f"comma-separated subset of {','.join(ROUTES)}")
  parser.add_argument("--fold-max", type=int, default=8,
                      help="folded route: block-diagonal convolutions up to this many channels "
                           "per configuration")
  args = parser.parse_args(sys.argv[1:] if argv is None else argv)
  routes = [r for r in args.routes.split(",") if r]
  if not routes or any(r not in ROUTES for r in routes):
    parser.error(f"--routes takes a comma-separated subset of {','.join(ROUTES)}")
  if "folded" in routes and args.devices > 1:
    parser.error("the folded route runs on one device; drop it or --devices")
  if args.devices < 1 or args.configs % args.devices:
    parser.error(f"--configs ({args.configs}) must be a multiple of --devices ({args.devices})")
  if args.devices > 1:  # before JAX starts its backend
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_"
                               f"device_count={args.devices}").strip()
  from jaxseg import cpu_flags  # pylint: disable=import-outside-toplevel
  cpu_flags.apply()
  # pylint: disable=import-outside-toplevel
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax
  from jax.sharding import Mesh, NamedSharding, PartitionSpec

  from benchmarks._folded_unet import folded_apply
  from benchmarks._machine import cpu_name, load_average
  from jaxseg.models.unet2d import UNet2D, UNet2DConfig
  # pylint: enable=import-outside-toplevel

  k = args.configs
  model = UNet2D(UNet2DConfig.tversky(width=args.width))
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(args.batch, args.size, args.size, 1)), jnp.float32)
  y = jnp.asarray(rng.random((args.batch, args.size, args.size, 1)) > 0.9, jnp.float32)
  variables = model.init(jax.random.key(0), x)
  tx = optax.adam(1e-3)

  def step(params, stats, opt, x, y):
    def loss(p):
      out, new = model.apply({"params": p, "batch_stats": stats}, x, train=True,
                             mutable=["batch_stats"])
      return optax.sigmoid_binary_cross_entropy(out, y).mean(), new["batch_stats"]
    (value, stats), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, value

  def unrolled(params, stats, opt, x, y):
    n = jax.tree.leaves(params)[0].shape[0]
    outs = [step(*jax.tree.map(lambda a, i=i: a[i], (params, stats, opt)), x, y)
            for i in range(n)]
    return jax.tree.map(lambda *a: jnp.stack(a), *outs)

  def folded(params, stats, opt, x, y):
    def loss(p):
      out, new = folded_apply(p, stats, x, fold_max=args.fold_max)
      per_config = optax.sigmoid_binary_cross_entropy(out, y).mean(axis=(1, 2, 3, 4))
      return per_config.sum(), (per_config, new)  # the sum's gradient is each one's own
    (_, (value, stats)), grads = jax.value_and_grad(loss, has_aux=True)(params)
    updates, opt = jax.vmap(tx.update)(grads, opt, params)
    return optax.apply_updates(params, updates), stats, opt, value

  vmapped = jax.vmap(step, in_axes=(0, 0, 0, None, None))
  one = (variables["params"], variables["batch_stats"], tx.init(variables["params"]))
  stacked = jax.tree.map(lambda a: jnp.stack([a] * k), one)
  if args.devices > 1:
    mesh = Mesh(np.array(jax.devices()[:args.devices]), ("config",))
    spec = (PartitionSpec("config"),) * 3 + (PartitionSpec(), PartitionSpec())
    shard = lambda f: jax.jit(jax.shard_map(f, mesh=mesh, in_specs=spec,
                                            out_specs=PartitionSpec("config")))
    stacked = jax.device_put(stacked, NamedSharding(mesh, PartitionSpec("config")))
    x, y = (jax.device_put(a, NamedSharding(mesh, PartitionSpec())) for a in (x, y))
    programs = {"vmap": shard(vmapped), "unrolled": shard(unrolled)}
  else:
    programs = {"vmap": jax.jit(vmapped), "unrolled": jax.jit(unrolled),
                "folded": jax.jit(folded)}
  single = jax.jit(step)
  states = {"vmap": stacked, "unrolled": stacked, "folded": stacked, "sequential": [one] * k}

  def run(route: str, n: int):
    if route == "sequential":
      for i in range(k):
        for _ in range(n):
          *state, value = single(*states[route][i], x, y)
          states[route][i] = tuple(state)
    else:
      for _ in range(n):
        *state, value = programs[route](*states[route], x, y)
        states[route] = tuple(state)
    jax.block_until_ready(value)

  for route in routes:
    run(route, 1)  # compile and warm up
  times = {route: [] for route in routes}
  for r in range(args.repeats):
    for route in routes[r % len(routes):] + routes[:r % len(routes)]:
      tic = time.perf_counter()
      run(route, args.steps)
      times[route].append(time.perf_counter() - tic)
  rate = {route: k * args.steps / statistics.median(t) for route, t in times.items()}
  print(f"sweep routes: {k} configs, U-Net width {args.width:g}, batch {args.batch} x "
        f"{args.size}x{args.size}, {args.devices} host device(s), {args.steps} steps x "
        f"{args.repeats} repeats; {cpu_name()}, {len(os.sched_getaffinity(0))} usable cores; "
        f"load {load_average()}\n")
  print("| route | model-steps/s | vs sequential |\n|---|---:|---:|")
  for route in routes:
    ratio = f"{rate[route] / rate['sequential']:.2f}x" if "sequential" in rate else "—"
    print(f"| {route} | {rate[route]:.1f} | {ratio} |")


if __name__ == "__main__":
  main()
