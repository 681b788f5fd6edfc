"""The parameter average (``Trainer(ema_decay=...)``): against a float64 reference of the rule,
the raw trajectory unchanged, evaluation and selection on the average, checkpoints, sweeps."""

import jax
import numpy as np
import optax
import pytest

from jaxseg.data.pipeline import Volume, patch_batches
from jaxseg.losses.cross_entropy import softmax_cross_entropy
from jaxseg.models.unet2d import UNet2D, UNet2DConfig
from jaxseg.train.checkpoint import Checkpointer
from jaxseg.train.loop import TrainConfig, Trainer, ema_decay_at
from jaxseg.train.state import create_train_state

DECAY = 0.9


def _volumes():
  rng = np.random.default_rng(3)
  out = []
  for i in range(2):
    label = np.zeros((16, 16, 4), np.uint8)
    label[3:11, 4 + i:12] = 1
    image = (label + rng.normal(size=label.shape) * 0.3).astype(np.float32)
    out.append(Volume(image=image, label=label, spacing=(1.0, 1.0, 1.0), case_id=str(i)))
  return out


VOLUMES = _volumes()
MODEL = UNet2D(UNet2DConfig.hierarchical(width=0.0625, num_classes=2))


def loss_fn(logits, batch, params):
  return softmax_cross_entropy(logits, batch["label"]) * params["scale"]


def batches(epoch):
  return patch_batches(VOLUMES, batch_size=4, patch_shape=(16, 16), foreground_prob=0.5, seed=2,
                       epoch=epoch)


BATCHES = [b for e in range(2) for b in batches(e)]
PLAIN = Trainer(MODEL, optax.adam(1e-2), loss_fn)
AVERAGED = Trainer(MODEL, optax.adam(1e-2), loss_fn, ema_decay=DECAY)


def _host(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(tree))


def test_decay_follows_the_num_updates_rule_by_hand():
  got = [float(ema_decay_at(0.99, s)) for s in (0, 1, 90, 10_000)]
  np.testing.assert_allclose(got, [1 / 10, 2 / 11, 0.91, 0.99], rtol=1e-6)


def test_average_matches_a_float64_reference_and_leaves_training_unchanged():
  plain = PLAIN.init(jax.random.key(0), BATCHES[0])
  state = AVERAGED.init(jax.random.key(0), BATCHES[0])
  assert plain.ema_params is None
  average = _host(state.ema_params)
  np.testing.assert_array_equal(jax.tree.leaves(average)[0],
                                jax.tree.leaves(_host(state.params))[0])
  key = jax.random.key(1)
  for step, batch in enumerate(BATCHES[:6]):
    plain, _ = PLAIN.step(plain, batch, {"scale": 1.0}, key)
    state, _ = AVERAGED.step(state, batch, {"scale": 1.0}, key)
    d = min(DECAY, (1 + step) / (10 + step))
    average = jax.tree.map(lambda a, p, d=d: d * a + (1 - d) * p, average, _host(state.params))
  # The optimiser's trajectory is the plain one; the average is the rule applied to it.
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  for a, b in zip(jax.tree.leaves(average), jax.tree.leaves(_host(state.ema_params))):
    np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)
  moved = max(float(np.abs(np.asarray(p) - np.asarray(e)).max())
              for p, e in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.ema_params)))
  assert moved > 1e-4  # the average lags the parameters
  assert state.variables["params"] is state.ema_params
  assert plain.variables["params"] is plain.params


def test_validation_and_the_best_state_use_the_average(tmp_path):
  seen = []

  def evaluate(s):
    seen.append(_host(s.variables["params"]))
    return {"dice": -len(seen)}  # the first epoch is the best

  state = AVERAGED.init(jax.random.key(0), BATCHES[0])
  result = AVERAGED.fit(state, batches=batches, evaluate=evaluate, loss_params={"scale": 1.0},
                        config=TrainConfig(num_epochs=2, progress=False), workdir=tmp_path,
                        log=lambda _: None)
  assert result.best_epoch == 0
  for a, b in zip(jax.tree.leaves(seen[-1]), jax.tree.leaves(_host(result.state.ema_params))):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(seen[0]), jax.tree.leaves(_host(result.best_state.ema_params))):
    np.testing.assert_array_equal(a, b)
  # The average goes through a checkpoint and back unchanged.
  restored, meta = Checkpointer(tmp_path / "checkpoints" / "latest").restore(
      jax.device_get(result.state))
  assert meta["epoch"] == 1
  for a, b in zip(jax.tree.leaves(restored.ema_params), jax.tree.leaves(result.state.ema_params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_configuration_averaged_in_a_sweep_matches_it_trained_alone():
  sweep = Trainer(MODEL, optax.adam(1e-2), loss_fn, ema_decay=DECAY, num_configs=2)
  stacked = sweep.init(jax.random.key(0), BATCHES[0])
  alone = AVERAGED.init(jax.random.key(0), BATCHES[0])
  key = jax.random.key(1)
  for batch in BATCHES[:3]:
    stacked, _ = sweep.step(stacked, batch, {"scale": np.array([1.0, 2.0], np.float32)}, key)
    alone, _ = AVERAGED.step(alone, batch, {"scale": 2.0}, key)
  second = sweep.unstack(jax.device_get(stacked))[1]
  for a, b in zip(jax.tree.leaves(second.ema_params), jax.tree.leaves(alone.ema_params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_bad_decay_is_refused_with_the_range(decay):
  with pytest.raises(ValueError, match=r"ema_decay must lie in \(0, 1\)"):
    Trainer(MODEL, optax.adam(1e-2), loss_fn, ema_decay=decay)


def test_a_state_without_an_average_is_refused_by_an_averaging_trainer():
  inputs = (np.asarray(BATCHES[0]["image"][:1]),)
  state = create_train_state(MODEL, optax.adam(1e-2), inputs, jax.random.key(0))
  with pytest.raises(ValueError, match="create the state with Trainer.init"):
    AVERAGED.step(state, BATCHES[0], {"scale": 1.0}, jax.random.key(1))
