"""Tests for jaxseg.losses.registry (losses by name) and the shared float-label check."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg import losses

_RNG = np.random.default_rng(0)
_LOGITS2 = jnp.asarray(_RNG.normal(size=(2, 6, 5, 3)), jnp.float32)
_LABELS2 = jnp.asarray(_RNG.integers(0, 3, size=(2, 6, 5)), jnp.int32)
_LOGITS1 = jnp.asarray(_RNG.normal(size=(2, 6, 5, 1)), jnp.float32)
_LABELS1 = jnp.asarray(_RNG.integers(0, 2, size=(2, 6, 5)), jnp.int32)
_PENALTY = jnp.asarray(1.0 - np.eye(3))
_EXTRA = {"hierarchical_cross_entropy": {"penalty": _PENALTY, "alpha": 1.0},
          "expected_cost_cross_entropy": {"cost": _PENALTY, "lam": 1.0}}
_BINARY = {"binary_cross_entropy", "sigmoid_focal", "tversky", "focal_tversky", "lovasz_hinge"}


def _inputs(name):
  return (_LOGITS1, _LABELS1) if name in _BINARY else (_LOGITS2, _LABELS2)


def test_names_are_snake_case_and_cover_the_new_losses():
  names = losses.names()
  for expected in ("generalized_dice", "dice_ce", "dice_focal", "focal_tversky", "soft_cldice",
                   "dice_cldice", "lovasz_softmax", "lovasz_hinge", "dice", "tversky"):
    assert expected in names
  assert all(n == n.lower() and n.isidentifier() for n in names)
  assert losses.aliases()["DiceCELoss"] == "dice_ce"


@pytest.mark.parametrize("name", losses.names())
def test_every_registered_loss_is_per_example_finite_and_differentiable(name):
  logits, labels = _inputs(name)
  fn = losses.get(name, **_EXTRA.get(name, {}))
  value = jax.jit(fn)(logits, labels)
  chex.assert_shape(value, (2,))
  chex.assert_type(value, jnp.float32)
  chex.assert_tree_all_finite(value)
  grad = jax.grad(lambda x: jnp.mean(fn(x, labels)))(logits)
  chex.assert_tree_all_finite(grad)
  # bf16 logits are computed in float32.
  low = fn(logits.astype(jnp.bfloat16), labels)
  chex.assert_type(low, jnp.float32)


def test_get_binds_hyperparameters_and_matches_the_function():
  fn = losses.get("dice_ce", lambda_ce=0.5, include_background=False)
  np.testing.assert_array_equal(
      fn(_LOGITS2, _LABELS2),
      losses.dice_ce_loss(_LOGITS2, _LABELS2, lambda_ce=0.5, include_background=False))
  # MONAI alias, and a call-time override (what a sweep passes as a traced value).
  tv = losses.get("TverskyLoss")
  np.testing.assert_allclose(tv(_LOGITS1, _LABELS1, alpha=0.7),
                             losses.tversky_loss(_LOGITS1, _LABELS1, alpha=0.7), rtol=1e-6)
  swept = jax.vmap(lambda a: tv(_LOGITS1, _LABELS1, alpha=a))(jnp.array([0.3, 0.7]))
  np.testing.assert_allclose(swept[1], losses.tversky_loss(_LOGITS1, _LABELS1, alpha=0.7),
                             rtol=1e-6)


def test_unknown_names_and_hyperparameters_list_what_exists():
  with pytest.raises(ValueError, match=r"unknown loss 'dice_cee'.*Did you mean 'dice_ce'.*"
                                       r"Registered: .*generalized_dice"):
    losses.get("dice_cee")
  with pytest.raises(ValueError, match=r"no hyperparameter 'gama'; it takes: .*gamma"):
    losses.get("dice_focal", gama=2.0)
  with pytest.raises(ValueError, match="already registered"):
    losses.register("dice", losses.soft_dice_loss)
  with pytest.raises(ValueError, match="snake case"):
    losses.register("MyLoss", losses.soft_dice_loss)


# Float class maps: every loss that reads class indices rejects a non-integer value (REFERENCE
# issue: 1.5 after linear resampling used to be truncated, zeroed or read as a soft target).
_FRACTIONAL = [n for n in losses.names() if n not in _BINARY]


@pytest.mark.parametrize("name", _FRACTIONAL)
def test_float_class_maps_with_fractions_are_rejected(name):
  labels = np.asarray(_LABELS2, np.float32).copy()
  labels[0, 0, 0] = 1.5
  fn = losses.get(name, **_EXTRA.get(name, {}))
  with pytest.raises(ValueError, match=r"non-integer values: 1\.5 .*nearest-neighbour"):
    fn(_LOGITS2, labels)
  with pytest.raises(ValueError, match="non-integer"):  # concrete jax array closed over by jit
    closed = jnp.asarray(labels)
    jax.jit(lambda x: fn(x, closed))(_LOGITS2)
  # Whole numbers in a float array are class indices: same value as the integer map.
  np.testing.assert_allclose(fn(_LOGITS2, np.asarray(_LABELS2, np.float32)),
                             fn(_LOGITS2, _LABELS2), rtol=1e-6)


@pytest.mark.parametrize("name", sorted(_BINARY))
def test_float_binary_masks_outside_unit_interval_are_rejected(name):
  labels = np.asarray(_LABELS1, np.float32).copy()
  labels[0, 0, 0] = 1.5
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    losses.get(name)(_LOGITS1, labels)


def test_under_jit_with_traced_labels_the_check_is_skipped():
  labels = np.asarray(_LABELS2, np.float32)
  value = jax.jit(losses.softmax_cross_entropy)(_LOGITS2, labels)
  chex.assert_shape(value, (2,))
