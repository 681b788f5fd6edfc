"""Tests of the sliding-window, test-time-augmentation, ensemble and MC parts of `jaxseg.inference`.

Covers :func:`~jaxseg.inference.importance_map`, :func:`~jaxseg.inference.window_starts`,
:func:`~jaxseg.inference.sliding_window_logits` (against a float64 NumPy reference written here
from the definition: MONAI-style symmetric padding, window starts, importance-weighted blend),
:func:`~jaxseg.inference.volume_logits`, :func:`~jaxseg.inference.predict_distribution` (TTA
mirrorings, ensembles, Monte-Carlo dropout), :class:`~jaxseg.inference.Moments` and
``ModelCard.window``.

Models are tiny Flax convolutions with random parameters (biases shifted by +0.1 so that padding
mistakes cannot hide behind zeros); they are module-level so that compiled programs are shared.
"""

from __future__ import annotations

import dataclasses
import itertools
import json

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


# ------------------------------------------------------------------------------------------
# Tiny models.
# ------------------------------------------------------------------------------------------


class _Conv2D(nn.Module):
  """A 3x3 convolution; outputs a (coarse, fine) tuple of deep-supervision heads."""

  classes: int = 3

  @nn.compact
  def __call__(self, images, *, train=False):
    del train
    fine = nn.Conv(self.classes, (3, 3), padding="SAME")(images)
    return (fine[:, ::2, ::2] - 5.0, fine)


class _Conv3D(nn.Module):
  """A 3x3x3 convolution; outputs ``{"logits": ..., "aux": ...}`` like the 3D U-Net."""

  classes: int = 2

  @nn.compact
  def __call__(self, images, *, train=False):
    del train
    logits = nn.Conv(self.classes, (3, 3, 3), padding="SAME")(images)
    return {"logits": logits, "aux": logits[:, ::2] + 7.0}


class _DropoutConv3D(nn.Module):
  """Dropout on the input, then a 3x3x3 convolution; has the ``mc_dropout`` switch."""

  classes: int = 2
  rate: float = 0.5

  @nn.compact
  def __call__(self, images, *, train=False, mc_dropout=None):
    x = nn.Dropout(self.rate, deterministic=not (train or mc_dropout))(images)
    return nn.Conv(self.classes, (3, 3, 3), padding="SAME")(x)


@dataclasses.dataclass(frozen=True)
class _Config:
  dropout_rate: float = 0.0


class _ConfigConv3D(nn.Module):
  """A model with a ``config`` (dropout_rate) and no ``mc_dropout`` switch."""

  config: _Config

  @nn.compact
  def __call__(self, images, *, train=False):
    x = nn.Dropout(self.config.dropout_rate, deterministic=not train)(images)
    return nn.Conv(2, (3, 3, 3), padding="SAME")(x)


def _init(model, shape, seed=0):
  variables = model.init(jax.random.key(seed), jnp.zeros(shape))
  return jax.tree.map(lambda x: x + 0.1, variables)


_MODEL2 = _Conv2D(classes=3)                  # 2 input channels -> 3 logits
_VARS2 = _init(_MODEL2, (1, 4, 4, 2))
_MODEL3 = _Conv3D(classes=2)                  # 1 input channel -> 2 logits
_VARS3 = _init(_MODEL3, (1, 4, 4, 4, 1))
_VARS3B = _init(_MODEL3, (1, 4, 4, 4, 1), seed=1)
_DROP3 = _DropoutConv3D(classes=2, rate=0.5)
_DROP_VARS = _init(_DROP3, (1, 4, 4, 4, 1), seed=2)


def _apply2(variables, windows):
  return _MODEL2.apply(variables, windows)


def _apply3(variables, windows):
  return _MODEL3.apply(variables, windows)


def _noisy3(variables, windows, key):
  """A stochastic logits function: the model's logits plus standard normal noise of ``key``."""
  logits = inference.final_logits(_MODEL3.apply(variables, windows))
  return logits + jax.random.normal(key, logits.shape)


_MODEL2S = _Conv2D(classes=1)                 # 1 input channel -> 1 logit (sigmoid)
_VARS2S = _init(_MODEL2S, (1, 4, 4, 1))


def _apply2s(variables, windows):
  return _MODEL2S.apply(variables, windows)


_JIT = {f: jax.jit(f) for f in (_apply2, _apply2s, _apply3)}


def _images(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _mesh():
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  assert mesh.devices.size == 4
  return mesh


# ------------------------------------------------------------------------------------------
# The float64 reference, from the definition.
# ------------------------------------------------------------------------------------------


def _gaussian(window, scales):
  """The Gaussian importance map by hand (float64), clamped below at max(min, 1e-3)."""
  w = np.ones(window, np.float64)
  for axis, (n, s) in enumerate(zip(window, scales)):
    x = np.arange(n) - (n - 1) / 2
    g = np.exp(-x ** 2 / (2 * (s * n) ** 2))
    shape = [1] * len(window)
    shape[axis] = n
    w = w * g.reshape(shape)
  return np.maximum(w, max(w.min(), 1e-3))


def _starts(size, window, overlap):
  """Window starts of one axis: steps of int(window * (1 - overlap)), the last one shifted back."""
  step = window if size == window else max(int(window * (1 - overlap)), 1)
  starts = list(range(0, size - window + 1, step))
  if starts[-1] != size - window:
    starts.append(size - window)
  return starts


def _reference(apply, variables, images, window, *, overlap, blend, sigma_scale=0.125,
               fill=None):
  """Blended logits of every window, float64: sum_w g z_w / sum_w g, the padding cropped."""
  images = np.asarray(images, np.float64)
  n, spatial = images.shape[0], images.shape[1:-1]
  fill = images.min() if fill is None else fill
  pad = [(0, 0)] + [((w - s) // 2, (w - s) - (w - s) // 2) if s < w else (0, 0)
                    for s, w in zip(spatial, window)] + [(0, 0)]
  padded = np.pad(images, pad, constant_values=fill)
  size = padded.shape[1:-1]
  scales = (sigma_scale,) * len(window) if np.isscalar(sigma_scale) else sigma_scale
  weights = np.ones(window) if blend == "constant" else _gaussian(window, scales)
  positions = list(itertools.product(*[_starts(s, w, overlap) for s, w in zip(size, window)]))
  cuts = [tuple(slice(o, o + w) for o, w in zip(p, window)) for p in positions]
  windows = np.stack([padded[i][c] for i in range(n) for c in cuts]).astype(np.float32)
  logits = np.asarray(inference.final_logits(_JIT[apply](variables, windows)), np.float64)
  acc = np.zeros((n, *size, logits.shape[-1]))
  total = np.zeros(size)
  for c in cuts:
    total[c] += weights
  for j, z in enumerate(logits):
    i, c = divmod(j, len(cuts))
    acc[i][cuts[c]] += weights[..., None] * z
  out = acc / total[None, ..., None]
  crop = tuple(slice(lo, lo + s) for (lo, _), s in zip(pad[1:-1], spatial))
  return out[(slice(None), *crop)]


# ------------------------------------------------------------------------------------------
# importance_map, window_starts, _pad_to_window.
# ------------------------------------------------------------------------------------------


def test_importance_map_constant_is_ones():
  w = inference.importance_map((3, 5, 2), "constant")
  assert w.shape == (3, 5, 2) and w.dtype == np.float32
  np.testing.assert_array_equal(w, np.ones((3, 5, 2)))


@pytest.mark.parametrize("window, sigma_scale", [
    ((3,), 0.125), ((4, 2), 0.125), ((5, 4, 3), 0.25), ((4, 6), (0.25, 0.1))])
def test_importance_map_gaussian_by_hand(window, sigma_scale):
  w = inference.importance_map(window, "gaussian", sigma_scale)
  assert w.shape == window and w.dtype == np.float32
  scales = (sigma_scale,) * len(window) if np.isscalar(sigma_scale) else sigma_scale
  np.testing.assert_allclose(w, _gaussian(window, scales), rtol=1e-6)
  # The centre has weight 1 for odd sides; the map is symmetric.
  np.testing.assert_allclose(w, w[tuple(slice(None, None, -1) for _ in window)], rtol=1e-6)


def test_importance_map_gaussian_of_three_by_hand():
  # sigma = 3 / 8; x = -1, 0, 1: exp(-1 / (2 * 0.375 ** 2)) = exp(-32 / 9) at both ends.
  e = np.exp(-32 / 9)
  np.testing.assert_allclose(inference.importance_map((3,)), [e, 1.0, e], rtol=1e-6)
  # (4, 2): x = +-0.5, +-1.5 with sigma 0.5; x = +-0.5 with sigma 0.25.
  a = np.exp(-np.array([1.5, 0.5, 0.5, 1.5]) ** 2 / 0.5)
  b = np.exp(-np.array([0.5, 0.5]) ** 2 / 0.125)
  np.testing.assert_allclose(inference.importance_map((4, 2)), np.outer(a, b), rtol=1e-6)


def test_importance_map_clamps_at_one_thousandth():
  w = inference.importance_map((64,), "gaussian", 0.05)
  x = np.arange(64) - 31.5
  raw = np.exp(-x ** 2 / (2 * 3.2 ** 2))
  assert raw.min() < 1e-10                         # unclamped, the ends would be ~0
  assert w.min() == np.float32(1e-3)
  clamped = raw < 1e-3
  assert 0 < clamped.sum() < 64
  np.testing.assert_array_equal(w[clamped], np.float32(1e-3))
  np.testing.assert_allclose(w[~clamped], raw[~clamped], rtol=1e-6)
  # Per-axis scales: a wide first axis is not clamped, a narrow second one is.
  w2 = inference.importance_map((8, 64), "gaussian", (1.0, 0.05))
  np.testing.assert_allclose(w2, _gaussian((8, 64), (1.0, 0.05)), rtol=1e-6)
  assert w2.min() == np.float32(1e-3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(window=(4,), blend="linear"), "blend"),
    (dict(window=(0, 4)), "window"),
    (dict(window=()), "window"),
    (dict(window=(2.5, 4)), "window"),
    (dict(window=(True, 4)), "window"),
    (dict(window=(4.0, 4)), "window"),
    (dict(window="44"), "window"),
    (dict(window=4), "window"),
    (dict(window=(4,), sigma_scale=0.0), "sigma_scale"),
    (dict(window=(4,), sigma_scale=-0.1), "sigma_scale"),
    (dict(window=(4,), sigma_scale=float("nan")), "sigma_scale"),
    (dict(window=(4,), sigma_scale=True), "sigma_scale"),
    (dict(window=(4, 4), sigma_scale=(0.1,)), "sigma_scale"),
])
def test_importance_map_rejects_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    inference.importance_map(**kwargs)


@pytest.mark.parametrize("size, window, overlap, starts", [
    (10, 4, 0.5, [0, 2, 4, 6]),
    (10, 4, 0.25, [0, 3, 6]),
    (11, 4, 0.5, [0, 2, 4, 6, 7]),
    (4, 4, 0.5, [0]),
    (4, 4, 0.0, [0]),
    (12, 4, 0.0, [0, 4, 8]),
    (10, 4, 0.0, [0, 4, 6]),
    (6, 4, 0.9, [0, 1, 2]),          # step int(0.4) = 0 -> 1
    (5, 1, 0.5, [0, 1, 2, 3, 4]),
])
def test_window_starts_by_hand(size, window, overlap, starts):
  assert inference.window_starts(size, window, overlap) == starts
  assert _starts(size, window, overlap) == starts


def test_window_starts_cover_the_axis():
  for size, window, overlap in itertools.product(range(4, 20), (1, 3, 4), (0.0, 0.3, 0.5, 0.75)):
    starts = inference.window_starts(size, window, overlap)
    covered = np.zeros(size, bool)
    for s in starts:
      covered[s:s + window] = True
    assert covered.all() and starts[0] == 0 and starts[-1] == size - window
    assert starts == sorted(set(starts))


def test_window_starts_rejects_bad_arguments():
  with pytest.raises(ValueError, match="smaller than the window"):
    inference.window_starts(3, 4, 0.5)
  for overlap in (1.0, -0.1, 1.5):
    with pytest.raises(ValueError, match="overlap"):
      inference.window_starts(10, 4, overlap)


def test_pad_to_window_is_symmetric_with_the_larger_half_after():
  images = _images((2, 3, 5, 4, 1))
  padded, crop = inference._pad_to_window(images, (6, 4, 7), fill=-9.0)
  assert padded.shape == (2, 6, 5, 7, 1)
  np.testing.assert_array_equal(padded[crop], images)
  assert crop[1] == slice(1, 4) and crop[2] == slice(0, 5) and crop[3] == slice(1, 5)
  assert np.all(padded[:, :1] == -9) and np.all(padded[:, 4:] == -9)
  assert np.all(padded[:, :, :, :1] == -9) and np.all(padded[:, :, :, 5:] == -9)
  same, crop = inference._pad_to_window(images, (3, 5, 4), fill=0.0)
  assert same is images and same[crop].shape == images.shape


# ------------------------------------------------------------------------------------------
# sliding_window_logits against the reference.
# ------------------------------------------------------------------------------------------

_CASES = {
    # name: (apply, variables, images shape (N, *spatial, C), window, overlap, blend, batch)
    "2d_three_images_non_square": (_apply2, _VARS2, (3, 9, 7, 2), (4, 6), 0.5, "gaussian", 3),
    "2d_padded_axis_constant_big_batch": (_apply2, _VARS2, (1, 10, 5, 2), (4, 6), 0.25,
                                          "constant", 100),
    "2d_no_overlap": (_apply2, _VARS2, (2, 11, 8, 2), (4, 4), 0.0, "gaussian", 5),
    "3d_two_volumes": (_apply3, _VARS3, (2, 7, 6, 5, 1), (4, 4, 3), 0.5, "gaussian", 3),
    "3d_padded_quarter_overlap": (_apply3, _VARS3, (1, 3, 6, 5, 1), (4, 4, 4), 0.25, "constant",
                                  4),
}


@pytest.mark.parametrize("name", list(_CASES))
def test_sliding_window_logits_equals_the_reference(name):
  apply, variables, shape, window, overlap, blend, batch = _CASES[name]
  images = _images(shape, seed=len(name))
  got = inference.sliding_window_logits(apply, images, window=window, overlap=overlap,
                                        blend=blend, batch_size=batch, args=(variables,))
  want = _reference(apply, variables, images, window, overlap=overlap, blend=blend)
  k = 3 if apply is _apply2 else 2
  assert got.shape == shape[:-1] + (k,) and got.dtype == np.float32
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sliding_window_logits_fill_and_sigma_scale():
  images = _images((2, 5, 9, 2), seed=7)
  kwargs = dict(window=(8, 4), overlap=0.5, blend="gaussian", sigma_scale=(0.3, 0.1))
  got = inference.sliding_window_logits(_apply2, images, batch_size=4, fill=2.5,
                                        args=(_VARS2,), **kwargs)
  want = _reference(_apply2, _VARS2, images, fill=2.5, **kwargs)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # The default fill is the images' minimum, which differs here near the padded borders.
  default = _reference(_apply2, _VARS2, images, **kwargs)
  assert not np.allclose(default, want, atol=1e-3)


def test_sliding_window_logits_single_window_is_the_model():
  # One window covering each image: the blend divides the weights out, any blend.
  images = _images((2, 6, 4, 2), seed=3)
  want = np.asarray(inference.final_logits(_apply2(_VARS2, images)))
  for blend in inference.BLENDS:
    got = inference.sliding_window_logits(_apply2, images, window=(6, 4), blend=blend,
                                          batch_size=2, args=(_VARS2,))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_sliding_window_logits_rejects_bad_arguments():
  images = _images((1, 8, 8, 2))
  call = lambda **kw: inference.sliding_window_logits(
      _apply2, kw.pop("images", images), args=(_VARS2,), **{"window": (4, 4), **kw})
  with pytest.raises(ValueError, match="2 spatial axes"):
    call(window=(4, 4, 4))
  with pytest.raises(ValueError, match="overlap"):
    call(overlap=1.0)
  with pytest.raises(ValueError, match="overlap"):
    call(overlap=-0.5)
  with pytest.raises(ValueError, match="blend"):
    call(blend="max")
  with pytest.raises(ValueError, match="batch_size"):
    call(batch_size=0)
  with pytest.raises(ValueError, match="window"):
    call(window=(0, 4))
  with pytest.raises(ValueError, match="non-empty"):
    call(images=np.zeros((8, 8)))
  with pytest.raises(ValueError, match="non-empty"):
    call(images=np.zeros((0, 8, 8, 2)))


def test_sliding_window_logits_compiles_once_per_shape():
  images = _images((1, 10, 7, 2), seed=11)
  kwargs = dict(window=(4, 4), overlap=0.5, batch_size=4)
  first = inference.sliding_window_logits(_apply2, images, args=(_VARS2,), **kwargs)
  size = inference._sliding._cache_size()
  other = jax.tree.map(lambda x: x * 0.5 - 0.2, _VARS2)
  second = inference.sliding_window_logits(_apply2, images, args=(other,), **kwargs)
  assert inference._sliding._cache_size() == size
  assert not np.allclose(first, second, atol=1e-3)
  np.testing.assert_allclose(second, _reference(_apply2, other, images, kwargs["window"],
                                                overlap=0.5, blend="gaussian"),
                             rtol=1e-5, atol=1e-5)
  # Another image shape is another program.
  inference.sliding_window_logits(_apply2, images[:, :9], args=(_VARS2,), **kwargs)
  assert inference._sliding._cache_size() == size + 1


def test_sliding_window_logits_on_the_mesh():
  mesh = _mesh()
  images = _images((3, 9, 7, 2), seed=5)
  kwargs = dict(window=(4, 6), overlap=0.5, args=(_VARS2,))
  want = inference.sliding_window_logits(_apply2, images, batch_size=3, **kwargs)
  got = inference.sliding_window_logits(_apply2, images, batch_size=4, mesh=mesh, **kwargs)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  # Fewer windows (2) than the batch (8): one call of the windows rounded up to the devices.
  small = images[:2, :4, :6]
  np.testing.assert_allclose(
      inference.sliding_window_logits(_apply2, small, batch_size=8, mesh=mesh, **kwargs),
      inference.sliding_window_logits(_apply2, small, batch_size=1, **kwargs),
      rtol=1e-5, atol=1e-5)
  with pytest.raises(ValueError, match="multiple of the 4 devices"):
    inference.sliding_window_logits(_apply2, images, batch_size=6, mesh=mesh, **kwargs)


def test_sliding_window_logits_stochastic_key():
  images = _images((2, 4, 4, 4, 1), seed=6)
  kwargs = dict(window=(4, 4, 4), batch_size=1, args=(_VARS3,))
  key = jax.random.key(42)
  a = inference.sliding_window_logits(_noisy3, images, key=key, **kwargs)
  b = inference.sliding_window_logits(_noisy3, images, key=key, **kwargs)
  c = inference.sliding_window_logits(_noisy3, images, key=jax.random.key(43), **kwargs)
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c, atol=0.1)
  # One window per image and batch: window batch b gets fold_in(key, b).
  clean = np.asarray(inference.final_logits(_apply3(_VARS3, images)))
  for i in range(2):
    noise = np.asarray(jax.random.normal(jax.random.fold_in(key, i), (1, 4, 4, 4, 2)))[0]
    np.testing.assert_allclose(a[i], clean[i] + noise, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------
# volume_logits.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 4, 6), (7, 4, 5)])
def test_volume_logits_one_window_equals_the_whole_volume(shape):
  # (7, 4, 5) pads one voxel on two axes: at the end in both modes.
  image = _images(shape + (1,), seed=8)
  apply = inference.ModelApply(_MODEL3)
  kwargs = dict(inference="volume", size_multiple=(4, 4, 2))
  whole = inference.volume_logits(apply, _VARS3, image, window=None, **kwargs)
  windowed = inference.volume_logits(apply, _VARS3, image, window=(8, 4, 6), batch_size=2,
                                     **kwargs)
  assert whole.shape == windowed.shape == shape + (2,)
  np.testing.assert_allclose(windowed, whole, rtol=1e-5, atol=1e-5)
  if shape == (8, 4, 6):
    direct = np.asarray(_MODEL3.apply(_VARS3, image[None])["logits"])[0]
    np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-5)


def test_volume_logits_slices_one_window_equals_whole_slices():
  image = _images((8, 4, 3, 2), seed=9)
  apply = inference.ModelApply(_MODEL2)
  kwargs = dict(inference="slices", size_multiple=4, batch_size=2)
  whole = inference.volume_logits(apply, _VARS2, image, window=None, **kwargs)
  windowed = inference.volume_logits(apply, _VARS2, image, window=(8, 4), **kwargs)
  assert whole.shape == windowed.shape == (8, 4, 3, 3)
  np.testing.assert_allclose(windowed, whole, rtol=1e-5, atol=1e-5)
  slices = np.moveaxis(image, 2, 0)
  direct = np.moveaxis(np.asarray(_MODEL2.apply(_VARS2, slices)[-1]), 0, 2)
  np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-5)
  # Smaller windows blend windows of each slice: the reference over the (z, x, y, C) slices.
  small = inference.volume_logits(apply, _VARS2, image, window=(4, 4), **kwargs)
  want = _reference(_apply2, _VARS2, slices, (4, 4), overlap=0.5, blend="gaussian")
  np.testing.assert_allclose(small, np.moveaxis(want, 0, 2), rtol=1e-5, atol=1e-5)


def test_volume_logits_slices_with_context():
  model = _Conv2D(classes=2)
  variables = _init(model, (1, 4, 4, 3))
  image = _images((8, 4, 5), seed=10)           # one channel, 1 neighbour per side -> 3
  apply = inference.ModelApply(model)
  kwargs = dict(inference="slices", size_multiple=4, batch_size=4, context=1)
  whole = inference.volume_logits(apply, variables, image, window=None, **kwargs)
  windowed = inference.volume_logits(apply, variables, image, window=(8, 4), **kwargs)
  np.testing.assert_allclose(windowed, whole, rtol=1e-5, atol=1e-5)
  stacked = np.moveaxis(inference.stack_slice_context(image, 1), 2, 0)
  direct = np.moveaxis(np.asarray(model.apply(variables, stacked)[-1]), 0, 2)
  np.testing.assert_allclose(whole, direct, rtol=1e-5, atol=1e-5)


def test_volume_logits_rejects_bad_windows():
  image = _images((8, 4, 6, 1))
  apply = inference.ModelApply(_MODEL3)
  with pytest.raises(ValueError, match="multiple of the model's size multiple"):
    inference.volume_logits(apply, _VARS3, image, size_multiple=(4, 4, 2), window=(8, 4, 3))
  with pytest.raises(ValueError, match="multiple of the model's size multiple"):
    inference.volume_logits(apply, _VARS2, image[..., 0], inference="slices", size_multiple=4,
                            window=(6, 4))
  with pytest.raises(ValueError, match="3 spatial axes"):
    inference.volume_logits(apply, _VARS3, image, window=(8, 4))
  with pytest.raises(ValueError, match="inference"):
    inference.volume_logits(apply, _VARS3, image, inference="patches")


# ------------------------------------------------------------------------------------------
# flip_sets, Moments, ModelApply, check_stochastic, check_ensemble.
# ------------------------------------------------------------------------------------------


def test_flip_sets():
  sets = inference.flip_sets((0, 1, 2))
  assert len(sets) == 8 and len(set(sets)) == 8 and sets[0] == ()
  assert set(sets) == {(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)}
  assert inference.flip_sets((2, 0)) == [(), (2,), (0,), (2, 0)]
  assert inference.flip_sets(()) == [()]
  for bad in ((0, 0), (3,), (-1,), (True,), (0.0,)):
    with pytest.raises(ValueError, match="flip axes"):
      inference.flip_sets(bad)


def test_moments_equal_numpy():
  rng = np.random.default_rng(0)
  values = rng.normal(loc=3.0, scale=2.0, size=(7, 4, 3, 2))
  moments = inference.Moments()
  with pytest.raises(ValueError, match="no value"):
    moments.mean
  with pytest.raises(ValueError, match="no value"):
    moments.variance
  for v in values:
    moments.add(v)
  assert moments.count == 7
  assert moments.mean.dtype == moments.variance.dtype == np.float32
  np.testing.assert_allclose(moments.mean, values.mean(0), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(moments.variance, values.var(0, ddof=0), rtol=1e-5, atol=1e-6)
  single = inference.Moments()
  single.add(values[0])
  np.testing.assert_allclose(single.mean, values[0], rtol=1e-6)
  np.testing.assert_array_equal(single.variance, np.zeros_like(values[0]))


def test_model_apply_uses_the_mc_switch_or_training_mode():
  x = _images((1, 4, 4, 4, 1), seed=12)
  key = jax.random.key(5)
  det = inference.ModelApply(_DROP3)(_DROP_VARS, x)
  np.testing.assert_allclose(det, _DROP3.apply(_DROP_VARS, x), rtol=1e-6)
  mc = inference.ModelApply(_DROP3, stochastic=True)
  np.testing.assert_allclose(
      mc(_DROP_VARS, x, key),
      _DROP3.apply(_DROP_VARS, x, mc_dropout=True, rngs={"dropout": key}), rtol=1e-6)
  assert not np.allclose(mc(_DROP_VARS, x, key), det, atol=1e-3)
  assert not np.allclose(mc(_DROP_VARS, x, key), mc(_DROP_VARS, x, jax.random.key(6)), atol=1e-3)
  # Without the switch, a stochastic pass is the training-mode pass.
  model = _ConfigConv3D(_Config(0.5))
  variables = _init(model, (1, 4, 4, 4, 1))
  np.testing.assert_allclose(
      inference.ModelApply(model, stochastic=True)(variables, x, key),
      model.apply(variables, x, train=True, rngs={"dropout": key}), rtol=1e-6)
  assert hash(inference.ModelApply(_MODEL3)) == hash(inference.ModelApply(_MODEL3))


def test_check_stochastic():
  inference.check_stochastic(_DROP3, _DROP_VARS)           # the mc_dropout switch
  no_dropout = _ConfigConv3D(_Config(0.0))
  variables = _init(no_dropout, (1, 4, 4, 4, 1))
  with pytest.raises(ValueError, match="has no dropout") as e:
    inference.check_stochastic(no_dropout, variables)
  assert "\n" not in str(e.value) and "_ConfigConv3D" in str(e.value)
  with pytest.raises(ValueError, match="has no dropout"):
    inference.check_stochastic(_MODEL3, _VARS3)             # no config at all
  dropout = _ConfigConv3D(_Config(0.25))
  inference.check_stochastic(dropout, variables)
  with pytest.raises(ValueError, match="batch statistics") as e:
    inference.check_stochastic(dropout, {**variables, "batch_stats": {"mean": jnp.zeros(2)}})
  assert "\n" not in str(e.value)


def _card(*, activation="softmax", classes=2, channels=1, kind="volume", window=None, **kw):
  names = ("background", "fg") if activation == "sigmoid" else tuple(
      f"c{i}" for i in range(classes))
  return ModelCard(activation=activation, class_names=names,
                   channels=tuple(f"ch{i}" for i in range(channels)), spacing=None,
                   normalization=(no_normalization(),) * channels, inference=kind,
                   window=window, **kw)


@pytest.mark.parametrize("field, value", [
    ("class_names", ("bg", "lesion")), ("channels", ("T2W",)), ("spacing", (1.0, 1.0, 3.0)),
    ("layout", "zyx"), ("activation", "sigmoid"), ("inference", "slices")])
def test_check_ensemble_rejects_differing_cards(field, value):
  card = _card()
  other = dataclasses.replace(card, **{field: value})
  with pytest.raises(ValueError, match=f"ModelCard.{field}"):
    inference.check_ensemble([card, other])
  with pytest.raises(ValueError, match="model 2 has"):
    inference.check_ensemble([card, card, other])


def test_check_ensemble_accepts_differing_info_and_window():
  card = _card(window=(4, 4, 4), info={"fold": 0})
  inference.check_ensemble([card, _card(window=(4, 4, 2), info={"fold": 1}), _card()])
  inference.check_ensemble([card])


# ------------------------------------------------------------------------------------------
# predict_distribution / predict_probabilities.
# ------------------------------------------------------------------------------------------

_IMAGE = _images((6, 5, 4, 1), seed=13)


def test_predict_distribution_mirrorings_by_hand():
  card = _card(window=(4, 4, 4))
  pred = inference.predict_distribution([(_MODEL3, _VARS3, card)], _IMAGE, flips=(0, 1, 2))
  assert pred.passes == 8 and pred.variance is None
  assert pred.mean.shape == (6, 5, 4, 2) and pred.mean.dtype == np.float32
  passes = []
  for axes in itertools.product(*[((), (a,)) for a in range(3)]):
    axes = sum(axes, ())
    x = np.flip(_IMAGE, axes)
    logits = _reference(_apply3, _VARS3, x[None], (4, 4, 4), overlap=0.5, blend="gaussian")[0]
    passes.append(np.flip(inference.probabilities(logits, "softmax"), axes))
  np.testing.assert_allclose(pred.mean, np.mean(passes, axis=0), rtol=1e-5, atol=1e-6)
  plain = inference.predict_probabilities(_MODEL3, _VARS3, _IMAGE, card)
  np.testing.assert_allclose(plain, passes[0], rtol=1e-5, atol=1e-6)
  assert not np.allclose(plain, pred.mean, atol=1e-3)     # mirroring changes the answer
  # Two axes: 4 passes.
  two = inference.predict_distribution([(_MODEL3, _VARS3, card)], _IMAGE, flips=(0, 2))
  assert two.passes == 4
  np.testing.assert_allclose(two.mean, np.mean([passes[i] for i in (0, 1, 4, 5)], axis=0),
                             rtol=1e-5, atol=1e-6)


def test_predict_probabilities_window_override_and_card_window():
  card = _card(window=(4, 4, 4))
  # window=None overrides the card: whole-volume inference.
  whole = inference.predict_probabilities(_MODEL3, _VARS3, _IMAGE, card, window=None)
  direct = np.asarray(_MODEL3.apply(_VARS3, _IMAGE[None])["logits"])[0]
  np.testing.assert_allclose(whole, special.softmax(direct, -1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
      inference.predict_probabilities(_MODEL3, _VARS3, _IMAGE, _card()), whole, atol=1e-6)
  # An explicit window overrides the card's, with overlap and blend.
  got = inference.predict_probabilities(_MODEL3, _VARS3, _IMAGE, _card(), window=(4, 4, 2),
                                        overlap=0.25, blend="constant", batch_size=3)
  want = _reference(_apply3, _VARS3, _IMAGE[None], (4, 4, 2), overlap=0.25, blend="constant")
  np.testing.assert_allclose(got, inference.probabilities(want[0], "softmax"), rtol=1e-5,
                             atol=1e-6)
  # A sigmoid slices card with a window: (x, y, z) foreground probabilities.
  image = _images((8, 7, 3), seed=14)
  scard = _card(activation="sigmoid", kind="slices", window=(4, 4))
  p = inference.predict_probabilities(_MODEL2S, _VARS2S, image, scard, batch_size=4)
  assert p.shape == (8, 7, 3)
  slices = np.moveaxis(image[..., None], 2, 0)
  want = _reference(_apply2s, _VARS2S, slices, (4, 4), overlap=0.5, blend="gaussian")
  np.testing.assert_allclose(p, special.expit(np.moveaxis(want, 0, 2)[..., 0]), rtol=1e-5,
                             atol=1e-6)


def test_predict_distribution_ensemble_is_the_mean_of_the_members():
  card_a = _card(window=(4, 4, 4), info={"fold": 0})
  card_b = _card(window=(4, 4, 2), info={"fold": 1})
  members = [(_MODEL3, _VARS3, card_a), (_MODEL3, _VARS3B, card_b)]
  pred = inference.predict_distribution(members, _IMAGE)
  assert pred.passes == 2 and pred.variance is None
  a = inference.predict_probabilities(_MODEL3, _VARS3, _IMAGE, card_a)
  b = inference.predict_probabilities(_MODEL3, _VARS3B, _IMAGE, card_b)
  assert not np.allclose(a, b, atol=1e-3)
  np.testing.assert_allclose(pred.mean, (a + b) / 2, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="ModelCard.class_names"):
    bad = _card(classes=2, window=(4, 4, 4))
    bad = dataclasses.replace(bad, class_names=("bg", "x"))
    inference.predict_distribution([members[0], (_MODEL3, _VARS3B, bad)], _IMAGE)
  with pytest.raises(ValueError, match="no model"):
    inference.predict_distribution([], _IMAGE)


def test_predict_distribution_on_the_mesh():
  card = _card(window=(4, 4, 4))
  want = inference.predict_distribution([(_MODEL3, _VARS3, card)], _IMAGE, flips=(1,))
  got = inference.predict_distribution([(_MODEL3, _VARS3, card)], _IMAGE, flips=(1,),
                                       mesh=_mesh(), batch_size=3)
  assert got.passes == 2
  np.testing.assert_allclose(got.mean, want.mean, rtol=1e-5, atol=1e-6)


def test_predict_distribution_mc_dropout_by_hand():
  card = _card(window=(4, 4, 4))
  key = jax.random.key(7)
  pred = inference.predict_distribution([(_DROP3, _DROP_VARS, card)], _IMAGE, mc_samples=3,
                                        key=key, batch_size=2)
  assert pred.passes == 3 and pred.variance is not None
  samples = []
  for s in range(3):
    k = jax.random.fold_in(jax.random.fold_in(key, 0), s)
    logits = inference.volume_logits(inference.ModelApply(_DROP3, stochastic=True), _DROP_VARS,
                                     _IMAGE, window=(4, 4, 4), batch_size=2, key=k)
    samples.append(inference.probabilities(logits, "softmax"))
  np.testing.assert_allclose(pred.mean, np.mean(samples, 0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pred.variance, np.var(samples, 0), rtol=1e-4, atol=1e-6)
  assert pred.variance.max() > 1e-4                 # the samples do differ
  # The deterministic pass is not one of them.
  det = inference.predict_probabilities(_DROP3, _DROP_VARS, _IMAGE, card, batch_size=2)
  assert not np.allclose(det, samples[0], atol=1e-3)


def test_predict_distribution_mc_needs_a_stochastic_model():
  model = _ConfigConv3D(_Config(0.0))
  variables = _init(model, (1, 4, 4, 4, 1))
  with pytest.raises(ValueError, match="has no dropout"):
    inference.predict_distribution([(model, variables, _card())], _IMAGE, mc_samples=2)
  with pytest.raises(ValueError, match="mc_samples"):
    inference.predict_distribution([(_DROP3, _DROP_VARS, _card())], _IMAGE, mc_samples=-1)


# ------------------------------------------------------------------------------------------
# ModelCard.window.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind, window", [("slices", (64, 48)), ("volume", (32, 32, 8)),
                                          ("volume", None), ("slices", None)])
def test_model_card_window_round_trips(kind, window):
  card = _card(kind=kind, window=window)
  assert card.window == window
  d = json.loads(json.dumps(card.to_json()))
  assert d["window"] == (None if window is None else list(window))
  back = ModelCard.from_json(d)
  assert back == card and back.window == window
  assert back.window is None or isinstance(back.window, tuple)


def test_model_card_window_from_lists_and_numpy():
  assert _card(window=[4, 4, 2]).window == (4, 4, 2)
  assert _card(window=np.array([4, 4, 2])).window == (4, 4, 2)
  assert _card(window=(np.int64(4), 4, 2)).window == (4, 4, 2)


@pytest.mark.parametrize("kind, window", [
    ("slices", (4, 4, 4)), ("volume", (4, 4)), ("volume", (0, 4, 4)), ("slices", (4, -1)),
    ("volume", (True, 4, 4)), ("volume", (4.0, 4, 4)), ("volume", "444"), ("volume", 4),
    ("volume", ())])
def test_model_card_window_rejects_bad_values(kind, window):
  with pytest.raises(ValueError, match=r"ModelCard\.window") as e:
    _card(kind=kind, window=window)
  assert "\n" not in str(e.value)


def test_model_card_without_window_is_an_older_card():
  d = _card(window=(4, 4, 4)).to_json()
  del d["window"]
  card = ModelCard.from_json(d)
  assert card.window is None
  assert card == _card()
