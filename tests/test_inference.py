"""Tests of `jaxseg.inference`: slice / volume / MC inference, probabilities, the card pipeline.

Models are tiny Flax convolutions with random parameters; references are direct model calls.
"""

from __future__ import annotations


import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh
from scipy import special

from jaxseg import inference
from jaxseg.data.pipeline import DATA_AXIS
from jaxseg.model_card import ModelCard, no_normalization


class _Conv3D(nn.Module):
  """A 3x3x3 convolution to ``classes`` logits; outputs ``{"logits": ...}`` like the 3D U-Net."""

  classes: int = 2
  size_multiple: tuple[int, int, int] = (1, 1, 1)

  @nn.compact
  def __call__(self, images, *, train=False):
    del train
    if any(s % m for s, m in zip(images.shape[1:4], self.size_multiple)):
      raise ValueError(f"spatial shape {images.shape[1:4]} not a multiple of "
                       f"{self.size_multiple}")
    return {"logits": nn.Conv(self.classes, (3, 3, 3), padding="SAME")(images)}


class _Conv2D(nn.Module):
  """A 3x3 convolution; outputs a (coarse, fine) tuple like TransUNet's heads."""

  classes: int = 1
  size_multiple: int = 4

  @nn.compact
  def __call__(self, images, *, train=False):
    del train
    assert images.shape[1] % self.size_multiple == 0 and images.shape[2] % self.size_multiple == 0
    fine = nn.Conv(self.classes, (3, 3), padding="SAME")(images)
    return (fine[:, ::2, ::2], fine)


def _init(model, shape, seed=0):
  variables = model.init(jax.random.key(seed), jnp.zeros(shape))
  # Non-trivial biases, so that padding mistakes cannot hide behind zeros.
  return jax.tree.map(lambda x: x + 0.1, variables)


_MODEL3 = _Conv3D(classes=2, size_multiple=(4, 4, 2))
_VARS3 = _init(_MODEL3, (1, 4, 4, 2, 2))
_MODEL2 = _Conv2D(classes=1, size_multiple=4)
_VARS2 = _init(_MODEL2, (1, 4, 4, 2))


def _direct(model, variables, images):
  return inference.final_logits(model.apply(variables, images, train=False))


def _volume(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class _Recorder:
  """A jitted logits function that records the input shapes it was called with."""

  def __init__(self, model, variables):
    self.shapes = []
    self._fn = jax.jit(lambda x: model.apply(variables, x, train=False))

  def __call__(self, x):
    self.shapes.append(tuple(x.shape))
    return self._fn(x)


# ------------------------------------------------------------------------------------------
# Small helpers.
# ------------------------------------------------------------------------------------------


def test_final_logits_conventions():
  a, b = np.zeros(1), np.ones(1)
  assert inference.final_logits(a) is a
  assert inference.final_logits((a, b)) is b
  assert inference.final_logits([a, b]) is b
  assert inference.final_logits({"logits": a, "deep_supervision": (b,)}) is a


def test_pad_to_multiple_per_axis():
  x = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5)
  padded, crop = inference.pad_to_multiple(x, (4, 2), (0, 2), fill=-1.0)
  assert padded.shape == (4, 3, 6)
  np.testing.assert_array_equal(padded[crop], x)
  assert np.all(padded[2:] == -1) and np.all(padded[:, :, 5] == -1)
  assert inference.pad_to_multiple(x, 3, (0, 1), 0.0)[0].shape == (3, 3, 5)
  assert inference.size_multiples(4, 3) == (4, 4, 4)
  assert inference.size_multiples((4, 4, 2), 3) == (4, 4, 2)
  for bad in ((4, 4), 0, "4"):
    with pytest.raises(ValueError, match="size_multiple"):
      inference.size_multiples(bad, 3)


def test_chunks_pad_the_last_chunk_by_repetition():
  x = np.arange(5)[:, None]
  chunks = list(inference._chunks(x, 2))
  assert [n for _, n in chunks] == [2, 2, 1]
  assert all(c.shape == (2, 1) for c, _ in chunks)
  np.testing.assert_array_equal(chunks[-1][0][:, 0], [4, 4])


# ------------------------------------------------------------------------------------------
# predict_volumes.
# ------------------------------------------------------------------------------------------


def test_predict_volumes_equals_a_direct_call():
  images = [_volume((8, 4, 4, 2), seed) for seed in range(3)]
  fn = _Recorder(_MODEL3, _VARS3)
  got = inference.predict_volumes(fn, images, batch_size=3, size_multiple=(4, 4, 2))
  want = np.asarray(_direct(_MODEL3, _VARS3, np.stack(images)))
  assert len(got) == 3 and fn.shapes == [(3, 8, 4, 4, 2)]
  for g, w in zip(got, want):
    assert g.shape == (8, 4, 4, 2) and g.dtype == np.float32
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


def test_predict_volumes_pads_with_the_minimum_and_crops_back():
  image = _volume((5, 6, 3, 2), seed=1)
  fn = _Recorder(_MODEL3, _VARS3)
  (got,) = inference.predict_volumes(fn, [image], batch_size=1, size_multiple=(4, 4, 2))
  assert fn.shapes == [(1, 8, 8, 4, 2)]
  padded = np.full((8, 8, 4, 2), image.min(), np.float32)
  padded[:5, :6, :3] = image
  want = np.asarray(_direct(_MODEL3, _VARS3, padded[None]))[0, :5, :6, :3]
  assert got.shape == (5, 6, 3, 2)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  # A 3D (no channel axis) volume is one channel.
  model = _Conv3D(classes=3)
  variables = _init(model, (1, 2, 2, 2, 1))
  (got,) = inference.predict_volumes(
      jax.jit(lambda x: model.apply(variables, x)), [image[..., 0]], batch_size=1)
  np.testing.assert_allclose(got, np.asarray(_direct(model, variables, image[None, ..., :1]))[0],
                             rtol=1e-6, atol=1e-6)


def test_predict_volumes_groups_shapes_pads_chunks_and_keeps_order():
  shapes = [(8, 4, 2), (4, 4, 2), (7, 3, 2), (8, 4, 2), (8, 4, 2), (3, 4, 1)]
  images = [_volume(s + (2,), seed) for seed, s in enumerate(shapes)]
  fn = _Recorder(_MODEL3, _VARS3)
  got = inference.predict_volumes(fn, images, batch_size=2, size_multiple=(4, 4, 2))
  # Padded shapes: (8,4,2) x 4 (two chunks), (4,4,2) x 2 (one chunk): always 2 volumes a call.
  assert sorted(fn.shapes) == sorted([(2, 8, 4, 2, 2)] * 2 + [(2, 4, 4, 2, 2)])
  for image, g in zip(images, got):
    want = inference.predict_volumes(lambda x: _direct(_MODEL3, _VARS3, x), [image],
                                     batch_size=1, size_multiple=(4, 4, 2))[0]
    assert g.shape == image.shape[:3] + (2,)
    np.testing.assert_allclose(g, want, rtol=1e-6, atol=1e-6)


def test_predict_volumes_sharded_over_the_mesh():
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  assert mesh.devices.size == 4
  images = [_volume((4, 8, 2, 2), seed) for seed in range(5)]
  got = inference.predict_volumes(jax.jit(lambda x: _MODEL3.apply(_VARS3, x)), images,
                                  batch_size=4, size_multiple=(4, 4, 2), mesh=mesh)
  want = np.asarray(_direct(_MODEL3, _VARS3, np.stack(images)))
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    inference.predict_volumes(lambda x: x, images, batch_size=2, mesh=mesh)


def test_predict_volumes_rejects_bad_inputs():
  with pytest.raises(ValueError, match="volume 1"):
    inference.predict_volumes(lambda x: x, [np.zeros((2, 2, 2)), np.zeros((2, 2))],
                              batch_size=1)
  with pytest.raises(ValueError, match="same number of channels"):
    inference.predict_volumes(lambda x: x, [np.zeros((2, 2, 2, 1)), np.zeros((2, 2, 2, 2))],
                              batch_size=1)
  with pytest.raises(ValueError, match="batch_size"):
    inference.predict_volumes(lambda x: x, [np.zeros((2, 2, 2))], batch_size=0)


# ------------------------------------------------------------------------------------------
# predict_slices (tuple outputs) and mc_probabilities.
# ------------------------------------------------------------------------------------------


def test_predict_slices_uses_the_last_head_and_shards():
  image = _volume((6, 7, 5, 2), seed=2)
  got = inference.predict_slices(jax.jit(lambda x: _MODEL2.apply(_VARS2, x)), image,
                                 batch_size=2, size_multiple=4)
  padded = np.full((8, 8, 5, 2), image.min(), np.float32)
  padded[:6, :7] = image
  want = np.asarray(_direct(_MODEL2, _VARS2, np.moveaxis(padded, 2, 0)))
  want = np.moveaxis(want, 0, 2)[:6, :7]
  assert got.shape == (6, 7, 5, 1)
  np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  sharded = inference.predict_slices(jax.jit(lambda x: _MODEL2.apply(_VARS2, x)), image,
                                     batch_size=4, size_multiple=4, mesh=mesh)
  np.testing.assert_allclose(sharded, want, rtol=1e-5, atol=1e-5)


def _fake_mc(variables, images, key):
  """``(images * w + u, u)`` with ``u ~ U(0, 1)`` of the key's stream, one draw per batch row."""
  u = jax.random.uniform(key, (images.shape[0],) + (1,) * (images.ndim - 1))
  return images * variables["w"] + u, jnp.broadcast_to(u, images.shape)


@pytest.mark.parametrize("use_mesh", [False, True])
def test_mc_probabilities_folds_the_key_per_chunk(use_mesh):
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,)) if use_mesh else None
  images = [_volume((2, 2, 2, 1), seed) for seed in range(6)]
  key = jax.random.key(3)
  variables = {"w": jnp.float32(2.0)}
  means, variances = inference.mc_probabilities(jax.jit(_fake_mc), variables, images, key=key,
                                                batch_size=4, mesh=mesh)
  assert len(means) == len(variances) == 6
  for i, image in enumerate(images):
    chunk, row = divmod(i, 4)
    u = np.asarray(jax.random.uniform(jax.random.fold_in(key, chunk), (4, 1, 1, 1, 1)))[row]
    np.testing.assert_allclose(means[i], image * 2 + u, rtol=1e-6)
    np.testing.assert_allclose(variances[i], np.broadcast_to(u, image.shape), rtol=1e-6)
    assert means[i].shape == (2, 2, 2, 1) and means[i].dtype == np.float32
  # A stacked array works the same.
  again, _ = inference.mc_probabilities(jax.jit(_fake_mc), variables, np.stack(images), key=key,
                                        batch_size=4, mesh=mesh)
  np.testing.assert_array_equal(np.stack(again), np.stack(means))


# ------------------------------------------------------------------------------------------
# probabilities and predict_probabilities.
# ------------------------------------------------------------------------------------------


def test_probabilities():
  logits = _volume((3, 4, 2, 3)) * 5
  p = inference.probabilities(logits, "softmax")
  np.testing.assert_allclose(p, special.softmax(logits.astype(np.float64), -1), rtol=1e-6)
  assert p.dtype == np.float32 and p.shape == logits.shape
  np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)
  q = inference.probabilities(logits[..., :1], "sigmoid")
  assert q.shape == (3, 4, 2) and q.dtype == np.float32
  np.testing.assert_allclose(q, 1 / (1 + np.exp(-logits[..., 0].astype(np.float64))), rtol=1e-6)
  np.testing.assert_array_equal(inference.probabilities(np.full((1, 1), 1e4), "sigmoid"), [1.0])
  with pytest.raises(ValueError, match="'sigmoid' needs 1"):
    inference.probabilities(logits, "sigmoid")
  with pytest.raises(ValueError, match="'softmax' needs >= 2"):
    inference.probabilities(logits[..., :1], "softmax")
  with pytest.raises(ValueError, match="activation must be"):
    inference.probabilities(logits, "relu")


def _card(activation, classes, channels, kind):
  names = ("background", "fg") if activation == "sigmoid" else tuple(f"c{i}" for i in
                                                                     range(classes))
  return ModelCard(activation=activation, class_names=names,
                   channels=tuple(f"ch{i}" for i in range(channels)), spacing=None,
                   normalization=(no_normalization(),) * channels, inference=kind)


def test_predict_probabilities_volume_and_slices():
  image = _volume((5, 6, 3, 2), seed=4)
  card = _card("softmax", 2, 2, "volume")
  got = inference.predict_probabilities(_MODEL3, _VARS3, image, card)
  logits = inference.predict_volumes(lambda x: _direct(_MODEL3, _VARS3, x), [image],
                                     batch_size=1, size_multiple=(4, 4, 2))[0]
  np.testing.assert_allclose(got, special.softmax(logits, -1), rtol=1e-5, atol=1e-6)
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  np.testing.assert_allclose(
      inference.predict_probabilities(_MODEL3, _VARS3, image, card, mesh=mesh), got, atol=1e-5)

  card2 = _card("sigmoid", 1, 2, "slices")
  got2 = inference.predict_probabilities(_MODEL2, _VARS2, image, card2, batch_size=2)
  logits2 = inference.predict_slices(lambda x: _direct(_MODEL2, _VARS2, x), image,
                                     batch_size=3, size_multiple=4)
  assert got2.shape == (5, 6, 3)
  np.testing.assert_allclose(got2, special.expit(logits2[..., 0]), rtol=1e-5, atol=1e-6)

  with pytest.raises(ValueError, match="2-channel"):
    inference.predict_probabilities(_MODEL3, _VARS3, image[..., :1], card)
  with pytest.raises(ValueError, match="output channel"):
    inference.predict_probabilities(_MODEL3, _VARS3, image, _card("softmax", 3, 2, "volume"))


def test_keep_largest_component_per_class_by_hand():
  labels = np.zeros((6, 6), np.int32)
  labels[0:2, 0:2] = 1        # class 1: 4 voxels
  labels[4, 4] = 1            # class 1: 1 voxel, removed
  labels[3, 0:3] = 2          # class 2: 3 voxels
  labels[5, 0] = 2            # class 2: 1 voxel, removed
  labels[2, 2] = 1            # touches the 2x2 block at a corner only: kept (8-connectivity)
  out = inference.keep_largest_component(labels)
  expected = labels.copy()
  expected[4, 4] = 0
  expected[5, 0] = 0
  np.testing.assert_array_equal(out, expected)
  assert out.dtype == labels.dtype and out.shape == labels.shape


def test_keep_largest_component_3d_ties_and_empty():
  labels = np.zeros((5, 5, 5), np.uint8)
  labels[0, 0, 0:2] = 1
  labels[4, 4, 3:5] = 1       # as large as the first: the first in C order is kept
  out = inference.keep_largest_component(labels)
  assert out[0, 0, 0] == 1 and out[0, 0, 1] == 1 and out[4, 4].sum() == 0
  np.testing.assert_array_equal(inference.keep_largest_component(np.zeros((3, 3, 3), np.int8)),
                                np.zeros((3, 3, 3), np.int8))
  # A foreground that is one component is unchanged (a 26-connected diagonal line).
  line = np.zeros((4, 4, 4), bool)
  line[np.arange(4), np.arange(4), np.arange(4)] = True
  np.testing.assert_array_equal(inference.keep_largest_component(line), line)
  with pytest.raises(ValueError, match="integer or boolean"):
    inference.keep_largest_component(np.full((2, 2), 0.5))


def test_stack_slice_context_by_hand():
  image = np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2)  # (x, y, z, C)
  out = inference.stack_slice_context(image, 1)
  assert out.shape == (2, 1, 3, 6) and out.dtype == np.float32
  for z, (below, above) in enumerate([(0, 1), (0, 2), (1, 2)]):  # edges repeat the end slices
    np.testing.assert_array_equal(out[:, :, z, 0:2], image[:, :, below])
    np.testing.assert_array_equal(out[:, :, z, 2:4], image[:, :, z])
    np.testing.assert_array_equal(out[:, :, z, 4:6], image[:, :, above])
  np.testing.assert_array_equal(inference.stack_slice_context(image[..., 0], 0), image[..., :1])
  with pytest.raises(ValueError, match="integer >= 0"):
    inference.stack_slice_context(image, -1)


def test_predict_slices_with_context_sees_the_neighbours():
  rng = np.random.default_rng(0)
  image = rng.normal(size=(8, 6, 5)).astype(np.float32)
  # A "model" that returns its input channels as logits: slice z's logits are its context.
  identity = jax.jit(lambda x: x)
  got = inference.predict_slices(identity, image, batch_size=2, size_multiple=4, context=2)
  np.testing.assert_allclose(got, inference.stack_slice_context(image, 2))
  assert got.shape == (8, 6, 5, 5)
