"""Tests for jaxseg.losses._checks and its use by every loss that takes labels.

Concrete out-of-range labels raise a ValueError naming the values and the
valid range; under jit the check cannot run and each loss returns its
documented value (NaN for the cross-entropy-type losses, all-zero target rows
for the one-hot-based ones, integer binary targets used as given).
"""

import functools

from absl.testing import parameterized
import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxseg import losses
from jaxseg.losses import _checks

C = 3
# Example 0 is clean; example 1 holds -1 (an "ignore" value) and 3 (= C).
LABELS = np.array([[[0, 1], [2, 1]], [[0, -1], [3, 2]]], np.int32)
CLEAN = np.where((LABELS < 0) | (LABELS >= C), 0, LABELS)
BAD = (LABELS < 0) | (LABELS >= C)
# The documented jitted targets: one-hot rows, all zero at the bad positions.
ZERO_ROWS = np.eye(C, dtype=np.float32)[CLEAN] * ~BAD[..., None]
LOGITS = np.random.default_rng(0).normal(size=LABELS.shape + (C,)).astype(
    np.float32)
# Binary masks: example 1 is stored as 0/255.
MASK = np.array([[[0, 1], [1, 0]], [[0, 255], [255, 0]]], np.int32)
LOGITS1 = LOGITS[..., :1]
HARD = np.array([[[0, 1], [0, 0]], [[1, 0], [0, 1]]], np.float32)
_PENALTY = np.array([[0, 1, 2], [1, 0, 1], [2, 1, 0]], np.float32)
_DIST = np.random.default_rng(1).normal(size=LABELS.shape + (C - 1,)).astype(
    np.float32)


def _ds_ce(logits, labels):
  return losses.deep_supervision_loss(
      (logits, logits[:, ::2]), labels, losses.softmax_cross_entropy)


# name: (fn(logits, labels), logits, bad labels, expected message fragment)
CLASS_MAP_LOSSES = {
    "pixelwise_softmax_cross_entropy":
        lambda x, y: jnp.mean(losses.pixelwise_softmax_cross_entropy(x, y),
                              axis=(1, 2)),
    "softmax_cross_entropy": losses.softmax_cross_entropy,
    "softmax_cross_entropy[weights]": functools.partial(
        losses.softmax_cross_entropy, class_weights=[0.2, 0.3, 0.5]),
    "hierarchical_cross_entropy": functools.partial(
        losses.hierarchical_cross_entropy, penalty=_PENALTY, alpha=1.0),
    "expected_cost": functools.partial(losses.expected_cost, cost=_PENALTY),
    "expected_cost_cross_entropy": functools.partial(
        losses.expected_cost_cross_entropy, cost=_PENALTY),
    "deep_supervision_loss": _ds_ce,
    "softmax_focal_loss": functools.partial(
        losses.softmax_focal_loss, alpha=[0.2, 0.3, 0.5], gamma=2.0),
    "soft_dice_loss": losses.soft_dice_loss,
    "tversky_loss[softmax]": functools.partial(
        losses.tversky_loss, activation="softmax", alpha=0.3, batch=False),
    "dice_boundary_loss": lambda x, y: losses.dice_boundary_loss(
        x, y, _DIST, w_region=1.0, w_boundary=1.0),
}
# Under jit these give NaN for the example with bad labels.
NAN_UNDER_JIT = ("pixelwise_softmax_cross_entropy", "softmax_cross_entropy",
                 "softmax_cross_entropy[weights]", "hierarchical_cross_entropy",
                 "expected_cost", "expected_cost_cross_entropy",
                 "deep_supervision_loss")

BINARY_LOSSES = {
    "sigmoid_binary_cross_entropy": losses.sigmoid_binary_cross_entropy,
    "sigmoid_focal_loss": losses.sigmoid_focal_loss,
    "tversky_loss": functools.partial(losses.tversky_loss, batch=False),
    "soft_dice_loss[sigmoid]": functools.partial(
        losses.soft_dice_loss, activation="sigmoid"),
    "ag_bce_loss": lambda x, y: losses.ag_bce_loss(x, y, HARD),
    "adaptive_focal_loss": lambda x, y: losses.adaptive_focal_loss(
        x, y, HARD, HARD, per_example=True),
}


class CheckClassIndicesTest(chex.TestCase):

  @parameterized.parameters(np.asarray, jnp.asarray)
  def test_in_range_passes(self, to_array):
    _checks.check_class_indices(to_array(CLEAN), C)
    _checks.check_class_indices(to_array(CLEAN.astype(np.float32)), C)
    _checks.check_class_indices(to_array(CLEAN.astype(np.uint8)), C)
    _checks.check_class_indices(to_array(CLEAN > 0), 2)
    _checks.check_class_indices(to_array(np.zeros((0, 3), np.int32)), 2)

  @parameterized.parameters(np.asarray, jnp.asarray)
  def test_out_of_range_names_values_and_range(self, to_array):
    with self.assertRaisesRegex(
        ValueError,
        r"^labels must be class indices in \[0, 3\) \(0\.\.2\); got values "
        r"outside that range: -1, 3 \(2 of 8 positions\)\.$"):
      _checks.check_class_indices(to_array(LABELS), C)

  def test_long_list_is_truncated(self):
    with self.assertRaisesRegex(
        ValueError, r"range: 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 \.\.\. \(18 of 20"):
      _checks.check_class_indices(np.arange(20), 2, name="y")

  def test_name_and_what_in_message(self):
    with self.assertRaisesRegex(ValueError, r"^mask must be binary mask"):
      _checks.check_class_indices(np.array([2]), 2, name="mask",
                                  what="binary mask values")

  def test_nan_is_out_of_range(self):
    with self.assertRaisesRegex(ValueError, "nan"):
      _checks.check_class_indices(jnp.array([0.0, jnp.nan]), C)

  def test_bool_with_one_class_is_checked(self):
    with self.assertRaisesRegex(ValueError, r"\[0, 1\)"):
      _checks.check_class_indices(np.array([False, True]), 1)

  def test_traced_labels_are_not_checked(self):
    # Under jit / vmap the values are unknown: no error, no staged work.
    checked = lambda y: (_checks.check_class_indices(y, C), y)[1]
    np.testing.assert_array_equal(jax.jit(checked)(LABELS), LABELS)
    np.testing.assert_array_equal(jax.vmap(checked)(LABELS), LABELS)
    jaxpr = jax.make_jaxpr(checked)(LABELS)
    self.assertEmpty(jaxpr.eqns)

  def test_concrete_labels_closed_over_are_checked_at_trace_time(self):
    # A jax.Array closed over stays concrete under jit (a NumPy constant is
    # turned into a tracer by jnp.asarray and is not checked).
    labels = jnp.asarray(LABELS)
    fn = lambda x: losses.softmax_cross_entropy(x, labels)
    with self.assertRaisesRegex(ValueError, r"-1, 3"):
      jax.jit(fn)(LOGITS)
    clean = jax.jit(lambda x: losses.softmax_cross_entropy(x, CLEAN))(LOGITS)
    self.assertTrue(np.all(np.isfinite(clean)))


class CheckBinaryMaskTest(chex.TestCase):

  def test_integer_values_other_than_zero_one_raise(self):
    with self.assertRaisesRegex(
        ValueError,
        r"^labels must be binary mask values in \[0, 2\) \(0\.\.1\); got "
        r"values outside that range: 255 \(2 of 8 positions\)\.$"):
      _checks.check_binary_mask(jnp.asarray(MASK))

  def test_float_bool_and_traced_pass(self):
    _checks.check_binary_mask(np.array([0.0, 0.3, 1.0]))  # Soft targets.
    with self.assertRaisesRegex(ValueError, r"\[0, 1\]; got 2 "):  # Soft, but not in [0, 1].
      _checks.check_binary_mask(np.array([2.0]))
    _checks.check_binary_mask(np.array([True, False]))
    _checks.check_binary_mask(np.array([0, 1], np.uint8))
    jax.jit(lambda y: (_checks.check_binary_mask(y), y)[1])(MASK)


class LossesCheckLabelsTest(chex.TestCase):
  """Every loss that takes labels: eager raises, jit returns the documented value."""

  @parameterized.named_parameters(*[(n, n) for n in CLASS_MAP_LOSSES])
  def test_class_map_eager_raises(self, name):
    fn = CLASS_MAP_LOSSES[name]
    with self.assertRaisesRegex(ValueError, r"\[0, 3\).*-1, 3"):
      fn(LOGITS, LABELS)
    with self.assertRaisesRegex(ValueError, r"\[0, 3\).*: 3 "):
      fn(LOGITS, jnp.asarray(np.maximum(LABELS, 0)))  # jax.Array input.
    self.assertTrue(np.all(np.isfinite(fn(LOGITS, CLEAN))))

  @parameterized.named_parameters(*[(n, n) for n in CLASS_MAP_LOSSES])
  def test_class_map_jitted_documented_value(self, name):
    fn = CLASS_MAP_LOSSES[name]
    got = np.asarray(jax.jit(fn)(LOGITS, LABELS))
    clean = np.asarray(fn(LOGITS, CLEAN))
    # The clean example is unaffected.
    np.testing.assert_allclose(got[0], clean[0], rtol=1e-6)
    if name in NAN_UNDER_JIT:
      self.assertTrue(np.isnan(got[1]), f"{name}: {got}")
      # A negative label alone is NaN as well (it must not wrap around).
      only_neg = np.where(LABELS >= C, 0, LABELS)
      self.assertTrue(np.isnan(np.asarray(jax.jit(fn)(LOGITS, only_neg))[1]))
    else:  # One-hot based: bad positions are all-zero target rows.
      zero_rows = np.asarray(fn(LOGITS, ZERO_ROWS))
      np.testing.assert_allclose(got, zero_rows, rtol=1e-6)
      self.assertTrue(np.all(np.isfinite(got)))

  def test_pixelwise_cross_entropy_nan_only_at_bad_positions(self):
    got = np.asarray(jax.jit(losses.pixelwise_softmax_cross_entropy)(
        LOGITS, LABELS))
    np.testing.assert_array_equal(np.isnan(got), BAD)

  @parameterized.named_parameters(*[(n, n) for n in BINARY_LOSSES])
  def test_binary_eager_raises(self, name):
    fn = BINARY_LOSSES[name]
    with self.assertRaisesRegex(ValueError, r"binary mask values.*: 255"):
      fn(LOGITS1, MASK)
    with self.assertRaisesRegex(ValueError, r"binary mask values.*: 255"):
      fn(LOGITS1, jnp.asarray(MASK)[..., None])  # With the channel axis.
    self.assertTrue(np.all(np.isfinite(fn(LOGITS1, np.minimum(MASK, 1)))))

  @parameterized.named_parameters(*[(n, n) for n in BINARY_LOSSES])
  def test_binary_jitted_uses_values_as_given(self, name):
    fn = BINARY_LOSSES[name]
    got = np.asarray(jax.jit(fn)(LOGITS1, MASK))
    as_float = np.asarray(jax.jit(fn)(LOGITS1, MASK.astype(np.float32)))
    np.testing.assert_allclose(got, as_float, rtol=1e-6, equal_nan=True)
    clean = np.asarray(fn(LOGITS1, np.minimum(MASK, 1)))
    np.testing.assert_allclose(got[0], clean[0], rtol=1e-6)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.parameters("softmax_cross_entropy", "soft_dice_loss")
  def test_variants(self, name):
    fn = self.variant(CLASS_MAP_LOSSES[name])
    if self.variant.type == chex.ChexVariantType.WITHOUT_JIT:
      with self.assertRaisesRegex(ValueError, r"\[0, 3\).*-1, 3"):
        fn(LOGITS, LABELS)
    else:
      got = np.asarray(fn(LOGITS, LABELS))
      if name in NAN_UNDER_JIT:
        np.testing.assert_array_equal(np.isnan(got), [False, True])
      else:
        np.testing.assert_allclose(
            got, CLASS_MAP_LOSSES[name](LOGITS, ZERO_ROWS), rtol=1e-6)

  def test_integer_one_hot_targets_are_checked(self):
    onehot = np.eye(C, dtype=np.int32)[CLEAN]
    onehot[0, 0, 0, 0] = 2
    for fn in (losses.soft_dice_loss, losses.softmax_focal_loss):
      with self.assertRaisesRegex(ValueError, "binary mask values"):
        fn(LOGITS, onehot)
