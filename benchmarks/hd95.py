"""Timing of the surface-distance metrics on a 160 x 160 x 20 random-ellipsoid pair.

Spacing (0.5, 0.5, 3.0) mm, as in an anisotropic prostate MRI volume. Prints the median (and
min) wall time over several runs of ``jaxseg.metrics.surface`` against a naive, uncropped
reference (surfaces and EDTs on the whole image, the way medpy computes them), and checks that
both give the same HD95. The rows "algorithm=..." force one of the three exact distance
algorithms (private ``surface._distances(..., algorithm=...)``; the public functions pick one
per pair, see the module docstring of ``jaxseg.metrics.surface``). Not run by the tests.

With MONAI installed (the optional ``bench`` extra, see ``benchmarks/README.md``) it also times
``monai.metrics.HausdorffDistanceMetric(percentile=95)`` on the same pair (one-hot, background
excluded, ``spacing`` passed at call time) and checks it against jaxseg under matching
conventions: MONAI's surface is ``mask ^ binary_erosion(mask)`` with SciPy's default (face, i.e.
6-neighbour) structure and a background border, which is ``connectivity=1`` here; both take the
maximum of the two directed 95th percentiles with linear interpolation (``torch.quantile`` /
``numpy.percentile``). MONAI works in float32, so the values agree to ~1e-6 mm, not bit for bit.
MONAI and jaxseg are timed in alternating rounds (each round runs every contender once), so a
load change on a shared machine hits both sides; the speed-up is the median over rounds of
MONAI's time / jaxseg's time. The target is jaxseg >= 5x faster than MONAI.

Usage: ``python benchmarks/hd95.py [--repeats 7] [--seed 0] [--pairs 1]``
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings
from typing import Callable

import numpy as np
from scipy import ndimage

from jaxseg.metrics import surface

SHAPE = (160, 160, 20)
SPACING = (0.5, 0.5, 3.0)


def random_ellipsoid(rng: np.random.Generator, shape=SHAPE, spacing=SPACING) -> np.ndarray:
  """A random ellipsoid (semi-axes 15-25 mm in-plane, 10-20 mm through-plane) near the centre."""
  centre_mm = (np.array(shape) / 2 + rng.uniform(-5, 5, size=3) * np.array([1, 1, 0.3])) * spacing
  radii_mm = rng.uniform([15.0, 15.0, 10.0], [25.0, 25.0, 20.0])
  grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
  r2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre_mm, radii_mm))
  return r2 <= 1.0


def naive_hd95(pred: np.ndarray, truth: np.ndarray, spacing=SPACING) -> float:
  """Uncropped reference: erosion and EDT over the whole image, max of directed 95th pct."""
  structure = ndimage.generate_binary_structure(pred.ndim, pred.ndim)
  sp = pred & ~ndimage.binary_erosion(pred, structure=structure, border_value=0)
  st = truth & ~ndimage.binary_erosion(truth, structure=structure, border_value=0)
  d_pt = ndimage.distance_transform_edt(~st, sampling=spacing)[sp]
  d_tp = ndimage.distance_transform_edt(~sp, sampling=spacing)[st]
  return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def forced_hd95(pred: np.ndarray, truth: np.ndarray, algorithm: str) -> float:
  """HD95 (connectivity=1) with one distance algorithm forced (private API, for timing only)."""
  d_pt, d_tp = surface._distances(pred, truth, np.asarray(SPACING), 1, algorithm)
  return float(max(np.percentile(d_pt, 95), np.percentile(d_tp, 95)))


def monai_hd95(pred: np.ndarray, truth: np.ndarray, spacing=SPACING) -> Callable[[], float] | None:
  """MONAI's HD95 on one pair as a closure (None if MONAI is not installed)."""
  try:
    import torch
    from monai.metrics import HausdorffDistanceMetric
  except ImportError:
    return None
  warnings.filterwarnings("ignore", category=FutureWarning, module="monai")
  metric = HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")
  onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
  p, t = onehot(pred), onehot(truth)
  return lambda: float(metric(p, t, spacing=list(spacing)).reshape(-1)[0])


def timeit(fn: Callable[[], object], repeats: int) -> tuple[float, float, object]:
  fn()  # warm-up
  times, out = [], None
  for _ in range(repeats):
    t0 = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times), min(times), out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--pairs", type=int, default=1,
                      help="extra random pairs checked against MONAI (values only)")
  args = parser.parse_args()
  if args.repeats < 1 or args.pairs < 1:
    parser.error("--repeats and --pairs must be >= 1")
  rng = np.random.default_rng(args.seed)
  pred, truth = random_ellipsoid(rng), random_ellipsoid(rng)
  print(f"masks {SHAPE}, spacing {SPACING} mm, foreground {pred.mean():.1%} / {truth.mean():.1%}, "
        f"median of {args.repeats} runs")

  cases = [
      ("naive uncropped HD95 (max_directed)", lambda: naive_hd95(pred, truth)),
      ("hausdorff_distance q=95 max_directed",
       lambda: surface.hausdorff_distance(pred, truth, spacing=SPACING)),
      ("hausdorff_distance q=95 pooled",
       lambda: surface.hausdorff_distance(pred, truth, spacing=SPACING, method="pooled")),
      ("hausdorff_distance q=100",
       lambda: surface.hausdorff_distance(pred, truth, spacing=SPACING, percentile=100)),
      ("hausdorff_distance q=95 connectivity=1",
       lambda: surface.hausdorff_distance(pred, truth, spacing=SPACING, connectivity=1)),
      *[(f"q=95 connectivity=1, algorithm={algorithm} (forced)",
         lambda algorithm=algorithm: forced_hd95(pred, truth, algorithm))
        for algorithm in ("separable", "kdtree", "edt")],
      ("average_surface_distance",
       lambda: surface.average_surface_distance(pred, truth, spacing=SPACING)),
      ("hd95_per_case per_slice (20 x 2D)",
       lambda: surface.hd95_per_case([pred], [truth], spacing=SPACING, per_slice=True,
                                     skip_empty_slices=True).values[0]),
  ]
  rows = []
  for name, fn in cases:
    median, best, value = timeit(fn, args.repeats)
    rows.append((name, median * 1e3, best * 1e3, float(value)))
  width = max(len(r[0]) for r in rows)
  print(f"{'function':<{width}}  {'median ms':>9}  {'min ms':>7}  {'value mm':>9}")
  for name, median, best, value in rows:
    print(f"{name:<{width}}  {median:9.2f}  {best:7.2f}  {value:9.4f}")
  if not np.isclose(rows[0][3], rows[1][3], rtol=1e-12):
    raise SystemExit(f"MISMATCH: cropped {rows[1][3]} != uncropped {rows[0][3]}")
  forced = [r for r in rows if r[0].endswith("(forced)")]
  jax_c1 = next(r for r in rows if r[0] == "hausdorff_distance q=95 connectivity=1")
  if any(not np.isclose(r[3], jax_c1[3], rtol=1e-12) for r in forced):
    raise SystemExit(f"MISMATCH between the distance algorithms: {[(r[0], r[3]) for r in forced]}")
  print(f"cropped == uncropped HD95; speed-up {rows[0][1] / rows[1][1]:.1f}x")
  compare_with_monai(pred, truth, args)


def compare_with_monai(pred, truth, args) -> None:
  """HD95 of jaxseg (connectivity=1) against MONAI's HausdorffDistanceMetric: value and time.

  Every round times each MONAI setting and jaxseg once, in turn (alternating), so that a load
  change on a shared machine affects both; the speed-up is the median of the per-round ratios.
  """
  monai_fn = monai_hd95(pred, truth)
  if monai_fn is None:
    print("MONAI not installed: skipping the MONAI comparison (install the bench extra).")
    return
  import monai

  import torch

  # MONAI's HD95 is serial NumPy/SciPy work (erosion, KD-tree) around a few torch reductions over
  # the whole mask; with several torch threads those reductions only add OpenMP synchronisation
  # (slow on a loaded machine), so both settings are timed and the faster one is compared.
  default_threads = torch.get_num_threads()
  contenders = [
      (f"MONAI {monai.__version__} HausdorffDistanceMetric(percentile=95), {threads} torch "
       f"thread(s)", threads, monai_fn)
      for threads in sorted({default_threads, 1}, reverse=True)]
  jax_name = "jaxseg hausdorff_distance(connectivity=1)"
  contenders.append((jax_name, None, lambda: surface.hausdorff_distance(
      pred, truth, spacing=SPACING, connectivity=1)))
  times = {name: [] for name, _, _ in contenders}
  values = {}
  for name, threads, fn in contenders:  # warm-up
    if threads is not None:
      torch.set_num_threads(threads)
    values[name] = float(fn())
  for _ in range(args.repeats):
    for name, threads, fn in contenders:
      if threads is not None:
        torch.set_num_threads(threads)
      t0 = time.perf_counter()
      values[name] = float(fn())
      times[name].append(time.perf_counter() - t0)
  torch.set_num_threads(default_threads)

  print()
  print(f"| HD95 (median of {args.repeats} alternating rounds) | median ms | min ms | value mm |")
  print("|---|---:|---:|---:|")
  for name, _, _ in contenders:
    print(f"| {name} | {statistics.median(times[name]) * 1e3:.2f} | "
          f"{min(times[name]) * 1e3:.2f} | {values[name]:.6f} |")
  monai_names = [name for name, threads, _ in contenders if threads is not None]
  best = min(monai_names, key=lambda name: statistics.median(times[name]))
  ratios = [m / j for m, j in zip(times[best], times[jax_name])]
  diff = abs(values[best] - values[jax_name])
  worst = diff
  check_rng = np.random.default_rng(args.seed + 1)
  for _ in range(args.pairs - 1):  # more pairs, values only
    p, t = random_ellipsoid(check_rng), random_ellipsoid(check_rng)
    worst = max(worst, abs(monai_hd95(p, t)() -
                           surface.hausdorff_distance(p, t, spacing=SPACING, connectivity=1)))
  of_medians = statistics.median(times[best]) / statistics.median(times[jax_name])
  print(f"\n|jaxseg - MONAI| = {diff:.2e} mm (worst over {args.pairs} pair(s): {worst:.2e} mm); "
        f"speed-up vs MONAI's faster setting ({best.split(', ')[-1]}): median of per-round "
        f"ratios {statistics.median(ratios):.1f}x (range {min(ratios):.1f}-{max(ratios):.1f}x, "
        f"ratio of medians {of_medians:.1f}x; target >= 5x)")
  if worst > 1e-5:
    raise SystemExit(f"MISMATCH: jaxseg and MONAI HD95 differ by {worst:.2e} mm")


if __name__ == "__main__":
  main()
