"""Tests of the training loop: data parallelism, resuming, selection, failure modes."""

import jax
import numpy as np
import optax
import pytest

from jaxseg.data.pipeline import Volume, data_mesh, patch_batches
from jaxseg.losses.hierarchical import hierarchical_cross_entropy
from jaxseg.hierarchy import PAPER_PENALTY_MATRIX
from jaxseg.models.unet2d import UNet2D, UNet2DConfig
from jaxseg.train.loop import NonFiniteLossError, TrainConfig, Trainer


def _volumes():
  rng = np.random.default_rng(0)
  out = []
  for i in range(2):
    label = np.zeros((16, 16, 4), np.uint8)
    label[4:10, 5:12] = 1 + i
    label[10:13, 2:6] = 4
    image = (label * 0.5 + rng.normal(size=label.shape) * 0.3).astype(np.float32)
    out.append(Volume(image=image, label=label, spacing=(1.0, 1.0, 1.0), case_id=str(i)))
  return out


VOLUMES = _volumes()
MODEL = UNet2D(UNet2DConfig.hierarchical(width=0.0625))


def loss_fn(logits, batch, params):
  return hierarchical_cross_entropy(logits, batch["label"], penalty=PAPER_PENALTY_MATRIX,
                                    alpha=params["alpha"]) * params.get("scale", 1.0)


TRAINER = Trainer(MODEL, optax.adam(1e-3), loss_fn)  # shared: compiled once for the module


def batches(epoch):
  return patch_batches(VOLUMES, batch_size=4, patch_shape=(16, 16), foreground_prob=0.5, seed=1,
                       epoch=epoch)


def _fit(trainer, epochs, *, metrics=None, workdir=None, resume=False, patience=None,
         loss_params=None):
  metrics = iter(metrics) if metrics is not None else None
  evaluate = (lambda s: {"dice": next(metrics)}) if metrics else (lambda s: {"dice": 0.0})
  state = trainer.init(jax.random.key(0), next(iter(batches(0))))
  return trainer.fit(state, batches=batches, evaluate=evaluate,
                     loss_params=loss_params or {"alpha": 1.0},
                     config=TrainConfig(num_epochs=epochs, progress=False, patience=patience),
                     workdir=workdir, resume=resume, log=lambda _: None)


def _max_diff(a, b):
  return max(jax.tree.leaves(jax.tree.map(lambda x, y: float(np.abs(np.asarray(x) - np.asarray(y)).max()), a, b)))


def test_one_and_four_devices_give_the_same_trajectory():
  results = {}
  assert TRAINER.mesh.devices.size == 4
  results[4] = _fit(TRAINER, 3)
  results[1] = _fit(Trainer(MODEL, optax.adam(1e-3), loss_fn, mesh=data_mesh(jax.devices()[:1])),
                    3)
  losses = {n: [h["train_loss"] for h in r.history] for n, r in results.items()}
  np.testing.assert_allclose(losses[1], losses[4], atol=1e-5)
  assert losses[1][0] != losses[1][-1]  # it did train
  assert _max_diff(results[1].state.params, results[4].state.params) < 1e-5


def test_resume_after_interruption_matches_uninterrupted_run(tmp_path):
  trainer = TRAINER
  full = _fit(trainer, 3, metrics=[0.1, 0.3, 0.2], workdir=tmp_path / "full")
  _fit(trainer, 2, metrics=[0.1, 0.3], workdir=tmp_path / "cut")  # "killed" after epoch 2
  resumed = _fit(trainer, 3, metrics=[0.2], workdir=tmp_path / "cut", resume=True)
  assert _max_diff(full.state.params, resumed.state.params) == 0.0
  assert [h["epoch"] for h in resumed.history] == [0, 1, 2]
  assert resumed.best_epoch == full.best_epoch == 1
  assert _max_diff(full.best_state.params, resumed.best_state.params) == 0.0
  lines = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 3


def test_best_state_is_the_best_epoch_and_early_stopping():
  trainer = TRAINER
  result = _fit(trainer, 6, metrics=[0.2, 0.5, 0.4, 0.3, 0.1, 0.0], patience=2)
  assert result.best_epoch == 1 and result.best_metric == 0.5
  assert len(result.history) == 4  # stopped after two epochs without improvement
  assert _max_diff(result.best_state.params, result.state.params) > 0


def test_non_finite_loss_names_the_step_and_keeps_the_last_checkpoint(tmp_path):
  trainer = TRAINER
  _fit(trainer, 1, workdir=tmp_path)
  with pytest.raises(NonFiniteLossError, match=r"step 1 \(epoch 1\)"):
    _fit(trainer, 2, workdir=tmp_path, loss_params={"alpha": 1.0, "scale": np.nan})
  assert (tmp_path / "checkpoints" / "latest").exists()


def test_evaluate_must_return_the_selection_metric():
  trainer = TRAINER
  state = trainer.init(jax.random.key(0), next(iter(batches(0))))
  with pytest.raises(KeyError, match="dice"):
    trainer.fit(state, batches=batches, evaluate=lambda s: {"loss": 1.0},
                loss_params={"alpha": 0.0}, config=TrainConfig(num_epochs=1, progress=False),
                log=lambda _: None)


def test_sweep_matches_configs_trained_alone(tmp_path):
  alphas = np.array([0.0, 1.0, 10.0], np.float32)
  sweep = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=len(alphas))
  results = _fit(sweep, 2, loss_params={"alpha": alphas}, workdir=tmp_path / "sweep")
  assert len(results) == 3
  alone = TRAINER
  finals = []
  for alpha, result in zip(alphas, results):
    single = _fit(alone, 2, loss_params={"alpha": float(alpha)})
    np.testing.assert_allclose([h["train_loss"] for h in result.history],
                               [h["train_loss"] for h in single.history], rtol=1e-5)
    assert _max_diff(result.state.params, single.state.params) < 1e-4
    finals.append(result.state.params)
  assert _max_diff(finals[0], finals[2]) > 1e-3  # the configurations really differ
  lines = (tmp_path / "sweep" / "metrics.jsonl").read_text().splitlines()
  assert len(lines) == 2 * 3


def test_sweep_rejects_loss_params_without_config_axis():
  sweep = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2)
  with pytest.raises(ValueError, match="leading axis of 2"):
    _fit(sweep, 1, loss_params={"alpha": 1.0})
