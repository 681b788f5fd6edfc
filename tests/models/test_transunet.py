"""Tests of the TransUNet with deep-supervision heads (seed 003).

Compilation dominates on CPU, so the paper preset is only traced (``jax.eval_shape``) and the CPU
preset is initialised with one jitted ``init`` that later calls reuse.
"""

import functools

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxseg.models.layers import resize_bilinear_align_corners
from jaxseg.models.transunet import TransUNet, TransUNetConfig, _num_groups

_CPU = TransUNetConfig.cpu()


def _count(tree):
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


@functools.lru_cache(maxsize=None)
def _jit_init(cfg: TransUNetConfig, shape: tuple[int, ...]):
  model = TransUNet(cfg)
  return jax.jit(lambda key: model.init(key, jnp.zeros(shape)))


@functools.lru_cache(maxsize=None)
def _jit_apply(cfg: TransUNetConfig, train: bool):
  model = TransUNet(cfg)
  return jax.jit(lambda v, x, key: model.apply(v, x, train=train, rngs={"dropout": key}))


def _cpu_variables(seed: int = 0):
  # Partitionable threefry (JAX's default) compiles ~7x slower on CPU, about 1 s per parameter
  # initialiser; the classic stream keeps this file fast and is just as deterministic.
  with jax.threefry_partitionable(False):
    return _jit_init(_CPU, (1, 64, 64, 1))(jax.random.key(seed))


def _images(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def test_paper_preset_shapes_and_vit_size():
  cfg = TransUNetConfig.paper()
  model = TransUNet(cfg)
  x = jax.ShapeDtypeStruct((2, 224, 224, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert set(variables) == {"params"}  # GroupNorm everywhere: no batch_stats
  outs = jax.eval_shape(functools.partial(model.apply, train=False), variables, x)
  assert isinstance(outs, tuple) and len(outs) == 4
  assert [o.shape for o in outs] == [(2, s, s, 1) for s in (28, 56, 112, 224)]
  assert all(o.dtype == jnp.float32 for o in outs)
  # ViT-B/16 written out by hand: 1x1 embedding of the 1024-channel R50 map, 14x14 positions,
  # 12 blocks (2 LayerNorms, q/k/v/out projections, MLP 768-3072-768), final LayerNorm.
  h, m = 768, 3072
  block = 2 * 2 * h + 4 * (h * h + h) + (h * m + m) + (m * h + h)
  expected_vit = (1024 * h + h) + 196 * h + 12 * block + 2 * h
  params = variables["params"]
  assert _count(params["vit"]) == expected_vit
  # R50 hybrid (3, 4, 9) units with 64..1024 channels: ~11.9M; whole model ~105M (TransUNet).
  assert params["cnn"]["stage3_unit9"]["StdConv_2"]["kernel"].shape == (1, 1, 256, 1024)
  assert 11.5e6 < _count(params["cnn"]) < 12.5e6
  assert 100e6 < _count(params) < 110e6
  # Head k x k convolutions on 256/128/64/16 decoder channels, coarse -> fine.
  assert [params[f"Head_{i}"]["kernel"].shape for i in range(4)] == [
      (3, 3, c, 1) for c in (256, 128, 64, 16)]


def test_cpu_preset_shapes_classes_and_size():
  x = jax.ShapeDtypeStruct((2, 64, 64, 1), jnp.float32)
  model = TransUNet(TransUNetConfig.cpu(num_classes=3))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  outs = jax.eval_shape(model.apply, variables, x)
  assert [o.shape for o in outs] == [(2, s, s, 3) for s in (8, 16, 32, 64)]
  n = _count(jax.eval_shape(TransUNet(_CPU).init, jax.random.key(0), x)["params"])
  assert 50_000 < n < 1_000_000
  # Non-square inputs: heads at 1/8 .. 1/1 of each side.
  x = jax.ShapeDtypeStruct((1, 32, 80, 2), jnp.float32)
  outs, variables = jax.eval_shape(TransUNet(_CPU).init_with_output, jax.random.key(0), x)
  assert [o.shape for o in outs] == [(1, 4, 10, 1), (1, 8, 20, 1), (1, 16, 40, 1),
                                     (1, 32, 80, 1)]
  # Parameters do not depend on the sample input: embeddings are made for image_size = 64.
  assert variables["params"]["vit"]["position_embedding"].shape == (1, 16, 64)


def test_no_deep_supervision_returns_final_map_with_shared_parameters():
  x = jax.ShapeDtypeStruct((1, 64, 64, 1), jnp.float32)
  single = TransUNet(TransUNetConfig.cpu(deep_supervision=False))
  variables = jax.eval_shape(single.init, jax.random.key(0), x)
  out = jax.eval_shape(single.apply, variables, x)
  assert isinstance(out, jax.ShapeDtypeStruct) and out.shape == (1, 64, 64, 1)
  full = jax.eval_shape(TransUNet(_CPU).init, jax.random.key(0), x)["params"]
  assert set(full) - set(variables["params"]) == {"Head_0", "Head_1", "Head_2"}


def test_dtype_and_batch_norm_options():
  x = jax.ShapeDtypeStruct((1, 32, 32, 1), jnp.float32)
  model = TransUNet(TransUNetConfig.cpu(dtype="bfloat16"))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(variables))
  assert all(o.dtype == jnp.float32 for o in jax.eval_shape(model.apply, variables, x))
  model = TransUNet(TransUNetConfig.cpu(decoder_norm="batch"))
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  assert "batch_stats" in variables and "conv_more" in variables["batch_stats"]
  assert "cnn" not in variables["batch_stats"]  # the encoder keeps GroupNorm


def test_group_count_rule():
  assert [_num_groups(c, 32) for c in (1, 3, 8, 16, 48, 64, 256, 1024)] == [
      1, 1, 4, 8, 24, 32, 32, 32]


def test_init_is_deterministic_per_key():
  v0, v0_again, v1 = _cpu_variables(0), _cpu_variables(0), _cpu_variables(1)
  chex.assert_trees_all_equal(v0, v0_again)
  pos0 = v0["params"]["vit"]["position_embedding"]
  assert pos0.shape == (1, 16, 64)
  assert not np.allclose(pos0, v1["params"]["vit"]["position_embedding"])
  k0 = v0["params"]["cnn"]["root_conv"]["kernel"]
  assert not np.allclose(k0, v1["params"]["cnn"]["root_conv"]["kernel"])


def test_other_input_size_interpolates_position_embeddings():
  variables = _cpu_variables(0)
  x = _images((1, 96, 96, 1))
  outs = _jit_apply(_CPU, False)(variables, x, jax.random.key(0))
  assert [o.shape for o in outs] == [(1, s, s, 1) for s in (12, 24, 48, 96)]
  assert all(bool(jnp.all(jnp.isfinite(o))) for o in outs)
  # Same function as a model made for 96 x 96 whose embeddings are the 4x4 -> 6x6 interpolation.
  pos = variables["params"]["vit"]["position_embedding"]
  pos96 = resize_bilinear_align_corners(pos.reshape(1, 4, 4, -1), (6, 6)).reshape(1, 36, -1)
  params96 = dict(variables["params"])
  params96["vit"] = dict(params96["vit"], position_embedding=pos96)
  expected = _jit_apply(TransUNetConfig.cpu(image_size=96), False)({"params": params96}, x,
                                                                   jax.random.key(0))
  chex.assert_trees_all_close(outs, expected, rtol=1e-5, atol=1e-5)
  # Corner embeddings are kept by the align-corners interpolation.
  np.testing.assert_allclose(pos96[0, 0], pos[0, 0], rtol=1e-6)
  np.testing.assert_allclose(pos96[0, 35], pos[0, 15], rtol=1e-6)


def test_gradient_reaches_every_parameter():
  model = TransUNet(_CPU)
  variables = _cpu_variables(0)
  x = _images((2, 64, 64, 1))
  weights = [_images(s, seed=10 + i) for i, s in
             enumerate([(2, 8, 8, 1), (2, 16, 16, 1), (2, 32, 32, 1), (2, 64, 64, 1)])]

  def objective(params):
    outs = model.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(3)})
    return sum(jnp.sum(w * o) for w, o in zip(weights, outs))

  grads = jax.jit(jax.grad(objective))(variables["params"])
  flat = flax.traverse_util.flatten_dict(grads, sep="/")
  assert len(flat) == len(jax.tree.leaves(variables["params"]))
  zero = [name for name, g in flat.items() if not np.any(np.asarray(g) != 0)]
  assert not zero, f"parameters without gradient: {zero}"
  assert all(np.all(np.isfinite(g)) for g in flat.values())
  assert any(k.startswith("vit/block2/attention") for k in flat)
  assert any(k.startswith("decoder4_conv2") for k in flat)


def test_dropout_only_when_training():
  variables = _cpu_variables(0)
  x = _images((1, 64, 64, 1))
  eval_fn, train_fn = _jit_apply(_CPU, False), _jit_apply(_CPU, True)
  eval_out = eval_fn(variables, x, jax.random.key(1))[-1]
  a = train_fn(variables, x, jax.random.key(1))[-1]
  a_again = train_fn(variables, x, jax.random.key(1))[-1]
  b = train_fn(variables, x, jax.random.key(2))[-1]
  np.testing.assert_array_equal(a, a_again)
  assert not np.allclose(a, b, atol=1e-4)
  assert not np.allclose(a, eval_out, atol=1e-4)
  # Evaluation ignores the dropout key.
  np.testing.assert_array_equal(eval_fn(variables, x, jax.random.key(5))[-1], eval_out)
  model = TransUNet(_CPU)
  # Training without a key is an error when a dropout rate is positive.
  with pytest.raises(flax.errors.InvalidRngError):
    jax.eval_shape(functools.partial(model.apply, train=True), variables, x)
  # Without dropout, train and eval are the same function (GroupNorm, no batch statistics).
  no_drop = TransUNetConfig.cpu(dropout_rate=0.0)
  np.testing.assert_allclose(_jit_apply(no_drop, True)(variables, x, jax.random.key(1))[-1],
                             eval_out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, overrides, match", [
    ((1, 72, 64, 1), {}, "multiples of 16"),
    ((1, 64, 8, 1), {}, "multiples of 16"),
    ((64, 64, 1), {}, "batch, height, width"),
    ((1, 64, 64, 1), {"num_heads": 3}, "must divide hidden_size"),
    ((1, 64, 64, 1), {"decoder_channels": (32, 16, 8)}, "4 entries"),
    ((1, 64, 64, 1), {"block_units": (1, 1)}, "block_units"),
    ((1, 64, 64, 1), {"image_size": 100}, "image_size"),
    ((1, 64, 64, 1), {"decoder_norm": "layer"}, "decoder_norm"),
    ((1, 64, 64, 1), {"dropout_rate": 1.0}, "dropout_rate"),
])
def test_rejects_bad_inputs(shape, overrides, match):
  model = TransUNet(TransUNetConfig.cpu(**overrides))
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
