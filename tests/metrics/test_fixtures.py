"""jaxseg's metrics against stored outputs of surface-distance, MONAI and picai_eval.

The fixtures (``tests/fixtures/metrics/*.npz``) are written by ``benchmarks/metric_fixtures.py``
in the bench environment (see its docstring); these tests only read them, so they run without
the reference libraries. Where a library defines a value differently (empty masks), the test
asserts the documented relation instead of equality. The tests at the end (``importorskip``)
call the libraries directly on fresh cases and run only where they are installed.
"""

from __future__ import annotations

import math
import pathlib

import numpy as np
import pytest

from jaxseg.metrics import detection, overlap, surface

FIXTURES = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "metrics"
SURFACES = ("jaxseg", "monai", "surface_distance")


def _load(name):
  """Arrays of a fixture file (a name in FIXTURES, or a path)."""
  with np.load(FIXTURES / name) as f:
    return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def cases():
  data = _load("segmentation_cases.npz")
  return [(str(n), data[f"{i}_pred"], data[f"{i}_truth"], data[f"{i}_spacing"])
          for i, n in enumerate(data["names"])]


def _both_nonempty(p, t):
  return bool(p.any() and t.any())


def test_fixture_files_are_small_and_cover_the_edge_cases(cases):
  total = sum(f.stat().st_size for f in FIXTURES.glob("*.npz"))
  assert total < 300 * 1024
  names = [c[0] for c in cases]
  for ndim in (2, 3):
    for edge in ("both_empty", "pred_empty", "truth_empty", "single_vs_single",
                 "single_identical", "border_vs_blob"):
      assert f"{ndim}d_{edge}" in names
  assert any(len(set(c[3])) > 1 for c in cases)  # anisotropic spacings


# ---------------------------------------------------------------------------------------------
# surface-distance (DeepMind): surface="surface_distance".


@pytest.fixture(scope="module")
def sd_ref():
  return _load("surface_distance.npz")


def test_surfel_tables_match_surface_distance(sd_ref):
  for key in sd_ref:
    if key.startswith("area_table_") and not key.endswith("_spacing"):
      sp = tuple(float(v) for v in sd_ref[key + "_spacing"])
      np.testing.assert_allclose(surface._surfel_measure_table(sp), sd_ref[key], rtol=1e-12,
                                 atol=0, err_msg=key)


def test_surface_distance_hausdorff(cases, sd_ref):
  for i, (name, p, t, sp) in enumerate(cases):
    for q, key in ((95, "hd95"), (100, "hd100")):
      got = surface.hausdorff_distance(p, t, spacing=sp, percentile=q, surface="surface_distance")
      if _both_nonempty(p, t):
        np.testing.assert_allclose(got, sd_ref[key][i], rtol=1e-12, err_msg=name)
      else:
        # surface-distance: inf whenever a mask is empty (no surfel to reach); jaxseg: NaN.
        assert math.isinf(sd_ref[key][i]) and math.isnan(got), name


def test_surface_distance_directed_means_and_areas(cases, sd_ref):
  for i, (name, p, t, sp) in enumerate(cases):
    d_pt, d_tp, w_p, w_t = surface.surface_distances(p, t, spacing=sp, surface="surface_distance",
                                                     return_weights=True)
    np.testing.assert_allclose(w_p.sum(), sd_ref["area_pred"][i], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(w_t.sum(), sd_ref["area_gt"][i], rtol=1e-12, err_msg=name)
    asd = surface.average_surface_distance(p, t, spacing=sp, surface="surface_distance",
                                           method="mean_directed")
    if not _both_nonempty(p, t):
      # surface-distance: inf from the non-empty side, NaN (0 / 0) from the empty one.
      assert math.isnan(asd), name
      continue
    gt_to_pred = np.dot(w_t, d_tp) / w_t.sum()
    pred_to_gt = np.dot(w_p, d_pt) / w_p.sum()
    np.testing.assert_allclose(gt_to_pred, sd_ref["asd_gt_to_pred"][i], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(pred_to_gt, sd_ref["asd_pred_to_gt"][i], rtol=1e-12, err_msg=name)
    np.testing.assert_allclose(
        asd, 0.5 * (sd_ref["asd_gt_to_pred"][i] + sd_ref["asd_pred_to_gt"][i]), rtol=1e-12)


def test_surface_distance_nsd(cases, sd_ref):
  for i, (name, p, t, sp) in enumerate(cases):
    for tau in (1, 2):
      ref = sd_ref[f"nsd_{tau}"][i]
      got = surface.normalized_surface_dice(p, t, spacing=sp, tolerance_mm=tau)
      # Both empty: NaN in both; one empty: 0 in both.
      np.testing.assert_allclose(got, ref, rtol=1e-12, err_msg=name)


def test_surface_distance_per_case_api(cases, sd_ref):
  # Per-case functions on the cases of one dimensionality (spacing per case).
  for ndim in (2, 3):
    idx = [i for i, c in enumerate(cases) if c[1].ndim == ndim]
    preds = [cases[i][1] for i in idx]
    truths = [cases[i][2] for i in idx]
    spacing = np.stack([cases[i][3] for i in idx])
    nsd = surface.normalized_surface_dice_per_case(preds, truths, spacing=spacing, tolerance_mm=2)
    np.testing.assert_allclose(nsd.values, sd_ref["nsd_2"][idx], rtol=1e-12)
    assert nsd.n_undefined == int(np.isnan(sd_ref["nsd_2"][idx]).sum()) == 1
    hd = surface.hd95_per_case(preds, truths, spacing=spacing, surface="surface_distance")
    finite = np.isfinite(sd_ref["hd95"][idx])
    np.testing.assert_allclose(hd.values[finite], sd_ref["hd95"][idx][finite], rtol=1e-12)
    assert hd.n_undefined == int((~finite).sum()) == 3


# ---------------------------------------------------------------------------------------------
# MONAI: surface="monai" (use_subvoxels=False) and "surface_distance" (use_subvoxels=True);
# the empty-mask policies of DiceMetric. MONAI's distances are float32: rtol 1e-6.


@pytest.fixture(scope="module")
def monai_ref():
  return _load("monai.npz")


def test_monai_dice_empty_policies(cases, monai_ref):
  for i, (name, p, t, _) in enumerate(cases):
    cm = overlap.confusion_matrix(p.astype(np.int32), t.astype(np.int32), num_classes=2)
    for policy, key in (("monai", "dice_ignore_empty"), ("monai_ignore_empty", "dice_ignore_empty"),
                        ("nan_if_truth_empty", "dice_ignore_empty"),
                        ("monai_keep_empty", "dice_keep_empty"), ("one", "dice_keep_empty")):
      got = float(overlap.dice_from_confusion(cm, empty=policy)[1])
      np.testing.assert_allclose(got, monai_ref[key][i], rtol=1e-6, err_msg=f"{name} {policy}")
    # jaxseg's default differs from ignore_empty=True only on a spurious prediction (truth empty).
    default = float(overlap.dice_from_confusion(cm)[1])
    if t.any() or not p.any():
      np.testing.assert_allclose(default, monai_ref["dice_ignore_empty"][i], rtol=1e-6)
    else:
      assert default == 0.0 and math.isnan(monai_ref["dice_ignore_empty"][i])


def test_monai_distances(cases, monai_ref):
  for i, (name, p, t, sp) in enumerate(cases):
    hd95 = surface.hausdorff_distance(p, t, spacing=sp, surface="monai")
    hd100 = surface.hausdorff_distance(p, t, spacing=sp, percentile=100, surface="monai")
    asd = surface.average_surface_distance(p, t, spacing=sp, surface="monai")
    if _both_nonempty(p, t):
      np.testing.assert_allclose(hd95, monai_ref["hd95"][i], rtol=1e-6, err_msg=name)
      np.testing.assert_allclose(hd100, monai_ref["hd100"][i], rtol=1e-6, err_msg=name)
      np.testing.assert_allclose(asd, monai_ref["asd"][i], rtol=1e-6, err_msg=name)
    else:
      assert math.isnan(hd95) and math.isnan(hd100) and math.isnan(asd)
      # MONAI: the distances to an empty mask are inf, so its maximum (HD100) and mean are inf
      # and torch.quantile of them (HD95) is NaN; everything is NaN when both are empty.
      one_empty = p.any() or t.any()
      assert math.isnan(monai_ref["hd95"][i])
      np.testing.assert_equal(monai_ref["hd100"][i], math.inf if one_empty else math.nan)
      np.testing.assert_equal(monai_ref["asd"][i], math.inf if one_empty else math.nan)


def test_monai_surface_dice(cases, monai_ref):
  for i, (name, p, t, sp) in enumerate(cases):
    for tau in (1, 2):
      got = surface.normalized_surface_dice(p, t, spacing=sp, tolerance_mm=tau, surface="monai")
      np.testing.assert_allclose(got, monai_ref[f"nsd_{tau}"][i], rtol=1e-6, err_msg=name)
      got = surface.normalized_surface_dice(p, t, spacing=sp, tolerance_mm=tau)
      np.testing.assert_allclose(got, monai_ref[f"nsd_subvoxel_{tau}"][i], rtol=1e-6,
                                 err_msg=name)


# ---------------------------------------------------------------------------------------------
# picai_eval: jaxseg.metrics.detection.


@pytest.fixture(scope="module")
def picai_ref():
  ref = _load("picai.npz")
  ref["probs"] = [p.astype(np.float32) / 64 for p in ref["probs_u8"]]
  ref["y_det"] = ref["y_det_u8"].astype(np.float64) / 64
  ref["jax"] = detection.evaluate_cases(ref["probs"], list(ref["labels"]), max_candidates=None)
  return ref


def test_picai_candidate_extraction(picai_ref):
  for p, y_det in zip(picai_ref["probs"], picai_ref["y_det"]):
    cmap, conf = detection.extract_lesion_candidates(p, max_candidates=None)
    rebuilt = np.where(cmap > 0, np.r_[0.0, conf][cmap], 0.0)
    np.testing.assert_array_equal(rebuilt, y_det)


def test_picai_lesion_lists(picai_ref):
  for i, result in enumerate(picai_ref["jax"]["case_results"]):
    sel = picai_ref["lesion_case"] == i
    is_lesion = picai_ref["lesion_is_lesion"][sel]
    conf = picai_ref["lesion_confidence"][sel]
    missed = (is_lesion == 1) & (conf == 0)  # picai lists a missed lesion as (1, 0.0, 0.0)
    assert result.num_missed == int(missed.sum())
    assert result.num_lesions == int(is_lesion.sum())
    ref = sorted(zip(is_lesion[~missed].astype(bool).tolist(), conf[~missed].tolist()))
    got = sorted((bool(t), c) for t, c in result.candidates)
    assert len(got) == len(ref)
    for (t0, c0), (t1, c1) in zip(got, ref):
      assert t0 == t1
      np.testing.assert_allclose(c0, c1, rtol=1e-7)  # picai's confidences are float32


def test_picai_average_precision_auroc_score(picai_ref):
  jax_result = picai_ref["jax"]
  np.testing.assert_allclose(jax_result["average_precision"], picai_ref["AP"], rtol=1e-7)
  np.testing.assert_array_equal(jax_result["case_labels"], picai_ref["case_target"])
  # picai's case score is the maximum of the *detection map* (kept candidates), jaxseg's that of
  # the probability map; they differ where the global maximum lies in a component of
  # <= min_voxels voxels (case 0 has such a spike).
  kept = [max((c for _, c in r.candidates), default=0.0) for r in jax_result["case_results"]]
  np.testing.assert_allclose(kept, picai_ref["case_pred"], rtol=1e-7)
  differs = ~np.isclose(jax_result["case_scores"], picai_ref["case_pred"])
  assert differs[0] and differs.sum() == 1
  np.testing.assert_allclose(detection.auroc(picai_ref["case_pred"], picai_ref["case_target"]),
                             picai_ref["auroc"], rtol=1e-12)
  np.testing.assert_allclose(
      0.5 * (detection.auroc(picai_ref["case_pred"], picai_ref["case_target"])
             + jax_result["average_precision"]), picai_ref["score"], rtol=1e-7)


def test_picai_froc_points(picai_ref):
  f = picai_ref["jax"]
  thresholds = picai_ref["thresholds"]
  for k, thr in enumerate(thresholds[:-1]):
    j = int(np.flatnonzero(np.isclose(f["thresholds"], thr, rtol=1e-7))[0])
    np.testing.assert_allclose(f["sensitivity"][j], picai_ref["lesion_TPR"][k], rtol=1e-6)
    np.testing.assert_allclose(f["fp_per_case"][j], picai_ref["lesion_FPR"][k], rtol=1e-6)
  # picai overwrites its lowest threshold (here 0, the missed lesions) by the extension to
  # infinite false positives at the last sensitivity; jaxseg keeps every operating point.
  assert thresholds[-1] == 0.0 and math.isinf(picai_ref["lesion_FPR"][-1])
  assert picai_ref["lesion_TPR"][-1] == picai_ref["lesion_TPR"][-2]
  np.testing.assert_allclose(f["max_sensitivity"], picai_ref["lesion_TPR"][-1], rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Direct parity on fresh cases; only where the reference libraries are installed (bench venv).


def _fresh_pairs(seed, n=6):
  from benchmarks import metric_fixtures
  rng = np.random.default_rng(seed)
  out = []
  for k in range(n):
    shape = (20, 17) if k % 2 == 0 else (15, 13, 7)
    sp = tuple(rng.choice([0.45, 0.6, 0.75, 0.9, 1.3, 2.1, 3.3], size=len(shape)))
    out.append(metric_fixtures._random_pair(rng, shape) + (sp,))
  return out


def test_direct_surface_distance_parity(monkeypatch):
  pytest.importorskip("surface_distance")
  monkeypatch.setattr(np, "Inf", np.inf, raising=False)  # surface-distance 0.1 predates NumPy 2
  monkeypatch.setattr(np, "NaN", np.nan, raising=False)
  import surface_distance as sd
  from surface_distance import lookup_tables

  rng = np.random.default_rng(0)
  for _ in range(5):
    sp = tuple(rng.uniform(0.2, 4.0, size=3))
    np.testing.assert_allclose(surface._surfel_measure_table(sp),
                               lookup_tables.create_table_neighbour_code_to_surface_area(sp),
                               rtol=1e-12)
    np.testing.assert_allclose(surface._surfel_measure_table(sp[:2]),
                               lookup_tables.create_table_neighbour_code_to_contour_length(sp[:2]),
                               rtol=1e-12)
  for p, t, sp in _fresh_pairs(123):
    d = sd.compute_surface_distances(t, p, sp)
    np.testing.assert_allclose(surface.hausdorff_distance(p, t, spacing=sp,
                                                          surface="surface_distance"),
                               sd.compute_robust_hausdorff(d, 95), rtol=1e-12)
    np.testing.assert_allclose(
        surface.average_surface_distance(p, t, spacing=sp, surface="surface_distance",
                                         method="mean_directed"),
        np.mean(sd.compute_average_surface_distance(d)), rtol=1e-12)
    for tau in (0.5, 1.0, 2.5):
      np.testing.assert_allclose(surface.normalized_surface_dice(p, t, spacing=sp,
                                                                 tolerance_mm=tau),
                                 sd.compute_surface_dice_at_tolerance(d, tau), rtol=1e-12)


def test_direct_monai_parity():
  torch = pytest.importorskip("torch")
  pytest.importorskip("monai")
  from monai.metrics import (compute_average_surface_distance, compute_hausdorff_distance,
                             compute_surface_dice)

  for p, t, sp in _fresh_pairs(7):
    yp = torch.as_tensor(p[None, None].astype(np.float32))
    yt = torch.as_tensor(t[None, None].astype(np.float32))
    hd = compute_hausdorff_distance(yp, yt, include_background=True, percentile=95,
                                    spacing=list(sp))
    np.testing.assert_allclose(surface.hausdorff_distance(p, t, spacing=sp, surface="monai"),
                               float(hd[0, 0]), rtol=1e-6)
    asd = compute_average_surface_distance(yp, yt, include_background=True, symmetric=True,
                                           spacing=list(sp))
    np.testing.assert_allclose(surface.average_surface_distance(p, t, spacing=sp,
                                                                surface="monai"),
                               float(asd[0, 0]), rtol=1e-6)
    for sub, srf in ((False, "monai"), (True, "surface_distance")):
      nsd = compute_surface_dice(yp, yt, [1.5], include_background=True, spacing=list(sp),
                                 use_subvoxels=sub)
      np.testing.assert_allclose(surface.normalized_surface_dice(
          p, t, spacing=sp, tolerance_mm=1.5, surface=srf), float(nsd[0, 0]), rtol=1e-6)


def test_direct_picai_parity():
  pytest.importorskip("picai_eval")
  pytest.importorskip("report_guided_annotation")
  from benchmarks import metric_fixtures

  probs_u8, labels = metric_fixtures.detection_cases(seed=5, n_cases=8)
  ref = metric_fixtures.run_picai(probs_u8, labels)
  got = detection.evaluate_cases([p.astype(np.float32) / 64 for p in probs_u8], list(labels),
                                 max_candidates=None)
  np.testing.assert_allclose(got["average_precision"], ref["AP"], rtol=1e-7)
  kept = [max((c for _, c in r.candidates), default=0.0) for r in got["case_results"]]
  np.testing.assert_allclose(detection.auroc(kept, ref["case_target"]), ref["auroc"],
                             rtol=1e-12)


def test_committed_fixtures_are_reproducible(tmp_path):
  for name in ("surface_distance", "monai", "picai_eval", "report_guided_annotation"):
    pytest.importorskip(name)
  from benchmarks import metric_fixtures

  metric_fixtures.main(["--out", str(tmp_path)])
  for f in FIXTURES.glob("*.npz"):
    new, old = _load(tmp_path / f.name), _load(f.name)
    assert new.keys() == old.keys()
    for k in old:
      if k != "versions":
        np.testing.assert_array_equal(new[k], old[k], err_msg=f"{f.name}:{k}")
