"""Timing of the surface-distance metrics on a 160 x 160 x 20 random-ellipsoid pair.

Spacing (0.5, 0.5, 3.0) mm, as in an anisotropic prostate MRI volume. Prints the median (and
min) wall time over several runs of ``jaxseg.metrics.surface`` against a naive, uncropped
reference (surfaces and EDTs on the whole image, the way MONAI / medpy compute them), and checks
that both give the same HD95. Not run by the tests.

Usage: ``python benchmarks/hd95.py [--repeats 7] [--seed 0]``
"""

from __future__ import annotations

import argparse
import statistics
import time
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
  args = parser.parse_args()
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
  print(f"cropped == uncropped HD95; speed-up {rows[0][1] / rows[1][1]:.1f}x")


if __name__ == "__main__":
  main()
