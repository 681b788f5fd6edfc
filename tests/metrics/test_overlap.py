"""Tests of confusion-matrix based overlap metrics."""

from absl.testing import absltest
from absl.testing import parameterized
import chex
import jax.numpy as jnp
import numpy as np

from jaxseg.hierarchy import PAPER_PENALTY_MATRIX
from jaxseg.metrics import overlap


def np_dice(pred, truth, c):
  p, t = pred == c, truth == c
  denom = p.sum() + t.sum()
  return np.nan if denom == 0 else 2 * (p & t).sum() / denom


class OverlapTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(0)
    self.truth = rng.integers(0, 4, size=(3, 7, 6))
    self.pred = np.where(rng.random((3, 7, 6)) < 0.7, self.truth, rng.integers(0, 4, (3, 7, 6)))

  @chex.variants(with_jit=True, without_jit=True)
  def test_confusion_matrix_against_numpy(self):
    cm = self.variant(lambda p, t: overlap.confusion_matrix(p, t, num_classes=4, axis=(1, 2)))(
        self.pred, self.truth)
    chex.assert_shape(cm, (3, 4, 4))
    for case in range(3):
      ref = np.zeros((4, 4), np.int64)
      np.add.at(ref, (self.truth[case].ravel(), self.pred[case].ravel()), 1)
      np.testing.assert_array_equal(cm[case], ref)

  def test_values_outside_range_are_not_counted(self):
    cm = overlap.confusion_matrix(np.array([0, 5, 1]), np.array([0, 1, -1]), num_classes=2)
    np.testing.assert_array_equal(cm, [[1, 0], [0, 0]])

  @chex.variants(with_jit=True, without_jit=True)
  def test_dice_per_class_against_numpy(self):
    fn = self.variant(lambda p, t: overlap.dice_per_class(p, t, num_classes=5))
    dice = fn(self.pred[0], self.truth[0])
    chex.assert_shape(dice, (5,))
    for c in range(5):
      np.testing.assert_allclose(dice[c], np_dice(self.pred[0], self.truth[0], c), rtol=1e-6)
    self.assertTrue(np.isnan(dice[4]))   # class 4 absent from both: undefined

  def test_hand_computed_and_empty_policies(self):
    truth = np.array([0, 1, 1, 1, 2, 0])
    pred = np.array([0, 1, 1, 0, 0, 3])
    dice = overlap.dice_per_class(pred, truth, num_classes=5)
    np.testing.assert_allclose(dice[:4], [2 * 1 / (3 + 2), 2 * 2 / 5, 0.0, 0.0], rtol=1e-6)
    self.assertTrue(np.isnan(dice[4]))
    dice_one = overlap.dice_per_class(pred, truth, num_classes=5, empty="one")
    self.assertEqual(float(dice_one[4]), 1.0)
    self.assertEqual(float(overlap.dice_per_class(pred, truth, num_classes=5, empty="zero")[4]), 0.0)
    with self.assertRaisesRegex(ValueError, "empty"):
      overlap.dice_per_class(pred, truth, num_classes=5, empty="bogus")

  def test_precision_recall(self):
    cm = np.array([[5, 1], [2, 4]])
    np.testing.assert_allclose(overlap.precision_from_confusion(cm), [5 / 7, 4 / 5])
    np.testing.assert_allclose(overlap.recall_from_confusion(cm), [5 / 6, 4 / 6])

  def test_superclass_dice_equals_dice_of_union(self):
    merged = overlap.merge_classes(overlap.confusion_matrix(self.pred, self.truth, num_classes=4),
                                   [(1, 2)])
    union_pred = np.where(np.isin(self.pred, [1, 2]), 1, 0)
    union_truth = np.where(np.isin(self.truth, [1, 2]), 1, 0)
    np.testing.assert_allclose(overlap.dice_from_confusion(merged)[1],
                               np_dice(union_pred, union_truth, 1), rtol=1e-6)
    self.assertTrue(np.isnan(overlap.dice_from_confusion(merged)[2]))
    self.assertEqual(int(merged.sum()), self.pred.size)

  def test_hierarchical_confusion_and_expected_cost(self):
    cm = np.zeros((9, 9))
    cm[1, 1], cm[1, 2], cm[4, 5] = 10, 2, 3   # bladder->bone (0.91), TZ->CG (0)
    h = overlap.hierarchical_confusion_matrix(cm, PAPER_PENALTY_MATRIX)
    self.assertAlmostEqual(float(h[1, 2]), 2 * 1.91, places=5)
    self.assertAlmostEqual(float(h[4, 5]), 3.0, places=5)
    self.assertAlmostEqual(float(h[1, 1]), 10.0, places=5)
    cost = overlap.expected_hierarchical_cost(cm, PAPER_PENALTY_MATRIX)
    self.assertAlmostEqual(float(cost), 2 * 0.91 / 15, places=6)
    self.assertTrue(np.isnan(overlap.expected_hierarchical_cost(np.zeros((9, 9)),
                                                                PAPER_PENALTY_MATRIX)))

  def test_nan_mean_with_count(self):
    mean, undefined = overlap.nan_mean_with_count([[1.0, np.nan], [0.5, 0.25]], axis=0)
    np.testing.assert_allclose(mean, [0.75, 0.25])
    np.testing.assert_array_equal(undefined, [0, 1])

  def test_shape_errors(self):
    with self.assertRaisesRegex(ValueError, "shape"):
      overlap.confusion_matrix(np.zeros(3), np.zeros(4), num_classes=2)
    with self.assertRaisesRegex(ValueError, "trailing"):
      overlap.confusion_matrix(np.zeros((2, 3)), np.zeros((2, 3)), num_classes=2, axis=0)
    with self.assertRaisesRegex(ValueError, "penalty"):
      overlap.hierarchical_confusion_matrix(jnp.zeros((3, 3)), PAPER_PENALTY_MATRIX)


class SoftConfusionTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_soft_dice_per_class_and_merged_region(self):
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(3), size=(5, 4, 3))
    labels = rng.integers(0, 3, (5, 4, 3))
    cm = self.variant(overlap.soft_confusion_matrix)(probs, labels)
    chex.assert_shape(cm, (3, 3))
    chex.assert_type(cm, jnp.float32)
    onehot = np.eye(3)[labels]
    np.testing.assert_allclose(cm, onehot.reshape(-1, 3).T @ probs.reshape(-1, 3), rtol=1e-5)
    for c in (1, 2):
      want = (2 * np.sum(probs[..., c] * onehot[..., c])
              / (probs[..., c].sum() + onehot[..., c].sum()))
      np.testing.assert_allclose(overlap.region_dice(cm, (c,)), want, rtol=1e-5)
    p_wg, y_wg = probs[..., 1:].sum(-1), onehot[..., 1:].sum(-1)
    want = 2 * np.sum(p_wg * y_wg) / (p_wg.sum() + y_wg.sum())
    np.testing.assert_allclose(overlap.region_dice(cm, (1, 2)), want, rtol=1e-5)

  def test_one_hot_probabilities_give_the_hard_matrix(self):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, (5, 4, 3))
    predicted = rng.integers(0, 3, (5, 4, 3))
    np.testing.assert_allclose(overlap.soft_confusion_matrix(np.eye(3)[predicted], labels),
                               overlap.confusion_matrix(predicted, labels, num_classes=3))

  def test_region_dice_hand_values_and_errors(self):
    # truth: 4 voxels of class 1, 2 of class 2; prediction: 3 of class 1 (2 right, 1 on class 2).
    cm = np.array([[10, 1, 0], [1, 2, 1], [0, 1, 1]])
    np.testing.assert_allclose(overlap.region_dice(cm, (1,)), 2 * 2 / (4 + 4))
    # WG = 1 u 2: truth 6 voxels, prediction 6, overlap 5.
    np.testing.assert_allclose(overlap.region_dice(cm, (1, 2)), 2 * 5 / (6 + 6))
    self.assertTrue(np.isnan(overlap.region_dice(np.diag([5, 0, 0]), (1,))))
    self.assertEqual(float(overlap.region_dice(np.diag([5, 0, 0]), (1,), empty="one")), 1.0)
    with self.assertRaises(ValueError):
      overlap.region_dice(cm, ())
    with self.assertRaises(ValueError):
      overlap.soft_confusion_matrix(np.ones((5, 4, 2)) / 2, np.zeros((5, 3), np.int32))


def np_per_slice_dice(pred, truth, skip, empty="nan"):
  """float64 reference from the definition: slice loop, Dice per slice, mean over kept slices."""
  pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
  values, kept = [], []
  for k in range(pred.shape[-1]):
    p, t = pred[..., k], truth[..., k]
    n_p, n_t = int(p.sum()), int(t.sum())
    if n_p + n_t == 0:
      d = np.nan if empty == "nan" else 1.0
    else:
      d = 2.0 * np.logical_and(p, t).sum() / (n_p + n_t)
    values.append(d)
    kept.append({"none": True, "both": n_p + n_t > 0, "either": n_p > 0 and n_t > 0}[skip])
  used = [v for v, keep in zip(values, kept) if keep]
  return (np.mean(used) if used else np.nan), np.array(values), np.array(kept)


def microsegnet_case_dice(pred, truth):
  """The original loop (MicroSegNet ``calculate_metric_percase``), slices on the last axis."""
  dice, num = 0.0, 0
  for k in range(pred.shape[-1]):
    p, t = pred[..., k] > 0, truth[..., k] > 0
    if p.sum() > 0 and t.sum() > 0:
      num += 1
      dice += 2.0 * np.count_nonzero(p & t) / (np.count_nonzero(p) + np.count_nonzero(t))
  return dice / num


class PerSliceDiceTest(chex.TestCase):

  def setUp(self):
    super().setUp()
    rng = np.random.default_rng(3)
    # Two cases of 6 slices with blobs of different sizes; some empty slices on either side.
    self.truth = rng.random((2, 7, 6, 6)) < np.linspace(0.1, 0.7, 6)
    self.pred = self.truth ^ (rng.random((2, 7, 6, 6)) < 0.25)
    self.truth[0, ..., 0] = False                          # spurious prediction
    self.pred[0, ..., 1] = False                           # missed slice
    self.pred[1, ..., 2] = self.truth[1, ..., 2] = False   # both empty

  @chex.variants(with_jit=True, without_jit=True)
  def test_against_numpy_reference(self):
    for skip in ("none", "both", "either"):
      for empty in ("nan", "one"):
        fn = self.variant(lambda p, t, s=skip, e=empty: overlap.per_slice_dice(
            p, t, skip_empty_slices=s, empty=e))
        got = fn(self.pred, self.truth)
        chex.assert_shape(got.value, (2,))
        chex.assert_shape((got.slice_dice, got.counted), (2, 6))
        for case in range(2):
          value, values, kept = np_per_slice_dice(self.pred[case], self.truth[case], skip, empty)
          np.testing.assert_allclose(got.value[case], value, rtol=1e-6)
          np.testing.assert_allclose(got.slice_dice[case], values, rtol=1e-6)
          np.testing.assert_array_equal(got.counted[case], kept)
          self.assertEqual(int(got.n_slices[case]), kept.sum())
          self.assertEqual(int(got.n_skipped_slices[case]), 6 - kept.sum())

  def test_single_case_equals_batch_and_original_loop(self):
    batch = overlap.per_slice_dice(self.pred, self.truth, skip_empty_slices="either")
    for case in range(2):
      one = overlap.per_slice_dice(self.pred[case], self.truth[case], skip_empty_slices=True)
      np.testing.assert_allclose(one.value, batch.value[case], rtol=1e-6)
      np.testing.assert_allclose(one.value, microsegnet_case_dice(self.pred[case],
                                                                  self.truth[case]), rtol=1e-6)

  def test_hand_computed_per_slice_differs_from_pooled(self):
    # Slice 0: 4x4 square predicted exactly (Dice 1). Slice 1: truth 2x2, prediction 2x2 shifted
    # by one row and one column, overlap 1 pixel: Dice 2 * 1 / (4 + 4) = 1/4.
    truth = np.zeros((6, 6, 2), bool)
    pred = np.zeros((6, 6, 2), bool)
    truth[1:5, 1:5, 0] = pred[1:5, 1:5, 0] = True
    truth[1:3, 1:3, 1] = True
    pred[2:4, 2:4, 1] = True
    got = overlap.per_slice_dice(pred, truth)
    np.testing.assert_allclose(got.slice_dice, [1.0, 0.25])
    np.testing.assert_allclose(got.value, (1.0 + 0.25) / 2)  # 0.625
    pooled = overlap.dice_per_class(pred.astype(np.int32), truth.astype(np.int32), num_classes=2)
    np.testing.assert_allclose(pooled[1], 2 * (16 + 1) / (20 + 20))  # 0.85
    np.testing.assert_allclose(microsegnet_case_dice(pred, truth), 0.625)

  def test_hand_computed_empty_slice_policies(self):
    # Slices: [Dice 1/2], [both empty], [prediction only], [truth only].
    truth = np.zeros((4, 4, 4), np.int32)
    pred = np.zeros((4, 4, 4), np.int32)
    truth[0, 0:2, 0] = 1
    pred[0, 1:3, 0] = 1   # overlap 1 of 2 + 2
    pred[2, 2, 2] = 1
    truth[3, 3, 3] = 1
    run = lambda **kw: overlap.per_slice_dice(pred, truth, **kw)
    got = run(skip_empty_slices="none")
    self.assertTrue(np.isnan(got.value))
    np.testing.assert_allclose(got.slice_dice, [0.5, np.nan, 0.0, 0.0])
    self.assertEqual((int(got.n_slices), int(got.n_undefined_slices)), (4, 1))
    got = run(skip_empty_slices=False, empty="one")
    np.testing.assert_allclose(got.value, (0.5 + 1 + 0 + 0) / 4)
    self.assertEqual(int(got.n_undefined_slices), 0)
    got = run()  # default "both": skip the both-empty slice, missed / spurious slices score 0
    np.testing.assert_allclose(got.value, 0.5 / 3)
    np.testing.assert_array_equal(got.counted, [True, False, True, True])
    self.assertEqual((int(got.n_slices), int(got.n_skipped_slices)), (3, 1))
    for skip in ("either", True):  # MicroSegNet: only the slice with both masks
      got = run(skip_empty_slices=skip)
      np.testing.assert_allclose(got.value, 0.5)
      np.testing.assert_array_equal(got.counted, [True, False, False, False])
      self.assertEqual(int(got.n_skipped_slices), 3)

  def test_no_counted_slice_is_undefined(self):
    truth = np.zeros((3, 3, 2), bool)
    truth[1, 1, :] = True
    got = overlap.per_slice_dice(np.zeros_like(truth), truth, skip_empty_slices="either")
    self.assertTrue(np.isnan(got.value))
    self.assertEqual(int(got.n_slices), 0)
    got = overlap.per_slice_dice(np.zeros_like(truth), np.zeros_like(truth))
    self.assertTrue(np.isnan(got.value))
    self.assertEqual(int(got.n_skipped_slices), 2)
    got = overlap.per_slice_dice(np.zeros_like(truth), truth)  # missed everywhere: 0, defined
    self.assertEqual(float(got.value), 0.0)

  def test_validation(self):
    m = np.zeros((3, 3, 2), bool)
    with self.assertRaisesRegex(ValueError, "shape"):
      overlap.per_slice_dice(m, m[:2])
    with self.assertRaisesRegex(ValueError, "last axis"):
      overlap.per_slice_dice(m[..., 0], m[..., 0])
    with self.assertRaisesRegex(ValueError, "binary"):
      overlap.per_slice_dice(np.full(m.shape, 0.5), m)
    with self.assertRaisesRegex(ValueError, "binary"):
      overlap.per_slice_dice(m, np.full(m.shape, 255))
    with self.assertRaisesRegex(ValueError, "skip_empty_slices"):
      overlap.per_slice_dice(m, m, skip_empty_slices="some")
    with self.assertRaisesRegex(ValueError, "empty"):
      overlap.per_slice_dice(m, m, empty="bogus")


# ---------------------------------------------------------------------------------------------
# Empty-mask policies: every policy (and library alias) on hand cases.

# Binary cases (truth, prediction) as confusion matrices of class 1: cm[true, pred].
_CASES = {
    "normal": np.array([[4, 1], [2, 3]]),        # TP 3, FP 1, FN 2: Dice 6/9, P 3/4, R 3/5
    "both_empty": np.array([[10, 0], [0, 0]]),
    "truth_empty": np.array([[8, 2], [0, 0]]),   # spurious prediction: FP 2
    "pred_empty": np.array([[7, 0], [3, 0]]),    # missed: FN 3
}
_NAN = float("nan")
# policy -> case -> (dice, precision, recall) of class 1, by hand from the module table.
_EXPECTED = {
    "nan": {"normal": (6 / 9, 3 / 4, 3 / 5), "both_empty": (_NAN, _NAN, _NAN),
            "truth_empty": (0.0, 0.0, _NAN), "pred_empty": (0.0, _NAN, 0.0)},
    "one": {"normal": (6 / 9, 3 / 4, 3 / 5), "both_empty": (1.0, 1.0, 1.0),
            "truth_empty": (0.0, 0.0, 1.0), "pred_empty": (0.0, 1.0, 0.0)},
    "zero": {"normal": (6 / 9, 3 / 4, 3 / 5), "both_empty": (0.0, 0.0, 0.0),
             "truth_empty": (0.0, 0.0, 0.0), "pred_empty": (0.0, 0.0, 0.0)},
    "nan_if_truth_empty": {"normal": (6 / 9, 3 / 4, 3 / 5), "both_empty": (_NAN, _NAN, _NAN),
                           "truth_empty": (_NAN, _NAN, _NAN), "pred_empty": (0.0, _NAN, 0.0)},
}
_ALIASES = {"jaxseg": "nan", "nnunet": "nan", "surface_distance": "nan",
            "monai": "nan_if_truth_empty", "monai_ignore_empty": "nan_if_truth_empty",
            "monai_keep_empty": "one"}


class EmptyPolicyTest(chex.TestCase, parameterized.TestCase):

  @parameterized.product(policy=tuple(_EXPECTED), case=tuple(_CASES))
  def test_every_policy_on_every_case(self, policy, case):
    cm = _CASES[case]
    got = [float(f(cm, empty=policy)[1]) for f in (
        overlap.dice_from_confusion, overlap.precision_from_confusion,
        overlap.recall_from_confusion)]
    np.testing.assert_allclose(got, _EXPECTED[policy][case], rtol=1e-6)

  @parameterized.parameters(*_ALIASES.items())
  def test_library_aliases(self, alias, policy):
    self.assertEqual(overlap.empty_policy(alias), policy)
    self.assertEqual(overlap.LIBRARY_EMPTY_POLICIES[alias], policy)
    for cm in _CASES.values():
      np.testing.assert_array_equal(overlap.dice_from_confusion(cm, empty=alias),
                                    overlap.dice_from_confusion(cm, empty=policy))

  def test_unknown_policy(self):
    for bad in ("bogus", None, 1, "NaN"):
      with self.assertRaisesRegex(ValueError, "empty"):
        overlap.dice_from_confusion(_CASES["normal"], empty=bad)

  @chex.variants(with_jit=True, without_jit=True)
  def test_policies_under_jit_on_stacked_cases(self):
    cms = np.stack(list(_CASES.values()))
    for policy, expected in _EXPECTED.items():
      got = self.variant(lambda c, p=policy: overlap.dice_from_confusion(c, empty=p))(cms)
      np.testing.assert_allclose(got[:, 1], [expected[c][0] for c in _CASES], rtol=1e-6)

  def test_monai_dice_by_hand(self):
    # MONAI DiceMetric(ignore_empty=True): NaN whenever the truth is empty; ignore_empty=False:
    # 1 if both are empty, else 0 when the truth is empty (monai/metrics/meandice.py).
    both, spurious = _CASES["both_empty"], _CASES["truth_empty"]
    self.assertTrue(np.isnan(overlap.dice_from_confusion(both, empty="monai")[1]))
    self.assertTrue(np.isnan(overlap.dice_from_confusion(spurious, empty="monai")[1]))
    self.assertEqual(float(overlap.dice_from_confusion(both, empty="monai_keep_empty")[1]), 1.0)
    self.assertEqual(float(overlap.dice_from_confusion(spurious, empty="monai_keep_empty")[1]), 0.)

  def test_nnunet_mean_is_nanmean_with_count(self):
    # nnU-Net: Dice NaN when tp + fp + fn == 0, class mean over cases = np.nanmean.
    cms = np.stack([_CASES["normal"], _CASES["both_empty"], _CASES["pred_empty"]])
    dice = np.asarray(overlap.dice_from_confusion(cms, empty="nnunet"))[:, 1]
    mean, undefined = overlap.nan_mean_with_count(dice)
    np.testing.assert_allclose(mean, np.nanmean(dice), rtol=1e-7)
    np.testing.assert_allclose(mean, (6 / 9 + 0.0) / 2, rtol=1e-6)
    self.assertEqual(int(undefined), 1)

  def test_region_dice_takes_the_policies(self):
    cm = np.zeros((3, 3), np.int32)
    cm[0, 0] = 5
    cm[0, 2] = 1  # class 2 predicted, absent from the truth
    for policy, expected in (("nan", 0.0), ("zero", 0.0), ("one", 0.0),
                             ("nan_if_truth_empty", _NAN)):
      np.testing.assert_allclose(overlap.region_dice(cm, (1, 2), empty=policy), expected)
    np.testing.assert_allclose(overlap.region_dice(cm, (1,), empty="one"), 1.0)
    np.testing.assert_allclose(overlap.region_dice(cm, (1,), empty="zero"), 0.0)

  def test_per_slice_dice_policies(self):
    # Slices: normal, both empty, truth empty (spurious), prediction empty (missed).
    p = np.zeros((3, 3, 4), bool)
    t = np.zeros((3, 3, 4), bool)
    p[0, :2, 0], t[0, :, 0] = True, True          # Dice 2*2/(2+3) = 0.8
    p[1, 1, 2] = True                              # spurious
    t[2, 2, 3] = True                              # missed
    expected = {"nan": [0.8, _NAN, 0.0, 0.0], "one": [0.8, 1.0, 0.0, 0.0],
                "zero": [0.8, 0.0, 0.0, 0.0], "nan_if_truth_empty": [0.8, _NAN, _NAN, 0.0]}
    for policy, slices in expected.items():
      r = overlap.per_slice_dice(p, t, skip_empty_slices="none", empty=policy)
      np.testing.assert_allclose(r.slice_dice, slices, rtol=1e-6)
      r_both = overlap.per_slice_dice(p, t, skip_empty_slices="both", empty=policy)
      counted = np.array(slices)[[0, 2, 3]]
      np.testing.assert_allclose(r_both.value, np.mean(counted), rtol=1e-6)
      self.assertEqual(int(r_both.n_undefined_slices), int(np.isnan(counted).sum()))


class LowPrecisionInputTest(chex.TestCase):
  """bfloat16 / float16 inputs are computed in float32."""

  def test_soft_confusion_and_dice_from_bf16_probabilities(self):
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 5, 3)).astype(np.float32)
    probs32 = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    truth = rng.integers(0, 3, size=(6, 5))
    probs16 = jnp.asarray(probs32, dtype=jnp.bfloat16)
    cm = overlap.soft_confusion_matrix(probs16, truth)
    self.assertEqual(cm.dtype, jnp.float32)
    ref = overlap.soft_confusion_matrix(np.asarray(probs16.astype(jnp.float32)), truth)
    np.testing.assert_allclose(cm, ref, rtol=1e-6)
    dice = overlap.dice_from_confusion(cm)
    self.assertEqual(dice.dtype, jnp.float32)

  def test_ratios_of_bf16_confusion_matrices(self):
    # 300 is exact in bfloat16 but 300 + 1 is not: a bf16 sum would round 2 TP + FP + FN.
    cm = np.array([[100.0, 1.0], [1.0, 300.0]])
    for f in (overlap.dice_from_confusion, overlap.precision_from_confusion,
              overlap.recall_from_confusion):
      got = f(jnp.asarray(cm, jnp.bfloat16))
      self.assertEqual(got.dtype, jnp.float32)
      np.testing.assert_allclose(got, f(cm.astype(np.float32)), rtol=1e-7)
    np.testing.assert_allclose(overlap.dice_from_confusion(jnp.asarray(cm, jnp.bfloat16))[1],
                               600 / 602, rtol=1e-6)

  def test_per_slice_dice_of_bf16_masks(self):
    rng = np.random.default_rng(4)
    p = rng.random((6, 6, 3)) < 0.5
    t = rng.random((6, 6, 3)) < 0.5
    r16 = overlap.per_slice_dice(jnp.asarray(p, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
    r = overlap.per_slice_dice(p, t)
    self.assertEqual(r16.value.dtype, jnp.float32)
    np.testing.assert_allclose(r16.slice_dice, r.slice_dice, rtol=1e-7)


if __name__ == "__main__":
  absltest.main()
