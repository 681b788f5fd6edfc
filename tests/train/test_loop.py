"""Tests of the training loop: data parallelism, resuming, selection, failure modes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxseg.data.pipeline import Volume, data_mesh, patch_batches
from jaxseg.losses.hierarchical import hierarchical_cross_entropy
from jaxseg.hierarchy import PAPER_PENALTY_MATRIX
from jaxseg.models.unet2d import UNet2D, UNet2DConfig
from jaxseg.train.checkpoint import Checkpointer
from jaxseg.train.loop import (SWEEP_IMPLS, NonFiniteLossError, TrainConfig, Trainer,
                               choose_sweep_impl, count_primitive)


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
         loss_params=None, checkpoint_every=1):
  metrics = iter(metrics) if metrics is not None else None
  evaluate = (lambda s: {"dice": next(metrics)}) if metrics else (lambda s: {"dice": 0.0})
  state = trainer.init(jax.random.key(0), next(iter(batches(0))))
  return trainer.fit(state, batches=batches, evaluate=evaluate,
                     loss_params=loss_params or {"alpha": 1.0},
                     config=TrainConfig(num_epochs=epochs, progress=False, patience=patience,
                                        checkpoint_every=checkpoint_every),
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


def test_checkpoint_every_saves_less_often_and_a_killed_run_resumes_from_the_last_save(
    tmp_path):
  metrics = [0.1, 0.3, 0.2, 0.5, 0.4, 0.45]
  full = _fit(TRAINER, 6, metrics=metrics, workdir=tmp_path / "full", checkpoint_every=4)
  # Saved after epochs 4 and 6 (the last one always); orbax keeps the newest.
  assert Checkpointer(tmp_path / "full" / "checkpoints" / "latest").latest_epoch() == 5
  assert Checkpointer(tmp_path / "full" / "checkpoints" / "best").latest_epoch() == 3

  def dies_in_epoch_6():
    yield from metrics[:5]
    raise RuntimeError("killed")

  with pytest.raises(RuntimeError, match="killed"):
    _fit(TRAINER, 6, metrics=dies_in_epoch_6(), workdir=tmp_path / "cut", checkpoint_every=4)
  # Only the state after epoch 4 (index 3) was saved; epoch 5 was lost with the run.
  assert Checkpointer(tmp_path / "cut" / "checkpoints" / "latest").latest_epoch() == 3
  assert Checkpointer(tmp_path / "cut" / "checkpoints" / "best").latest_epoch() == 3
  resumed = _fit(TRAINER, 6, metrics=metrics[4:], workdir=tmp_path / "cut", resume=True,
                 checkpoint_every=4)
  assert [h["epoch"] for h in resumed.history] == [0, 1, 2, 3, 4, 5]
  assert _max_diff(full.state.params, resumed.state.params) == 0.0
  assert resumed.best_epoch == full.best_epoch == 3
  assert _max_diff(full.best_state.params, resumed.best_state.params) == 0.0
  with pytest.raises(ValueError, match="checkpoint_every must be an integer >= 1"):
    _fit(TRAINER, 1, checkpoint_every=0)


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


@pytest.mark.parametrize("sweep_impl", SWEEP_IMPLS)
def test_sweep_matches_configs_trained_alone(tmp_path, sweep_impl):
  alphas = np.array([0.0, 1.0, 10.0], np.float32)
  sweep = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=len(alphas),
                  sweep_impl=sweep_impl)
  assert sweep.sweep_impl == sweep_impl
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


def test_sweep_impl_is_chosen_from_the_model_on_cpu_and_rejects_unknown_names():
  sample = next(iter(batches(0)))
  conv = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2)
  assert conv.sweep_impl is None  # chosen when the model's inputs are known
  conv.init(jax.random.key(0), sample)
  assert conv.sweep_impl == "unroll"  # 11 convolutions, which vmap would make grouped ones
  # The same U-Net with patch-matrix convolutions keeps one (its 1x1 head): still unrolled.
  # step chooses too, for a state that no init of this trainer made
  im2col = UNet2D(UNet2DConfig.hierarchical(width=0.0625, conv_impl="im2col"))
  trainer = Trainer(im2col, optax.adam(1e-3), loss_fn, num_configs=2)
  state = _stacked(Trainer(im2col, optax.adam(1e-3), loss_fn).init(jax.random.key(0), sample), 2)
  state, _ = trainer.step(trainer.place(jax.device_get(state)), sample,
                          {"alpha": np.ones(2, np.float32)}, jax.random.key(1))
  assert trainer.sweep_impl == "unroll" and int(state.step[0]) == 1
  # and so does fit: a model without convolutions is vmapped (batched matrix products, one
  # compilation)
  dense = Trainer(_PixelMLP(), optax.adam(1e-3), loss_fn, num_configs=2)
  state = _stacked(Trainer(_PixelMLP(), optax.adam(1e-3), loss_fn).init(jax.random.key(0),
                                                                        sample), 2)
  dense.fit(state, batches=batches, evaluate=lambda s: {"dice": 0.0},
            loss_params={"alpha": np.ones(2, np.float32)},
            config=TrainConfig(num_epochs=1, progress=False), log=lambda _: None)
  assert dense.sweep_impl == "vmap"
  with pytest.raises(ValueError, match="sweep_impl must be one of vmap, unroll"):
    Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2, sweep_impl="grouped")


def _stacked(state, k):
  return jax.tree.map(lambda x: jnp.stack([x] * k), state)


class _PixelMLP(nn.Module):
  """Per-pixel logits from a dense layer: a model without convolutions."""

  @nn.compact
  def __call__(self, x, train=False):
    return nn.Dense(9)(x)


@pytest.mark.parametrize("platform,convolutions,expected", [
    ("cpu", 0, "vmap"), ("cpu", 1, "unroll"), ("cpu", 19, "unroll"), ("gpu", 19, "vmap"),
    ("tpu", 0, "vmap")])
def test_choose_sweep_impl(platform, convolutions, expected):
  devices = [type("Device", (), {"platform": platform})()] * 2
  assert choose_sweep_impl(devices, convolutions) == expected


def test_count_primitive_sees_nested_jaxprs():
  w = jnp.ones((3, 3, 1, 2))
  conv = lambda x: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  x = jnp.ones((1, 8, 8, 1))
  nested = jax.jit(lambda x: conv(x) + jax.checkpoint(conv)(x))
  jaxpr = jax.make_jaxpr(lambda x: jax.grad(lambda x: jnp.sum(nested(x)))(x))(x)
  # two forward convolutions, each with an input-gradient convolution (the remat one recomputed)
  assert count_primitive(jaxpr, "conv_general_dilated") >= 4
  assert count_primitive(jax.make_jaxpr(nested)(x), "conv_general_dilated") == 2
  assert count_primitive(jax.make_jaxpr(jnp.sin)(x), "conv_general_dilated") == 0


def test_sweep_rejects_loss_params_without_config_axis():
  sweep = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2)
  with pytest.raises(ValueError, match="leading axis of 2"):
    _fit(sweep, 1, loss_params={"alpha": 1.0})


# ------------------------------------------------------------------------------------------
# A loop that does not wait on the host: losses fetched per interval, batches prefetched.
# ------------------------------------------------------------------------------------------


def six_batches(epoch):
  """Six steps per epoch (three epochs of :func:`batches`)."""
  return [b for e in range(3) for b in batches(3 * epoch + e)]


def _fit_with(trainer, epochs, **config):
  state = trainer.init(jax.random.key(0), next(iter(batches(0))))
  return trainer.fit(state, batches=six_batches, evaluate=lambda s: {"dice": 0.0},
                     loss_params={"alpha": 1.0},
                     config=TrainConfig(num_epochs=epochs, progress=False, **config),
                     log=lambda _: None)


def test_losses_are_fetched_once_per_interval_and_the_result_does_not_change(monkeypatch):
  """log_every=k: one device->host transfer per k steps (the rest at each epoch's end), the
  same parameters and epoch losses as fetching every step without prefetching."""
  from jaxseg.train import loop
  assert len(six_batches(0)) == 6
  calls = []
  real = loop._fetch
  monkeypatch.setattr(loop, "_fetch", lambda arrays: calls.append(len(arrays)) or real(arrays))
  every_step = _fit_with(TRAINER, 2, log_every=1, prefetch=0)
  assert calls == [1] * 12
  calls.clear()
  batched = _fit_with(TRAINER, 2, log_every=4, prefetch=2)
  assert calls == [4, 2, 4, 2]
  assert _max_diff(every_step.state.params, batched.state.params) == 0.0
  np.testing.assert_array_equal([h["train_loss"] for h in every_step.history],
                                [h["train_loss"] for h in batched.history])
  assert every_step.history[0]["step"] == 6 and batched.history[1]["step"] == 12


def test_non_finite_loss_is_reported_at_its_own_step_when_fetched_later(tmp_path):
  with pytest.raises(NonFiniteLossError, match=r"step 1 \(epoch 1\)"):
    state = TRAINER.init(jax.random.key(0), next(iter(batches(0))))
    TRAINER.fit(state, batches=batches, evaluate=lambda s: {"dice": 0.0},
                loss_params={"alpha": 1.0, "scale": np.nan},
                config=TrainConfig(num_epochs=1, progress=False, log_every=100),
                log=lambda _: None)
  with pytest.raises(ValueError, match="log_every"):
    _fit_with(TRAINER, 1, log_every=0)


def test_prefetch_to_mesh_keeps_order_places_batches_and_forwards_errors():
  from jaxseg.data.pipeline import prefetch_to_mesh
  mesh = data_mesh()
  host = [{"image": np.full((4, 2), i, np.float32)} for i in range(5)]
  for size in (0, 1, 2):
    out = list(prefetch_to_mesh(iter(host), mesh, size=size))
    assert [int(np.asarray(b["image"])[0, 0]) for b in out] == list(range(5))
    assert all(isinstance(b["image"], jax.Array) for b in out)
    assert out[0]["image"].sharding.spec == jax.sharding.PartitionSpec("data")

  def broken():
    yield host[0]
    raise RuntimeError("bad batch 1")

  got = []
  with pytest.raises(RuntimeError, match="bad batch 1"):
    for b in prefetch_to_mesh(broken(), mesh, size=2):
      got.append(b)
  assert len(got) == 1
  # Closing early stops the producer thread (it would otherwise block on a full queue).
  import threading
  endless = ({"image": np.zeros((4, 2), np.float32)} for _ in iter(int, 1))
  it = prefetch_to_mesh(endless, mesh, size=1)
  next(it)
  it.close()
  assert not any(t.name == "jaxseg-prefetch" and t.is_alive() for t in threading.enumerate())
  with pytest.raises(ValueError, match="prefetch size"):
    next(prefetch_to_mesh(iter(host), mesh, size=-1))


@pytest.mark.parametrize("sweep_impl", SWEEP_IMPLS)
def test_config_axis_on_the_mesh_gives_the_one_device_parameters(sweep_impl):
  """Two configurations x two data shards on 4 devices: each configuration's state lives on its
  own 2 devices, and the parameters equal the same sweep on 1 device."""
  from jaxseg.data.pipeline import sweep_mesh
  alphas = {"alpha": np.array([0.0, 10.0], np.float32)}
  mesh = sweep_mesh(2)
  assert dict(mesh.shape) == {"config": 2, "data": 2}
  spread = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2,  # the default mesh
                   sweep_impl=sweep_impl)
  assert dict(spread.mesh.shape) == {"config": 2, "data": 2}
  one = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2,
                mesh=data_mesh(jax.devices()[:1]), sweep_impl=sweep_impl)
  results = {name: _fit(t, 2, loss_params=alphas) for name, t in (("2x2", spread), ("1", one))}
  for a, b in zip(results["2x2"], results["1"]):
    assert _max_diff(a.state.params, b.state.params) < 1e-5
    np.testing.assert_allclose([h["train_loss"] for h in a.history],
                               [h["train_loss"] for h in b.history], rtol=1e-5)
  assert _max_diff(results["2x2"][0].state.params, results["2x2"][1].state.params) > 1e-3
  # The stacked state is sharded: configuration k sits on the devices of config row k only.
  state = spread.init(jax.random.key(0), next(iter(batches(0))))
  leaf = jax.tree.leaves(state.params)[0]
  assert leaf.sharding.spec[0] == "config"
  rows = {d.id: r for r, row in enumerate(mesh.devices) for d in row}
  for shard in leaf.addressable_shards:
    assert shard.data.shape[0] == 1 and shard.index[0].start == rows[shard.device.id]
  assert dict(sweep_mesh(8).shape) == {"config": 4, "data": 1}  # 2 configurations per device
  assert dict(sweep_mesh(3).shape) == {"config": 1, "data": 4}
  with pytest.raises(ValueError, match="config axis"):
    sweep_mesh(4, config_size=3)


def test_unstack_slices_on_the_host_and_replicates():
  """Per-configuration views of a config-sharded state: the values of each slice, replicated on
  the mesh (on CPU sliced on the host: no cross-device program); host trees give host slices."""
  sweep = Trainer(MODEL, optax.adam(1e-3), loss_fn, num_configs=2)
  state = sweep.init(jax.random.key(0), next(iter(batches(0))))
  stacked = jax.tree.map(lambda x: x * jnp.arange(1, 3).reshape((2,) + (1,) * (x.ndim - 1)),
                         state.params)
  stacked = sweep.place(stacked)
  host = jax.device_get(stacked)
  views = sweep.unstack(stacked)
  assert len(views) == 2
  for k, view in enumerate(views):
    for got, want in zip(jax.tree.leaves(view), jax.tree.leaves(host)):
      assert isinstance(got, jax.Array) and got.sharding.is_fully_replicated
      assert got.shape == want.shape[1:]
      np.testing.assert_array_equal(np.asarray(got), want[k])
  for k, view in enumerate(sweep.unstack(host)):
    for got, want in zip(jax.tree.leaves(view), jax.tree.leaves(host)):
      assert isinstance(got, np.ndarray)
      np.testing.assert_array_equal(got, want[k])
  np.testing.assert_array_equal(jax.tree.leaves(sweep.stack(views))[0], jax.tree.leaves(host)[0])


def test_init_is_one_compiled_program_with_the_eager_parameters():
  from jaxseg.train.state import create_train_state
  sample = next(iter(batches(0)))
  key = jax.random.key(3)
  trainer = Trainer(MODEL, optax.adam(1e-3), loss_fn, ema_decay=0.9)
  compiled = trainer.init(key, sample)
  eager = create_train_state(MODEL, trainer.tx, (jnp.asarray(sample["image"][:1]),), key,
                             ema=True)
  assert jax.tree.structure(compiled) == jax.tree.structure(eager)
  jax.tree.map(lambda c, e: np.testing.assert_array_equal(np.asarray(c), np.asarray(e)),
               compiled, eager)
  assert trainer._init._cache_size() == 1  # pylint: disable=protected-access
  again = trainer.init(jax.random.key(4), sample)  # another seed: no new compilation
  assert trainer._init._cache_size() == 1  # pylint: disable=protected-access
  assert _max_diff(again.params, compiled.params) > 0
  # params and their average are separate buffers: the donating step accepts the state
  state, metrics = trainer.step(compiled, sample, {"alpha": 1.0}, jax.random.key(0))
  assert np.isfinite(float(metrics["loss"])) and int(state.step) == 1
