"""Tests of `jaxseg.predict`: the predict CLI and `predict_volume`.

Nothing is trained: models (UNet2D with sigmoid and softmax outputs, TransUNet, the probabilistic
3D U-Net) get random variables (drawn with NumPy from the shapes of ``jax.eval_shape(model.init,
...)``, which is much faster than ``model.init`` on CPU) and are exported with ``save_model`` and
a :class:`~jaxseg.model_card.ModelCard`. Correctness is checked against ``model.apply`` on the
normalised slices / volumes, and the resampling path against the no-resampling path with a model
whose logits are a known function of the intensity.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
import pytest
from jax.sharding import Mesh
from scipy import ndimage, special

from jaxseg import predict
from jaxseg.data.pipeline import DATA_AXIS
from jaxseg.data.preprocess import normalize_intensity
from jaxseg import inference
from jaxseg.inference import final_logits
from jaxseg.model_card import ModelCard, no_normalization, percentile_zscore, scale
from jaxseg.models import (ProbAttentionUNet3D, ProbUNet3DConfig, TransUNet, TransUNetConfig,
                           UNet2D, UNet2DConfig)
from jaxseg.train.checkpoint import load_model, save_model

REPO = Path(__file__).resolve().parents[1]
PROMISE_NIFTI = REPO / ".." / "shared" / "data" / "promise12_nifti" / "Case00.nii.gz"
CLASSES9 = tuple(f"class{i}" for i in range(9))


def _random_variables(model, channels: int, seed: int):
  """He-normal kernels, small random biases, identity BatchNorm statistics."""
  m = model.size_multiple
  spatial = tuple(m) if isinstance(m, tuple) else (m, m)
  shapes = jax.eval_shape(model.init, jax.random.key(0),
                          jax.ShapeDtypeStruct((1, *spatial, channels), jnp.float32))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == "kernel":
      fan_in = int(np.prod(leaf.shape[:-1]))
      return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    if name in ("scale", "var"):
      return np.ones(leaf.shape, np.float32)
    if name == "mean":
      return np.zeros(leaf.shape, np.float32)
    return (0.1 * rng.standard_normal(leaf.shape)).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, shapes)


def _card(**overrides) -> ModelCard:
  """A sigmoid 2D card (one T2W channel, percentile z-score), fields overridden."""
  base = dict(activation="sigmoid", class_names=("background", "prostate"), channels=("T2W",),
              spacing=None, normalization=(percentile_zscore(),), inference="slices",
              layout="xyz", info={"study": "test"})
  base.update(overrides)
  if "channels" in overrides and "normalization" not in overrides:
    base["normalization"] = (percentile_zscore(),) * len(base["channels"])
  return ModelCard(**base)


def _softmax_card(names, **overrides) -> ModelCard:
  return _card(activation="softmax", class_names=tuple(names), **overrides)


BPMRI = ("T2W", "DWI", "ADC")
BPMRI_NORM = (percentile_zscore(), percentile_zscore(), scale(3000.0))
BINARY_MODEL = UNet2D(UNet2DConfig.tversky(width=0.0625))
MULTI_MODEL = UNet2D(UNet2DConfig.hierarchical(width=0.0625))
RGB_MODEL = UNet2D(UNet2DConfig.hierarchical(width=0.0625, num_classes=2))
TRANSUNET_MODEL = TransUNet(TransUNetConfig.cpu(
    image_size=32, root_width=4, hidden_size=16, num_layers=1, num_heads=2, mlp_dim=16,
    head_channels=8, decoder_channels=(8, 4, 4, 4), gn_groups=2))
PROB3D_MODEL = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(
    3, 3, filters=(2, 4), strides=((1, 1, 1), (2, 2, 1)), kernel_sizes=((3, 3, 1), (3, 3, 3)),
    latent_levels=1, se_reduction=2))
PROB3D_CARD = _softmax_card(("background", "TZ", "PZ"), channels=BPMRI, normalization=BPMRI_NORM,
                            spacing=(0.5, 0.5, 3.0), inference="volume")


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  root = tmp_path_factory.mktemp("models")
  out = {}
  binary_vars = _random_variables(BINARY_MODEL, 1, 0)
  out["binary"] = save_model(root / "binary", model=BINARY_MODEL, variables=binary_vars,
                             card=_card(spacing=(1.5, 1.5, 3.0)))
  out["binary_zyx"] = save_model(root / "binary_zyx", model=BINARY_MODEL, variables=binary_vars,
                                 card=_card(layout="zyx"))
  out["multi"] = save_model(
      root / "multi", model=MULTI_MODEL, variables=_random_variables(MULTI_MODEL, 1, 1),
      card=_softmax_card(CLASSES9, info={"alpha": 0.5}))
  out["rgb"] = save_model(
      root / "rgb", model=RGB_MODEL, variables=_random_variables(RGB_MODEL, 3, 2),
      card=_softmax_card(("background", "prostate"), channels=("R", "G", "B")))
  out["transunet"] = save_model(
      root / "transunet", model=TRANSUNET_MODEL,
      variables=_random_variables(TRANSUNET_MODEL, 1, 3), card=_card())
  out["prob3d"] = save_model(
      root / "prob3d", model=PROB3D_MODEL, variables=_random_variables(PROB3D_MODEL, 3, 4),
      card=PROB3D_CARD)
  return out


def _volume(shape, seed=0):
  rng = np.random.default_rng(seed)
  return (100 + 40 * rng.standard_normal(shape)).astype(np.float32)


def _run(capsys, *argv):
  rc = predict.main([str(a) for a in argv])
  captured = capsys.readouterr()
  return rc, captured.out, captured.err


# ------------------------------------------------------------------------------------------
# NIfTI and .npy round trips.
# ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not PROMISE_NIFTI.exists(), reason="shared PROMISE12 NIfTI sample absent")
def test_real_nifti_resampled_both_ways_keeps_grid_and_header(ckpts, tmp_path, capsys):
  ref = nib.load(PROMISE_NIFTI)
  out = tmp_path / "pred" / "Case00_pred.nii.gz"
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", PROMISE_NIFTI,
                            "--output", out)
  assert rc == 0, stderr
  got = nib.load(out)
  assert got.shape == ref.shape == (128, 128, 64)
  np.testing.assert_array_equal(got.affine, ref.affine)
  np.testing.assert_array_equal(got.header.get_zooms(), ref.header.get_zooms())
  for key in ("qform_code", "sform_code", "dim_info", "xyzt_units"):
    assert got.header[key] == ref.header[key], key
  np.testing.assert_array_equal(got.header.get_qform(), ref.header.get_qform())
  assert got.get_data_dtype() == np.uint8
  labels = np.asarray(got.dataobj)
  assert labels.dtype == np.uint8
  assert set(np.unique(labels).tolist()) <= {0, 1}
  lines = stdout.strip().splitlines()
  assert len(lines) == 1
  assert "->" in lines[0] and "(128, 128, 64)" in lines[0] and "resampled" in lines[0]
  assert f"foreground {np.mean(labels != 0):.4f}" in lines[0]

  # Probabilities: float32 in [0, 1] on the same grid, consistent with the labels.
  out_p = tmp_path / "Case00_prob.nii.gz"
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", PROMISE_NIFTI,
                       "--output", out_p, "--probabilities")
  assert rc == 0, stderr
  prob_img = nib.load(out_p)
  assert prob_img.get_data_dtype() == np.float32
  np.testing.assert_array_equal(prob_img.affine, ref.affine)
  prob = np.asarray(prob_img.dataobj)
  assert prob.shape == ref.shape and prob.min() >= 0 and prob.max() <= 1
  np.testing.assert_array_equal(labels, (prob > 0.5).astype(np.uint8))


def test_npy_labels_and_probabilities(ckpts, tmp_path, capsys):
  image = _volume((20, 24, 5))
  np.save(tmp_path / "in.npy", image)
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input",
                            tmp_path / "in.npy", "--output", tmp_path / "out.npy")
  assert rc == 0, stderr
  labels = np.load(tmp_path / "out.npy")
  assert labels.shape == image.shape and labels.dtype == np.uint8 and labels.max() < 9
  assert "resampled" not in stdout  # the model has spacing null: never resampled

  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "prob.npy", "--probabilities")
  assert rc == 0, stderr
  prob = np.load(tmp_path / "prob.npy")
  assert prob.shape == (20, 24, 5, 9) and prob.dtype == np.float32
  np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(np.argmax(prob, -1), labels)


def test_npy_spacing_option_resamples_and_keeps_shape(ckpts, tmp_path, capsys):
  image = _volume((24, 20, 6), seed=3)
  np.save(tmp_path / "in.npy", image)
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input",
                            tmp_path / "in.npy", "--output", tmp_path / "out.npy",
                            "--spacing", 1.0, 1.0, 2.0)
  assert rc == 0, stderr
  assert "resampled 1x1x2 -> 1.5x1.5x3 mm" in stdout
  labels = np.load(tmp_path / "out.npy")
  assert labels.shape == image.shape and set(np.unique(labels).tolist()) <= {0, 1}


def test_trailing_singleton_nifti_is_squeezed_and_restored(ckpts, tmp_path, capsys):
  affine = np.diag([0.8, 0.8, 2.5, 1.0])
  affine[:3, 3] = [-10.0, 5.0, 3.0]
  nib.save(nib.Nifti1Image(_volume((20, 24, 3, 1)).astype(np.int16), affine),
           tmp_path / "in.nii")
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "in.nii",
                       "--output", tmp_path / "out.nii")
  assert rc == 0, stderr
  got = nib.load(tmp_path / "out.nii")
  assert got.shape == (20, 24, 3, 1)
  np.testing.assert_array_equal(got.affine, nib.load(tmp_path / "in.nii").affine)
  np.testing.assert_allclose(got.affine, affine, atol=1e-6)
  assert got.get_data_dtype() == np.uint8


def test_directory_of_inputs(ckpts, tmp_path, capsys):
  src = tmp_path / "in"
  src.mkdir()
  np.save(src / "a.npy", _volume((20, 24, 5), seed=4))
  np.save(src / "b.npy", _volume((20, 24, 5), seed=5))
  (src / "notes.txt").write_text("not an image")
  dst = tmp_path / "out"
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", src,
                            "--output", dst)
  assert rc == 0, stderr
  assert sorted(os.listdir(dst)) == ["a.npy", "b.npy"]
  for name in ("a.npy", "b.npy"):
    assert np.load(dst / name).shape == (20, 24, 5)
  lines = stdout.strip().splitlines()
  assert len(lines) == 2 and "a.npy" in lines[0] and "b.npy" in lines[1]
  assert "skipping" in stderr and "notes.txt" in stderr


# ------------------------------------------------------------------------------------------
# Errors: exit code 2, one line naming the file, no traceback.
# ------------------------------------------------------------------------------------------


def _assert_clean_error(rc, stderr, *needles):
  assert rc == 2
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  assert lines[0].startswith("jaxseg.predict: error: ")
  assert "Traceback" not in stderr
  for needle in needles:
    assert needle in lines[0], (needle, lines[0])


def _write_corrupt_nifti(path):
  path.write_bytes(b"\x1f\x8b this is not a gzipped NIfTI file")


def _write_corrupt_npy(path):
  path.write_bytes(b"\x93NUMPY garbage")


def _write_2d_npy(path):
  np.save(path, np.zeros((8, 8), np.float32))


def _write_4d_nifti(path):
  nib.save(nib.Nifti1Image(np.zeros((8, 8, 3, 2), np.float32), np.eye(4)), path)


def _write_png(path):
  path.write_bytes(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize("name,writer,needle", [
    ("corrupt.nii.gz", _write_corrupt_nifti, "corrupt"),
    ("corrupt.npy", _write_corrupt_npy, "corrupt"),
    ("flat.npy", _write_2d_npy, "3D"),
    ("four_d.nii.gz", _write_4d_nifti, "3D"),
    ("image.png", _write_png, "unsupported file extension"),
])
def test_bad_input_files(ckpts, tmp_path, capsys, name, writer, needle):
  path = tmp_path / name
  writer(path)
  out = tmp_path / ("out" + "".join(Path(name).suffixes))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", path, "--output", out)
  _assert_clean_error(rc, stderr, str(path), needle)
  assert not out.exists()


def test_not_an_exported_model(tmp_path, capsys):
  (tmp_path / "empty").mkdir()
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", tmp_path / "empty", "--input",
                       tmp_path / "in.npy", "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "checkpoint", str(tmp_path / "empty"), "not an exported")


def test_input_channel_mismatch(ckpts, tmp_path, capsys):
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["rgb"], "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, str(tmp_path / "in.npy"), "3-channel", "(R, G, B)",
                      "(x, y, z, 3)", "(8, 8, 2)")


def test_output_format_must_match_input(ckpts, tmp_path, capsys):
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.nii.gz")
  _assert_clean_error(rc, stderr, str(tmp_path / "in.npy"), ".npy")


def test_missing_input_and_bad_options(ckpts, tmp_path, capsys):
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "nope.npy",
                       "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "nope.npy", "no such file")
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.npy", "--threshold", "1.5")
  _assert_clean_error(rc, stderr, "--threshold")
  rc, _, _ = _run(capsys, "--checkpoint", ckpts["multi"], "--input", tmp_path / "in.npy")
  assert rc == 2  # argparse: missing --output


def test_directory_continues_after_a_bad_file(ckpts, tmp_path, capsys):
  src = tmp_path / "in"
  src.mkdir()
  np.save(src / "good.npy", _volume((20, 24, 5), seed=6))
  _write_corrupt_npy(src / "bad.npy")
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["multi"], "--input", src,
                            "--output", tmp_path / "out")
  _assert_clean_error(rc, stderr, "bad.npy")
  assert (tmp_path / "out" / "good.npy").exists() and "good.npy" in stdout


def test_module_entry_point_error_has_no_traceback(tmp_path):
  (tmp_path / "empty").mkdir()
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  env = {**os.environ, "JAX_PLATFORMS": "cpu"}
  proc = subprocess.run(
      [sys.executable, "-m", "jaxseg.predict", "--checkpoint", str(tmp_path / "empty"),
       "--input", str(tmp_path / "in.npy"), "--output", str(tmp_path / "out.npy")],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False)
  _assert_clean_error(proc.returncode, proc.stderr, "not an exported")


# ------------------------------------------------------------------------------------------
# predict_volume correctness.
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model,seed", [(BINARY_MODEL, 0), (MULTI_MODEL, 1)])
def test_predict_volume_equals_model_apply_on_normalised_slices(model, seed):
  variables = _random_variables(model, 1, seed)
  binary = model.config.num_classes == 1
  card = (_card(spacing=(0.75, 0.75, 3.0)) if binary
          else _softmax_card(CLASSES9, spacing=(0.75, 0.75, 3.0)))
  image = _volume((16, 32, 6), seed=seed)
  # Reference: normalise the whole volume, stack the axial slices, one call of model.apply.
  norm = normalize_intensity(image, lower=0.5, upper=99.5)
  slices = np.moveaxis(norm, 2, 0)[..., None]
  apply = jax.jit(inference.ModelApply(model))  # model.apply(..., train=False)
  logits = np.moveaxis(np.asarray(apply(variables, slices)), 0, 2)  # (x, y, z, K)
  if binary:
    want_prob = special.expit(logits[..., 0]).astype(np.float32)
    want_labels = (want_prob > 0.5).astype(np.uint8)
  else:
    want_prob = special.softmax(logits, axis=-1).astype(np.float32)
    want_labels = np.argmax(logits, axis=-1).astype(np.uint8)

  spacing = (0.75, 0.75, 3.0)  # the training spacing: no resampling
  labels = predict.predict_volume(model, variables, card, image, spacing, batch_size=6)
  prob = predict.predict_volume(model, variables, card, image, spacing, batch_size=6,
                                probabilities=True)
  np.testing.assert_array_equal(prob, want_prob)
  np.testing.assert_array_equal(labels, want_labels)
  assert labels.dtype == np.uint8 and labels.shape == image.shape
  # spacing=None means "at the training spacing" too.
  np.testing.assert_array_equal(
      predict.predict_volume(model, variables, card, image, None, batch_size=6), labels)
  # Sharded over the 4 test devices (batch rounded up to 8): same result up to float noise.
  mesh = Mesh(np.array(jax.devices()), (DATA_AXIS,))
  prob_mesh = predict.predict_volume(model, variables, card, image, spacing, batch_size=6,
                                     probabilities=True, mesh=mesh)
  np.testing.assert_allclose(prob_mesh, want_prob, atol=1e-5)


def test_sigmoid_threshold_is_applied():
  variables = _random_variables(BINARY_MODEL, 1, 0)
  image = _volume((16, 32, 6), seed=0)
  prob = predict.predict_volume(BINARY_MODEL, variables, _card(), image, None, batch_size=6,
                                probabilities=True)
  for threshold in (0.2, 0.5, 0.8):
    labels = predict.predict_volume(BINARY_MODEL, variables, _card(), image, None,
                                    batch_size=6, threshold=threshold)
    np.testing.assert_array_equal(labels, (prob > threshold).astype(np.uint8))


@dataclasses.dataclass(frozen=True)
class _RampConfig:
  scale: float = 40.0
  num_classes: int = 1


class _Ramp(nn.Module):
  """Logits ``scale * (x - 1/2)`` of the first channel (and 0 for class 0 when 2 classes)."""

  config: _RampConfig = _RampConfig()

  @nn.compact
  def __call__(self, images, *, train=False):
    del train
    bias = self.param("bias", nn.initializers.zeros, ())
    x = self.config.scale * (images[..., :1] - 0.5) + bias
    if self.config.num_classes == 2:
      x = jnp.concatenate([jnp.zeros_like(x), x], axis=-1)
    return x


def _ball(shape, spacing, centre_mm, radius_mm):
  """Smooth ball: 1 inside, 0 outside, a linear ramp 6 mm wide across the surface."""
  grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shape, spacing)],
                      indexing="ij")
  r = np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, centre_mm)))
  return np.clip(0.5 - (r - radius_mm) / 6.0, 0.0, 1.0).astype(np.float32)


@pytest.mark.parametrize("num_classes", [1, 2])
def test_resampling_round_trip_keeps_the_segmentation_in_place(num_classes):
  model = _Ramp(_RampConfig(num_classes=num_classes))
  variables = {"params": {"bias": np.zeros((), np.float32)}}
  card = _card(spacing=(1.5, 1.5, 3.0), normalization=(no_normalization(),),
               **({} if num_classes == 1 else {"activation": "softmax"}))
  spacing = (1.0, 1.0, 2.0)
  shape = (45, 43, 21)
  image = _ball(shape, spacing, centre_mm=(21.0, 23.5, 20.0), radius_mm=12.0)
  want = (image > 0.5).astype(np.uint8)  # what the "model" segments on the input grid
  np.testing.assert_array_equal(predict.predict_volume(model, variables, card, image, None),
                                want)
  got = predict.predict_volume(model, variables, card, image, spacing)
  assert got.shape == shape and got.dtype == np.uint8
  # Linear interpolation of the (convex) distance shrinks the ball a little; nothing else moves.
  dice = 2 * np.sum(got & want) / (np.sum(got) + np.sum(want))
  assert dice > 0.97, dice
  # No shift (a half-voxel error of the coarse grid would move it by 0.75 voxel): the centres
  # of mass agree to a small fraction of a voxel.
  np.testing.assert_allclose(ndimage.center_of_mass(got), ndimage.center_of_mass(want),
                             atol=0.15)
  prob = predict.predict_volume(model, variables, card, image, spacing, probabilities=True)
  assert prob.shape == (shape if num_classes == 1 else shape + (2,))
  if num_classes == 2:
    np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-5)




def test_channel_checks_use_the_card_and_the_parameters():
  variables = _random_variables(RGB_MODEL, 3, 2)
  card = _softmax_card(("background", "prostate"), channels=("R", "G", "B"))
  with pytest.raises(ValueError, match="3-channel"):
    predict.predict_volume(RGB_MODEL, variables, card, _volume((8, 8, 2)), None)
  labels = predict.predict_volume(RGB_MODEL, variables, card, _volume((8, 8, 2, 3)), None)
  assert labels.shape == (8, 8, 2) and labels.max() <= 1
  # A card that names one channel for a model whose parameters take three.
  with pytest.raises(ValueError, match="does not accept"):
    predict.predict_volume(RGB_MODEL, variables, _softmax_card(("background", "prostate")),
                           _volume((8, 8, 2)), None)


def test_predict_volume_rejects_bad_arguments():
  model = _Ramp(_RampConfig())
  variables = {"params": {"bias": np.zeros((), np.float32)}}
  with pytest.raises(ValueError, match="volume"):
    predict.predict_volume(model, variables, _card(), np.zeros((4, 4)), None)
  with pytest.raises(ValueError, match="spacing"):
    predict.predict_volume(model, variables, _card(spacing=(1, 1, 1)), np.zeros((4, 4, 2)),
                           (1.0, -1.0, 1.0))
  with pytest.raises(ValueError, match="output channel"):
    predict.predict_volume(model, variables, _softmax_card(("a", "b")), np.zeros((4, 4, 2)),
                           None)
  with pytest.raises(ValueError, match="ModelCard"):
    predict.predict_volume(model, variables, {"activation": "sigmoid"}, np.zeros((4, 4, 2)),
                           None)
  with pytest.raises(ValueError, match="inference"):
    predict.predict_volume(PROB3D_MODEL, _random_variables(PROB3D_MODEL, 3, 4),
                           dataclasses.replace(PROB3D_CARD, inference="slices"),
                           np.zeros((4, 4, 2, 3)), None)


# ------------------------------------------------------------------------------------------
# Every kind of exported model, end to end (NIfTI in, NIfTI out).
# ------------------------------------------------------------------------------------------


def _apply(model, variables, x):
  """``model.apply(variables, x, train=False)``, jitted; the same jitted function as prediction's
  so that a reference call of the same shape costs no second compile (eager TransUNet / 3D
  U-Net calls take tens of seconds on CPU)."""
  return inference._jit_call(inference.ModelApply(model), (variables,), x, None)


def _reference_labels(model, variables, card, image):
  """Labels from one direct ``model.apply`` on the normalised, padded slices or volume."""
  norm = card.normalize(image)
  m = model.size_multiple
  mult = tuple(m) if isinstance(m, tuple) else (m, m, 1)
  pad = [(0, (-n) % k) for n, k in zip(norm.shape[:3], mult)] + [(0, 0)]
  padded = np.pad(norm, pad, constant_values=norm.min())
  if card.inference == "slices":
    out = _apply(model, variables, np.moveaxis(padded, 2, 0))
    logits = np.moveaxis(np.asarray(final_logits(out)), 0, 2)
  else:
    logits = np.asarray(final_logits(_apply(model, variables, padded[None])))[0]
  logits = logits[:image.shape[0], :image.shape[1], :image.shape[2]]
  if card.activation == "sigmoid":
    return (special.expit(logits[..., 0]) > 0.5).astype(np.uint8), logits
  return np.argmax(logits, -1).astype(np.uint8), logits


def _bpmri_volume(shape, seed):
  rng = np.random.default_rng(seed)
  t2w = rng.gamma(2.0, 200.0, shape)
  dwi = rng.gamma(2.0, 20.0, shape)
  adc = rng.uniform(200.0, 2500.0, shape)
  return np.stack([t2w, dwi, adc], axis=-1).astype(np.float32)


@pytest.mark.parametrize("name,model,seed,image", [
    ("binary", BINARY_MODEL, 0, _volume((16, 32, 6), 10)),
    ("multi", MULTI_MODEL, 1, _volume((20, 12, 5), 11)),  # padded to 32 x 16 slices
    ("transunet", TRANSUNET_MODEL, 3, _volume((32, 16, 4), 12)),
    ("prob3d", PROB3D_MODEL, 4, _bpmri_volume((9, 12, 5), 13)),  # padded to 10 x 12 x 5
])
def test_every_exported_model_kind_end_to_end(ckpts, tmp_path, capsys, name, model, seed, image):
  _, variables, card = load_model(ckpts[name])
  spacing = card.spacing or (0.8, 0.8, 2.5)  # the training spacing: no resampling
  affine = np.diag([*spacing, 1.0])
  affine[:3, 3] = [-12.0, 7.0, 30.0]
  nib.save(nib.Nifti1Image(image, affine), tmp_path / "in.nii.gz")
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts[name], "--input",
                            tmp_path / "in.nii.gz", "--output", tmp_path / "out.nii.gz")
  assert rc == 0, stderr
  assert "resampled" not in stdout
  got = nib.load(tmp_path / "out.nii.gz")
  assert got.shape == image.shape[:3] and got.get_data_dtype() == np.uint8
  np.testing.assert_allclose(got.affine, affine, atol=1e-6)
  want, logits = _reference_labels(model, _random_variables(model, card.num_channels, seed),
                                   card, image)
  np.testing.assert_array_equal(np.asarray(got.dataobj), want)
  if card.activation == "softmax":  # not a degenerate model: several classes are predicted
    assert logits.shape[-1] == card.num_outputs and len(np.unique(want)) > 1


def test_multi_channel_model_needs_one_channels_last_file(ckpts, tmp_path, capsys):
  nib.save(nib.Nifti1Image(_volume((8, 8, 2)), np.eye(4)), tmp_path / "t2w.nii.gz")
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], "--input",
                       tmp_path / "t2w.nii.gz", "--output", tmp_path / "out.nii.gz")
  _assert_clean_error(rc, stderr, "t2w.nii.gz", "3-channel", "(T2W, DWI, ADC)", "(8, 8, 2)")
  np.save(tmp_path / "two.npy", _volume((8, 8, 2, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], "--input", tmp_path / "two.npy",
                       "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "two.npy", "3-channel", "(8, 8, 2, 2)")
  # A (x, y, z, 3) .npy works and gives (x, y, z) labels and (x, y, z, 3) probabilities.
  np.save(tmp_path / "bpmri.npy", _bpmri_volume((9, 12, 5), 0))  # compiled shape of the e2e test
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], "--input",
                       tmp_path / "bpmri.npy", "--output", tmp_path / "prob.npy",
                       "--probabilities")
  assert rc == 0, stderr
  prob = np.load(tmp_path / "prob.npy")
  assert prob.shape == (9, 12, 5, 3) and prob.dtype == np.float32
  np.testing.assert_allclose(prob.sum(-1), 1.0, atol=1e-5)


def test_zyx_npy_directory_round_trip(ckpts, tmp_path, capsys):
  """PROMISE12-layout (slices, rows, cols) arrays: same names, shapes and slice order out."""
  src = tmp_path / "in"
  src.mkdir()
  rng = np.random.default_rng(0)
  arrays = {"image_train00.npy": rng.integers(0, 900, (4, 16, 32)).astype(np.int16),
            "image_train01.npy": rng.integers(0, 900, (3, 20, 12)).astype(np.int16)}
  for name, array in arrays.items():
    np.save(src / name, array)
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["binary_zyx"], "--input", src,
                            "--output", tmp_path / "out")
  assert rc == 0, stderr
  assert sorted(os.listdir(tmp_path / "out")) == sorted(arrays)
  assert "(4, 16, 32)" in stdout and "(3, 20, 12)" in stdout
  variables = _random_variables(BINARY_MODEL, 1, 0)
  for name, array in arrays.items():
    got = np.load(tmp_path / "out" / name)
    assert got.shape == array.shape and got.dtype == np.uint8
    # As datasets/promise12 reads it: volume[x, y, z] = array[z, y, x]; normalised as a whole.
    norm = normalize_intensity(array.transpose(2, 1, 0), lower=0.5, upper=99.5)
    m = BINARY_MODEL.size_multiple
    padded = np.pad(norm, [(0, (-n) % m) for n in norm.shape[:2]] + [(0, 0)],
                    constant_values=norm.min())
    # Slice k of the (x, y, z) volume is array[k].T, normalised with the whole volume.
    logits = np.asarray(_apply(BINARY_MODEL, variables, np.moveaxis(padded, 2, 0)[..., None]))
    for k in range(array.shape[0]):
      want = special.expit(logits[k, :norm.shape[0], :norm.shape[1], 0]) > 0.5
      np.testing.assert_array_equal(got[k], want.T.astype(np.uint8), err_msg=f"{name} {k}")

  # --npy-axes overrides the card's layout, both ways (the two checkpoints share variables).
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", src, "--output",
                       tmp_path / "out_override", "--npy-axes", "zyx")
  assert rc == 0, stderr
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary_zyx"], "--input",
                       src / "image_train00.npy", "--output", tmp_path / "as_xyz.npy",
                       "--npy-axes", "xyz", "--probabilities")
  assert rc == 0, stderr
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input",
                       src / "image_train00.npy", "--output", tmp_path / "xyz.npy",
                       "--probabilities")
  assert rc == 0, stderr
  for name in arrays:
    np.testing.assert_array_equal(np.load(tmp_path / "out_override" / name),
                                  np.load(tmp_path / "out" / name))
  xyz = np.load(tmp_path / "xyz.npy")
  assert xyz.shape == (4, 16, 32) and xyz.dtype == np.float32
  np.testing.assert_array_equal(np.load(tmp_path / "as_xyz.npy"), xyz)
  rc, _, _ = _run(capsys, "--checkpoint", ckpts["binary"], "--input", src, "--output",
                  tmp_path / "bad", "--npy-axes", "yxz")
  assert rc == 2  # argparse: invalid choice


def test_zyx_softmax_probabilities_keep_the_class_axis_last(tmp_path, capsys):
  path = save_model(tmp_path / "m", model=MULTI_MODEL,
                    variables=_random_variables(MULTI_MODEL, 1, 1),
                    card=_softmax_card(CLASSES9, layout="zyx"))
  array = _volume((3, 16, 8, 1), seed=5)  # (z, y, x, 1): trailing singleton kept
  np.save(tmp_path / "in.npy", array)
  rc, _, stderr = _run(capsys, "--checkpoint", path, "--input", tmp_path / "in.npy", "--output",
                       tmp_path / "prob.npy", "--probabilities")
  assert rc == 0, stderr
  rc, _, stderr = _run(capsys, "--checkpoint", path, "--input", tmp_path / "in.npy", "--output",
                       tmp_path / "labels.npy")
  assert rc == 0, stderr
  prob, labels = np.load(tmp_path / "prob.npy"), np.load(tmp_path / "labels.npy")
  assert prob.shape == (3, 16, 8, 9) and labels.shape == (3, 16, 8, 1)
  np.testing.assert_array_equal(np.argmax(prob, -1), labels[..., 0])


# ------------------------------------------------------------------------------------------
# Checkpoints and cards.
# ------------------------------------------------------------------------------------------


def test_save_and_load_model_keep_the_card(ckpts, tmp_path):
  model, _, card = load_model(ckpts["prob3d"])
  assert model == PROB3D_MODEL and card == PROB3D_CARD
  spec = json.loads((Path(ckpts["prob3d"]) / "model.json").read_text())
  assert set(spec) == {"model", "config", "card"} and spec["card"] == PROB3D_CARD.to_json()
  with pytest.raises(ValueError, match="ModelCard"):
    save_model(tmp_path / "x", model=BINARY_MODEL, variables={}, card={"activation": "sigmoid"})
  with pytest.raises(ValueError, match="num_classes"):
    save_model(tmp_path / "x", model=MULTI_MODEL, variables={}, card=_card())
  with pytest.raises(ValueError, match="in_channels"):
    save_model(tmp_path / "x", model=PROB3D_MODEL, variables={},
               card=dataclasses.replace(PROB3D_CARD, channels=("T2W",),
                                        normalization=(percentile_zscore(),)))


def _edit_model_json(src, dst, edit):
  import shutil  # pylint: disable=import-outside-toplevel
  shutil.copytree(src, dst)
  spec = json.loads((dst / "model.json").read_text())
  edit(spec)
  (dst / "model.json").write_text(json.dumps(spec))
  return dst


@pytest.mark.parametrize("edit,needle", [
    (lambda s: s.update(metadata=s.pop("card")), "no model card"),
    (lambda s: s["card"].update(activation="relu"), "ModelCard.activation"),
    (lambda s: s["card"].update(class_names=["background", "a", "b"], activation="softmax"),
     "num_classes"),
    (lambda s: s["card"].update(input_channels=1), "unknown keys"),
    (lambda s: s["card"].update(inference="volume"), "does not accept"),
    (lambda s: s["card"].update(window=[30, 32]), "the card's window 30 32 must be a multiple"),
    (lambda s: s["card"].update(window=[32, 32, 4]), "ModelCard.window must be None or 2"),
])
def test_bad_model_cards_are_clean_checkpoint_errors(ckpts, tmp_path, capsys, edit, needle):
  path = _edit_model_json(Path(ckpts["binary"]), tmp_path / "edited", edit)
  np.save(tmp_path / "in.npy", _volume((8, 8, 2)))
  rc, _, stderr = _run(capsys, "--checkpoint", path, "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "checkpoint", needle)
  assert not (tmp_path / "out.npy").exists()


def test_largest_component_flag_filters_the_written_labels(ckpts, tmp_path, capsys):
  image = _volume((16, 32, 6), seed=3)
  np.save(tmp_path / "x.npy", image)
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "raw.npy", "--spacing", 1.5, 1.5, 3.0)
  assert rc == 0, stderr
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "lcc.npy", "--spacing", 1.5, 1.5, 3.0,
                       "--largest-component")
  assert rc == 0, stderr
  raw, lcc = np.load(tmp_path / "raw.npy"), np.load(tmp_path / "lcc.npy")
  np.testing.assert_array_equal(lcc, inference.keep_largest_component(raw))
  # A random model's labels on noise are speckle: the flag removed something.
  assert 0 < lcc.sum() < raw.sum()
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", tmp_path / "x.npy",
                       "--output", tmp_path / "p.npy", "--largest-component", "--probabilities")
  assert rc == 2 and "--largest-component" in stderr and "Traceback" not in stderr


# ------------------------------------------------------------------------------------------
# Sliding windows, test-time mirroring, ensembles, Monte-Carlo maps, one file per channel.
# ------------------------------------------------------------------------------------------

WINDOW_CARD = dataclasses.replace(PROB3D_CARD, spacing=None, window=(8, 8, 2))


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
  """Two 3D fold models with a sliding window, and a 2D sigmoid pair, under one directory each."""
  root = tmp_path_factory.mktemp("ensemble")
  for i in range(2):
    save_model(root / "prob3d" / f"fold{i}", model=PROB3D_MODEL,
               variables=_random_variables(PROB3D_MODEL, 3, 10 + i), card=WINDOW_CARD)
    save_model(root / "binary" / f"fold{i}", model=BINARY_MODEL,
               variables=_random_variables(BINARY_MODEL, 1, 20 + i), card=_card())
  return root


def _probabilities(capsys, tmp_path, ckpts, image, *extra, name="p"):
  np.save(tmp_path / f"{name}_in.npy", image)
  args = [a for c in ckpts for a in ("--checkpoint", c)]
  rc, stdout, stderr = _run(capsys, *args, "--input", tmp_path / f"{name}_in.npy", "--output",
                            tmp_path / f"{name}.npy", "--probabilities", *extra)
  assert rc == 0, stderr
  return np.load(tmp_path / f"{name}.npy"), stdout


def test_card_window_slides_and_whole_window_option(ensemble, tmp_path, capsys):
  """The card's window gives nnU-Net's sliding windows; --window overrides it."""
  model_dir = ensemble / "prob3d" / "fold0"
  model, variables, card = load_model(model_dir)
  image = _bpmri_volume((20, 14, 5), 1)
  got, _ = _probabilities(capsys, tmp_path, [model_dir], image)
  norm = card.normalize(image)
  want = inference.probabilities(
      inference.sliding_window_logits(inference.ModelApply(model), norm[None], window=(8, 8, 2),
                                      batch_size=16, args=(variables,))[0], "softmax")
  np.testing.assert_allclose(got, want, atol=1e-5)
  whole, _ = _probabilities(capsys, tmp_path, [model_dir], image, "--window", "whole",
                            name="whole")
  assert whole.shape == got.shape and np.abs(whole - got).max() > 1e-3  # really another path
  rc, _, stderr = _run(capsys, "--checkpoint", model_dir, "--input", tmp_path / "p_in.npy",
                       "--output", tmp_path / "x.npy", "--window", "7", "8", "2")
  _assert_clean_error(rc, stderr, "--window 7 8 2", "size multiple")
  rc, _, stderr = _run(capsys, "--checkpoint", model_dir, "--input", tmp_path / "p_in.npy",
                       "--output", tmp_path / "x.npy", "--window", "8", "x")
  _assert_clean_error(rc, stderr, "--window", "'whole'")
  rc, _, stderr = _run(capsys, "--checkpoint", model_dir, "--input", tmp_path / "p_in.npy",
                       "--output", tmp_path / "x.npy", "--overlap", "1")
  _assert_clean_error(rc, stderr, "--overlap", "[0, 1)")


def test_ensemble_of_a_directory_averages_the_fold_models(ensemble, tmp_path, capsys):
  image = _bpmri_volume((20, 14, 5), 2)
  folds = [ensemble / "prob3d" / f"fold{i}" for i in range(2)]
  singles = [_probabilities(capsys, tmp_path, [f], image, name=f"s{i}")[0]
             for i, f in enumerate(folds)]
  both, stdout = _probabilities(capsys, tmp_path, [ensemble / "prob3d"], image, name="both")
  assert "ensemble of 2 models" in stdout
  np.testing.assert_allclose(both, (singles[0] + singles[1]) / 2, atol=1e-6)
  assert np.abs(singles[0] - singles[1]).max() > 1e-3  # two different models
  repeated, _ = _probabilities(capsys, tmp_path, folds, image, name="rep")
  np.testing.assert_allclose(repeated, both, atol=1e-7)


def test_ensemble_members_must_share_their_card(ensemble, ckpts, tmp_path, capsys):
  np.save(tmp_path / "in.npy", _volume((16, 16, 3)))
  rc, _, stderr = _run(capsys, "--checkpoint", ensemble / "binary" / "fold0", "--checkpoint",
                       ckpts["multi"], "--input", tmp_path / "in.npy", "--output",
                       tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "differ in ModelCard.activation")
  rc, _, stderr = _run(capsys, "--checkpoint", tmp_path, "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.npy")
  _assert_clean_error(rc, stderr, "not an exported jaxseg model")


def test_tta_flips_average_the_mirrored_predictions(ensemble, tmp_path, capsys):
  """--tta flips = the mean over the 4 in-plane mirrorings of a 2D model, flipped back."""
  model_dir = ensemble / "binary" / "fold0"
  image = _volume((16, 20, 3), seed=5)
  got, stdout = _probabilities(capsys, tmp_path, [model_dir], image, "--tta", "flips")
  assert "4 passes averaged" in stdout
  want = []
  for axes in ((), (0,), (1,), (0, 1)):
    p, _ = _probabilities(capsys, tmp_path, [model_dir], np.flip(image, axes), name="f")
    want.append(np.flip(p, axes))
  np.testing.assert_allclose(got, np.mean(want, axis=0), atol=1e-6)
  assert np.abs(got - want[0]).max() > 1e-4  # mirroring changed something
  # --flip-axes 0: the identity and the left-right mirroring only.
  x_only, stdout = _probabilities(capsys, tmp_path, [model_dir], image, "--tta", "flips",
                                  "--flip-axes", "0", name="x")
  assert "2 passes averaged" in stdout
  np.testing.assert_allclose(x_only, (want[0] + want[1]) / 2, atol=1e-6)
  rc, _, stderr = _run(capsys, "--checkpoint", model_dir, "--input", tmp_path / "p_in.npy",
                       "--output", tmp_path / "y.npy", "--flip-axes", "0")
  _assert_clean_error(rc, stderr, "--flip-axes", "--tta flips")


def test_tta_mirrors_the_axes_the_card_says_training_mirrored(ensemble, tmp_path, capsys):
  """Default axes of --tta flips: the card's flip_axes (common to every ensemble member)."""
  model, variables, card = load_model(ensemble / "binary" / "fold0")
  for name, axes in (("x", (0,)), ("xy", (0, 1)), ("none", ())):
    save_model(tmp_path / name, model=model, variables=variables,
               card=dataclasses.replace(card, flip_axes=axes))
  image = _volume((16, 20, 3), seed=5)
  given, _ = _probabilities(capsys, tmp_path, [tmp_path / "xy"], image, "--tta", "flips",
                            "--flip-axes", "0", name="given")
  from_card, stdout = _probabilities(capsys, tmp_path, [tmp_path / "x"], image, "--tta", "flips",
                                     name="card")
  assert "2 passes averaged" in stdout and "axes 0 (the axes training mirrored" in stdout
  np.testing.assert_allclose(from_card, given, atol=1e-7)
  both, stdout = _probabilities(capsys, tmp_path, [tmp_path / "xy"], image, "--tta", "flips",
                                name="both")
  assert "4 passes averaged" in stdout and np.abs(both - given).max() > 1e-4
  # An ensemble mirrors the axes every member was trained on.
  _, stdout = _probabilities(capsys, tmp_path, [tmp_path / "x", tmp_path / "xy"], image, "--tta",
                             "flips", name="ens")
  assert "test-time mirroring over axes 0 " in stdout
  rc, _, stderr = _run(capsys, "--checkpoint", tmp_path / "none", "--input",
                       tmp_path / "card_in.npy", "--output", tmp_path / "n.npy", "--tta", "flips")
  _assert_clean_error(rc, stderr, "--tta", "trained without mirroring")
  assert predict.mirrored_axes([card]) == (0, 1)  # a card without the field: every axis
  assert predict.mirrored_axes([dataclasses.replace(card, flip_axes=())], (1,)) == (1,)


def test_mc_samples_write_mean_variance_and_entropy(ensemble, ckpts, tmp_path, capsys):
  image = _bpmri_volume((20, 14, 5), 3)
  nib.save(nib.Nifti1Image(image, np.diag([0.5, 0.5, 3.0, 1.0])), tmp_path / "exam.nii.gz")
  args = ["--checkpoint", ensemble / "prob3d", "--input", tmp_path / "exam.nii.gz"]
  rc, stdout, stderr = _run(capsys, *args, "--output", tmp_path / "seg.nii.gz",
                            "--mc-samples", 3)
  assert rc == 0, stderr
  assert "6 passes" in stdout  # 2 models x 3 samples
  seg = np.asarray(nib.load(tmp_path / "seg.nii.gz").dataobj)
  mean = np.asarray(nib.load(tmp_path / "seg_mean.nii.gz").dataobj)
  variance = np.asarray(nib.load(tmp_path / "seg_variance.nii.gz").dataobj)
  entropy = np.asarray(nib.load(tmp_path / "seg_entropy.nii.gz").dataobj)
  assert mean.shape == variance.shape == (20, 14, 5, 3) and entropy.shape == (20, 14, 5)
  np.testing.assert_allclose(mean.sum(-1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(seg, np.argmax(mean, -1))
  assert variance.min() >= 0 and variance.max() > 0
  want = -np.sum(mean * np.log(np.clip(mean, 1e-12, 1)), axis=-1)
  np.testing.assert_allclose(entropy, want, atol=1e-5)
  # The same seed gives the same samples, another seed other ones.
  rc, _, _ = _run(capsys, *args, "--output", tmp_path / "again.nii.gz", "--mc-samples", 3)
  np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "again_mean.nii.gz").dataobj),
                                mean)
  rc, _, _ = _run(capsys, *args, "--output", tmp_path / "other.nii.gz", "--mc-samples", 3,
                  "--seed", 1)
  assert np.abs(np.asarray(nib.load(tmp_path / "other_mean.nii.gz").dataobj) - mean).max() > 0
  # A model without dropout has no Monte-Carlo pass.
  np.save(tmp_path / "in.npy", _volume((16, 16, 3)))
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["binary"], "--input", tmp_path / "in.npy",
                       "--output", tmp_path / "out.npy", "--mc-samples", 2)
  _assert_clean_error(rc, stderr, "has no dropout", "--mc-samples")


def test_one_file_per_channel_is_resampled_through_the_affines(ckpts, tmp_path, capsys):
  """T2W on a fine grid, DWI and ADC on a coarser one: the same as stacking them by hand."""
  rng = np.random.default_rng(7)
  t2w_affine = np.diag([0.5, 0.5, 3.0, 1.0])
  t2w_affine[:3, 3] = [-4.0, 2.0, 1.0]
  coarse = np.diag([1.0, 1.0, 3.0, 1.0])
  coarse[:3, 3] = [-3.75, 2.25, 1.0]  # the same field of view, voxel centres shifted
  t2w = rng.gamma(2.0, 200.0, (20, 16, 5)).astype(np.float32)
  dwi = rng.gamma(2.0, 20.0, (10, 8, 5)).astype(np.float32)
  adc = rng.uniform(200.0, 2500.0, (10, 8, 5)).astype(np.float32)
  paths = []
  for name, data, affine in (("t2w", t2w, t2w_affine), ("dwi", dwi, coarse),
                             ("adc", adc, coarse)):
    paths.append(tmp_path / f"{name}.nii.gz")
    nib.save(nib.Nifti1Image(data, affine), paths[-1])
  args = [a for p in paths for a in ("--input", p)]
  rc, stdout, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], *args, "--output",
                            tmp_path / "seg.nii.gz", "--probabilities")
  assert rc == 0, stderr
  assert "t2w.nii.gz + " in stdout
  from jaxseg.data.preprocess import resample_to_reference
  stacked = np.stack([t2w] + [resample_to_reference(d, coarse, reference_shape=t2w.shape,
                                                    reference_affine=t2w_affine, order=1)
                              for d in (dwi, adc)], axis=-1)
  nib.save(nib.Nifti1Image(stacked, t2w_affine), tmp_path / "stacked.nii.gz")
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], "--input",
                       tmp_path / "stacked.nii.gz", "--output", tmp_path / "want.nii.gz",
                       "--probabilities")
  assert rc == 0, stderr
  got = nib.load(tmp_path / "seg.nii.gz")
  np.testing.assert_allclose(got.affine, t2w_affine, atol=1e-6)
  assert got.shape == (20, 16, 5, 3)
  np.testing.assert_allclose(np.asarray(got.dataobj),
                             np.asarray(nib.load(tmp_path / "want.nii.gz").dataobj), atol=1e-6)
  # Two files for three channels, or a .npy among them, are one-line errors.
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], *args[:4], "--output",
                       tmp_path / "x.nii.gz")
  _assert_clean_error(rc, stderr, "2 input files", "3 channel(s)")
  np.save(tmp_path / "adc.npy", adc)
  rc, _, stderr = _run(capsys, "--checkpoint", ckpts["prob3d"], *args[:4], "--input",
                       tmp_path / "adc.npy", "--output", tmp_path / "x.nii.gz")
  _assert_clean_error(rc, stderr, "needs NIfTI files")
