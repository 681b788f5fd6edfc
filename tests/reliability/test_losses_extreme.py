"""Every loss of ``jaxseg.losses`` is finite, with finite gradients, at extreme inputs.

One parametrised test over every loss exported by :mod:`jaxseg.losses` (a new export without a case
here fails :func:`test_every_exported_loss_is_covered`), each under the settings the studies use.
Each loss is evaluated, together with its gradient with respect to the logits, on six batches:

* logits of +-1e4 with random signs (random labels);
* confidently right (+1e4 on the true class, -1e4 elsewhere) and confidently wrong (+1e4 on another
  class): the saturated ends of every sigmoid / softmax, where ``log(sigmoid(x))`` style code
  overflows;
* all-background batches (no foreground in any example, so region losses have empty targets and
  batch-pooled counts are zero): with logits of zero, of -1e4 everywhere on the foreground (an empty
  prediction: every overlap count zero) and of +1e4 on the foreground (all wrong).

Per-example values must have shape ``(batch,)`` (``(batch, classes)`` is not used here), and the
value and every gradient entry must be finite.
"""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
from absl.testing import parameterized

from jaxseg import hierarchy, losses
from jaxseg.data.distance import signed_distance_maps

BIG = 1e4
SHAPE = (2, 6, 5)  # (batch, height, width)
NUM_CLASSES = 3

# Exports of jaxseg.losses that are not losses (helpers, schedules, weights).
NOT_LOSSES = frozenset({"hard_region_mask", "kervadec_schedule", "nnunet_weights",
                        "downsample_labels", "soft_skeleton", "get", "names", "aliases",
                        "register"})


# -- inputs -------------------------------------------------------------------------------------


def _scenarios(channels: int):
  """``{name: (logits (B, H, W, channels) float32, labels (B, H, W) int32)}``."""
  rng = np.random.default_rng(0)
  classes = max(channels, 2)
  labels = rng.integers(0, classes, SHAPE).astype(np.int32)
  labels[:, 0, 0] = np.arange(SHAPE[0]) % classes  # every example has some of each class
  labels[:, -1, -1] = 1
  background = np.zeros(SHAPE, np.int32)

  def one_hot_logits(target):
    if channels == 1:
      return np.where(target[..., None] > 0, BIG, -BIG).astype(np.float32)
    return np.where(np.eye(channels, dtype=bool)[target], BIG, -BIG).astype(np.float32)

  wrong = (labels + 1) % classes
  foreground_on = np.full(SHAPE + (channels,), BIG, np.float32)
  if channels > 1:
    foreground_on[..., 0] = -BIG
  return {
      "random_signs": (rng.choice([-BIG, BIG], SHAPE + (channels,)).astype(np.float32), labels),
      "confidently_right": (one_hot_logits(labels), labels),
      "confidently_wrong": (one_hot_logits(wrong), labels),
      "background_zero_logits": (np.zeros(SHAPE + (channels,), np.float32), background),
      "background_empty_prediction": (one_hot_logits(background), background),
      "background_all_foreground": (foreground_on, background),
  }


def _distance_maps(labels: np.ndarray) -> np.ndarray:
  """``(B, H, W, C - 1)`` signed distance maps (mm, 0.5 mm pixels) of the foreground classes."""
  return np.stack([signed_distance_maps(l, NUM_CLASSES, spacing=0.5) for l in labels])


def _hard_mask(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Expert XOR shifted "non-expert" mask, dilated (MicroSegNet), and the raw disagreement."""
  expert = labels > 0
  non_expert = np.roll(expert, 1, axis=2)
  hard = np.asarray(losses.hard_region_mask(expert, non_expert, kernel_size=3))
  return hard.astype(np.float32), np.logical_xor(expert, non_expert).astype(np.float32)


# -- cases: (channels, fn(logits, labels, *extras) -> (batch,), extras(labels) -> tuple) --------

_D = np.asarray(hierarchy.PAPER_PENALTY_MATRIX, np.float32)[:NUM_CLASSES, :NUM_CLASSES] + 0.5
np.fill_diagonal(_D, 0.0)
_ALPHA = np.asarray([0.05, 0.30, 0.65], np.float32)


def _binary(labels):
  return (labels > 0).astype(np.float32)


def _mu_logvar(logits):
  """Latent Gaussians from logits: means at +-1e4, log-variances at +-30 (exp overflows beyond
  ~88 in float32 by definition, so log-variances are bounded by the model's outputs)."""
  return logits, jnp.tanh(logits) * 30.0


def _deep_supervision(logits, labels):
  # Heads (6, 5) and (3, 5): the labels are max-pooled by factors (1, 1) and (2, 1).
  return losses.deep_supervision_loss((logits, logits[:, ::2]), labels,
                                      losses.softmax_cross_entropy)


CASES = {
    "softmax_cross_entropy": (NUM_CLASSES, lambda x, y: losses.softmax_cross_entropy(x, y), None),
    "softmax_cross_entropy[balanced]": (
        NUM_CLASSES, lambda x, y: losses.softmax_cross_entropy(x, y, class_weights=_ALPHA), None),
    "pixelwise_softmax_cross_entropy": (
        NUM_CLASSES,
        lambda x, y: losses.pixelwise_softmax_cross_entropy(x, y).mean(axis=(1, 2)), None),
    "sigmoid_binary_cross_entropy": (
        1, lambda x, y: losses.sigmoid_binary_cross_entropy(x, _binary(y)), None),
    "sigmoid_binary_cross_entropy[pos_weight]": (
        1, lambda x, y: losses.sigmoid_binary_cross_entropy(x, _binary(y), pos_weight=3.0), None),
    "sigmoid_focal_loss": (1, lambda x, y: losses.sigmoid_focal_loss(x, _binary(y)), None),
    "sigmoid_focal_loss[gamma=0.5]": (
        1, lambda x, y: losses.sigmoid_focal_loss(x, _binary(y), gamma=0.5, alpha=None), None),
    "softmax_focal_loss": (
        NUM_CLASSES, lambda x, y: losses.softmax_focal_loss(x, y, alpha=_ALPHA, gamma=2.0), None),
    "softmax_focal_loss[clipped]": (
        NUM_CLASSES,
        lambda x, y: losses.softmax_focal_loss(x, y, alpha=_ALPHA, gamma=2.0, clip_eps=1e-7),
        None),
    "hierarchical_cross_entropy": (
        NUM_CLASSES, lambda x, y: losses.hierarchical_cross_entropy(x, y, penalty=_D, alpha=1.0),
        None),
    "expected_cost": (NUM_CLASSES, lambda x, y: losses.expected_cost(x, y, cost=_D), None),
    "expected_cost_cross_entropy": (
        NUM_CLASSES, lambda x, y: losses.expected_cost_cross_entropy(x, y, cost=_D, lam=10.0),
        None),
    "soft_dice_loss": (NUM_CLASSES, lambda x, y: losses.soft_dice_loss(x, y), None),
    "soft_dice_loss[saha]": (
        NUM_CLASSES,
        lambda x, y: losses.soft_dice_loss(x, y, include_background=False, smooth_nr=0.0,
                                           smooth_dr=1e-5), None),
    "soft_dice_loss[batch]": (
        NUM_CLASSES, lambda x, y: losses.soft_dice_loss(x, y, batch=True), None),
    "tversky_loss": (1, lambda x, y: losses.tversky_loss(x, _binary(y), alpha=0.75), None),
    "tversky_loss[no_smooth]": (
        1, lambda x, y: losses.tversky_loss(x, _binary(y), alpha=0.3, smooth=1e-6, batch=False),
        None),
    "generalized_dice_loss": (NUM_CLASSES, lambda x, y: losses.generalized_dice_loss(x, y), None),
    "generalized_dice_loss[batch]": (
        NUM_CLASSES, lambda x, y: losses.generalized_dice_loss(x, y, batch=True,
                                                               include_background=False), None),
    "focal_tversky_loss": (1, lambda x, y: losses.focal_tversky_loss(x, _binary(y)), None),
    "dice_ce_loss": (
        NUM_CLASSES, lambda x, y: losses.dice_ce_loss(x, y, include_background=False), None),
    "dice_focal_loss": (NUM_CLASSES, lambda x, y: losses.dice_focal_loss(x, y), None),
    "dice_focal_loss[sigmoid]": (
        1, lambda x, y: losses.dice_focal_loss(x, _binary(y), activation="sigmoid"), None),
    "soft_cldice_loss": (NUM_CLASSES, lambda x, y: losses.soft_cldice_loss(x, y), None),
    "dice_cldice_loss": (
        1, lambda x, y: losses.dice_cldice_loss(x, _binary(y), activation="sigmoid",
                                                include_background=True), None),
    "lovasz_softmax_loss": (NUM_CLASSES, lambda x, y: losses.lovasz_softmax_loss(x, y), None),
    "lovasz_hinge_loss": (1, lambda x, y: losses.lovasz_hinge_loss(x, _binary(y)), None),
    "boundary_loss": (NUM_CLASSES, lambda x, y, d: losses.boundary_loss(x, d),
                      lambda y: (_distance_maps(y),)),
    "dice_boundary_loss": (
        NUM_CLASSES,
        lambda x, y, d: losses.dice_boundary_loss(x, y, d, w_region=1.0, w_boundary=1.0,
                                                  smooth_nr=0.0, smooth_dr=1e-5),
        lambda y: (_distance_maps(y),)),
    "ag_bce_loss": (1, lambda x, y, h, _: losses.ag_bce_loss(x, _binary(y), h, hard_weight=4.0),
                    _hard_mask),
    "adaptive_focal_loss": (
        1, lambda x, y, h, d: losses.adaptive_focal_loss(x, _binary(y), h, d), _hard_mask),
    "adaptive_focal_loss[per_example]": (
        1, lambda x, y, h, d: losses.adaptive_focal_loss(x, _binary(y), h, d, per_example=True),
        _hard_mask),
    "deep_supervision_loss": (NUM_CLASSES, _deep_supervision, None),
    "kl_diagonal_gaussians": (
        NUM_CLASSES,
        lambda x, y: losses.kl_diagonal_gaussians(*_mu_logvar(x), *_mu_logvar(-x[:, ::-1])),
        None),
    "elbo_loss": (
        NUM_CLASSES,
        lambda x, y: losses.elbo_loss(
            losses.softmax_cross_entropy(x, y),
            losses.kl_diagonal_gaussians(*_mu_logvar(x), jnp.zeros_like(x), jnp.zeros_like(x)),
            beta=10.0), None),
}


def test_every_exported_loss_is_covered():
  covered = {name.split("[")[0] for name in CASES}
  exported = set(losses.__all__)
  assert covered <= exported, sorted(covered - exported)
  assert exported - NOT_LOSSES == covered, sorted(exported - NOT_LOSSES - covered)


class ExtremeInputsTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(*[(name, name) for name in CASES])
  def test_finite_value_and_gradient(self, name):
    channels, fn, extras_fn = CASES[name]

    @self.variant
    def value_and_grad(logits, labels, *extras):
      def total(x):
        per_example = fn(x, labels, *extras)
        return jnp.sum(per_example), per_example
      return jax.value_and_grad(total, has_aux=True)(logits)

    for scenario, (logits, labels) in _scenarios(channels).items():
      extras = extras_fn(labels) if extras_fn is not None else ()
      (_, per_example), grad = value_and_grad(jnp.asarray(logits), jnp.asarray(labels), *extras)
      where = f"{name} on {scenario}"
      self.assertEqual(per_example.shape, (SHAPE[0],), where)
      self.assertTrue(np.all(np.isfinite(np.asarray(per_example))),
                      f"{where}: non-finite value {per_example}")
      self.assertEqual(grad.shape, logits.shape, where)
      bad = int(np.sum(~np.isfinite(np.asarray(grad))))
      self.assertEqual(bad, 0, f"{where}: {bad} non-finite gradient entries")

  def test_confident_answers_reach_the_extreme_values(self):
    """The scenarios really are extreme: CE is ~0 when right and ~2e4 (a 1e4 margin per wrong
    class) when wrong -- computed in closed form, not clipped or NaN-masked."""
    right_logits, labels = _scenarios(NUM_CLASSES)["confidently_right"]
    wrong_logits, _ = _scenarios(NUM_CLASSES)["confidently_wrong"]
    right = np.asarray(losses.softmax_cross_entropy(right_logits, labels))
    wrong = np.asarray(losses.softmax_cross_entropy(wrong_logits, labels))
    np.testing.assert_allclose(right, 0.0, atol=1e-6)
    np.testing.assert_allclose(wrong, 2 * BIG, rtol=1e-6)
    binary_right, binary_labels = _scenarios(1)["confidently_right"]
    bce_wrong = np.asarray(losses.sigmoid_binary_cross_entropy(-binary_right,
                                                               _binary(binary_labels)))
    np.testing.assert_allclose(bce_wrong, BIG, rtol=1e-6)
