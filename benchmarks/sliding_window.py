"""Parity and speed of jaxseg's sliding-window inference against MONAI's, on the same model.

``jaxseg.inference.sliding_window_logits`` and ``monai.inferers.sliding_window_inference`` blend
the logits of the same small random conv net (3 convolutions 3x3[x3], 8 features, ReLU, 3 logit
channels, zero "same" padding), defined twice with identical weights: in Flax (channels-last) and
in PyTorch (channels-first, the Flax kernels transposed ``(k..., in, out) -> (out, in, k...)``).
The two models are first checked on a batch of single windows (max abs diff printed in the
header). Both libraries then run on the same images with the same window, overlap and blend
(``"gaussian"`` with ``sigma_scale=0.125``, and ``"constant"``), ``sw_batch_size`` = jaxseg's
``batch_size``, constant padding with 0 where a side of the image is smaller than the window
(MONAI's ``cval`` = jaxseg's ``fill``); the blended logits are compared element by element after
moving MONAI's channel axis last.

A third contender, :func:`reference_sliding_window` below, is a float64 NumPy transcription of
MONAI's definition (it documents the convention; the column "numpy ref vs MONAI"):

* each spatial side smaller than the window is padded symmetrically to the window side with the
  fill value (``diff // 2`` before, the rest after), and the output cropped back;
* scan interval per axis ``int(window * (1 - overlap))`` (at least 1), or the window itself when
  the (padded) side equals the window side;
* window starts ``i * interval`` for ``i = 0 ..`` the first ``i`` whose window reaches the end,
  the last start shifted back so that the window fits;
* importance map: 1 (``"constant"``) or the product over axes of ``exp(-x^2 / (2 sigma^2))``,
  ``x`` from ``-(w - 1) / 2`` to ``(w - 1) / 2`` in steps of 1 and ``sigma = sigma_scale * w``,
  clamped below at ``max(min(map), 1e-3)``;
* output = ``sum(map * logits) / sum(map)`` over the windows covering each voxel.

Timing: median of ``--repeats`` alternating rounds (each round runs jaxseg, then MONAI, once)
after one warm-up call each (jaxseg's first call compiles); ``torch.set_num_threads(--threads)``.
"MONAI / jaxseg" > 1 means jaxseg is faster. The models alone are also timed on the same number of
window batches (jitted Flax, torch in ``no_grad``), and "machinery" is each total minus its
model time: the cost of the sliding-window loop itself (cutting windows, weighting,
accumulating), apart from how fast each framework runs the convolutions. Exit status 1 if any row disagrees beyond ``--atol``
(jaxseg vs MONAI, or the NumPy reference vs MONAI); 2 if jaxseg has no ``sliding_window_logits``
(only the NumPy reference is then compared).

Needs the optional ``bench`` extra (PyTorch + MONAI), see ``benchmarks/README.md``.

Usage::

  python -m benchmarks.sliding_window                # full cases, 5 repeats
  python -m benchmarks.sliding_window --quick        # smaller images, 1 repeat
  python -m benchmarks.sliding_window --conv im2col  # Flax convolutions as patch matrices
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks._machine import cpu_name, load_average  # noqa: E402

FEATURES = 8
CLASSES = 3
SIGMA_SCALE = 0.125


@dataclasses.dataclass(frozen=True)
class Case:
  name: str
  n: int  # images
  spatial: tuple[int, ...]
  channels: int
  window: tuple[int, ...]
  overlap: float


def cases(quick: bool) -> list[Case]:
  if quick:
    return [
        Case("2D", 2, (100, 88), 2, (64, 64), 0.5),
        Case("2D", 2, (100, 88), 2, (64, 64), 0.25),
        Case("3D", 1, (48, 48, 20), 1, (32, 32, 12), 0.5),
        Case("3D, z < window (padded)", 1, (48, 48, 10), 1, (32, 32, 12), 0.5),
    ]
  return [
      Case("2D", 4, (200, 176), 2, (64, 64), 0.5),
      Case("2D", 4, (200, 176), 2, (64, 64), 0.25),
      Case("3D", 1, (96, 96, 30), 1, (32, 32, 12), 0.5),
      Case("3D, z < window (padded)", 1, (96, 96, 10), 1, (32, 32, 12), 0.5),
  ]


# ---------------------------------------------------------------------------------------------
# NumPy reference (MONAI's definition, float64).


def reference_importance_map(window, blend: str, sigma_scale: float = SIGMA_SCALE) -> np.ndarray:
  """MONAI's ``compute_importance_map`` in float64."""
  if blend == "constant":
    weights = np.ones(window)
  elif blend == "gaussian":
    weights = np.ones(())
    for w in window:
      x = np.arange(w) - (w - 1) / 2.0
      sigma = sigma_scale * w
      weights = weights[..., None] * np.exp(-x**2 / (2.0 * sigma**2))
  else:
    raise ValueError(f"unknown blend {blend!r}")
  return np.maximum(weights, max(weights.min(), 1e-3))


def reference_starts(size: int, window: int, overlap: float) -> list[int]:
  """Window starts along one (already padded, so ``size >= window``) axis, as MONAI scans."""
  interval = window if size == window else max(int(window * (1 - overlap)), 1)
  num = next(i for i in range(size) if i * interval + window >= size) + 1
  return [i * interval - max(i * interval + window - size, 0) for i in range(num)]


def reference_sliding_window(predict: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
                             window, overlap: float, blend: str,
                             sigma_scale: float = SIGMA_SCALE, fill: float = 0.0) -> np.ndarray:
  """Blended logits ``(N, *spatial, K)``.

  ``predict``: windows ``(B, *window, C) -> (B, *window, K)`` logits.
  """
  images = np.asarray(images, np.float64)
  spatial = images.shape[1:-1]
  pads = [(max(w - s, 0) // 2, max(w - s, 0) - max(w - s, 0) // 2)
          for s, w in zip(spatial, window)]
  padded = np.pad(images, [(0, 0), *pads, (0, 0)], constant_values=fill)
  size = padded.shape[1:-1]
  weights = reference_importance_map(window, blend, sigma_scale)[None, ..., None]
  out = norm = None
  for starts in itertools.product(*[reference_starts(s, w, overlap)
                                    for s, w in zip(size, window)]):
    region = (slice(None), *[slice(a, a + w) for a, w in zip(starts, window)])
    logits = np.asarray(predict(padded[region]), np.float64)
    if out is None:
      out = np.zeros(padded.shape[:-1] + logits.shape[-1:])
      norm = np.zeros(padded.shape[:-1] + (1,))
    out[region] += weights * logits
    norm[region] += weights
  crop = (slice(None), *[slice(lo, lo + s) for (lo, _), s in zip(pads, spatial)])
  return (out / norm)[crop]


def windows_per_image(spatial, window, overlap: float) -> int:
  return int(np.prod([len(reference_starts(max(s, w), w, overlap))
                      for s, w in zip(spatial, window)]))


# ---------------------------------------------------------------------------------------------
# The model, in Flax and PyTorch with the same weights.


def make_models(ndim: int, channels: int, seed: int, conv: str = "xla"):
  """``(flax_apply, torch_model, torch_model_float64)``; ``flax_apply(x)`` is jax-traceable.

  ``conv``: the Flax convolutions, ``"xla"`` (``lax.conv_general_dilated``) or ``"im2col"``
  (patch matrices, :func:`jaxseg.models.layers.conv_general_dilated`, what jaxseg's 3D model uses
  on CPU: ``ProbUNet3DConfig(conv_impl="im2col")``).
  """
  import flax.linen as nn
  import jax
  import torch

  from jaxseg.models.layers import conv_general_dilated

  conv_fn = conv_general_dilated(conv)

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x):
      k = (3,) * ndim
      c = lambda n: nn.Conv(n, k, padding="SAME", conv_general_dilated=conv_fn)
      x = nn.relu(c(FEATURES)(x))
      x = nn.relu(c(FEATURES)(x))
      return c(CLASSES)(x)

  net = Net()
  params = net.init(jax.random.key(seed), np.zeros((1,) + (8,) * ndim + (channels,), np.float32))
  params = jax.tree_util.tree_map(np.asarray, params)
  rng = np.random.default_rng(seed)
  for layer in params["params"].values():  # non-zero biases, so that their copy is checked too
    layer["bias"] = (0.1 * rng.normal(size=layer["bias"].shape)).astype(np.float32)

  conv = {2: torch.nn.Conv2d, 3: torch.nn.Conv3d}[ndim]
  layers = []
  for i in range(3):
    p = params["params"][f"Conv_{i}"]
    c_in, c_out = p["kernel"].shape[-2:]
    layer = conv(c_in, c_out, 3, padding=1)
    with torch.no_grad():
      # flax (k_1, ..., k_ndim, in, out) -> torch (out, in, k_1, ..., k_ndim)
      layer.weight.copy_(torch.from_numpy(
          np.transpose(p["kernel"], (ndim + 1, ndim, *range(ndim))).copy()))
      layer.bias.copy_(torch.from_numpy(p["bias"]))
    layers += [layer, torch.nn.ReLU()] if i < 2 else [layer]
  torch_model = torch.nn.Sequential(*layers).eval()
  torch_model64 = copy.deepcopy(torch_model).double()

  params_j = jax.tree_util.tree_map(jax.numpy.asarray, params)

  def flax_apply(x):
    return net.apply(params_j, x)

  return flax_apply, torch_model, torch_model64


def torch_predict_channels_last(model) -> Callable[[np.ndarray], np.ndarray]:
  """A channels-last NumPy predictor around a channels-first torch model (same dtype)."""
  import torch

  dtype = next(model.parameters()).dtype

  def predict(windows: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(windows, -1, 1))).to(dtype)
    with torch.no_grad():
      return np.moveaxis(model(x).numpy(), 1, -1)

  return predict


# ---------------------------------------------------------------------------------------------
# Table.


def _alternating_medians(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
  """Median seconds of each function over ``repeats`` rounds (each round runs all once, in turn)."""
  for fn in fns:
    fn()  # warm-up (and compilation)
  times: list[list[float]] = [[] for _ in fns]
  for _ in range(repeats):
    for fn, t in zip(fns, times):
      tic = time.perf_counter()
      fn()
      t.append(time.perf_counter() - tic)
  return [statistics.median(t) for t in times]


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--batch-size", type=int, default=8,
                      help="windows per model call (MONAI's sw_batch_size)")
  parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--atol", type=float, default=1e-5)
  parser.add_argument("--quick", action="store_true", help="smaller images, 1 repeat")
  parser.add_argument("--conv", choices=("xla", "im2col"), default="xla",
                      help="Flax convolutions: XLA's (default) or patch matrices (jaxseg's 3D "
                           "models on CPU)")
  args = parser.parse_args(argv)
  if args.quick:
    args.repeats = 1
  if min(args.repeats, args.batch_size, args.threads) < 1:
    parser.error("repeats, batch size and threads must be >= 1")
  try:
    import monai  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    raise SystemExit("PyTorch and MONAI are needed: install the bench extra (see "
                     "benchmarks/README.md).")
  import jax
  import monai as _monai
  import torch as _torch
  from monai.inferers import sliding_window_inference

  from jaxseg import inference

  warnings.filterwarnings("ignore")
  _torch.set_num_threads(args.threads)
  jaxseg_fn = getattr(inference, "sliding_window_logits", None)
  rng = np.random.default_rng(args.seed)

  print(f"jaxseg vs MONAI {_monai.__version__} sliding-window inference (torch "
        f"{_torch.__version__}, jax {jax.__version__}); CPU: {cpu_name()}, {os.cpu_count()} cores; "
        f"{args.threads} torch threads; sw_batch_size {args.batch_size}; median of {args.repeats} "
        f"alternating rounds after a warm-up; Flax convolutions: {args.conv}")
  print(f"load average before: {load_average()}")

  models, models_jit = {}, {}
  for case in cases(args.quick):
    key = (len(case.spatial), case.channels)
    if key in models:
      continue
    flax_apply, torch_model, torch_model64 = make_models(*key, seed=args.seed, conv=args.conv)
    probe = rng.normal(size=(2, *case.window, case.channels)).astype(np.float32)
    diff = np.abs(np.asarray(jax.jit(flax_apply)(probe))
                  - torch_predict_channels_last(torch_model)(probe)).max()
    print(f"model check, {len(case.spatial)}D, 2 windows {case.window} x {case.channels} ch -> "
          f"{CLASSES} logits: max abs diff Flax vs PyTorch {diff:.1e}")
    models[key] = (flax_apply, torch_model, torch_model64)
    models_jit[key] = jax.jit(flax_apply)

  print()
  print(f"| case | window | overlap | blend | windows per image | max abs diff | equal (atol "
        f"{args.atol:g}) | numpy ref vs MONAI max abs diff | jaxseg ms | MONAI ms | "
        f"MONAI / jaxseg | model alone ms, jaxseg / torch | machinery ms (total - model), "
        f"jaxseg / MONAI |")
  print("|---|---|---:|---|---:|---:|:---:|---:|---:|---:|---:|---:|---:|")
  failures = []
  for case in cases(args.quick):
    flax_apply, torch_model, torch_model64 = models[(len(case.spatial), case.channels)]
    images = rng.normal(size=(case.n, *case.spatial, case.channels)).astype(np.float32)
    images_t = _torch.from_numpy(np.ascontiguousarray(np.moveaxis(images, -1, 1)))
    for blend in ("gaussian", "constant"):

      def run_monai(blend=blend, case=case, images_t=images_t):
        with _torch.no_grad():
          return sliding_window_inference(
              images_t, roi_size=case.window, sw_batch_size=args.batch_size,
              predictor=torch_model, overlap=case.overlap, mode=blend, sigma_scale=SIGMA_SCALE,
              padding_mode="constant", cval=0.0)

      def run_jaxseg(blend=blend, case=case, images=images):
        return np.asarray(jax.block_until_ready(jaxseg_fn(
            flax_apply, images, window=case.window, overlap=case.overlap, blend=blend,
            sigma_scale=SIGMA_SCALE, batch_size=args.batch_size, fill=0.0)))

      label = (f"{case.name}: {case.n} x {'x'.join(map(str, case.spatial))} x "
               f"{case.channels} ch")
      monai_out = np.moveaxis(run_monai().numpy(), 1, -1)
      ref = reference_sliding_window(torch_predict_channels_last(torch_model64), images,
                                     case.window, case.overlap, blend, SIGMA_SCALE, 0.0)
      ref_diff = float(np.abs(ref - monai_out).max())
      if ref_diff > args.atol:
        failures.append(f"{label} {blend} (numpy ref)")
      if jaxseg_fn is not None:
        jax_out = run_jaxseg()
        if jax_out.shape != monai_out.shape:
          diff, verdict = float("nan"), f"**NO** (shape {jax_out.shape} vs {monai_out.shape})"
        else:
          diff = float(np.abs(jax_out.astype(np.float64) - monai_out).max())
          verdict = "yes" if diff <= args.atol else "**NO**"
        if verdict != "yes":
          failures.append(f"{label} {blend}")
        # The models alone on the same number of window batches: what is left of each total
        # is the sliding-window machinery (cutting, weighting, accumulating).
        n_batches = -(-case.n * windows_per_image(case.spatial, case.window, case.overlap)
                      // args.batch_size)
        batch = np.zeros((args.batch_size, *case.window, case.channels), np.float32)
        batch_t = _torch.from_numpy(np.ascontiguousarray(np.moveaxis(batch, -1, 1)))
        jitted = models_jit[(len(case.spatial), case.channels)]
        jax.block_until_ready(jitted(batch))

        def model_jaxseg(batch=batch, jitted=jitted, n=n_batches):
          for _ in range(n):
            jax.block_until_ready(jitted(batch))

        def model_torch(batch_t=batch_t, n=n_batches):
          with _torch.no_grad():
            for _ in range(n):
              torch_model(batch_t)

        t_j, t_m, m_j, m_t = _alternating_medians(
            [run_jaxseg, run_monai, model_jaxseg, model_torch], args.repeats)
        jax_cols = (f"{diff:.1e} | {verdict} | {ref_diff:.1e} | {t_j * 1e3:.1f} | "
                    f"{t_m * 1e3:.1f} | {t_m / t_j:.2f}x | {m_j * 1e3:.1f} / {m_t * 1e3:.1f} | "
                    f"{(t_j - m_j) * 1e3:.1f} / {(t_m - m_t) * 1e3:.1f}")
      else:
        (t_m,) = _alternating_medians([run_monai], args.repeats)
        jax_cols = f"n/a | n/a | {ref_diff:.1e} | n/a | {t_m * 1e3:.1f} | n/a | n/a | n/a"
      window = "x".join(map(str, case.window))
      print(f"| {label} | {window} | {case.overlap:g} | {blend} | "
            f"{windows_per_image(case.spatial, case.window, case.overlap)} | {jax_cols} |",
            flush=True)
  print()
  print(f"load average after: {load_average()} (other processes on the machine distort the timings)")
  if failures:
    print(f"MISMATCH in {len(failures)} row(s): {'; '.join(failures)}")
    raise SystemExit(1)
  if jaxseg_fn is None:
    print("jaxseg.inference has no sliding_window_logits yet: only the NumPy reference was "
          "compared with MONAI")
    raise SystemExit(2)
  print("all rows agree within the tolerance")


if __name__ == "__main__":
  main()
