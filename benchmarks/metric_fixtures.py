"""Reference outputs of surface-distance, MONAI and picai_eval on small seeded cases (fixtures).

Writes ``tests/fixtures/metrics/*.npz`` (compressed, a few tens of KB): the masks / maps and what
the reference libraries return for them. ``tests/metrics/test_fixtures.py`` compares jaxseg with
them; CI has none of these libraries, the tests only read the files.

- ``segmentation_cases.npz``: 2D and 3D binary mask pairs with anisotropic spacings, random
  blobs plus edge cases (both empty, one empty, single voxels, identical masks, masks touching
  the image border). Keys ``{i}_pred``, ``{i}_truth``, ``{i}_spacing``, and ``names``.
- ``surface_distance.npz``: DeepMind surface-distance (``compute_surface_distances(truth, pred,
  spacing)``): ``hd95`` / ``hd100`` (``compute_robust_hausdorff``), ``asd_gt_to_pred`` /
  ``asd_pred_to_gt`` (``compute_average_surface_distance``), ``nsd_1`` / ``nsd_2``
  (``compute_surface_dice_at_tolerance`` at 1 and 2 mm), ``area_gt`` / ``area_pred`` (summed
  surfel areas), per case; and ``area_table_*`` (``create_table_neighbour_code_to_*``) for a
  few spacings.
- ``monai.npz``: MONAI metrics per case: ``dice_ignore_empty`` / ``dice_keep_empty``
  (``DiceMetric(ignore_empty=True / False)``), ``hd95`` / ``hd100``
  (``HausdorffDistanceMetric(percentile=95 / None)``), ``asd`` (``SurfaceDistanceMetric
  (symmetric=True)``), ``nsd_1`` / ``nsd_2`` and ``nsd_subvoxel_1`` / ``nsd_subvoxel_2``
  (``SurfaceDiceMetric`` with ``use_subvoxels=False / True``).
- ``picai.npz``: 3D lesion-probability maps (multiples of 1/64, stored as ``uint8 * 64``) and
  lesion labels; picai_eval 1.4.x ``evaluate`` with report-guided-annotation's
  ``extract_lesion_candidates`` (dynamic-fast) as ``y_det_postprocess_func``: the detection maps
  (``y_det``, also ``uint8 * 64``), the lesion lists (``lesion_case``, ``lesion_is_lesion``,
  ``lesion_confidence``, ``lesion_overlap``), ``case_pred`` / ``case_target``, ``AP``,
  ``auroc``, ``score``, ``thresholds``, ``lesion_TPR``, ``lesion_FPR``.

Package versions are stored in each file (``versions``). surface-distance 0.1 (PyPI) still uses
``np.Inf`` / ``np.NaN`` (removed in NumPy 2) on empty masks; the two names are restored before
it runs.

Needs the bench environment (PyTorch, MONAI, surface-distance, picai_eval)::

  .venv-bench/bin/python -m benchmarks.metric_fixtures          # writes tests/fixtures/metrics/
  .venv-bench/bin/python -m benchmarks.metric_fixtures --out /tmp/fixtures
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import warnings

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                   "tests", "fixtures", "metrics")
TOLERANCES_MM = (1.0, 2.0)
TABLE_SPACINGS = ((1.0, 1.0, 1.0), (0.6, 0.6, 3.0), (0.5, 0.9, 2.0), (3.0, 0.7, 0.7))
TABLE_SPACINGS_2D = ((1.0, 1.0), (0.5, 1.5), (0.8, 0.3))


def _versions(*packages: str) -> np.ndarray:
  return np.array([f"{p}=={importlib.metadata.version(p)}" for p in packages])


# ---------------------------------------------------------------------------------------------
# Cases.


def _ellipsoid(shape, center, radii):
  grid = np.indices(shape, dtype=np.float64)
  r = sum(((g - c) / s) ** 2 for g, c, s in zip(grid, center, radii))
  return r <= 1.0


def _random_pair(rng, shape):
  """Truth: an ellipsoid (sometimes two); prediction: a shifted, rescaled one plus a box."""
  ndim = len(shape)
  center = [rng.uniform(0.35, 0.65) * n for n in shape]
  radii = [rng.uniform(0.15, 0.3) * n + 1.0 for n in shape]
  truth = _ellipsoid(shape, center, radii)
  if rng.random() < 0.4:
    truth |= _ellipsoid(shape, [rng.uniform(0.2, 0.8) * n for n in shape],
                        [rng.uniform(0.05, 0.12) * n + 1.0 for n in shape])
  shift = [c + rng.normal(0, 0.06 * n) for c, n in zip(center, shape)]
  pred = _ellipsoid(shape, shift, [r * rng.uniform(0.8, 1.2) for r in radii])
  lo = [int(rng.integers(0, n - 2)) for n in shape]
  hi = [min(n, l + int(rng.integers(1, max(2, n // 4)))) for l, n in zip(lo, shape)]
  pred[tuple(slice(l, h) for l, h in zip(lo, hi))] ^= rng.random() < 0.5
  assert pred.ndim == ndim
  return pred, truth


def segmentation_cases(seed: int = 0):
  """``[(name, pred, truth, spacing)]``: seeded random pairs and edge cases, 2D and 3D."""
  rng = np.random.default_rng(seed)
  cases = []
  for i, sp in enumerate(((0.5, 1.5), (0.8, 0.3), (1.0, 1.0), (0.6, 2.4))):
    p, t = _random_pair(rng, (22, 19))
    cases.append((f"2d_random_{i}", p, t, sp))
  for i, sp in enumerate(((0.6, 0.6, 3.0), (0.5, 0.9, 2.0), (3.0, 0.7, 0.7), (0.8, 0.8, 0.8),
                          (0.4, 0.7, 2.2))):
    p, t = _random_pair(rng, (18, 16, 9))
    cases.append((f"3d_random_{i}", p, t, sp))
  for ndim, shape, sp in ((2, (9, 8), (0.7, 1.9)), (3, (7, 6, 5), (0.6, 0.9, 2.5))):
    empty = np.zeros(shape, bool)
    single = empty.copy()
    single[(2,) * ndim] = True
    other = empty.copy()
    other[(4,) * ndim] = True
    blob = empty.copy()
    blob[(slice(1, 5),) * ndim] = True
    border = empty.copy()
    border[(slice(0, 3),) * ndim] = True  # touches the image border
    full = np.ones(shape, bool)
    cases += [
        (f"{ndim}d_both_empty", empty, empty, sp),
        (f"{ndim}d_pred_empty", empty, blob, sp),
        (f"{ndim}d_truth_empty", blob, empty, sp),
        (f"{ndim}d_single_vs_single", single, other, sp),
        (f"{ndim}d_single_identical", single, single, sp),
        (f"{ndim}d_single_vs_blob", single, blob, sp),
        (f"{ndim}d_border_vs_blob", border, blob, sp),
        (f"{ndim}d_full_vs_blob", full, blob, sp),
    ]
  return cases


def detection_cases(seed: int = 1, n_cases: int = 10, shape=(16, 16, 8)):
  """``(prob_maps, labels)``: Gaussian blobs on low noise, quantized to 1/64; lesion ellipsoids.

  Case 0 has a sharp one-voxel spike (its component is below min_voxels, so picai's case score
  is not the map's maximum); case 1 has no lesion and no blob above the noise.
  """
  rng = np.random.default_rng(seed)
  grid = np.indices(shape, dtype=np.float64)
  probs, labels = [], []
  for k in range(n_cases):
    p = rng.uniform(0, 0.04, shape)
    lab = np.zeros(shape, np.uint8)
    n_blobs = 0 if k == 1 else int(rng.integers(1, 4))
    for _ in range(n_blobs):
      c = [rng.uniform(3, n - 3) for n in shape]
      s = [rng.uniform(1.2, 2.5) for _ in shape]
      peak = rng.uniform(0.2, 0.95)
      p = np.maximum(p, peak * np.exp(-0.5 * sum(((g - cc) / ss) ** 2
                                                  for g, cc, ss in zip(grid, c, s))))
      if rng.random() < 0.6:  # a lesion where the blob is, shifted a little
        lc = [cc + rng.normal(0, 1.0) for cc in c]
        lab |= _ellipsoid(shape, lc, [ss * rng.uniform(0.8, 1.6) for ss in s]).astype(np.uint8)
    if k > 1 and rng.random() < 0.5:  # a missed lesion
      lab |= _ellipsoid(shape, [rng.uniform(3, n - 3) for n in shape], (1.8, 1.8, 1.5)).astype(
          np.uint8)
    if k == 0:
      p[2, 2, 2] = 1.0
    probs.append(np.round(np.clip(p, 0, 1) * 64).astype(np.uint8))
    labels.append(lab)
  return np.stack(probs), np.stack(labels)


# ---------------------------------------------------------------------------------------------
# Reference libraries.


def run_surface_distance(cases):
  np.Inf, np.NaN = np.inf, np.nan  # surface-distance 0.1 predates NumPy 2
  import surface_distance as sd
  from surface_distance import lookup_tables

  keys = ("hd95", "hd100", "asd_gt_to_pred", "asd_pred_to_gt", "nsd_1", "nsd_2", "area_gt",
          "area_pred")
  out = {k: [] for k in keys}
  with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
    warnings.simplefilter("ignore")
    for _, pred, truth, sp in cases:
      d = sd.compute_surface_distances(truth, pred, sp)
      out["hd95"].append(sd.compute_robust_hausdorff(d, 95))
      out["hd100"].append(sd.compute_robust_hausdorff(d, 100))
      gt_to_pred, pred_to_gt = sd.compute_average_surface_distance(d)
      out["asd_gt_to_pred"].append(gt_to_pred)
      out["asd_pred_to_gt"].append(pred_to_gt)
      for tau in TOLERANCES_MM:
        out[f"nsd_{tau:g}"].append(sd.compute_surface_dice_at_tolerance(d, tau))
      out["area_gt"].append(np.sum(d["surfel_areas_gt"]))
      out["area_pred"].append(np.sum(d["surfel_areas_pred"]))
  res = {k: np.asarray(v, np.float64) for k, v in out.items()}
  for i, sp in enumerate(TABLE_SPACINGS):
    res[f"area_table_3d_{i}"] = lookup_tables.create_table_neighbour_code_to_surface_area(sp)
    res[f"area_table_3d_{i}_spacing"] = np.asarray(sp)
  for i, sp in enumerate(TABLE_SPACINGS_2D):
    res[f"area_table_2d_{i}"] = lookup_tables.create_table_neighbour_code_to_contour_length(sp)
    res[f"area_table_2d_{i}_spacing"] = np.asarray(sp)
  res["versions"] = _versions("surface-distance", "numpy", "scipy")
  return res


def run_monai(cases):
  import torch
  from monai.metrics import (DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric,
                             SurfaceDistanceMetric)

  out = {k: [] for k in ("dice_ignore_empty", "dice_keep_empty", "hd95", "hd100", "asd",
                         "nsd_1", "nsd_2", "nsd_subvoxel_1", "nsd_subvoxel_2")}
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    for _, pred, truth, sp in cases:
      yp = torch.as_tensor(pred[None, None].astype(np.float32))
      yt = torch.as_tensor(truth[None, None].astype(np.float32))
      kw = {"include_background": True, "reduction": "none"}
      for ignore, key in ((True, "dice_ignore_empty"), (False, "dice_keep_empty")):
        out[key].append(float(DiceMetric(ignore_empty=ignore, **kw)(yp, yt)[0, 0]))
      out["hd95"].append(float(HausdorffDistanceMetric(percentile=95, **kw)(
          yp, yt, spacing=list(sp))[0, 0]))
      out["hd100"].append(float(HausdorffDistanceMetric(**kw)(yp, yt, spacing=list(sp))[0, 0]))
      out["asd"].append(float(SurfaceDistanceMetric(symmetric=True, **kw)(
          yp, yt, spacing=list(sp))[0, 0]))
      for tau in TOLERANCES_MM:
        for sub, key in ((False, f"nsd_{tau:g}"), (True, f"nsd_subvoxel_{tau:g}")):
          m = SurfaceDiceMetric(class_thresholds=[tau], use_subvoxels=sub, **kw)
          out[key].append(float(m(yp, yt, spacing=list(sp))[0, 0]))
  res = {k: np.asarray(v, np.float64) for k, v in out.items()}
  res["versions"] = _versions("monai", "torch", "numpy", "scipy")
  return res


def run_picai(probs_u8, labels):
  from picai_eval import evaluate
  from report_guided_annotation import extract_lesion_candidates

  probs = [p.astype(np.float32) / 64 for p in probs_u8]
  y_det = [extract_lesion_candidates(p, threshold="dynamic-fast")[0] for p in probs]
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    metrics = evaluate(y_det=probs, y_true=list(labels), num_parallel_calls=1,
                       subject_list=[str(i) for i in range(len(probs))],
                       y_det_postprocess_func=lambda p: extract_lesion_candidates(
                           p, threshold="dynamic-fast")[0])
  case, is_lesion, conf, ov = [], [], [], []
  for i in range(len(probs)):
    for t, c, o in metrics.lesion_results[str(i)]:
      case.append(i)
      is_lesion.append(int(t))
      conf.append(float(c))
      ov.append(float(o))
  det = np.stack(y_det)
  tpr, fpr = metrics.lesion_TPR, metrics.lesion_FPR  # sets metrics.thresholds
  assert np.array_equal(np.round(det * 64), det * 64)
  return {
      "probs_u8": probs_u8, "labels": labels.astype(np.uint8),
      "y_det_u8": np.round(det * 64).astype(np.uint8),
      "lesion_case": np.asarray(case, np.int64), "lesion_is_lesion": np.asarray(is_lesion),
      "lesion_confidence": np.asarray(conf), "lesion_overlap": np.asarray(ov),
      "case_pred": np.asarray([metrics.case_pred[str(i)] for i in range(len(probs))], np.float64),
      "case_target": np.asarray([metrics.case_target[str(i)] for i in range(len(probs))]),
      "AP": np.float64(metrics.AP), "auroc": np.float64(metrics.auroc),
      "score": np.float64(metrics.score),
      "thresholds": np.asarray(metrics.thresholds, np.float64),
      "lesion_TPR": np.asarray(tpr, np.float64),
      "lesion_FPR": np.asarray(fpr, np.float64),
      "versions": _versions("picai_eval", "report_guided_annotation", "scikit-learn", "numpy"),
  }


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default=OUT, help="output folder (default: %(default)s)")
  args = parser.parse_args(argv)
  os.makedirs(args.out, exist_ok=True)
  cases = segmentation_cases()
  arrays = {"names": np.array([c[0] for c in cases])}
  for i, (_, p, t, sp) in enumerate(cases):
    arrays[f"{i}_pred"], arrays[f"{i}_truth"] = p, t
    arrays[f"{i}_spacing"] = np.asarray(sp, np.float64)
  written = {"segmentation_cases.npz": arrays,
             "surface_distance.npz": run_surface_distance(cases),
             "monai.npz": run_monai(cases),
             "picai.npz": run_picai(*detection_cases())}
  for name, data in written.items():
    path = os.path.join(args.out, name)
    np.savez_compressed(path, **data)
    print(f"{path}: {os.path.getsize(path) / 1024:.1f} KiB")


if __name__ == "__main__":
  main()
