"""Train-step speed on the CPU: jaxseg's own train step against the same U-Net in PyTorch.

Model, batch and optimiser are those of the seed-000 study (REFERENCE section 1): the 2D U-Net
``UNet2D(UNet2DConfig.hierarchical())`` (64/128/256 channels, two 3x3 conv + ReLU per level, no
batch norm, max-pool down, bilinear align-corners up + skip concat, 1x1 conv to 9 classes; 1.88 M
parameters), a batch of 8 single-channel 128 x 128 images with integer labels, the softmax cross
entropy ``jaxseg.losses.softmax_cross_entropy`` and ``optax.adam(1e-3)``.

Contenders (each runs in its own worker process, so XLA flags and thread pools never mix):

* jax ``library``: the real library step, ``jaxseg.train.loop.Trainer(...).step`` (jit, donated
  state, batch placed on the one-device mesh each step). Its median is the one the last line
  reports: ``speedup vs PyTorch: X.XX`` (PyTorch's best median / this median; > 1: jaxseg faster).
* jax variants (experiments; the library is not changed): ``wgrad-matmul`` (3x3 convolutions with
  a custom VJP whose weight gradient is nine shifted matrix products instead of XLA's
  window-128x128 "convolution"), ``eigen`` (YNNPACK off: ``--xla_cpu_experimental_ynn_fusion_type=``),
  ``ynn-no-conv`` (only YNNPACK's convolutions off: ``...=-individual_convolution``),
  ``eigen+wgrad-matmul``, ``onednn`` (``--xla_cpu_use_onednn=true``), ``fast-math`` (``--xla_cpu_enable_fast_math=true``),
  ``bf16`` (``UNet2DConfig(dtype="bfloat16")``, float32 parameters), ``no-donate`` (the same step
  jitted without buffer donation), ``remat`` (every conv block under ``nn.remat``), ``nchw`` (the
  same model with NCHW activations and OIHW kernels inside), ``4k-pages`` (the library step
  with 4 KB pages: ``GLIBC_TUNABLES=glibc.malloc.hugetlb=0``).
* torch ``channels_last`` and ``nchw``: the same architecture written in PyTorch (same parameter
  count, initialised with the *same* weights as the jax model, so the first losses must agree),
  ``torch.optim.Adam(lr=1e-3)``, ``F.cross_entropy``; needs the optional ``bench`` extra.
  ``channels_last+4k-pages`` and ``nchw+4k-pages``: the same with 4 KB pages.

Memory pages: ``python -m benchmarks.train_step`` re-executes itself with huge pages for malloc's
memory maps, as every jaxseg entry point does (``jaxseg.cpu_flags.use_huge_pages``), and every
contender inherits that environment, PyTorch's included; the ``4k-pages`` contenders run
without.

Method: every worker compiles / warms up first (excluded), then the parent runs ``--repeats``
rounds; in each round every contender runs ``--steps`` timed steps in turn (the order rotates
between rounds, with a short pause between contenders so that OpenMP threads stop spinning).
Each step is timed on its own (``block_until_ready`` for jax) and the tables give the median over
all timed steps, the minimum, and the process CPU time per step. All use ``--threads`` threads
(default: every core): ``torch.set_num_threads`` and XLA's ``intra_op_parallelism_threads``.
GFLOP/s are the model's convolution FLOPs of one step (forward + input gradient + weight
gradient; the first layer's input gradient is not needed) divided by the median time, against
the CPU's nominal peak ``cores x GHz x FLOP/cycle`` (AVX2+FMA: 32 FP32 FLOP/cycle on two FMA
pipes; AVX-512: 64, but 32 on AMD Zen 4, whose AVX-512 runs on 256-bit pipes) -- override with
``--peak-gflops``.

Finding (BENCHMARKS.md): with jaxlib 0.10.2 every convolution runs as a YNNPACK fusion by
default, and YNNPACK's weight-gradient convolutions run at 5-15 GFLOP/s; ``eigen`` /
``ynn-no-conv`` cut the step's CPU time about threefold at batch 8.

Usage::

  python -m benchmarks.train_step                           # full: 5 rounds x 5 steps
  python -m benchmarks.train_step --steps 2 --repeats 2     # quick development check
  python -m benchmarks.train_step --jax all --torch channels_last,nchw
  python -m benchmarks.train_step --profile library --batch 2   # top XLA ops of one step
  python -m benchmarks.train_step --jax library --torch nchw --convs   # + each convolution alone
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
import subprocess
import sys
import tempfile
import time
from typing import Any

# Workers run this file as a script (``python benchmarks/train_step.py --worker``): the
# repository root must be importable for ``benchmarks._timing``.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._machine import cpu_name  # pylint: disable=wrong-import-position
from benchmarks._timing import median_time  # pylint: disable=wrong-import-position
from jaxseg import cpu_flags  # pylint: disable=wrong-import-position

# ---------------------------------------------------------------------------------------------
# Contenders.

JAX_VARIANTS: dict[str, dict[str, Any]] = {
    # jaxseg's defaults: the library step with jaxseg.cpu_flags (YNNPACK convolutions off).
    "library": {"cost_analysis": True},
    # The same step under jaxlib's own defaults (YNNPACK convolutions on).
    "xla-defaults": {"raw_flags": True},
    "wgrad-matmul": {"model": "variant", "conv": "wgrad_matmul"},
    "eigen": {"xla_flags": "--xla_cpu_experimental_ynn_fusion_type="},
    "ynn-no-conv": {"xla_flags": "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"},
    "eigen+wgrad-matmul": {"model": "variant", "conv": "wgrad_matmul",
                           "xla_flags": "--xla_cpu_experimental_ynn_fusion_type="},
    # YNNPACK's forward and input-gradient convolutions (jaxlib's default) with the weight
    # gradient as shifted matrix products, so that no weight-gradient convolution reaches YNNPACK.
    "ynn+wgrad-matmul": {"model": "variant", "conv": "wgrad_matmul", "raw_flags": True},
    "onednn": {"xla_flags": "--xla_cpu_use_onednn=true"},
    "fast-math": {"xla_flags": "--xla_cpu_enable_fast_math=true"},
    "bf16": {"dtype": "bfloat16"},
    "no-donate": {"donate": False},
    "remat": {"model": "variant", "remat": True},
    "nchw": {"model": "variant", "layout": "NCHW"},
    # The library step with 4 KB pages for malloc's memory maps (the entry points' default is
    # huge pages, jaxseg.cpu_flags.use_huge_pages; BENCHMARKS.md "Huge pages").
    "4k-pages": {"malloc": "glibc.malloc.hugetlb=0"},
}
PAGES_4K = "+4k-pages"  # suffix of a torch layout: the same contender with 4 KB pages
TORCH_LAYOUTS = ("channels_last", "nchw")
DEFAULT_JAX = "library,xla-defaults"
DEFAULT_TORCH = "channels_last,nchw"
NUM_CLASSES = 9


Layer = tuple[str, tuple[int, ...], int, int]  # (name, input shape NHWC, c_out, kernel)


def conv_layers(batch: int, size: int, width: float = 1.0) -> list[Layer]:
  """The seed-000 U-Net's convolutions: ``(name, input shape NHWC, c_out, kernel)`` in order."""

  def c(n):
    return max(1, int(round(n * width)))

  f1, f2, bott, h = c(64), c(128), c(256), size
  convs = [  # (spatial size, c_in, c_out, kernel)
      (h, 1, f1, 3), (h, f1, f1, 3),
      (h // 2, f1, f2, 3), (h // 2, f2, f2, 3),
      (h // 4, f2, bott, 3), (h // 4, bott, bott, 3),
      (h // 2, bott + f2, f2, 3), (h // 2, f2, f2, 3),
      (h, f2 + f1, f1, 3), (h, f1, f1, 3),
      (h, f1, NUM_CLASSES, 1),
  ]
  names = [f"ConvBlock_{i}/Conv_{j}" for i in range(5) for j in range(2)] + ["Conv_0"]
  return [(name, (batch, s, s, ci), co, k) for name, (s, ci, co, k) in zip(names, convs)]


def layer_flops(shape: tuple[int, ...], c_out: int, kernel: int) -> float:
  """FLOPs (2 per multiply-add) of one SAME stride-1 convolution pass (any of the three)."""
  batch, h, w, c_in = shape
  return 2.0 * batch * h * w * c_in * c_out * kernel * kernel


def conv_flops(batch: int, size: int, width: float = 1.0) -> dict[str, float]:
  """FLOPs (2 per multiply-add) of the seed-000 U-Net's convolutions for one training step."""
  per = [layer_flops(shape, co, k) for _, shape, co, k in conv_layers(batch, size, width)]
  forward = sum(per)
  return {"forward": forward, "train_step": forward + (forward - per[0]) + forward}


def peak_gflops(threads: int, ghz: float | None) -> tuple[float, str]:
  """Nominal FP32 peak of ``threads`` cores from /proc/cpuinfo (frequency and vector width)."""
  flags, mhz, vendor, family = set(), None, "", None
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("flags") and not flags:
          flags = set(line.split(":", 1)[1].split())
        elif line.startswith("cpu MHz") and mhz is None:
          mhz = float(line.split(":", 1)[1])
        elif line.startswith("vendor_id") and not vendor:
          vendor = line.split(":", 1)[1].strip()
        elif line.startswith("cpu family") and family is None:
          family = int(line.split(":", 1)[1])
  if "avx512f" in flags and vendor == "AuthenticAMD" and family == 25:
    # Zen 4 runs AVX-512 on its two 256-bit FMA pipes (each 512-bit FMA takes two passes)
    per_cycle, isa = 32, "AVX-512 on 2 x 256-bit FMA pipes (Zen 4)"
  elif "avx512f" in flags:
    per_cycle, isa = 64, "AVX-512 FMA"
  elif "avx2" in flags and "fma" in flags:
    per_cycle, isa = 32, "AVX2 FMA x2 pipes"
  else:
    per_cycle, isa = 16, "SSE"
  ghz = ghz if ghz is not None else (mhz or 2000.0) / 1000.0
  return threads * ghz * per_cycle, f"{threads} cores x {ghz:.2f} GHz x {per_cycle} FLOP/cycle ({isa})"


# ---------------------------------------------------------------------------------------------
# jax side (imported only inside jax workers).


def _jax_model_and_trainer(spec: dict[str, Any], batch: int, size: int, width: float):
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import numpy as np
  import optax

  from jaxseg.losses import softmax_cross_entropy
  from jaxseg.models.layers import resize_bilinear_align_corners
  from jaxseg.models.unet2d import UNet2D, UNet2DConfig
  from jaxseg.train.loop import Trainer

  config = UNet2DConfig.hierarchical(width=width, dtype=spec.get("dtype", "float32"))
  library_model = UNet2D(config)

  def wgrad_matmul_conv(x, w, layout):
    """SAME, stride-1, odd-kernel conv whose weight gradient is k*k shifted matmuls.

    dW[i, j] = sum_{b,h,w} xpad[b, h+i, w+j, :]^T g[b, h, w, :]. On the zero-padded grid flattened
    to P = B (H+2p) (W+2p) positions, the input needed for tap (i, j) is the output-gradient grid
    shifted by s = (i-p)(W+2p) + (j-p): dW[i, j] = X^T (P, Ci)^T @ shift(G_pad, s) (P, Co). X is
    transposed once to (Ci, P) so every product is a plain row-major GEMM; the zero ring of G_pad
    keeps taps from crossing image borders. Input gradient and forward pass stay XLA's.
    """
    k = w.shape[0]
    p = k // 2

    def conv(x, w):
      return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                          dimension_numbers=("NHWC", "HWIO", "NHWC"))

    @jax.custom_vjp
    def f(x, w):
      return conv(x, w)

    def f_fwd(x, w):
      return conv(x, w), (x, w)

    def f_bwd(res, g):
      x, w = res
      dx = jax.vjp(lambda a: conv(a, w), x)[1](g)[0]
      b, h, wd, ci = x.shape
      co = g.shape[-1]
      hp, wp = h + 2 * p, wd + 2 * p
      n = b * hp * wp
      pad = ((0, 0), (p, p), (p, p), (0, 0))
      xt = jnp.pad(x, pad).transpose(3, 0, 1, 2).reshape(ci, n)
      off = p * wp + p
      gp = jnp.pad(jnp.pad(g, pad).reshape(n, co), ((off, off), (0, 0)))
      taps = [(i - p) * wp + (j - p) for i in range(k) for j in range(k)]
      dw = jnp.stack([xt @ gp[off - s: off - s + n] for s in taps]).reshape(k, k, ci, co)
      return dx, dw.astype(w.dtype)

    f.defvjp(f_fwd, f_bwd)
    if layout != "NHWC":
      raise ValueError("wgrad_matmul is written for NHWC")
    return f(x, w)

  def xla_conv(x, w, layout):
    if layout == "NHWC":
      dn = ("NHWC", "HWIO", "NHWC")
    else:
      dn, w = ("NCHW", "OIHW", "NCHW"), w.transpose(3, 2, 0, 1)
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dn)

  conv_fn = {"xla": xla_conv, "wgrad_matmul": wgrad_matmul_conv}[spec.get("conv", "xla")]
  layout = spec.get("layout", "NHWC")
  dtype = jnp.dtype(config.dtype)

  class Conv(nn.Module):
    """``nn.Conv`` look-alike (same parameter names, shapes and initialisers)."""

    features: int
    kernel: int

    @nn.compact
    def __call__(self, x):
      cin = x.shape[-1] if layout == "NHWC" else x.shape[1]
      kernel = self.param("kernel", nn.initializers.lecun_normal(),
                          (self.kernel, self.kernel, cin, self.features))
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
      y = conv_fn(x, kernel.astype(dtype), layout)
      return y + (bias if layout == "NHWC" else bias[:, None, None]).astype(dtype)

  class ConvBlock(nn.Module):
    features: int

    @nn.compact
    def __call__(self, x):
      for i in range(2):
        x = nn.relu(Conv(self.features, 3, name=f"Conv_{i}")(x))
      return x

  block_cls = nn.remat(ConvBlock) if spec.get("remat") else ConvBlock
  spatial = (1, 2) if layout == "NHWC" else (2, 3)
  channel_axis = -1 if layout == "NHWC" else 1

  class VariantUNet(nn.Module):
    """The library's U-Net, layer for layer (same parameter tree), with swappable internals."""

    @nn.compact
    def __call__(self, images, *, train: bool = False):
      del train
      x = images.astype(dtype)
      if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
      skips, index = [], 0
      for n in config.features:
        x = block_cls(config.channels(n), name=f"ConvBlock_{index}")(x)
        index += 1
        skips.append(x)
        window = (2, 2) if layout == "NHWC" else (1, 2, 2)
        x = nn.max_pool(x if layout == "NHWC" else x[..., None], window, strides=window)
        x = x if layout == "NHWC" else x[..., 0]
      x = block_cls(config.channels(config.bottleneck), name=f"ConvBlock_{index}")(x)
      index += 1
      for n, skip in zip(reversed(config.features), reversed(skips)):
        target = tuple(skip.shape[a] for a in spatial)
        if layout == "NHWC":
          x = resize_bilinear_align_corners(x, target)
        else:  # (B, C, H, W) -> treat C as a second "batch" axis.
          x = resize_bilinear_align_corners(x[..., None], (x.shape[1],) + target)[..., 0]
        x = jnp.concatenate([x, skip], axis=channel_axis)
        x = block_cls(config.channels(n), name=f"ConvBlock_{index}")(x)
        index += 1
      logits = Conv(config.num_classes, 1, name="Conv_0")(x)
      if layout == "NCHW":
        logits = logits.transpose(0, 2, 3, 1)
      return logits.astype(jnp.float32)

  model = library_model if spec.get("model", "library") == "library" else VariantUNet()

  def loss_fn(outputs, batch_, _):
    return softmax_cross_entropy(outputs, batch_["label"])

  trainer = Trainer(model, optax.adam(1e-3), loss_fn)
  sample = make_batch(batch, size)
  key = jax.random.key(0)
  state = trainer.init(key, sample)
  # Same initial parameters as the library model: the variants must be the same network.
  reference = Trainer(library_model, optax.adam(1e-3), loss_fn).init(key, sample)
  same_tree = jax.tree.structure(reference.params) == jax.tree.structure(state.params)
  if not same_tree or not all(bool(jnp.array_equal(a, b)) for a, b in zip(
      jax.tree.leaves(reference.params), jax.tree.leaves(state.params))):
    raise RuntimeError("variant model's parameters differ from the library model's")
  if spec.get("donate", True):
    step = trainer.step
  else:
    jitted = jax.jit(trainer._train_step)  # pylint: disable=protected-access
    step = lambda s, b, p, k: jitted(s, b, p, k)  # noqa: E731
  return trainer, state, step, np


def make_batch(batch: int, size: int):
  """The benchmark batch: N(0, 1) images and uniform labels, NumPy seed 0 (same for all)."""
  import numpy as np

  rng = np.random.default_rng(0)
  return {"image": rng.normal(size=(batch, size, size, 1)).astype(np.float32),
          "label": rng.integers(0, NUM_CLASSES, size=(batch, size, size)).astype(np.int32)}


def _jax_worker(spec: dict[str, Any], args):
  import jax

  trainer, state, step, np = _jax_model_and_trainer(spec, args.batch, args.size, args.width)
  batch = make_batch(args.batch, args.size)
  key = jax.random.key(1)
  params = sum(int(x.size) for x in jax.tree.leaves(state.params))
  tic = time.perf_counter()
  xla_flops = float("nan")
  if spec.get("cost_analysis"):  # compiles the step once more: only for the library step
    lowered = trainer._step.lower(state, batch, None, key)  # pylint: disable=protected-access
    cost = lowered.compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    xla_flops = float(cost.get("flops", float("nan"))) if cost else float("nan")
  holder = {"state": state}

  def one_step():
    holder["state"], metrics = step(holder["state"], batch, None, key)
    return float(jax.block_until_ready(metrics["loss"]))

  first_loss = one_step()
  for _ in range(args.warmup):
    one_step()
  ready = {"params": params, "first_loss": first_loss, "xla_flops": xla_flops,
           "compile_s": time.perf_counter() - tic}
  return ready, one_step


# ---------------------------------------------------------------------------------------------
# PyTorch side (imported only inside torch workers).


def _torch_worker(layout: str, args):
  import numpy as np
  import torch
  import torch.nn.functional as F
  from torch import nn

  torch.set_num_threads(args.threads)
  torch.manual_seed(0)

  def c(n):
    return max(1, int(round(n * args.width)))

  class Block(nn.Sequential):
    def __init__(self, cin, cout):
      super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(inplace=True),
                       nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

  class TorchUNet(nn.Module):
    """The seed-000 U-Net in PyTorch, module for module as ``jaxseg.models.UNet2D``."""

    def __init__(self):
      super().__init__()
      f1, f2, bott = c(64), c(128), c(256)
      self.blocks = nn.ModuleList([Block(1, f1), Block(f1, f2), Block(f2, bott),
                                   Block(bott + f2, f2), Block(f2 + f1, f1)])
      self.head = nn.Conv2d(f1, NUM_CLASSES, 1)

    def forward(self, x):
      a = self.blocks[0](x)
      b = self.blocks[1](F.max_pool2d(a, 2))
      x = self.blocks[2](F.max_pool2d(b, 2))
      x = F.interpolate(x, size=b.shape[-2:], mode="bilinear", align_corners=True)
      x = self.blocks[3](torch.cat([x, b], 1))
      x = F.interpolate(x, size=a.shape[-2:], mode="bilinear", align_corners=True)
      x = self.blocks[4](torch.cat([x, a], 1))
      return self.head(x)

  model = TorchUNet()
  # Copy the jax model's initial weights (HWIO -> OIHW) so both start from the same point.
  jax_params = _jax_initial_params(args)
  if jax_params is not None:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    names = [name for name, *_ in conv_layers(1, args.size)]
    with torch.no_grad():
      for conv, name in zip(convs, names):
        kernel, bias = jax_params[name]
        conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))))
        conv.bias.copy_(torch.from_numpy(bias))
  data = make_batch(args.batch, args.size)
  x = torch.from_numpy(data["image"]).permute(0, 3, 1, 2).contiguous()
  y = torch.from_numpy(data["label"]).long()
  if layout == "channels_last":
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  opt = torch.optim.Adam(model.parameters(), lr=1e-3)

  def one_step():
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return float(loss.detach())

  tic = time.perf_counter()
  first_loss = one_step()
  for _ in range(args.warmup):
    one_step()
  ready = {"params": sum(p.numel() for p in model.parameters()), "first_loss": first_loss,
           "xla_flops": float("nan"), "compile_s": time.perf_counter() - tic}
  return ready, one_step


def _jax_initial_params(args):
  """The jax model's initial parameters as NumPy ``{"ConvBlock_i/Conv_j": (kernel, bias)}``."""
  try:
    import jax
    import numpy as np

    from jaxseg.models.unet2d import UNet2D, UNet2DConfig
    from jaxseg.train.state import create_train_state
  except ImportError:
    return None
  import optax

  with jax.default_device(jax.devices("cpu")[0]):
    sample = make_batch(1, args.size)
    state = create_train_state(UNet2D(UNet2DConfig.hierarchical(width=args.width)),
                               optax.adam(1e-3), (sample["image"],), jax.random.key(0))
  flat = {}
  for path, leaf in jax.tree_util.tree_leaves_with_path(state.params):
    keys = [p.key for p in path]
    flat.setdefault("/".join(keys[:-1]), {})[keys[-1]] = np.asarray(leaf)
  return {k: (v["kernel"], v["bias"]) for k, v in flat.items()}


# ---------------------------------------------------------------------------------------------
# Worker process: line protocol on stdin/stdout.


def worker_main(args) -> None:
  spec = json.loads(args.worker)
  out = sys.stdout
  sys.stdout = sys.stderr  # keep library prints off the protocol channel
  if spec["framework"] == "jax":
    ready, one_step = _jax_worker(spec, args)
  else:
    ready, one_step = _torch_worker(spec["layout"], args)
  out.write(json.dumps({"ready": ready}) + "\n")
  out.flush()
  for line in sys.stdin:
    command = line.split()
    if not command or command[0] == "quit":
      break
    walls, cpus, loss = [], [], float("nan")
    for _ in range(int(command[1])):
      wall0, cpu0 = time.perf_counter(), time.process_time()
      loss = one_step()
      walls.append(time.perf_counter() - wall0)
      cpus.append(time.process_time() - cpu0)
    out.write(json.dumps({"wall": walls, "cpu": cpus, "loss": loss}) + "\n")
    out.flush()


def xla_flags(spec: dict[str, Any], threads: int, base: str = "") -> str:
  """``XLA_FLAGS`` of a jax contender: ``base``, the variant's own flags, or else jaxseg's CPU
  flag (what every jaxseg entry point applies; not for ``xla-defaults``), and the threads."""
  flags = [base, spec.get("xla_flags", "")]
  if "xla_flags" not in spec and not spec.get("raw_flags"):
    flags.append(cpu_flags.YNN_FLAG)
  flags.append(f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
               f"intra_op_parallelism_threads={threads}")
  return " ".join(f for f in flags if f).strip()


def worker_environment(spec: dict[str, Any], threads: int) -> dict[str, str]:
  """The environment of a contender's process (XLA flags, OpenMP threads, malloc pages)."""
  env = dict(os.environ)
  if spec["framework"] == "jax":
    env["XLA_FLAGS"] = xla_flags(spec, threads, env.get("XLA_FLAGS", ""))
  env.setdefault("JAX_PLATFORMS", "cpu")
  env["OMP_NUM_THREADS"] = str(threads)
  if spec.get("malloc"):
    env["GLIBC_TUNABLES"] = spec["malloc"]
  return env


class Worker:
  """A contender running in its own process."""

  def __init__(self, name: str, spec: dict[str, Any], args, logdir: str):
    self.name, self.spec = name, spec
    env = worker_environment(spec, args.threads)
    self.log_path = os.path.join(logdir, f"{name}.log")
    argv = [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)]
    for flag in ("batch", "size", "width", "threads", "warmup"):
      argv += [f"--{flag}", str(getattr(args, flag))]
    self.log = open(self.log_path, "w")
    self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=self.log, text=True, env=env)
    self.ready = self._read()["ready"]
    self.wall: list[float] = []
    self.cpu: list[float] = []
    self.last_loss = float("nan")

  def _read(self) -> dict[str, Any]:
    line = self.proc.stdout.readline()
    if not line:
      self.log.flush()
      with open(self.log_path) as f:
        tail = f.read()[-3000:]
      raise RuntimeError(f"worker {self.name} died:\n{tail}")
    return json.loads(line)

  def run(self, steps: int) -> None:
    self.proc.stdin.write(f"run {steps}\n")
    self.proc.stdin.flush()
    result = self._read()
    self.wall += result["wall"]
    self.cpu += result["cpu"]
    self.last_loss = result["loss"]

  def close(self) -> None:
    with contextlib.suppress(Exception):
      self.proc.stdin.write("quit\n")
      self.proc.stdin.flush()
      self.proc.wait(timeout=30)
    if self.proc.poll() is None:
      self.proc.kill()
    self.log.close()


# ---------------------------------------------------------------------------------------------
# Convolution mode: every convolution pass of the step, alone, in each framework.

CONV_PASSES = ("forward", "input grad", "weight grad")


def _jax_conv_times(args) -> list[dict[str, float]]:
  """Seconds per pass of each layer, as ``lax.conv_general_dilated`` (NHWC / HWIO, SAME) and the
  two halves of its VJP, each jitted alone with the arrays as arguments (XLA drops the unused
  forward pass from a VJP)."""
  import jax
  import numpy as np

  def conv(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))

  passes = {
      "forward": jax.jit(lambda x, w, g: conv(x, w)),
      "input grad": jax.jit(lambda x, w, g: jax.vjp(lambda a: conv(a, w), x)[1](g)[0]),
      "weight grad": jax.jit(lambda x, w, g: jax.vjp(lambda b: conv(x, b), w)[1](g)[0]),
  }
  rng = np.random.default_rng(0)
  rows = []
  for index, (_, shape, c_out, k) in enumerate(conv_layers(args.batch, args.size, args.width)):
    x = jax.device_put(rng.normal(size=shape).astype(np.float32))
    w = jax.device_put(rng.normal(size=(k, k, shape[-1], c_out)).astype(np.float32))
    g = jax.device_put(rng.normal(size=shape[:-1] + (c_out,)).astype(np.float32))
    rows.append({name: median_time(lambda f=f: jax.block_until_ready(f(x, w, g)), args.steps)[0]
                 for name, f in passes.items() if index or name != "input grad"})
  return rows


def _torch_conv_times(layout: str, args) -> list[dict[str, float]]:
  """The same passes in PyTorch: ``F.conv2d`` and ``aten.convolution_backward`` (the kernel that
  autograd calls) with one output mask at a time, in ``layout``."""
  import torch
  import torch.nn.functional as F

  torch.set_num_threads(args.threads)
  fmt = torch.channels_last if layout == "channels_last" else torch.contiguous_format
  gen = torch.Generator().manual_seed(0)
  rows = []
  with torch.no_grad():
    for index, (_, (b, h, wd, c_in), c_out, k) in enumerate(
        conv_layers(args.batch, args.size, args.width)):
      x = torch.randn(b, c_in, h, wd, generator=gen).contiguous(memory_format=fmt)
      w = torch.randn(c_out, c_in, k, k, generator=gen).contiguous(memory_format=fmt)
      g = torch.randn(b, c_out, h, wd, generator=gen).contiguous(memory_format=fmt)
      pad = [k // 2, k // 2]

      def backward(mask, x=x, w=w, g=g, pad=pad):
        return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], pad, [1, 1], False,
                                                   [0, 0], 1, mask)

      passes = {"forward": lambda x=x, w=w, pad=pad: F.conv2d(x, w, padding=pad),
                "input grad": lambda: backward([True, False, False]),
                "weight grad": lambda: backward([False, True, False])}
      rows.append({name: median_time(f, args.steps)[0]
                   for name, f in passes.items() if index or name != "input grad"})
  return rows


def conv_worker_main(args) -> None:
  spec = json.loads(args.conv_worker)
  out = sys.stdout
  sys.stdout = sys.stderr
  rows = (_jax_conv_times(args) if spec["framework"] == "jax"
          else _torch_conv_times(spec["layout"], args))
  out.write(json.dumps(rows) + "\n")


def conv_tables(args, specs: list[tuple[str, dict[str, Any]]], steps: dict[str, float],
                peak: float) -> None:
  """Runs every convolution pass alone in one process per contender and prints, per layer, the
  milliseconds of each pass, then how much of each step the convolutions explain."""
  timed = {}
  for name, spec in specs:
    argv = [sys.executable, os.path.abspath(__file__), "--conv-worker", json.dumps(spec)]
    for flag in ("batch", "size", "width", "threads", "steps"):
      argv += [f"--{flag}", str(getattr(args, flag))]
    time.sleep(args.pause)
    done = subprocess.run(argv, capture_output=True, text=True, env=worker_environment(
        spec, args.threads), check=False)
    if done.returncode:
      raise RuntimeError(f"convolution worker {name} failed:\n{done.stderr[-3000:]}")
    timed[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  convolutions timed: {name}", flush=True)
  layers = conv_layers(args.batch, args.size, args.width)
  names = list(timed)
  print(f"\nEvery convolution pass of one step, alone (median of {args.steps} calls each after "
        "2 untimed; ms; GFLOP/s of the layer's passes together):\n")
  print("| layer | input (NHWC) | c_out | GFLOP / pass | " + " | ".join(
      f"{n} fwd | {n} in-grad | {n} w-grad | {n} GFLOP/s" for n in names) + " |")
  print("|---|---|---:|---:|" + "---:|" * (4 * len(names)))
  totals = {n: dict.fromkeys(CONV_PASSES, 0.0) for n in names}
  for index, (layer, shape, c_out, k) in enumerate(layers):
    flops = layer_flops(shape, c_out, k)
    cells = []
    for n in names:
      row = timed[n][index]
      for p in CONV_PASSES:
        totals[n][p] += row.get(p, 0.0)
        cells.append(f"{row[p] * 1e3:.1f}" if p in row else "-")
      cells.append(f"{flops * len(row) / sum(row.values()) / 1e9:.0f}")
    print(f"| {layer} | {'x'.join(map(str, shape))} | {c_out} | {flops / 1e9:.2f} | "
          + " | ".join(cells) + " |")
  step_flops = conv_flops(args.batch, args.size, args.width)["train_step"]
  cells = []
  for n in names:
    cells += [f"{totals[n][p] * 1e3:.0f}" for p in CONV_PASSES]
    cells.append(f"{step_flops / sum(totals[n].values()) / 1e9:.0f}")
  print(f"| all | | | {step_flops / 1e9:.1f} (step) | " + " | ".join(cells) + " |")
  print()
  for n in names:
    convs = sum(totals[n].values())
    line = (f"{n}: convolutions alone {convs:.3f} s/step ({step_flops / convs / 1e9:.0f} GFLOP/s, "
            f"{step_flops / convs / 1e9 / peak:.0%} of the nominal peak)")
    if n in steps:
      line += (f"; the step {steps[n]:.3f} s, so {steps[n] - convs:+.3f} s "
               f"({(steps[n] - convs) / steps[n]:.0%}) is everything else (pooling, resizing, "
               "concatenation, activations, loss, optimizer, layout copies) or runs slower "
               "inside the step than alone")
    print(line + ".")


# ---------------------------------------------------------------------------------------------
# Profile mode: top XLA thunks of one step of one jax variant.


def profile_main(args) -> None:
  spec = dict(JAX_VARIANTS[args.profile], framework="jax")
  # The variant's flags, jaxseg's CPU flag included for `library` (before stop 29 this mode
  # profiled `library` without it, i.e. under jaxlib's defaults).
  os.environ["XLA_FLAGS"] = xla_flags(spec, args.threads, os.environ.get("XLA_FLAGS", ""))
  import jax

  trainer, state, _, _ = _jax_model_and_trainer(spec, args.batch, args.size, args.width)
  hlo = trainer._step.lower(  # pylint: disable=protected-access
      state, make_batch(args.batch, args.size), None, jax.random.key(1)).compile().as_text()
  labels = {}
  for line in hlo.splitlines():  # thunk name -> "output shape  op_name" from the compiled HLO
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (\S+) .*op_name=\"([^\"]*)\"", line)
    if match:
      op = match.group(3).replace("jit(_train_step)/", "").replace("transpose(jvp(UNet2D))",
                                                                      "backward")
      labels[match.group(1)] = f"{match.group(2).split('{')[0]} {op.replace('jvp(UNet2D)', 'forward')}"
  del trainer, state
  _, one_step = _jax_worker(spec, args)
  with tempfile.TemporaryDirectory() as tmp:
    with jax.profiler.trace(tmp, create_perfetto_trace=True):
      tic = time.perf_counter()
      for _ in range(args.steps):
        one_step()
      wall = (time.perf_counter() - tic) / args.steps
    (path,) = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
      events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
  total = collections.Counter()
  count = collections.Counter()
  skip = ("ThunkExecutor", "$", "PjitFunction", "SlinkyThreadPool")
  for e in events:
    if not e["name"].startswith(skip):
      total[e["name"]] += e["dur"] / 1e6 / args.steps
      count[e["name"]] += 1
  op_sum = sum(total.values())
  print(f"| XLA thunk ({args.profile}, batch {args.batch}) | output, op | s/step | share |\n"
        "|---|---|---:|---:|")
  for name, seconds in total.most_common(args.top):
    print(f"| {name} | {labels.get(name, '')} | {seconds:.3f} | {seconds / op_sum:.1%} |")
  print(f"| (all traced thunks) | | {op_sum:.3f} | 100% |")
  print(f"\nwall time {wall:.3f} s/step under the profiler; thunks without a trace annotation "
        "(e.g. Eigen convolutions, which run inside the thunk executor without one) are missing "
        "from the table.")


# ---------------------------------------------------------------------------------------------
# Parent.


def _loadavg() -> str:
  try:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
  except OSError:
    return "unknown"


def _stats(xs: list[float]) -> tuple[float, float]:
  return statistics.median(xs), min(xs)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--steps", type=int, default=5, help="timed steps per contender per round")
  parser.add_argument("--repeats", type=int, default=5, help="rounds (contenders alternate)")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compilation")
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--width", type=float, default=1.0, help="channel multiplier (1 = paper)")
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--jax", default=DEFAULT_JAX,
                      help=f"comma list of {sorted(JAX_VARIANTS)} or 'all'")
  parser.add_argument("--torch", default=DEFAULT_TORCH,
                      help=f"comma list of channels_last,nchw (each optionally with "
                      f"'{PAGES_4K}': 4 KB pages), or 'none'")
  parser.add_argument("--pause", type=float, default=0.5, help="seconds between contenders")
  parser.add_argument("--ghz", type=float, default=None, help="clock for the peak (default: cpuinfo)")
  parser.add_argument("--peak-gflops", type=float, default=None)
  parser.add_argument("--profile", default=None,
                      choices=sorted(n for n, v in JAX_VARIANTS.items() if "malloc" not in v),
                      help="print the top XLA ops of --steps steps of this jax variant, then exit")
  parser.add_argument("--top", type=int, default=20)
  parser.add_argument("--convs", action="store_true",
                      help="after the step table, time every convolution pass alone in each "
                      "contender's framework (the library's flags for jax) and say how much of "
                      "each step the convolutions explain")
  parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--conv-worker", default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if min(args.steps, args.repeats, args.batch, args.size, args.threads) < 1 or args.warmup < 0:
    parser.error("steps, repeats, batch, size and threads must be >= 1; warmup >= 0")
  if args.size % 4:
    parser.error("size must be a multiple of 4 (two 2x2 poolings)")
  if args.worker is not None:
    return worker_main(args)
  if args.conv_worker is not None:
    return conv_worker_main(args)
  if args.profile is not None:
    return profile_main(args)

  jax_names = sorted(JAX_VARIANTS) if args.jax == "all" else [
      n for n in args.jax.split(",") if n and n != "none"]
  torch_names = [] if args.torch == "none" else [n for n in args.torch.split(",") if n]
  for n in jax_names:
    if n not in JAX_VARIANTS:
      parser.error(f"unknown jax variant {n!r}; choose from {sorted(JAX_VARIANTS)}")
  for n in torch_names:
    if n.removesuffix(PAGES_4K) not in TORCH_LAYOUTS:
      parser.error(f"unknown torch layout {n!r}; choose from {TORCH_LAYOUTS}")
  if "library" in jax_names:  # the library step always runs first in the list
    jax_names.remove("library")
    jax_names.insert(0, "library")
  if torch_names:
    try:
      import torch  # noqa: F401
    except ImportError:
      print("PyTorch is not installed: skipping the torch contenders (install the bench extra, "
            "see benchmarks/README.md).")
      torch_names = []

  flops = conv_flops(args.batch, args.size, args.width)["train_step"]
  peak, peak_note = peak_gflops(args.threads, args.ghz)
  if args.peak_gflops is not None:
    peak, peak_note = args.peak_gflops, "given with --peak-gflops"
  print(f"U-Net 64/128/256 x{args.width:g}, batch {args.batch}, {args.size}x{args.size}, "
        f"{NUM_CLASSES} classes, Adam; {args.threads} threads; {args.repeats} rounds x "
        f"{args.steps} steps per contender (warm-up excluded); {flops / 1e9:.1f} GFLOP/step "
        f"(convolutions); peak {peak:.0f} GFLOP/s = {peak_note}")

  print(f"malloc: GLIBC_TUNABLES={os.environ.get('GLIBC_TUNABLES', '(unset)')} (contenders "
        f"named 4k-pages: glibc.malloc.hugetlb=0); transparent huge pages: "
        f"{cpu_flags.thp_mode() or 'not available'}")
  print(f"CPU: {cpu_name()}; load average before: {_loadavg()}")
  specs = [(f"jax {n}", dict(JAX_VARIANTS[n], framework="jax")) for n in jax_names]
  specs += [(f"torch {n}", {"framework": "torch", "layout": n.removesuffix(PAGES_4K),
                            **({"malloc": JAX_VARIANTS["4k-pages"]["malloc"]}
                               if n.endswith(PAGES_4K) else {})}) for n in torch_names]
  workers: list[Worker] = []
  with tempfile.TemporaryDirectory() as logdir:
    try:
      for name, spec in specs:  # one at a time: compilation never overlaps timing
        tic = time.perf_counter()
        workers.append(Worker(name.replace(" ", "_"), spec, args, logdir))
        workers[-1].name = name
        print(f"  ready: {name} ({time.perf_counter() - tic:.0f} s to start, compile and warm up)",
              flush=True)
      for r in range(args.repeats):
        order = workers[r % len(workers):] + workers[:r % len(workers)]
        for w in order:
          time.sleep(args.pause)
          w.run(args.steps)
        print(f"  round {r + 1}/{args.repeats}: " + ", ".join(
            f"{w.name} {statistics.median(w.wall[-args.steps:]):.2f}s" for w in workers),
            flush=True)
    finally:
      for w in workers:
        w.close()

  print(f"load average after: {_loadavg()} (other processes on the machine distort the timings)")
  torch_best = min((statistics.median(w.wall) for w in workers if w.name.startswith("torch")),
                   default=None)
  print()
  print("| contender | params | first loss | median s/step | min s/step | CPU s/step | "
        "GFLOP/s | % of peak | vs PyTorch best |")
  print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
  for w in workers:
    median, best = _stats(w.wall)
    ratio = f"{torch_best / median:.2f}x" if torch_best else "-"
    print(f"| {w.name} | {w.ready['params']:,} | {w.ready['first_loss']:.5f} | {median:.3f} | "
          f"{best:.3f} | {statistics.median(w.cpu):.3f} | {flops / median / 1e9:.1f} | "
          f"{flops / median / 1e9 / peak:.0%} | {ratio} |")
  xla = [w for w in workers if w.name == "jax library"]
  if xla and xla[0].ready["xla_flops"] == xla[0].ready["xla_flops"]:
    print(f"\nXLA cost analysis of the library step: {xla[0].ready['xla_flops'] / 1e9:.1f} GFLOP "
          f"(analytic convolution count {flops / 1e9:.1f} GFLOP).")
  counts = {w.ready["params"] for w in workers}
  listed = ", ".join(f"{w.name} {w.ready['params']:,}" for w in workers)
  losses = [w.ready["first_loss"] for w in workers if w.spec.get("dtype") != "bfloat16"]
  print(f"Parameter counts {'agree' if len(counts) == 1 else 'DIFFER'}: {listed}.")
  if losses:
    spread = max(losses) - min(losses)
    print(f"First-step losses (same weights, same batch) agree to {spread:.1e}"
          f"{'' if spread < 1e-4 else ' -- MISMATCH'}.")
  jax_workers = [w for w in workers if w.name.startswith("jax")]
  if torch_best and jax_workers:
    best = min(jax_workers, key=lambda w: statistics.median(w.wall))
    print(f"best jax contender ({best.name}): {torch_best / statistics.median(best.wall):.2f}x "
          f"PyTorch's best")
  if args.convs:
    conv_specs = [(w.name, w.spec) for w in workers
                  if (w.name == "jax library" or w.name.startswith("torch"))
                  and not w.spec.get("malloc")]
    conv_tables(args, conv_specs, {w.name: statistics.median(w.wall) for w in workers}, peak)
  if torch_best and jax_workers and xla:
    print(f"speedup vs PyTorch: {torch_best / statistics.median(xla[0].wall):.2f}")


if __name__ == "__main__":
  main()
