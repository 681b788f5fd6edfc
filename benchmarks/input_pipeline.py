"""Input-pipeline throughput: 3D bpMRI crops with signed distance maps, 0 and N Grain workers.

The workload of the anatomical-vs-diagnostic study's training input: per sample a case, a
foreground-biased crop of the three-channel image, its zonal label and the label's signed
distance maps (one per class, cropped with the image), a random mirror and an intensity jitter;
batches stacked. The volumes are synthetic (random intensities, a nested ellipsoid label and its
exact distance maps from `jaxseg.data.distance`), so the script needs no data.

Measured: batches per second of the pipeline alone (no training step), the median of
``--repeats`` passes over ``--batches`` batches after one warm-up pass (which also starts the
worker processes). Rows: `jaxseg.data.pipeline.PatchLoader` with 0 workers (made in this process)
and with each ``--workers`` count; when the checkout has no `PatchLoader` (before Grain), the
one row is its ``patch_batches``.

  python -m benchmarks.input_pipeline                     # defaults: 2 workers
  python -m benchmarks.input_pipeline --workers 2 4 --cases 8 --batches 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from jaxseg.data import augment as augment_lib
from jaxseg.data import pipeline
from jaxseg.data.distance import signed_distance_maps


def make_volumes(cases: int, shape: tuple[int, int, int], classes: int = 3):
  """``cases`` synthetic bpMRI volumes (3 channels) with distance maps of a nested label."""
  rng = np.random.default_rng(0)
  grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"), -1)
  volumes = []
  for i in range(cases):
    centre = rng.uniform(-0.2, 0.2, 3)
    r = np.sqrt((((grid - centre) / np.array([0.5, 0.4, 0.7])) ** 2).sum(-1))
    label = np.where(r < 0.5, 1, np.where(r < 1.0, 2, 0)).astype(np.int32)
    image = (rng.normal(size=shape + (3,)) + label[..., None]).astype(np.float32)
    spacing = (0.5, 0.5, 3.0)
    volumes.append(pipeline.Volume(
        image=image, label=label, spacing=spacing, case_id=f"bench-{i}",
        extras={"sdm": signed_distance_maps(label, classes, spacing=spacing)}))
  return volumes


class CropDistanceMaps:
  """Recomputes a crop's signed distance maps from its (augmented) label, per sample: what a
  pipeline with rotations or scalings must do, as they change distances (`jaxseg.data.augment`)."""

  def __init__(self, classes: int, spacing):
    self.classes, self.spacing = classes, tuple(spacing)

  def __call__(self, rng, sample):
    del rng
    return {**sample, "sdm": signed_distance_maps(sample["label"], self.classes,
                                                  spacing=self.spacing).astype(np.float32)}


def _time(make_iter, batches: int, repeats: int) -> float:
  """Median seconds of ``repeats`` passes of ``batches`` batches, after one warm-up pass."""
  times = []
  for r in range(repeats + 1):
    tic = time.perf_counter()
    it = make_iter(r)
    for _ in range(batches):
      next(it)
    if r:
      times.append(time.perf_counter() - tic)
  return statistics.median(times)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", type=int, default=12)
  parser.add_argument("--shape", type=int, nargs=3, default=(160, 160, 24))
  parser.add_argument("--patch", type=int, nargs=3, default=(128, 128, 20))
  parser.add_argument("--batch", type=int, default=2)
  parser.add_argument("--batches", type=int, default=12, help="batches per timed pass")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workers", type=int, nargs="+", default=(2,))
  args = parser.parse_args(argv)

  volumes = make_volumes(args.cases, tuple(args.shape))
  flip_jitter = [augment_lib.Mirror(probs=(0.5, 0.0, 0.0)),
                 augment_lib.IntensityJitter(scale_std=0.1, shift_std=0.1, noise_std=0.0)]
  workloads = {
      "crop + flip + jitter (distance maps precomputed)": augment_lib.Compose(flip_jitter),
      "... + distance maps per crop": augment_lib.Compose(
          flip_jitter + [CropDistanceMaps(3, volumes[0].spacing)]),
  }
  passes = args.repeats + 1
  print(f"{args.cases} cases of {tuple(args.shape)} x 3 channels with distance maps of 3 "
        f"classes; crops {tuple(args.patch)}, batch {args.batch}, {args.batches} batches per "
        f"pass, median of {args.repeats}; {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.2f}\n")
  print("| workload | pipeline | workers | batches/s | vs 0 workers |")
  print("|---|---|---|---|---|")
  for workload, augment in workloads.items():
    common = dict(batch_size=args.batch, patch_shape=tuple(args.patch), foreground_prob=0.5,
                  seed=0, samples_per_epoch=args.batches * args.batch, augment=augment)
    if not hasattr(pipeline, "PatchLoader"):
      seconds = _time(lambda r: pipeline.patch_batches(volumes, epoch=r, **common),  # pylint: disable=cell-var-from-loop
                      args.batches, args.repeats)
      print(f"| {workload} | patch_batches (hand-written) | 0 | {args.batches / seconds:.2f} "
            "| 1.00x |")
      continue
    base = None
    for workers in (0, *args.workers):
      with pipeline.PatchLoader(volumes, num_epochs=passes, workers=workers, **common) as loader:
        seconds = _time(lambda r: iter(loader(r)), args.batches, args.repeats)  # pylint: disable=cell-var-from-loop
      rate = args.batches / seconds
      base = base or rate
      print(f"| {workload} | Grain PatchLoader | {workers} | {rate:.2f} | {rate / base:.2f}x |")


if __name__ == "__main__":
  main()
