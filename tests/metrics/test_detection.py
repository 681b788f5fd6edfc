"""Tests for jaxseg.metrics.detection (PI-CAI lesion candidates, FROC, AUROC)."""

import itertools

from absl.testing import absltest
from absl.testing import parameterized
import chex
import numpy as np
import pytest

from jaxseg.metrics import detection
from jaxseg.metrics import stats

LM = detection.LesionMatches


def _cube(shape, corner, size, value=1.0, out=None):
  """Writes an axis-aligned box of ``value`` into ``out`` (new if None)."""
  out = np.zeros(shape) if out is None else out
  sl = tuple(slice(c, c + s) for c, s in zip(corner, size))
  out[sl] = value
  return out


class ExtractCandidatesTest(chex.TestCase, parameterized.TestCase):

  def test_single_blob(self):
    p = _cube((10, 10, 6), (2, 2, 1), (3, 3, 3), 0.8)
    cmap, conf = detection.extract_lesion_candidates(p)
    np.testing.assert_allclose(conf, [0.8])
    np.testing.assert_array_equal(cmap, (p > 0).astype(np.int32))
    self.assertEqual(cmap.dtype, np.int32)

  def test_dynamic_fast_threshold_is_max_over_2_5(self):
    # Peak 0.9 -> threshold 0.36: a 0.4 rim belongs to the lesion, 0.3 not.
    p = _cube((12, 12, 5), (2, 2, 0), (8, 8, 5), 0.3)
    _cube(p.shape, (3, 3, 0), (6, 6, 5), 0.4, out=p)
    _cube(p.shape, (5, 5, 1), (2, 2, 2), 0.9, out=p)
    cmap, conf = detection.extract_lesion_candidates(p)
    np.testing.assert_allclose(conf, [0.9])
    np.testing.assert_array_equal(cmap > 0, p >= 0.36)
    self.assertEqual((cmap > 0).sum(), 6 * 6 * 5)
    # A second blob with peak 0.3 < 0.36 is not a candidate ...
    q = _cube((20, 10, 4), (1, 1, 0), (3, 3, 3), 0.9)
    _cube(q.shape, (10, 1, 0), (3, 3, 3), 0.3, out=q)
    _, conf = detection.extract_lesion_candidates(q)
    np.testing.assert_allclose(conf, [0.9])
    # ... unless the factor is larger (0.9 / 4 = 0.225) or a static threshold.
    _, conf = detection.extract_lesion_candidates(
        q, dynamic_threshold_factor=4.0)
    np.testing.assert_allclose(conf, [0.9, 0.3])
    _, conf = detection.extract_lesion_candidates(q, threshold=0.25)
    np.testing.assert_allclose(conf, [0.9, 0.3])
    _, conf = detection.extract_lesion_candidates(q, threshold=0.95)
    self.assertEqual(conf.size, 0)

  def test_confidence_is_max_inside_component(self):
    p = _cube((8, 8, 4), (1, 1, 0), (4, 4, 4), 0.5)
    p[2, 2, 2] = 0.7
    cmap, conf = detection.extract_lesion_candidates(p)
    np.testing.assert_allclose(conf, [0.7])
    self.assertEqual((cmap == 1).sum(), 64)

  def test_small_components_removed(self):
    # 10 voxels (<= min_voxels) dropped, 11 kept, even if more confident.
    p = np.zeros((30, 4, 4))
    p[0:10, 0, 0] = 0.9
    p[15:26, 0, 0] = 0.8
    cmap, conf = detection.extract_lesion_candidates(p)
    np.testing.assert_allclose(conf, [0.8])
    self.assertEqual((cmap == 1).sum(), 11)
    self.assertEqual(cmap[:10].max(), 0)
    _, conf = detection.extract_lesion_candidates(p, min_voxels=9)
    np.testing.assert_allclose(conf, [0.9, 0.8])

  def test_max_candidates_keeps_most_confident_in_order(self):
    p = np.zeros((40, 6, 4))
    values = [0.5, 0.9, 0.6, 0.95, 0.7, 0.55, 0.8]
    for i, v in enumerate(values):
      _cube(p.shape, (i * 5, 1, 0), (3, 3, 2), v, out=p)
    cmap, conf = detection.extract_lesion_candidates(p, threshold=0.1)
    np.testing.assert_allclose(conf, [0.95, 0.9, 0.8, 0.7, 0.6])
    for k, v in enumerate(conf, start=1):
      np.testing.assert_allclose(p[cmap == k], v)
    self.assertEqual(cmap.max(), 5)
    self.assertEqual(((cmap == 0) & (p > 0)).sum(), 2 * 18)  # 0.5, 0.55 out
    _, conf = detection.extract_lesion_candidates(
        p, threshold=0.1, max_candidates=None)
    self.assertEqual(conf.size, 7)
    _, conf = detection.extract_lesion_candidates(
        p, threshold=0.1, max_candidates=0)
    self.assertEqual(conf.size, 0)

  def test_connectivity(self):
    # Two 2x2x3 boxes touching only at an edge (diagonal in x-y).
    p = _cube((8, 8, 3), (0, 0, 0), (2, 2, 3), 0.9)
    _cube(p.shape, (2, 2, 0), (2, 2, 3), 0.8, out=p)
    _, conf = detection.extract_lesion_candidates(p, min_voxels=5)
    np.testing.assert_allclose(conf, [0.9])  # 26- (and 18-) connected
    _, conf = detection.extract_lesion_candidates(p, min_voxels=5,
                                                  connectivity=18)
    self.assertEqual(conf.size, 1)
    _, conf = detection.extract_lesion_candidates(p, min_voxels=5,
                                                  connectivity=6)
    np.testing.assert_allclose(conf, [0.9, 0.8])
    # 2D: 8-connectivity by default.
    q = _cube((8, 8), (0, 0), (3, 4), 0.9)
    _cube(q.shape, (3, 4), (3, 4), 0.8, out=q)
    _, conf = detection.extract_lesion_candidates(q, min_voxels=5)
    self.assertEqual(conf.size, 1)
    _, conf = detection.extract_lesion_candidates(q, min_voxels=5,
                                                  connectivity=4)
    self.assertEqual(conf.size, 2)

  def test_empty_map(self):
    cmap, conf = detection.extract_lesion_candidates(np.zeros((5, 5, 5)))
    self.assertEqual(conf.shape, (0,))
    self.assertEqual(cmap.max(), 0)

  @parameterized.parameters(
      dict(p=np.zeros((0, 3)), kw={}),
      dict(p=np.full((3, 3), np.nan), kw={}),
      dict(p=-np.ones((3, 3)), kw={}),
      dict(p=np.ones((3, 3)), kw=dict(threshold="dynamic")),
      dict(p=np.ones((3, 3)), kw=dict(connectivity=26)),
      dict(p=np.ones((3, 3, 3)), kw=dict(connectivity=8)),
      dict(p=np.ones((3, 3)), kw=dict(min_voxels=-1)),
  )
  def test_bad_input(self, p, kw):
    with self.assertRaises(ValueError):
      detection.extract_lesion_candidates(p, **kw)


class MatchLesionsTest(chex.TestCase):

  def test_exact_detection_is_tp(self):
    gt = _cube((10, 10, 6), (2, 2, 1), (3, 3, 3)).astype(np.uint8)
    cmap, conf = detection.extract_lesion_candidates(gt * 0.8)
    res = detection.match_lesions(cmap, conf, gt)
    self.assertEqual(res.candidates, [(True, 0.8)])
    self.assertEqual(res.num_lesions, 1)
    self.assertEqual((res.num_tp, res.num_fp, res.num_missed), (1, 0, 0))
    hits, num = res  # unpacks as (list of (is_tp, confidence), #lesions)
    self.assertEqual((hits, num), ([(True, 0.8)], 1))

  def test_shifted_below_iou_is_fp_and_miss(self):
    gt = _cube((12, 12, 5), (2, 2, 1), (3, 3, 3))
    # Shift by (2, 2, 0): overlap 1 x 1 x 3 = 3, IoU = 3 / 51 < 0.1.
    cand = _cube(gt.shape, (4, 4, 1), (3, 3, 3)).astype(np.int32)
    res = detection.match_lesions(cand, [0.6], gt)
    self.assertEqual(res.candidates, [(False, 0.6)])
    self.assertEqual((res.num_tp, res.num_fp, res.num_missed), (0, 1, 1))
    # Shift by (2, 0, 0): overlap 9, IoU = 9 / 45 = 0.2 -> hit.
    cand = _cube(gt.shape, (4, 2, 1), (3, 3, 3)).astype(np.int32)
    res = detection.match_lesions(cand, [0.6], gt)
    self.assertEqual(res.candidates, [(True, 0.6)])
    # And with min_iou = 0.25 it is not.
    res = detection.match_lesions(cand, [0.6], gt, min_iou=0.25)
    self.assertEqual(res.candidates, [(False, 0.6)])

  def test_iou_threshold_is_inclusive(self):
    gt = np.zeros((3, 12), np.uint8)
    gt[1, 0:10] = 1  # 10 voxels
    cand = np.zeros((3, 12), np.int32)
    cand[1, 0] = 1  # IoU = 1 / 10 exactly
    self.assertEqual(detection.match_lesions(cand, [0.5], gt).candidates,
                     [(True, 0.5)])
    cand[0, 0] = 1  # IoU = 1 / 11
    self.assertEqual(detection.match_lesions(cand, [0.5], gt).candidates,
                     [(False, 0.5)])

  def test_two_candidates_compete_for_one_lesion(self):
    gt = _cube((12, 12, 4), (2, 2, 0), (4, 4, 4))  # 64 voxels
    cand = np.zeros(gt.shape, np.int32)
    cand[2:6, 2:6, 0:3] = 1  # IoU 48 / 64 = 0.75
    cand[2:6, 2:6, 3] = 2  # IoU 16 / 64 = 0.25
    res = detection.match_lesions(cand, [0.4, 0.9], gt)
    # One-to-one: the better-overlapping candidate 1 is the hit, candidate 2
    # (enough overlap, but the lesion is taken) is ignored (picai default).
    self.assertEqual(res.candidates, [(True, 0.4)])
    self.assertEqual((res.num_tp, res.num_fp, res.num_missed), (1, 0, 0))
    res = detection.match_lesions(cand, [0.4, 0.9], gt,
                                  redundant_hits="false_positive")
    self.assertEqual(res.candidates, [(True, 0.4), (False, 0.9)])

  def test_hungarian_maximises_number_of_hits(self):
    # A greedy best-IoU match gives 1 hit; the one-to-one optimum gives 2.
    gt = np.zeros((6, 10), np.uint8)
    gt[0:4, 0:4] = 1  # lesion A, 16 px
    gt[0:4, 5:8] = 1  # lesion B, 12 px (column 4 separates them)
    cand = np.zeros(gt.shape, np.int32)
    cand[0:4, 1:6] = 1  # IoU(A) = 12/24 = 0.5, IoU(B) = 4/28 = 0.14
    cand[0:4, 0] = 2  # IoU(A) = 4/16 = 0.25
    res = detection.match_lesions(cand, [0.7, 0.6], gt)
    self.assertEqual(res.candidates, [(True, 0.7), (True, 0.6)])
    self.assertEqual(res.num_lesions, 2)

  def test_hungarian_prefers_larger_iou_among_equal_counts(self):
    gt = _cube((4, 12), (0, 0), (4, 4))
    cand = np.zeros(gt.shape, np.int32)
    cand[0:2, 0:4] = 1  # IoU 0.5
    cand[2:4, 0:2] = 2  # IoU 0.25
    res = detection.match_lesions(cand, [0.3, 0.9], gt)
    self.assertEqual(res.candidates, [(True, 0.3)])

  def test_benign_case_all_fp(self):
    p = _cube((10, 10, 4), (1, 1, 0), (3, 3, 3), 0.7)
    cmap, conf = detection.extract_lesion_candidates(p)
    res = detection.match_lesions(cmap, conf, np.zeros(p.shape))
    self.assertEqual(res, LM([(False, 0.7)], 0))
    self.assertEqual(res.num_missed, 0)

  def test_no_candidates_lesions_missed(self):
    gt = _cube((10, 10, 4), (1, 1, 0), (2, 2, 2))
    _cube(gt.shape, (6, 6, 0), (2, 2, 2), out=gt)
    res = detection.match_lesions(np.zeros(gt.shape, np.int32), [], gt)
    self.assertEqual(res, LM([], 2))
    self.assertEqual(res.num_missed, 2)

  def test_gt_lesions_use_26_connectivity(self):
    gt = np.zeros((4, 4, 4), np.uint8)
    gt[0, 0, 0] = gt[1, 1, 1] = 1  # corner-touching voxels: one lesion
    res = detection.match_lesions(np.zeros(gt.shape, np.int32), [], gt)
    self.assertEqual(res.num_lesions, 1)
    res = detection.match_lesions(np.zeros(gt.shape, np.int32), [], gt,
                                  connectivity=6)
    self.assertEqual(res.num_lesions, 2)

  def test_bad_input(self):
    gt = np.zeros((4, 4))
    with self.assertRaises(ValueError):
      detection.match_lesions(np.zeros((4, 5), np.int32), [], gt)
    with self.assertRaises(ValueError):
      detection.match_lesions(np.ones((4, 4), np.int32), [], gt)  # no conf
    with self.assertRaises(ValueError):
      detection.match_lesions(np.ones((4, 4)), [0.5], gt)  # float map
    with self.assertRaises(ValueError):
      detection.match_lesions(np.ones((4, 4), np.int32), [0.5], gt,
                              min_iou=0.0)
    with self.assertRaises(ValueError):
      detection.match_lesions(np.ones((4, 4), np.int32), [0.5], gt,
                              redundant_hits="drop")


def _toy_cases():
  # Pooled, sorted: 0.9 TP, 0.8 FP, 0.7 FP, 0.6 FP, 0.5 TP; 3 lesions, 3 cases.
  return [
      LM([(True, 0.9), (False, 0.6)], 1),
      LM([(False, 0.8), (True, 0.5)], 2),  # one lesion missed
      LM([(False, 0.7)], 0),
  ]


class FROCTest(chex.TestCase):

  def test_hand_computed_points(self):
    res = detection.froc(_toy_cases())
    np.testing.assert_allclose(res["thresholds"],
                               [np.inf, 0.9, 0.8, 0.7, 0.6, 0.5])
    np.testing.assert_allclose(res["sensitivity"],
                               [0, 1 / 3, 1 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(res["fp_per_case"],
                               [0, 0, 1 / 3, 2 / 3, 1, 1])
    # Step curve: 1/3 on [0.1, 1], 2/3 on [1, 2.5].
    self.assertAlmostEqual(res["pauc"], 1 / 3 * 0.9 + 2 / 3 * 1.5)
    self.assertAlmostEqual(res["pauc_normalized"], res["pauc"] / 2.4)
    self.assertAlmostEqual(res["max_sensitivity"], 2 / 3)
    # AP: recall +1/3 at precision 1 (t=.9), +1/3 at precision 2/5 (t=.5).
    self.assertAlmostEqual(res["average_precision"], 1 / 3 + 1 / 3 * 2 / 5)
    self.assertEqual((res["num_lesions"], res["num_cases"], res["num_tp"],
                      res["num_fp"]), (3, 3, 2, 3))
    # Narrower range inside the first step.
    self.assertAlmostEqual(
        detection.froc(_toy_cases(), fp_range=(0.2, 0.5))["pauc"], 0.1)

  def test_tied_confidences_give_diagonal(self):
    res = detection.froc([LM([(True, 0.5), (False, 0.5)], 1)])
    np.testing.assert_allclose(res["fp_per_case"], [0, 1])
    np.testing.assert_allclose(res["sensitivity"], [0, 1])
    # Diagonal from (0.1, 0.1) to (1, 1), then 1 up to 2.5.
    self.assertAlmostEqual(res["pauc"], (0.1 + 1) / 2 * 0.9 + 1.5)
    self.assertAlmostEqual(res["average_precision"], 0.5)

  def test_perfect_and_no_detection(self):
    res = detection.froc([LM([(True, 0.8)], 1), LM([], 0)])
    self.assertAlmostEqual(res["pauc"], 2.4)
    self.assertAlmostEqual(res["pauc_normalized"], 1.0)
    self.assertAlmostEqual(res["average_precision"], 1.0)
    res = detection.froc([LM([(False, 0.8)], 1)])
    self.assertEqual((res["pauc"], res["max_sensitivity"],
                      res["average_precision"]), (0.0, 0.0, 0.0))

  def test_no_lesions_is_nan(self):
    res = detection.froc([LM([(False, 0.4)], 0)])
    self.assertTrue(np.isnan(res["pauc"]))
    self.assertTrue(np.isnan(res["max_sensitivity"]))
    self.assertTrue(np.isnan(res["average_precision"]))
    np.testing.assert_allclose(res["fp_per_case"], [0, 1])

  def test_bad_input(self):
    with self.assertRaises(ValueError):
      detection.froc([])
    with self.assertRaises(ValueError):
      detection.froc(_toy_cases(), fp_range=(2.5, 0.1))

  def test_average_precision_hand_list(self):
    # Sorted: T .9, F .8, T .7, T .6 (tie with F .6), F .2; 5 lesions.
    cases = [LM([(True, 0.9), (False, 0.8), (True, 0.6)], 3),
             LM([(True, 0.7), (False, 0.6), (False, 0.2)], 2)]
    # t=.9: R=1/5 P=1; t=.8: +0; t=.7: R=2/5 P=2/3; t=.6: R=3/5 P=3/5.
    expected = 1 / 5 * 1 + 1 / 5 * 2 / 3 + 1 / 5 * 3 / 5
    self.assertAlmostEqual(detection.average_precision(cases), expected)
    # Precision rising again (no interpolation): T .9, F .8, T .7, T .6.
    cases = [LM([(True, 0.9), (False, 0.8)], 2), LM([(True, 0.7)], 1),
             LM([(True, 0.6)], 2)]
    expected = 1 / 5 * 1 + 1 / 5 * 2 / 3 + 1 / 5 * 3 / 4
    self.assertAlmostEqual(detection.average_precision(cases), expected)


class PartialAreaTest(chex.TestCase):

  def test_step_curve(self):
    x = [0, 0, 1, 1, 2]
    y = [0, 0.5, 0.5, 1, 1]
    self.assertAlmostEqual(
        detection.partial_area(x, y, x_range=(0.5, 1.5)), 0.25 + 0.5)
    # Beyond the last point the curve stays at 1.
    self.assertAlmostEqual(
        detection.partial_area(x, y, x_range=(0.0, 4.0)), 0.5 + 3.0)
    # A range entirely past the last point.
    self.assertAlmostEqual(
        detection.partial_area(x, y, x_range=(5.0, 6.0)), 1.0)

  def test_linear_segment(self):
    self.assertAlmostEqual(
        detection.partial_area([0, 1], [0, 1], x_range=(0.5, 3.0)),
        0.375 + 2.0)

  def test_bad_input(self):
    with self.assertRaises(ValueError):
      detection.partial_area([1, 0], [0, 1], x_range=(0, 1))
    with self.assertRaises(ValueError):
      detection.partial_area([0.5, 1], [0, 1], x_range=(0, 1))
    with self.assertRaises(ValueError):
      detection.partial_area([0, 1], [0, 1], x_range=(1, 1))


def _auroc_bruteforce(s, y):
  pos, neg = s[y == 1], s[y == 0]
  total = 0.0
  for a, b in itertools.product(pos, neg):
    total += 1.0 if a > b else (0.5 if a == b else 0.0)
  return total / (len(pos) * len(neg))


class AUROCTest(chex.TestCase, parameterized.TestCase):

  @parameterized.parameters(0, 1, 2, 3)
  def test_against_pairwise_with_ties(self, seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 5, size=25).astype(float) / 4  # many ties
    y = rng.integers(0, 2, size=25)
    y[:2] = [0, 1]
    self.assertAlmostEqual(detection.auroc(s, y), _auroc_bruteforce(s, y),
                           places=12)

  def test_known_values(self):
    self.assertEqual(detection.auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1.0)
    self.assertEqual(detection.auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 0.0)
    self.assertEqual(detection.auroc([0.5, 0.5], [0, 1]), 0.5)
    # Pairs: (.6 > .3) 1, (.6 > .6) 0.5, (.4 > .3) 1, (.4 < .6) 0 -> 2.5 / 4.
    self.assertEqual(detection.auroc([0.3, 0.6, 0.6, 0.4], [0, 0, 1, 1]),
                     0.625)

  def test_single_class_is_nan_and_bad_input(self):
    self.assertTrue(np.isnan(detection.auroc([0.1, 0.2], [1, 1])))
    with self.assertRaises(ValueError):
      detection.auroc([0.1, 0.2], [0, 2])
    with self.assertRaises(ValueError):
      detection.auroc([0.1], [0, 1])
    with self.assertRaises(ValueError):
      detection.auroc([], [])


class EvaluateCasesTest(chex.TestCase):

  def _cases(self):
    shape = (16, 16, 4)
    # Case 0: lesion found exactly (0.9) + a separate FP blob (0.5).
    p0 = _cube(shape, (1, 1, 0), (4, 4, 3), 0.9)
    _cube(shape, (10, 10, 0), (4, 4, 3), 0.5, out=p0)
    g0 = _cube(shape, (1, 1, 0), (4, 4, 3))
    # Case 1: lesion missed, prediction far away (0.6) -> FP + miss.
    p1 = _cube(shape, (10, 1, 0), (4, 4, 3), 0.6)
    g1 = _cube(shape, (1, 10, 0), (4, 4, 3))
    # Case 2: no lesion, faint prediction (0.2) -> FP.
    p2 = _cube(shape, (5, 5, 0), (4, 4, 3), 0.2)
    g2 = np.zeros(shape)
    # Case 3: no lesion, nothing predicted.
    p3 = np.zeros(shape)
    g3 = np.zeros(shape)
    return [p0, p1, p2, p3], [g0, g1, g2, g3]

  def test_end_to_end(self):
    probs, gts = self._cases()
    res = detection.evaluate_cases(probs, gts)
    cr = res["case_results"]
    self.assertEqual(cr[0], LM([(True, 0.9), (False, 0.5)], 1))
    self.assertEqual(cr[1], LM([(False, 0.6)], 1))
    self.assertEqual(cr[2], LM([(False, 0.2)], 0))
    self.assertEqual(cr[3], LM([], 0))
    np.testing.assert_allclose(res["case_scores"], [0.9, 0.6, 0.2, 0.0])
    np.testing.assert_array_equal(res["case_labels"], [1, 1, 0, 0])
    self.assertEqual(res["auroc"], 1.0)
    # Pooled: .9 T, .6 F, .5 F, .2 F; 2 lesions, 4 cases.
    np.testing.assert_allclose(res["sensitivity"], [0, 0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(res["fp_per_case"], [0, 0, .25, .5, .75])
    self.assertAlmostEqual(res["pauc"], 0.5 * 2.4)
    self.assertAlmostEqual(res["average_precision"], 0.5)
    self.assertAlmostEqual(res["score"], 0.75)
    self.assertAlmostEqual(res["max_sensitivity"], 0.5)

  def test_bootstrap_over_case_results(self):
    probs, gts = self._cases()
    res = detection.evaluate_cases(probs, gts)
    est = stats.bootstrap_ci_paired(
        [res["case_results"]],
        lambda cr: detection.froc(cr)["max_sensitivity"],
        num_resamples=100, seed=0)
    self.assertAlmostEqual(est.value, 0.5)
    self.assertGreaterEqual(est.low, 0.0)
    self.assertLessEqual(est.high, 1.0)
    # Resamples without lesions give NaN and are counted, not used.
    self.assertGreater(est.n_resamples_undefined, 0)

  def test_bad_input(self):
    with self.assertRaises(ValueError):
      detection.evaluate_cases([np.zeros((3, 3))], [])
    with self.assertRaises(ValueError):
      detection.evaluate_cases([], [])
    with self.assertRaises(ValueError):
      detection.evaluate_cases([np.zeros((3, 3))], [np.zeros((3, 4))])



class FrocBandTest(chex.TestCase):

  def _results(self, seed=3, n=12):
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(n):
      lesions = int(rng.integers(0, 3))
      hits = int(rng.integers(0, lesions + 1))
      marks = [True] * hits + [False] * int(rng.integers(0, 3))
      results.append(detection.LesionMatches([(t, float(rng.random())) for t in marks], lesions))
    return results

  def test_band_brackets_a_monotone_curve(self):
    results = self._results()
    grid = np.geomspace(0.05, 3.0, 20)
    low, high = detection.froc_bootstrap_band(results, grid, num_resamples=200, seed=0)
    self.assertEqual(low.shape, grid.shape)
    self.assertTrue(np.all(low <= high) and np.all((0 <= low) & (high <= 1)))
    self.assertTrue(np.all(np.diff(low) >= -1e-12) and np.all(np.diff(high) >= -1e-12))
    again = detection.froc_bootstrap_band(results, grid, num_resamples=200, seed=0)
    np.testing.assert_array_equal(low, again[0])

  def test_band_uses_the_paired_bootstrap_resamples(self):
    # The band at one grid point is the percentile interval of the same resampled curves
    # that bootstrap_ci_paired evaluates for the same seed.
    results = self._results(seed=5)
    fp = 1.0
    low, high = detection.froc_bootstrap_band(results, [fp], num_resamples=300, seed=7)

    def sens(r):
      f = detection.froc(r)
      if f["num_lesions"] == 0:
        return np.nan
      return float(detection.sensitivity_at(f["fp_per_case"], f["sensitivity"], [fp])[0])

    est = stats.bootstrap_ci_paired([results], sens, num_resamples=300, seed=7)
    self.assertAlmostEqual(float(low[0]), est.low, places=12)
    self.assertAlmostEqual(float(high[0]), est.high, places=12)

  def test_sensitivity_at_collapses_vertical_steps(self):
    fp = np.array([0.0, 0.0, 0.5, 0.5, 1.0])
    sens = np.array([0.0, 0.5, 0.5, 0.75, 0.75])
    np.testing.assert_allclose(detection.sensitivity_at(fp, sens, [0.0, 0.25, 0.5, 2.0]),
                               [0.5, 0.625, 0.75, 0.75])
    with self.assertRaises(ValueError):
      detection.sensitivity_at([0.0, 1.0], [0.0], [0.5])

  def test_no_lesions_gives_nan_band(self):
    results = [detection.LesionMatches([(False, 0.5)], 0)] * 3
    low, high = detection.froc_bootstrap_band(results, [0.5, 1.0], num_resamples=10)
    self.assertTrue(np.isnan(low).all() and np.isnan(high).all())



class LowPrecisionMapsTest(chex.TestCase):
  """Probability maps in float16 / bfloat16 must be evaluated in float64 on the host."""

  def _map(self):
    p = np.zeros((10, 10, 5), np.float32)
    _cube(p.shape, (2, 2, 1), (3, 3, 3), 0.75, out=p)
    return p

  def test_float16_map_is_upcast(self):
    p = self._map()
    cmap, conf = detection.extract_lesion_candidates(p.astype(np.float16))
    ref_map, ref_conf = detection.extract_lesion_candidates(p)
    np.testing.assert_array_equal(cmap, ref_map)
    self.assertEqual(conf.dtype, np.float64)
    np.testing.assert_allclose(conf, ref_conf)

  def test_bfloat16_map_is_upcast(self):
    jnp = pytest.importorskip("jax.numpy")
    p = self._map()
    cmap, conf = detection.extract_lesion_candidates(jnp.asarray(p, jnp.bfloat16))
    np.testing.assert_array_equal(cmap, detection.extract_lesion_candidates(p)[0])
    self.assertEqual(conf.dtype, np.float64)


if __name__ == "__main__":
  absltest.main()
