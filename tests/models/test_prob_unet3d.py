"""Tests of the probabilistic 3D attention U-Net (seed 001) and its building blocks.

Compilation dominates the cost of these tests on a 2-core CPU, so the full model is built once per
module (``_MODEL``), its parameters are drawn in NumPy on the ``jax.eval_shape``'d variable tree
(a real ``init`` compiles one initialiser per parameter shape), forward passes run eagerly (each
primitive compiles once and is then shared by every test), and only ``mc_predict`` and the
gradient are jitted, each once. The building blocks (small graphs) are tested with
``chex.variants`` against float64 NumPy references written from their formulas.
"""

import dataclasses
import functools
import itertools
import json
import math

import chex
import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized

from jaxseg import models
from jaxseg.models.prob_unet3d import (AttentionGate, GaussianEncoder, ProbAttentionUNet3D,
                                       ProbUNet3DConfig, SEResidualBlock, SqueezeExcite,
                                       lecun_normal_flat, mc_predict, zyx_to_xyz)

_BATCH, _SPATIAL, _CLASSES = 2, (8, 8, 4), 3


# --------------------------------------------------------------------------------------------
# Helpers: NumPy parameters and float64 NumPy references.
# --------------------------------------------------------------------------------------------
def _fill(tree, seed: int):
  """NumPy parameters for an eval_shape'd tree: LeCun-normal kernels, unit-ish scales, biases."""
  rng = np.random.default_rng(seed)

  def one(path, leaf):
    name = path[-1].key
    if name == "scale":
      return (1.0 + 0.1 * rng.normal(size=leaf.shape)).astype(np.float32)
    if name == "bias":
      return (0.1 * rng.normal(size=leaf.shape)).astype(np.float32)
    fan_in = math.prod(leaf.shape[:-1])
    return (rng.normal(size=leaf.shape) / math.sqrt(fan_in)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(one, tree)


def _init(module, *args, seed=0, **kwargs):
  shapes = jax.eval_shape(
      lambda: module.init({"params": jax.random.key(0), "dropout": jax.random.key(1)}, *args,
                          **kwargs))
  return _fill(shapes, seed)


def _leaky(x):
  return np.where(x >= 0, x, 0.1 * x)


def _sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _np64(tree):
  return jax.tree.map(lambda a: np.asarray(a, np.float64), tree)


def _conv3d(x, w, strides=(1, 1, 1), b=None):
  """'SAME' 3D convolution (XLA/TF padding: total = max((ceil(n/s)-1)s + k - n, 0), low half)."""
  pads, outs = [], []
  for n, k, s in zip(x.shape[1:4], w.shape[:3], strides):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    pads.append((total // 2, total - total // 2))
    outs.append(out)
  xp = np.pad(x, [(0, 0), *pads, (0, 0)])
  y = np.zeros((x.shape[0], *outs, w.shape[-1]))
  for i, j, l in itertools.product(*(range(k) for k in w.shape[:3])):
    patch = xp[:, i:i + (outs[0] - 1) * strides[0] + 1:strides[0],
               j:j + (outs[1] - 1) * strides[1] + 1:strides[1],
               l:l + (outs[2] - 1) * strides[2] + 1:strides[2]]
    y += patch @ w[i, j, l]
  return y if b is None else y + b


def _instance_norm(x, p, eps=1e-5):
  mean = x.mean(axis=(1, 2, 3), keepdims=True)
  var = ((x - mean) ** 2).mean(axis=(1, 2, 3), keepdims=True)
  return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def _squeeze_excite(x, p, squeeze_from=None):
  s = (x if squeeze_from is None else squeeze_from).mean(axis=(1, 2, 3), keepdims=True)
  s = _leaky(s @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"])
  s = _sigmoid(s @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"])
  return x * s


def _se_residual(x, p, strides):
  y = _conv3d(x, p["Conv_0"]["kernel"], strides)
  y = _leaky(_instance_norm(y, p["InstanceNorm_0"]))
  z = _conv3d(y, p["Conv_1"]["kernel"])
  y = _squeeze_excite(_instance_norm(z, p["InstanceNorm_1"]), p["SqueezeExcite_0"], squeeze_from=z)
  residual = x
  if "Conv_2" in p:
    residual = _instance_norm(_conv3d(x, p["Conv_2"]["kernel"], strides), p["InstanceNorm_2"])
  return _leaky(y + residual)


def _attention_gate(x, g, p):
  factors = [a // b for a, b in zip(x.shape[1:4], g.shape[1:4])]
  phi = g @ p["Conv_1"]["kernel"][0, 0, 0] + p["Conv_1"]["bias"]
  for axis, f in enumerate(factors, start=1):
    phi = np.repeat(phi, f, axis=axis)
  f = _leaky(x @ p["Conv_0"]["kernel"][0, 0, 0] + phi)
  alpha = _sigmoid(f @ p["Conv_2"]["kernel"][0, 0, 0] + p["Conv_2"]["bias"])
  return _instance_norm((alpha * x) @ p["Conv_3"]["kernel"][0, 0, 0], p["InstanceNorm_0"])


def _kl_np(posterior, prior):
  """sum over levels, voxels, channels of KL(N(mu_q, var_q) || N(mu_p, var_p)), per example."""
  total = 0.0
  for (mq, lq), (mp, lp) in zip(_np64(posterior), _np64(prior)):
    vq, vp = np.exp(lq), np.exp(lp)
    kl = 0.5 * (np.log(vp / vq) + (vq + (mq - mp) ** 2) / vp - 1.0)
    total = total + kl.reshape(kl.shape[0], -1).sum(axis=1)
  return total


# --------------------------------------------------------------------------------------------
# Shared model, variables and inputs.
# --------------------------------------------------------------------------------------------
_RNG = np.random.default_rng(0)  # module-level draws only (test order must not matter)
_IMAGES = _RNG.normal(size=(_BATCH, *_SPATIAL, 1)).astype(np.float32)
_LABELS = np.eye(_CLASSES, dtype=np.float32)[_RNG.integers(0, _CLASSES, (_BATCH, *_SPATIAL))]
_MODEL = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(num_classes=_CLASSES))
_VARS = _init(_MODEL, _IMAGES, _LABELS, train=True)
# latent_levels=0 and no dropout: a deterministic attention U-Net.
_DET_MODEL = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(num_classes=_CLASSES, latent_levels=0,
                                                      dropout_rate=0.0, final_dropout_rate=0.0))
_DET_VARS = _init(_DET_MODEL, _IMAGES, seed=1)
_MC = jax.jit(functools.partial(mc_predict, _MODEL, num_samples=3))


def _apply(images=_IMAGES, labels=None, key=None, model=_MODEL, variables=_VARS, **kwargs):
  rngs = None if key is None else {"dropout": jax.random.key(key)}
  return model.apply(variables, images, labels, rngs=rngs, **kwargs)


# --------------------------------------------------------------------------------------------
# Config and presets (no compilation).
# --------------------------------------------------------------------------------------------
class ConfigTest(parameterized.TestCase):

  def test_zyx_to_xyz(self):
    self.assertEqual(zyx_to_xyz([(1, 2, 3), [4, 5, 6]]), ((3, 2, 1), (6, 5, 4)))

  def test_paper_preset(self):
    cfg = ProbUNet3DConfig.paper()
    paper_strides = ((1, 1, 1), (1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))  # (z, y, x)
    paper_kernels = ((1, 3, 3), (1, 3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3))
    self.assertEqual(cfg.filters, (32, 64, 128, 256, 512))
    self.assertEqual(cfg.strides, tuple(tuple(reversed(s)) for s in paper_strides))
    self.assertEqual(cfg.strides, ((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2)))
    self.assertEqual(cfg.kernel_sizes, tuple(tuple(reversed(k)) for k in paper_kernels))
    self.assertEqual(cfg.kernel_sizes, ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3)))
    self.assertEqual(cfg.level_shapes((160, 160, 20)),
                     ((160, 160, 20), (80, 80, 20), (40, 40, 20), (20, 20, 10), (10, 10, 5)))
    self.assertEqual(cfg.size_multiple, (16, 16, 4))
    self.assertEqual((cfg.dropout_rate, cfg.final_dropout_rate), (0.5, 0.25))
    self.assertEqual((cfg.num_classes, cfg.in_channels, cfg.latent_levels), (3, 1, 2))
    self.assertFalse(cfg.mc_dropout)
    diagnostic = ProbUNet3DConfig.paper(2, 3, latent_dim=4)
    self.assertEqual((diagnostic.num_classes, diagnostic.in_channels, diagnostic.latent_dim),
                     (2, 3, 4))

  def test_cpu_preset(self):
    cfg = ProbUNet3DConfig.cpu()
    self.assertEqual(cfg.level_shapes((32, 32, 8)), ((32, 32, 8), (16, 16, 8), (8, 8, 4)))
    self.assertEqual(cfg.size_multiple, (4, 4, 2))
    self.assertLess(max(cfg.filters), 64)

  def test_sequences_are_normalised_and_hashable(self):
    cfg = ProbUNet3DConfig(filters=[4, 8], strides=[[1, 1, 1], [2, 2, 2]],
                           kernel_sizes=[[3, 3, 3], [3, 3, 3]], latent_levels=1,
                           latent_filters=[2, 2])
    self.assertEqual(cfg.strides, ((1, 1, 1), (2, 2, 2)))
    self.assertEqual(cfg.latent_filters, (2, 2))
    self.assertEqual(hash(cfg), hash(ProbUNet3DConfig(
        filters=(4, 8), strides=((1, 1, 1), (2, 2, 2)), kernel_sizes=((3, 3, 3), (3, 3, 3)),
        latent_levels=1, latent_filters=(2, 2))))

  @parameterized.named_parameters(
      ("one_level", dict(filters=(8,), strides=((1, 1, 1),), kernel_sizes=((3, 3, 3),))),
      ("zero_filter", dict(filters=(8, 0, 32))),
      ("strides_count", dict(strides=((1, 1, 1), (2, 2, 2)))),
      ("kernels_count", dict(kernel_sizes=((3, 3, 3),) * 4)),
      ("first_stride", dict(strides=((2, 2, 1), (2, 2, 1), (2, 2, 2)))),
      ("zero_stride", dict(strides=((1, 1, 1), (2, 0, 1), (2, 2, 2)))),
      ("pair_stride", dict(strides=((1, 1, 1), (2, 2), (2, 2, 2)))),
      ("scalar_strides", dict(strides=(1, 2, 2))),
      ("too_many_latent_levels", dict(latent_levels=3)),
      ("negative_latent_levels", dict(latent_levels=-1)),
      ("fractional_latent_levels", dict(latent_levels=1.5)),
      ("latent_dim", dict(latent_dim=0)),
      ("latent_filters", dict(latent_filters=(4, 8))),
      ("num_classes", dict(num_classes=0)),
      ("in_channels", dict(in_channels=0)),
      ("se_reduction", dict(se_reduction=0)),
      ("dropout_one", dict(dropout_rate=1.0)),
      ("final_dropout_negative", dict(final_dropout_rate=-0.1)),
      ("dtype_unknown", dict(dtype="float13")),
      ("dtype_integer", dict(dtype="int32")),
      ("conv_impl", dict(conv_impl="cudnn")),
  )
  def test_bad_config_raises(self, overrides):
    with self.assertRaises(ValueError):
      ProbUNet3DConfig.cpu(**overrides)

  def test_describe_build_round_trip(self):
    for cfg in (ProbUNet3DConfig.cpu(), ProbUNet3DConfig.paper(2, 3, latent_filters=(4,) * 5),
                ProbUNet3DConfig.cpu(latent_levels=0, dtype="bfloat16")):
      name, config = models.describe(ProbAttentionUNet3D(cfg))
      self.assertEqual(name, "ProbAttentionUNet3D")
      rebuilt = models.build(*json.loads(json.dumps([name, config])))
      self.assertIsInstance(rebuilt, ProbAttentionUNet3D)
      self.assertEqual(rebuilt.config, cfg)
    # The rebuilt model has the same variables (names and shapes).
    rebuilt = models.build(*models.describe(_MODEL))
    chex.assert_trees_all_equal_shapes_and_dtypes(
        jax.eval_shape(lambda: rebuilt.init(jax.random.key(0), _IMAGES)), _VARS)


# --------------------------------------------------------------------------------------------
# Building blocks against NumPy references.
# --------------------------------------------------------------------------------------------
class BlocksTest(chex.TestCase):

  @chex.variants(with_jit=True, without_jit=True)
  def test_squeeze_excite(self):
    x = np.random.default_rng(3).normal(size=(2, 4, 4, 2, 8)).astype(np.float32)
    module = SqueezeExcite(reduction=4)
    variables = _init(module, x, seed=3)
    self.assertEqual(variables["params"]["Dense_0"]["kernel"].shape, (8, 2))
    out = self.variant(module.apply)(variables, x)
    chex.assert_shape(out, x.shape)
    expected = _squeeze_excite(np.float64(x), _np64(variables["params"]))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)

  @chex.variants(with_jit=True, without_jit=True)
  @parameterized.named_parameters(
      ("identity", 8, (3, 3, 1), (1, 1, 1), (2, 4, 4, 2, 8)),
      ("projected", 16, (3, 3, 3), (2, 2, 1), (2, 2, 2, 2, 16)),
  )
  def test_se_residual_block(self, features, kernel, strides, out_shape):
    x = np.random.default_rng(4).normal(size=(2, 4, 4, 2, 8)).astype(np.float32)
    module = SEResidualBlock(features, kernel, strides, se_reduction=2)
    variables = _init(module, x, seed=4)
    # The residual branch is projected only when the stride or the channel count changes.
    self.assertEqual("Conv_2" in variables["params"], strides != (1, 1, 1))
    out = self.variant(module.apply)(variables, x)
    chex.assert_shape(out, out_shape)
    expected = _se_residual(np.float64(x), _np64(variables["params"]), strides)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  @chex.variants(with_jit=True, without_jit=True)
  def test_attention_gate(self):
    rng = np.random.default_rng(5)
    skip = rng.normal(size=(2, 4, 4, 2, 6)).astype(np.float32)
    gate = rng.normal(size=(2, 2, 2, 2, 5)).astype(np.float32)  # coarser by (2, 2, 1)
    module = AttentionGate(inter_channels=3)
    variables = _init(module, skip, gate, seed=5)
    out = self.variant(module.apply)(variables, skip, gate)
    chex.assert_shape(out, skip.shape)  # the gated skip keeps the skip's shape
    chex.assert_type(out, jnp.float32)
    expected = _attention_gate(np.float64(skip), np.float64(gate), _np64(variables["params"]))
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)

  def test_gaussian_encoder_levels(self):
    cfg = ProbUNet3DConfig.cpu()
    enc = GaussianEncoder(cfg.filters, cfg.strides, cfg.kernel_sizes, cfg.se_reduction,
                          latent_levels=2, latent_dim=3)
    x = jnp.zeros((1, 8, 8, 4, 2))
    out = jax.eval_shape(lambda: enc.init_with_output(jax.random.key(0), x))[0]
    self.assertLen(out, 2)  # coarse -> fine
    for (mu, logvar), shape in zip(out, ((1, 2, 2, 2, 3), (1, 4, 4, 4, 3))):
      chex.assert_shape([mu, logvar], shape)
      self.assertEqual(mu.dtype, jnp.float32)

  def test_lecun_normal_flat(self):
    w = np.asarray(lecun_normal_flat(jax.random.key(0), (3, 3, 3, 16, 64)))
    std = 1.0 / math.sqrt(3 * 3 * 3 * 16)
    self.assertEqual(w.shape, (3, 3, 3, 16, 64))
    np.testing.assert_allclose(w.std(), std, rtol=0.05)
    self.assertLessEqual(np.abs(w).max(), 2.0 * std / 0.87962566103423978 + 1e-6)
    np.testing.assert_array_equal(w, lecun_normal_flat(jax.random.key(0), (3, 3, 3, 16, 64)))


# --------------------------------------------------------------------------------------------
# The full model.
# --------------------------------------------------------------------------------------------
class ModelTest(chex.TestCase):

  def test_variables_follow_the_nested_decoder_design(self):
    params = _VARS["params"]
    # Built without labels, the posterior net still gets its parameters.
    no_labels = jax.eval_shape(lambda: _MODEL.init(jax.random.key(0), _IMAGES))
    chex.assert_trees_all_equal_shapes_and_dtypes(no_labels, _VARS)
    shape = lambda *path: functools.reduce(lambda t, k: t[k], path, params).shape
    # Posterior net: image (1) + one-hot label (3) channels; prior net: image only.
    self.assertEqual(shape("posterior_net", "SEResidualBlock_0", "Conv_0", "kernel"),
                     (3, 3, 1, 4, 8))
    self.assertEqual(shape("prior_net", "SEResidualBlock_0", "Conv_0", "kernel"),
                     (3, 3, 1, 1, 8))
    self.assertEqual(shape("prior_net", "latent_2", "kernel"), (1, 1, 1, 32, 4))  # mu, logvar
    self.assertEqual(shape("prior_net", "latent_1", "kernel"), (1, 1, 1, 16, 4))
    # Chains of transposed convs: bottleneck (32 + 2 latent) -> level 1 -> level 0, and
    # D_1 (16 + 2 latent) -> level 0.
    self.assertEqual(shape("up_1_0", "kernel"), (3, 3, 3, 34, 16))
    self.assertEqual(shape("up_0_0", "kernel"), (3, 3, 3, 18, 8))
    self.assertEqual(shape("up_0_1", "kernel"), (3, 3, 3, 16, 8))
    # Dense concatenation: D_0 sees both chains (8 + 8) and its gated skip (8).
    self.assertEqual(shape("decoder_0", "Conv_0", "kernel"), (3, 3, 1, 24, 8))
    self.assertEqual(shape("decoder_1", "Conv_0", "kernel"), (3, 3, 3, 32, 16))
    # Gates are driven by the next coarser decoder level (latent included).
    self.assertEqual(shape("gate_1", "Conv_1", "kernel"), (1, 1, 1, 34, 16))
    self.assertEqual(shape("gate_0", "Conv_1", "kernel"), (1, 1, 1, 18, 8))
    self.assertEqual(shape("head_1", "kernel"), (1, 1, 1, 18, 3))
    self.assertEqual(shape("head_0", "kernel"), (1, 1, 1, 8, 3))
    self.assertNotIn("head_2", params)
    self.assertNotIn("prior_net", _DET_VARS["params"])
    self.assertNotIn("posterior_net", _DET_VARS["params"])

  def test_output_shapes_and_dtypes(self):
    out = _apply(labels=_LABELS, key=0, train=True)
    self.assertEqual(set(out), {"logits", "deep_supervision", "kl", "prior", "posterior"})
    chex.assert_shape(out["logits"], (_BATCH, *_SPATIAL, _CLASSES))
    self.assertLen(out["deep_supervision"], 1)
    chex.assert_shape(out["deep_supervision"][0], (_BATCH, 4, 4, 4, _CLASSES))
    chex.assert_shape(out["kl"], (_BATCH,))
    chex.assert_type([out["logits"], *out["deep_supervision"], out["kl"]], jnp.float32)
    for name in ("prior", "posterior"):  # coarse -> fine latent levels
      self.assertLen(out[name], 2)
      chex.assert_shape(out[name][0], (_BATCH, 2, 2, 2, 2))
      chex.assert_shape(out[name][1], (_BATCH, 4, 4, 4, 2))
      chex.assert_type(jax.tree.leaves(out[name]), jnp.float32)
    chex.assert_tree_all_finite(out)

  def test_deep_supervision_heads_fine_to_coarse(self):
    cfg = ProbUNet3DConfig(filters=(2, 2, 2, 2, 2), strides=((1, 1, 1),) + ((2, 2, 1),) * 4,
                           kernel_sizes=((1, 1, 1),) * 5, latent_levels=1, latent_dim=1,
                           se_reduction=2)
    images = jnp.zeros((1, 16, 16, 2, 1))
    out = jax.eval_shape(lambda: ProbAttentionUNet3D(cfg).init_with_output(
        jax.random.key(0), images))[0]
    self.assertEqual([h.shape[1:4] for h in out["deep_supervision"]],
                     [(8, 8, 2), (4, 4, 2), (2, 2, 2)])
    no_ds = dataclasses.replace(cfg, deep_supervision=False)
    out = jax.eval_shape(lambda: ProbAttentionUNet3D(no_ds).init_with_output(
        jax.random.key(0), images))[0]
    self.assertEqual(out["deep_supervision"], ())

  def test_kl_matches_numpy_and_is_nonnegative(self):
    for kwargs in (dict(key=0, train=True), dict(train=False)):
      out = _apply(labels=_LABELS, **kwargs)
      kl = np.asarray(out["kl"])
      self.assertTrue(np.all(kl > 0.0))  # random prior and posterior nets disagree
      np.testing.assert_allclose(kl, _kl_np(out["posterior"], out["prior"]), rtol=1e-5)
    # KL(q || q) = 0 on the posterior's own statistics.
    np.testing.assert_allclose(_kl_np(out["posterior"], out["posterior"]), 0.0, atol=1e-12)

  def test_kl_is_zero_without_labels(self):
    for kwargs in (dict(), dict(key=0, train=True)):
      out = _apply(**kwargs)
      self.assertIsNone(out["posterior"])
      np.testing.assert_array_equal(out["kl"], np.zeros(_BATCH, np.float32))

  def test_posterior_sees_the_label(self):
    a = _apply(labels=_LABELS)
    b = _apply(labels=np.roll(_LABELS, 1, axis=-1))
    for level in range(2):  # both latent levels' posterior statistics depend on the label
      for stat in range(2):
        diff = jnp.abs(a["posterior"][level][stat] - b["posterior"][level][stat])
        self.assertGreater(float(jnp.max(diff)), 1e-4)
    # The prior does not.
    chex.assert_trees_all_equal(a["prior"], b["prior"])

  def test_deterministic_pass(self):
    a = _apply()  # train=False, no MC dropout: no rng needed
    b = _apply()
    chex.assert_trees_all_equal(a["logits"], b["logits"])
    chex.assert_tree_all_finite(a)
    # Deterministic means no dropout and z = mu of the prior: labels change only the KL.
    c = _apply(labels=_LABELS)
    np.testing.assert_array_equal(c["logits"], a["logits"])
    # A stochastic pass without an rng fails (the "dropout" stream is required).
    with self.assertRaises(flax.errors.InvalidRngError):
      _apply(mc_dropout=True)

  @chex.variants(with_jit=True, without_jit=True)
  def test_deterministic_pass_variants(self):
    fn = self.variant(lambda v, x: _DET_MODEL.apply(v, x)["logits"])
    a, b = fn(_DET_VARS, _IMAGES), fn(_DET_VARS, _IMAGES)
    chex.assert_shape(a, (_BATCH, *_SPATIAL, _CLASSES))
    np.testing.assert_array_equal(a, b)

  def test_decoded_latent(self):
    prior_mean = _apply(labels=_LABELS, sample_prior=True)["logits"]
    posterior_mean = _apply(labels=_LABELS, sample_prior=False)["logits"]
    self.assertGreater(float(jnp.max(jnp.abs(prior_mean - posterior_mean))), 1e-4)
    # Training with labels decodes the posterior; sample_prior=True forces the prior.
    train = _apply(labels=_LABELS, key=7, train=True)["logits"]
    np.testing.assert_array_equal(
        train, _apply(labels=_LABELS, key=7, train=True, sample_prior=False)["logits"])
    forced_prior = _apply(labels=_LABELS, key=7, train=True, sample_prior=True)["logits"]
    self.assertGreater(float(jnp.max(jnp.abs(train - forced_prior))), 1e-4)
    # Without labels training decodes the prior: the same pass as MC dropout at train=False.
    np.testing.assert_array_equal(forced_prior,
                                  _apply(key=7, train=True)["logits"])
    np.testing.assert_array_equal(forced_prior,
                                  _apply(key=7, train=False, mc_dropout=True)["logits"])
    np.testing.assert_array_equal(
        forced_prior,
        _apply(key=7, model=ProbAttentionUNet3D(dataclasses.replace(_MODEL.config,
                                                                    mc_dropout=True)))["logits"])

  def test_same_key_same_output_different_key_different_output(self):
    a = _apply(labels=_LABELS, key=1, train=True)
    b = _apply(labels=_LABELS, key=1, train=True)
    c = _apply(labels=_LABELS, key=2, train=True)
    chex.assert_trees_all_equal(a, b)
    self.assertGreater(float(jnp.max(jnp.abs(a["logits"] - c["logits"]))), 1e-3)
    # The statistics do not depend on the key, only the sample does.
    chex.assert_trees_all_equal(a["prior"], c["prior"])
    np.testing.assert_allclose(a["kl"], c["kl"], rtol=1e-6)

  def test_mc_predict_matches_manual_passes(self):
    key = jax.random.key(11)
    mean, var = _MC(_VARS, _IMAGES, key)
    chex.assert_shape([mean, var], (_BATCH, *_SPATIAL, _CLASSES))
    chex.assert_type([mean, var], jnp.float32)
    # mc_predict's convention: pass n uses jax.random.split(key, N)[n] as the "dropout" rng.
    probs = np.stack([
        _softmax(np.float64(_MODEL.apply(_VARS, _IMAGES, train=False, mc_dropout=True,
                                         rngs={"dropout": k})["logits"]))
        for k in jax.random.split(key, 3)])
    self.assertGreater(probs.std(axis=0).max(), 1e-3)  # the passes do differ
    np.testing.assert_allclose(mean, probs.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(var, probs.var(axis=0), atol=1e-6)  # population variance
    np.testing.assert_allclose(np.sum(mean, axis=-1), 1.0, atol=1e-5)
    # Same key, same result; another key, another result.
    chex.assert_trees_all_equal((mean, var), _MC(_VARS, _IMAGES, key))
    other, _ = _MC(_VARS, _IMAGES, jax.random.key(12))
    self.assertGreater(float(jnp.max(jnp.abs(other - mean))), 1e-4)

  def test_mc_predict_variance_vanishes_without_randomness(self):
    mc = jax.jit(functools.partial(mc_predict, _DET_MODEL, num_samples=2))
    mean, var = mc(_DET_VARS, _IMAGES, jax.random.key(0))
    np.testing.assert_array_equal(var, np.zeros_like(var))
    deterministic = _softmax(np.float64(_DET_MODEL.apply(_DET_VARS, _IMAGES)["logits"]))
    np.testing.assert_allclose(mean, deterministic, atol=1e-5)

  def test_no_latent_levels_is_a_deterministic_attention_unet(self):
    out = _apply(labels=_LABELS, key=3, train=True, model=_DET_MODEL, variables=_DET_VARS)
    self.assertIsNone(out["prior"])
    self.assertIsNone(out["posterior"])
    np.testing.assert_array_equal(out["kl"], np.zeros(_BATCH, np.float32))
    # No latent and no dropout: the training pass is the deterministic pass.
    det = _apply(model=_DET_MODEL, variables=_DET_VARS)
    np.testing.assert_allclose(out["logits"], det["logits"], rtol=1e-6, atol=1e-6)
    self.assertLen(out["deep_supervision"], 1)

  def test_conv_impls_agree(self):
    # The CPU preset runs its convolutions as patch matrices; the XLA convolutions give the same
    # model: same parameters, same outputs (stochastic pass with one key) and the same gradients.
    self.assertEqual(_MODEL.config.conv_impl, "im2col")
    xla = ProbAttentionUNet3D(dataclasses.replace(_MODEL.config, conv_impl="xla"))
    chex.assert_trees_all_equal_shapes(_VARS, _init(xla, _IMAGES, _LABELS, train=True))
    key = jax.random.key(3)

    def loss(model, params):
      out = model.apply({"params": params}, _IMAGES, _LABELS, train=True, rngs={"dropout": key})
      return jnp.mean(out["logits"] ** 2) + jnp.mean(out["kl"]), out

    run = lambda model: jax.jit(jax.value_and_grad(functools.partial(loss, model),
                                                   has_aux=True))(_VARS["params"])
    (value_a, out_a), grad_a = run(_MODEL)
    (value_b, out_b), grad_b = run(xla)
    np.testing.assert_allclose(out_a["logits"], out_b["logits"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(value_a, value_b, rtol=1e-5)
    # Float32 sums in another order (and other kernels per CPU ISA): each leaf's gradients agree
    # to 1% of that leaf's largest gradient. A fixed atol of 1e-5 failed on 2026-12-02's machine
    # by 2e-5 on one element of a leaf whose largest entry is 4e-3; a wrong convolution is off by
    # the size of the gradient itself.
    chex.assert_trees_all_equal_shapes(grad_a, grad_b)
    for a, b in zip(jax.tree.leaves(grad_a), jax.tree.leaves(grad_b)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-2 * float(np.abs(b).max()) + 1e-12)

  def test_gradients_are_finite(self):
    @jax.jit
    def grads(params, key):
      def loss(p):
        out = _MODEL.apply({"params": p}, _IMAGES, _LABELS, train=True, rngs={"dropout": key})
        ce = -jnp.mean(jnp.sum(_LABELS * jax.nn.log_softmax(out["logits"]), axis=-1))
        ds = jnp.mean(out["deep_supervision"][0] ** 2)
        return ce + ds + 10.0 * jnp.mean(out["kl"])
      return jax.grad(loss)(params)

    g = grads(_VARS["params"], jax.random.key(0))
    chex.assert_tree_all_finite(g)
    chex.assert_trees_all_equal_shapes(g, _VARS["params"])
    norm = lambda tree: sum(np.abs(np.asarray(t)).sum() for t in jax.tree.leaves(tree))
    # Every part is trained: the prior and posterior nets (via the KL and the decoded posterior
    # sample), the encoder, both decoder nodes, the gates and both heads.
    for name in ("prior_net", "posterior_net", "encoder_0", "encoder_2", "decoder_0",
                 "decoder_1", "gate_0", "gate_1", "up_0_1", "head_0", "head_1"):
      self.assertGreater(norm(g[name]), 0.0, msg=name)

  @parameterized.named_parameters(
      ("ndim", dict(images=_IMAGES[0])),
      ("channels", dict(images=np.zeros((_BATCH, *_SPATIAL, 2), np.float32))),
      ("empty_batch", dict(images=np.zeros((0, *_SPATIAL, 1), np.float32))),
      ("not_multiple_xy", dict(images=np.zeros((_BATCH, 6, 8, 4, 1), np.float32))),
      ("not_multiple_z", dict(images=np.zeros((_BATCH, 8, 8, 3, 1), np.float32))),
      ("label_channels", dict(labels=_LABELS[..., :2])),
      ("label_spatial", dict(labels=_LABELS[:, :4])),
      ("label_integer_map", dict(labels=np.zeros((_BATCH, *_SPATIAL), np.int32))),
      ("posterior_without_labels", dict(sample_prior=False)),
  )
  def test_bad_inputs_raise(self, kwargs):
    with self.assertRaises(ValueError):
      _apply(**kwargs)

  def test_mc_predict_bad_arguments(self):
    for kwargs in (dict(num_samples=0), dict(num_samples=2.5), dict(activation="relu")):
      with self.assertRaises(ValueError):
        mc_predict(_MODEL, _VARS, _IMAGES, jax.random.key(0), **kwargs)
    with self.assertRaises(ValueError):  # the model's own checks run inside mc_predict
      mc_predict(_MODEL, _VARS, _IMAGES[:, :6], jax.random.key(0), num_samples=1)


if __name__ == "__main__":
  pytest.main([__file__])
