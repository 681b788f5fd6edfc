"""Segments volumes with an exported jaxseg model: ``python -m jaxseg.predict``.

Usage::

  python -m jaxseg.predict --checkpoint CKPT [--checkpoint CKPT ...] --input IN [--input IN ...]
      --output OUT [--batch-size N] [--threshold 0.5] [--probabilities] [--spacing SX SY SZ] \\
      [--npy-axes {xyz,zyx}] [--largest-component] [--window N N [N] | whole] [--overlap 0.5] \\
      [--blend {gaussian,constant}] [--tta {none,flips}] [--flip-axes AXIS ...] \\
      [--mc-samples N] [--seed S]

``CKPT`` is a directory written by :func:`jaxseg.train.checkpoint.save_model`, or a directory of
them (every exported model below it: a study's ``models/<loss>`` with one per fold); several
models form an *ensemble* whose probabilities are averaged (their cards must agree on inputs and
outputs, :func:`jaxseg.inference.check_ensemble`). Every model a study exports works -- 2D models
applied slice by slice (``UNet2D`` with a softmax or a sigmoid output, ``TransUNet`` with its
deep-supervision heads, of which the last, full-resolution one is used) and 3D models
(``ProbAttentionUNet3D``, deterministic pass: prior mean, no dropout) in sliding windows of their
training patch. Everything about the inputs comes from the model's card
(:class:`jaxseg.model_card.ModelCard`, validated once when the checkpoint is loaded): input
channels, training spacing, per-channel normalisation, inference kind (slices / volume), the
inference window, activation, class names, and the axis order of ``.npy`` inputs.

``IN`` is a NIfTI file (``.nii``, ``.nii.gz``) or a ``.npy`` file. A NIfTI volume is in voxel
order ``(x, y, z)`` (axial slices along the last axis, docs/developing.md). A ``.npy`` array is
in the card's ``layout`` unless ``--npy-axes`` says otherwise: ``xyz`` like NIfTI, or ``zyx``
(slices, rows, cols: PROMISE12's preprocessed ``image_trainNN.npy``; read as ``array.transpose(2,
1, 0)`` exactly like ``datasets/promise12`` does, and written back in the same order, so the
output has the input's shape and its slice ``k`` is the prediction of input slice ``k``). A
single-channel model takes a 3D volume; a trailing singleton axis (``(x, y, z, 1)``) is accepted
and kept in the output. A multi-channel model (e.g. T2W, DWI, ADC) takes one file with a trailing
channel axis, ``(x, y, z, C)`` (``(z, y, x, C)`` for ``zyx``), the channels in the card's order,
or one 3D NIfTI file per channel (``--input`` repeated, in the card's order): each channel after
the first is resampled onto the first file's grid through the two affines (linear,
:func:`jaxseg.data.preprocess.resample_to_reference`, zero outside its field of view), and the
output is written on the first file's grid; anything else is an error. ``OUT`` is written in the input's format, on the input's grid and in
its axis order (the channel axis of a multi-channel input is dropped from labels); a NIfTI output
is built from the input's header, so it keeps the affine, the qform/sform codes, the voxel sizes
and the orientation; only the data type (``uint8`` labels, ``float32`` probabilities) and the
display range change. When ``IN`` is a directory, every ``.nii``, ``.nii.gz`` and ``.npy`` file
in it (not recursive; other files are skipped with a note) is segmented into ``OUT/<same name>``.
One line per file is printed: ``input -> output``, shape, foreground fraction (voxels whose label
is not 0), seconds. Bad input (unreadable or corrupt file, wrong number of dimensions or
channels, unsupported extension, a checkpoint directory that is not an exported model or whose
model does not fit its card) gives a one-line ``jaxseg.predict: error: <file>: <reason>`` on
stderr and exit code 2; in directory mode the other files are still segmented.

Algorithm (:func:`predict_volume`) for an image of voxel spacing ``s`` and training spacing
``t`` (``card.spacing``):

1. If ``t`` is known and differs from ``s`` (relative tolerance :data:`SPACING_RTOL` per axis),
   resample every channel onto the grid of spacing ``t`` (linear, the grid convention of
   :func:`jaxseg.data.preprocess.resample`). ``.npy`` inputs carry no spacing: ``--spacing`` (or
   the ``spacing`` argument; always ``x y z``, whatever the ``.npy`` axis order) gives it;
   without it the image is assumed to be at ``t`` already and is not resampled. ``--spacing``
   applies to ``.npy`` inputs only; NIfTI spacing is read from the header (``pixdim``).
2. Normalise every channel as in training (:meth:`ModelCard.normalize`: percentile clip +
   z-score, division by a scale such as ``ADC_SCALE``, or none).
3. Probabilities with :func:`jaxseg.inference.predict_distribution`: for every model, mirroring
   (``--tta flips``: every subset of ``--flip-axes``, by default of the axes the model was trained
   to mirror, its card's ``flip_axes``; for a card without that field every spatial axis, 4
   mirrorings for 2D, 8 for 3D) and MC sample
   (``--mc-samples``), the logits of :func:`jaxseg.inference.volume_logits` -- every axial slice
   (``inference="slices"``) or the volume (``"volume"``), either whole (padded to the model's
   ``size_multiple`` and cropped back) or in Gaussian-weighted sliding windows of the card's
   ``window`` (``--window`` overrides it) with ``--overlap`` -- then ``sigmoid`` of the single
   channel or ``softmax`` over the classes (``card.activation``); the probabilities of all the
   passes are averaged, and with MC samples their per-voxel variance is kept too.
4. If the image was resampled, resample the *probabilities* back onto the input grid (linear,
   with the input's shape given explicitly, so the output has exactly the input's shape), then
   threshold (sigmoid: foreground where ``p > threshold``) / argmax (softmax, ties to the lower
   class) there. Interpolating probabilities rather than nearest-neighbour labels gives
   boundaries at the input's resolution instead of blocks of the coarser training grid.
   (Linear interpolation is a convex combination, so interpolated softmax probabilities still
   sum to one.)
5. With ``--largest-component``, each foreground class keeps only its largest connected
   component (:func:`jaxseg.inference.keep_largest_component`, nnU-Net's post-processing; labels
   only).
6. With ``--mc-samples N``, ``OUT_mean``, ``OUT_variance`` and ``OUT_entropy`` (the output's name
   with ``_mean`` etc. before its extension) hold the mean probabilities, their variance over
   all passes (same shape) and the predictive entropy of the mean (nats, one value per voxel),
   all on the input grid.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
from jax.sharding import Mesh

from jaxseg.data.preprocess import (load_nifti, read_nifti, resample, resample_to_reference,
                                    validate_spacing)
from jaxseg.inference import (BLENDS, CARD, DEFAULT_OVERLAP, channels_last_volume,
                              check_ensemble, check_stochastic, final_logits,
                              keep_largest_component, predict_distribution, size_multiples)
from jaxseg.model_card import LAYOUTS, ModelCard

__all__ = [
    "Options",
    "model_directories",
    "SPACING_RTOL",
    "Segmentation",
    "main",
    "mirrored_axes",
    "predict_volume",
]

SPACING_RTOL = 1e-4
"""Spacings within this relative difference (per axis) count as equal: no resampling."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NUMPY_SUFFIXES = (".npy",)
_PROG = "jaxseg.predict"


# --------------------------------------------------------------------------------------------
# Prediction.
# --------------------------------------------------------------------------------------------


def _apply(model: Any, variables: Any, images: jax.Array) -> Any:
  return model.apply(variables, images, train=False)


def _check_window(model: Any, card: ModelCard, window: tuple[int, ...],
                  what: str = "--window") -> None:
  """Raises ValueError unless ``window`` fits the model (sides, size multiple)."""
  ndim = 2 if card.inference == "slices" else 3
  if len(window) != ndim:
    raise ValueError(f"{what} needs {ndim} sizes for a {'2D' if ndim == 2 else '3D'} model, "
                     f"got {len(window)}")
  multiples = size_multiples(getattr(model, "size_multiple", 1), ndim)
  if any(w % m for w, m in zip(window, multiples)):
    raise ValueError(f"{what} {' '.join(map(str, window))} must be a multiple of the model's "
                     f"size multiple {multiples} on every axis")


def _check_model(model: Any, variables: Any, card: ModelCard) -> None:
  """Raises ValueError unless the model takes the card's inputs and gives its outputs.

  Traced only (:func:`jax.eval_shape` on one input of the model's size multiple), so cheap.
  """
  multiple = getattr(model, "size_multiple", 1)
  ndim = 2 if card.inference == "slices" else 3
  try:
    spatial = size_multiples(multiple, ndim)
  except ValueError as e:
    raise ValueError(f"card.inference is {card.inference!r} but the model's size_multiple is "
                     f"{multiple!r}; export a 2D model with inference='slices' and a 3D one with "
                     f"'volume'") from e
  probe = jax.ShapeDtypeStruct((1, *spatial, card.model_channels), jnp.float32)
  try:
    out = jax.eval_shape(functools.partial(_apply, model), variables, probe)
    logits = final_logits(out)
  except Exception as e:  # Flax raises ScopeParamShapeError, TypeError... on a mismatch.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"the model does not accept {probe.shape} inputs ({card.model_channels}-"
                     f"channel {'slices' if ndim == 2 else 'volumes'} as its card says: channels "
                     f"{card.channels}, slice_context {card.slice_context}, inference "
                     f"{card.inference!r}) ({type(e).__name__}: {first})") from e
  if card.window is not None:
    _check_window(model, card, card.window, "the card's window")
  shape = tuple(getattr(logits, "shape", ()))
  if len(shape) != ndim + 2 or shape[-1] != card.num_outputs:
    raise ValueError(f"the model's logits for {probe.shape} inputs have shape {shape}, but its "
                     f"card says {card.num_outputs} output channel(s) ({card.activation}, classes "
                     f"{card.class_names})")


@dataclasses.dataclass(frozen=True)
class Options:
  """How :func:`predict_volume` turns a volume into probabilities (the CLI's flags).

  Attributes:
    batch_size: slices or windows per model call.
    threshold: foreground threshold on a sigmoid probability.
    window: :data:`jaxseg.inference.CARD` (the card's window), None (the whole slice or volume
      in one call) or a window (2 or 3 sides).
    overlap: overlap of neighbouring sliding windows, in [0, 1).
    blend: ``"gaussian"`` or ``"constant"`` window weights.
    tta: test-time mirroring over :func:`mirrored_axes` of the cards and ``flip_axes``.
    flip_axes: the axes (0, 1, 2 = x, y, z) mirrored with ``tta``; None: the card's
      ``flip_axes`` (the axes training mirrored), or every spatial axis of the model for a card
      that does not record them.
    mc_samples: Monte-Carlo passes per model (0: deterministic).
    seed: seed of the Monte-Carlo passes.
  """

  batch_size: int = 16
  threshold: float = 0.5
  window: Any = CARD
  overlap: float = DEFAULT_OVERLAP
  blend: str = "gaussian"
  tta: bool = False
  flip_axes: tuple[int, ...] | None = None
  mc_samples: int = 0
  seed: int = 0


@dataclasses.dataclass
class Segmentation:
  """A volume's result on the input grid: labels, mean probabilities, and MC moments."""

  labels: np.ndarray
  probs: np.ndarray
  variance: np.ndarray | None
  resampled: bool
  passes: int

  @property
  def entropy(self) -> np.ndarray:
    """Predictive entropy (nats) of the mean probabilities, per voxel."""
    p = np.clip(self.probs.astype(np.float64), 1e-12, 1.0)
    if self.probs.ndim == self.labels.ndim:  # sigmoid: binary entropy
      q = np.clip(1.0 - self.probs.astype(np.float64), 1e-12, 1.0)
      h = -(p * np.log(p) + q * np.log(q))
    else:
      h = -np.sum(p * np.log(p), axis=-1)
    return np.maximum(h, 0.0).astype(np.float32)


def mirrored_axes(cards: Sequence[ModelCard], flip_axes: Sequence[int] | None = None
                  ) -> tuple[int, ...]:
  """The axes test-time mirroring flips for models with ``cards`` (one per ensemble member).

  ``flip_axes`` when given; otherwise the axes every member was trained to mirror (the cards'
  ``flip_axes``), where a card that does not record them (None) counts as every spatial axis.

  Raises:
    ValueError: no axis is left (a model trained without mirroring) and none was given.
  """
  if flip_axes is not None:
    return tuple(flip_axes)
  axes = set(range(2 if cards[0].inference == "slices" else 3))
  for card in cards:
    if card.flip_axes is not None:
      axes &= set(card.flip_axes)
  if not axes:
    raise ValueError("the model(s) were trained without mirroring (no axis in every card's "
                     "flip_axes), so test-time mirroring has nothing to average; drop --tta "
                     "flips, or give --flip-axes to mirror anyway")
  return tuple(sorted(axes))


def _segment(
    members: Sequence[tuple[Any, Any, ModelCard]],
    image: np.ndarray,
    spacing: Sequence[float] | None,
    options: Options,
    *,
    mesh: Mesh | None,
) -> Segmentation:
  """One volume through the models; see :func:`predict_volume`."""
  card = members[0][2]
  image = channels_last_volume(image)
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise ValueError(f"image must be real-valued, got dtype {image.dtype}")
  if isinstance(options.batch_size, bool) or not isinstance(
      options.batch_size, (int, np.integer)) or options.batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {options.batch_size!r}")
  if not 0.0 <= options.threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {options.threshold}")
  grid = image.shape[:3]
  channels = image.shape[3]
  if channels != card.num_channels:
    raise ValueError(f"the model takes {card.num_channels}-channel images {card.channels} but "
                     f"the volume has {channels} channel(s)")

  target = card.spacing
  spacing = None if spacing is None else validate_spacing(spacing, name="spacing")
  resampled = (target is not None and spacing is not None
               and not np.allclose(spacing, target, rtol=SPACING_RTOL, atol=0.0))
  if resampled:
    image = np.stack([resample(image[..., c], spacing, target, order=1)
                      for c in range(channels)], axis=-1)
  image = card.normalize(image)
  flips = mirrored_axes([c for _, _, c in members], options.flip_axes) if options.tta else ()
  pred = predict_distribution(
      members, image, batch_size=int(options.batch_size), mesh=mesh, window=options.window,
      overlap=options.overlap, blend=options.blend, flips=tuple(flips),
      mc_samples=options.mc_samples, key=jax.random.key(options.seed))

  def back(a):
    """Probability-like maps back onto the input grid (linear; class axis last)."""
    if not resampled or a is None:
      return a
    if a.ndim == 3:
      return resample(a, target, spacing, order=1, shape=grid).astype(np.float32)
    return np.stack([resample(a[..., j], target, spacing, order=1, shape=grid)
                     for j in range(a.shape[-1])], axis=-1).astype(np.float32)

  probs, variance = back(pred.mean), back(pred.variance)
  if card.activation == "sigmoid":
    labels = (probs > options.threshold).astype(np.uint8)
  else:
    k = probs.shape[-1]
    labels = np.argmax(probs, axis=-1).astype(np.uint8 if k <= 256 else np.int32)
  return Segmentation(labels, probs, variance, bool(resampled), pred.passes)


def predict_volume(
    model: Any,
    variables: Any,
    card: ModelCard,
    image: np.ndarray,
    spacing: Sequence[float] | None,
    *,
    batch_size: int = 16,
    threshold: float = 0.5,
    probabilities: bool = False,
    mesh: Mesh | None = None,
    window: Any = CARD,
    overlap: float = DEFAULT_OVERLAP,
    blend: str = "gaussian",
    tta: bool = False,
) -> np.ndarray:
  """Segments one volume as the model's card says (module docstring).

  Args:
    model: a Flax module called as ``model.apply(variables, images, train=False)`` on
      ``(batch, h, w, channels)`` slices (``card.inference == "slices"``) or ``(batch, x, y, z,
      channels)`` volumes (``"volume"``); its ``size_multiple`` attribute (1 if absent) is the
      multiple the inputs are padded to.
    variables: the model's variables (e.g. from :func:`jaxseg.train.checkpoint.load_model`).
    card: the model's card (:class:`jaxseg.model_card.ModelCard`).
    image: ``(x, y, z)`` or ``(x, y, z, channels)`` intensities, the channels in
      ``card.channels`` order.
    spacing: the image's voxel spacing in mm, or None to assume the training spacing (no
      resampling).
    batch_size: slices or windows per model call.
    threshold: foreground threshold on the sigmoid probability (sigmoid models only).
    probabilities: return probabilities instead of labels.
    mesh: optional device mesh to shard the model's inputs over.
    window: the card's window (default), None (whole input) or a window.
    overlap, blend: of the sliding windows.
    tta: average over the mirrorings of every spatial axis of the model.

  Returns:
    ``(x, y, z)`` labels (uint8; int32 beyond 256 classes) on the input grid, or with
    ``probabilities=True`` float32 probabilities: ``(x, y, z)`` foreground probability for a
    sigmoid model, ``(x, y, z, K)`` class probabilities for a softmax model.

  Raises:
    ValueError: bad image shape or values, bad spacing or settings, or a model whose inputs or
      outputs do not match its card.
  """
  if not isinstance(card, ModelCard):
    raise ValueError(f"card must be a jaxseg.model_card.ModelCard, got {type(card).__name__}")
  _check_model(model, variables, card)
  options = Options(batch_size=batch_size, threshold=threshold, window=window, overlap=overlap,
                    blend=blend, tta=tta)
  result = _segment([(model, variables, card)], image, spacing, options, mesh=mesh)
  return result.probs if probabilities else result.labels


# --------------------------------------------------------------------------------------------
# Files.
# --------------------------------------------------------------------------------------------


def _kind(path: str) -> str | None:
  """``"nifti"``, ``"npy"`` or None from the file name."""
  name = os.path.basename(path).lower()
  if name.endswith(NIFTI_SUFFIXES):
    return "nifti"
  if name.endswith(NUMPY_SUFFIXES):
    return "npy"
  return None


def _require_kind(path: str) -> str:
  kind = _kind(path)
  if kind is None:
    raise ValueError("unsupported file extension (expected .nii, .nii.gz or .npy)")
  return kind


@dataclasses.dataclass
class _Source:
  """A volume read from disk plus what is needed to write a result like it."""

  image: np.ndarray  # (x, y, z) or (x, y, z, C), C > 1
  spacing: np.ndarray | None
  kind: str
  shape: tuple[int, ...]  # the file's own shape (may have trailing singleton axes)
  layout: str = "xyz"  # axis order of the file
  nifti: Any = None  # the nibabel image (header, affine) of a NIfTI input


def _read_nifti_channels(path: str) -> tuple[np.ndarray, np.ndarray, Any]:
  """``(array, spacing, image)`` of a NIfTI file of any dimension (multi-channel inputs)."""
  data, spacing, img = read_nifti(path)
  if data.ndim == 5 and data.shape[3] == 1:  # NIfTI vector images: (x, y, z, 1, C)
    data = data[:, :, :, 0]
  return data, spacing, img


def _to_xyz(data: np.ndarray, layout: str) -> np.ndarray:
  """File order -> ``(x, y, z[, C])``: ``zyx`` arrays as ``datasets/promise12`` reads them."""
  if layout == "zyx":
    return np.ascontiguousarray(np.transpose(data, (2, 1, 0, *range(3, data.ndim))))
  return data


def _from_xyz(data: np.ndarray, layout: str) -> np.ndarray:
  """``(x, y, z[, K])`` -> file order, the inverse of :func:`_to_xyz`."""
  return _to_xyz(data, layout)  # reversing the three spatial axes is its own inverse


def _channels_error(card: ModelCard, shape: tuple[int, ...], layout: str) -> ValueError:
  axes = "(x, y, z" if layout == "xyz" else "(z, y, x"
  if card.num_channels == 1:
    return ValueError(f"not a 3D {axes}) volume: shape {shape} (the model takes 1 channel, "
                      f"{card.channels[0]!r})")
  names = ", ".join(card.channels)
  return ValueError(f"the model takes {card.num_channels}-channel images ({names}): give one "
                    f"{axes}, {card.num_channels}) volume with the channels last in that order; "
                    f"got shape {shape}")


def _shape_channels(data: np.ndarray, card: ModelCard, layout: str) -> np.ndarray:
  """The file's array with trailing singletons dropped, checked against the card's channels."""
  shape = tuple(data.shape)
  if card.num_channels == 1:
    while data.ndim > 3 and data.shape[-1] == 1:
      data = data[..., 0]
    if data.ndim != 3:
      raise _channels_error(card, shape, layout)
  elif data.ndim != 4 or data.shape[-1] != card.num_channels:
    raise _channels_error(card, shape, layout)
  return data


def _read(path: str, card: ModelCard, npy_spacing: Sequence[float] | None,
          npy_axes: str | None) -> _Source:
  kind = _require_kind(path)
  if not os.path.isfile(path):
    raise ValueError("no such file")
  if kind == "nifti":
    if card.num_channels == 1:
      data, spacing, _ = load_nifti(path)
      img = nib.load(path)
    else:
      data, spacing, img = _read_nifti_channels(path)
      data = _shape_channels(data, card, "xyz")
    return _Source(data, spacing, kind, tuple(img.shape), "xyz", img)
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # ValueError, EOFError, OSError, zipfile errors... for corrupt files.
    raise ValueError(f"cannot read .npy file (unreadable, truncated or corrupt): "
                     f"{type(e).__name__}: {e}") from e
  if not isinstance(data, np.ndarray):
    raise ValueError(f"not a single .npy array (got {type(data).__name__})")
  layout = npy_axes or card.layout
  shape = tuple(data.shape)
  data = _to_xyz(_shape_channels(data, card, layout), layout)
  spacing = None if npy_spacing is None else validate_spacing(npy_spacing, name="--spacing")
  return _Source(data, spacing, kind, shape, layout, None)


def _read_case(paths: Sequence[str], card: ModelCard, npy_spacing: Sequence[float] | None,
               npy_axes: str | None) -> _Source:
  """One case from one file, or from one NIfTI file per channel in the card's order.

  Several files: each is a 3D NIfTI volume; every channel after the first is resampled onto the
  first one's grid through the two affines (linear, :func:`resample_to_reference`; zero outside
  its field of view), so e.g. a 2 x 2 x 3 mm ADC map joins its 0.5 x 0.5 x 3 mm T2W. The result
  is written on the first file's grid with its header.
  """
  if len(paths) == 1:
    return _read(paths[0], card, npy_spacing, npy_axes)
  if len(paths) != card.num_channels:
    raise ValueError(f"{len(paths)} input files for a model of {card.num_channels} channel(s) "
                     f"{card.channels}; give one file per channel, in that order")
  channels, reference = [], None
  for path, name in zip(paths, card.channels):
    if _kind(path) != "nifti":
      raise ValueError(f"{path}: one file per channel needs NIfTI files (their affines put the "
                       f"channels on one grid), got {os.path.basename(path)}")
    if not os.path.isfile(path):
      raise ValueError(f"{path}: no such file")
    data, spacing, affine = load_nifti(path)
    if reference is None:
      reference = (data.shape, spacing, affine, nib.load(path))
      channels.append(np.asarray(data, np.float32))
      continue
    channels.append(resample_to_reference(np.asarray(data, np.float32), affine,
                                          reference_shape=reference[0],
                                          reference_affine=reference[2], order=1))
  shape, spacing, _, img = reference
  return _Source(np.stack(channels, axis=-1), spacing, "nifti", tuple(shape), "xyz", img)


def _derived(path: str, tag: str) -> str:
  """``case.nii.gz`` -> ``case_<tag>.nii.gz`` (the extra maps of an MC prediction)."""
  for suffix in (*NIFTI_SUFFIXES, *NUMPY_SUFFIXES):
    if path.lower().endswith(suffix):
      return f"{path[:-len(suffix)]}_{tag}{path[-len(suffix):]}"
  return f"{path}_{tag}"


def _write(path: str, data: np.ndarray, source: _Source) -> None:
  """Writes ``data`` (``(x, y, z[, K])``) like ``source`` (format, axis order, shape, header)."""
  data = _from_xyz(data, source.layout)
  spatial = _from_xyz(source.image, source.layout).shape[:3]
  if (data.shape == spatial and source.shape[:3] == spatial and len(source.shape) > 3
      and all(s == 1 for s in source.shape[3:])):
    data = data.reshape(source.shape)  # restore trailing singleton axes
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  try:
    if source.kind == "nifti":
      ref = source.nifti
      out = type(ref)(data, ref.affine, ref.header)
      out.header.set_data_dtype(data.dtype)
      if len(ref.shape) > data.ndim:  # the channel axis of a multi-channel input is gone
        out.header.set_intent("none")
      if "cal_min" in out.header:
        out.header["cal_min"] = 0
        out.header["cal_max"] = 0
      nib.save(out, tmp)
    else:
      with open(tmp, "wb") as f:
        np.save(f, data)
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
  p = argparse.ArgumentParser(
      prog=f"python -m {_PROG}",
      description="Segment NIfTI / .npy volumes with exported jaxseg models (2D models slice "
                  "by slice, 3D models in sliding windows), as their model cards say.")
  p.add_argument("--checkpoint", required=True, action="append",
                 help="directory written by jaxseg.train.checkpoint.save_model, or a directory "
                      "of them (e.g. a study's models/<loss> with one per fold); repeat it or "
                      "give a directory to ensemble the models (probabilities averaged)")
  p.add_argument("--input", required=True, action="append",
                 help=".nii / .nii.gz / .npy volume, or a directory of them; a multi-channel "
                      "model takes one file with a trailing channel axis, or one NIfTI file per "
                      "channel (repeat --input, in the card's channel order; resampled onto the "
                      "first one's grid through their affines)")
  p.add_argument("--output", required=True,
                 help="output file (same format as the input), or a directory")
  p.add_argument("--batch-size", type=int, default=16,
                 help="slices or windows per model call (16)")
  p.add_argument("--threshold", type=float, default=0.5,
                 help="foreground threshold of sigmoid models (0.5)")
  p.add_argument("--probabilities", action="store_true",
                 help="write float32 probabilities instead of uint8 labels")
  p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                 help="voxel spacing (mm, x y z) of .npy inputs (default: the model's training "
                      "spacing)")
  p.add_argument("--npy-axes", choices=LAYOUTS, default=None,
                 help="axis order of .npy inputs and outputs: xyz (NIfTI order) or zyx (slices, "
                      "rows, cols, e.g. PROMISE12's image_trainNN.npy); default: the model "
                      "card's layout")
  p.add_argument("--largest-component", action="store_true",
                 help="keep only the largest connected component of each foreground class "
                      "(nnU-Net's post-processing; labels only)")
  p.add_argument("--window", nargs="+", default=None, metavar="N",
                 help="sliding-window size (2 sides for a 2D model, 3 for a 3D one), or 'whole' "
                      "for the whole slice / volume in one call; default: the model card's "
                      "window (its training patch)")
  p.add_argument("--overlap", type=float, default=DEFAULT_OVERLAP,
                 help="overlap of neighbouring windows, in [0, 1) (0.5)")
  p.add_argument("--blend", choices=BLENDS, default="gaussian",
                 help="window weights: gaussian (sigma = window / 8, nnU-Net) or constant")
  p.add_argument("--tta", choices=("none", "flips"), default="none",
                 help="test-time augmentation: 'flips' averages the probabilities over every "
                      "mirroring of --flip-axes (default: the axes the model was trained to "
                      "mirror, from its card; all spatial axes for older cards)")
  p.add_argument("--flip-axes", type=int, nargs="+", choices=(0, 1, 2), default=None,
                 metavar="AXIS",
                 help="axes (0 = x, 1 = y, 2 = z) --tta flips mirrors (default: the card's "
                      "flip_axes, the axes training mirrored)")
  p.add_argument("--mc-samples", type=int, default=0, metavar="N",
                 help="Monte-Carlo passes per model (dropout on, latent sampled); also writes "
                      "<output>_mean, _variance and _entropy maps (0: deterministic)")
  p.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo passes (0)")
  return p


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text or type(error).__name__


def _fail(where: str, error: BaseException | str) -> None:
  message = error if isinstance(error, str) else _one_line(error)
  print(f"{_PROG}: error: {where}: {message}", file=sys.stderr, flush=True)


def _jobs(inputs: Sequence[str], out: str) -> list[tuple[list[str], str]]:
  """``(input files, output)`` pairs; raises ValueError for a bad input/output combination."""
  if len(inputs) > 1:
    for inp in inputs:
      if os.path.isdir(inp):
        raise ValueError(f"{inp} is a directory: several --input must be the channel files of "
                         f"one case")
    if os.path.isdir(out):
      out = os.path.join(out, os.path.basename(inputs[0]))
    return [(list(inputs), out)]
  inp = inputs[0]
  if os.path.isdir(inp):
    if os.path.exists(out) and not os.path.isdir(out):
      raise ValueError(f"--input {inp} is a directory, so --output {out} must be one too")
    if os.path.realpath(inp) == os.path.realpath(out):
      raise ValueError(f"--output {out} is the input directory; refusing to overwrite inputs")
    jobs = []
    for name in sorted(os.listdir(inp)):
      src = os.path.join(inp, name)
      if name.startswith(".") or not os.path.isfile(src):
        continue
      if _kind(src) is None:
        print(f"{_PROG}: skipping {src}: unsupported file extension", file=sys.stderr)
        continue
      jobs.append(([src], os.path.join(out, name)))
    if not jobs:
      raise ValueError(f"{inp}: no .nii, .nii.gz or .npy file in the directory")
    return jobs
  if os.path.isdir(out):
    out = os.path.join(out, os.path.basename(inp))
  return [([inp], out)]


def model_directories(paths: Sequence[str]) -> list[str]:
  """Exported model directories named by ``paths``: each one itself, or every exported model
  below it (sorted), e.g. a study's ``models/<loss>`` holding ``fold0 .. fold4``.

  Raises:
    ValueError: a path that does not exist or holds no exported model.
  """
  from jaxseg.train.checkpoint import MODEL_FILE  # pylint: disable=import-outside-toplevel
  found = []
  for path in paths:
    if not os.path.isdir(path):
      raise ValueError(f"{path}: no such directory")
    if os.path.isfile(os.path.join(path, MODEL_FILE)):
      found.append(path)
      continue
    below = sorted(root for root, _, files in os.walk(path) if MODEL_FILE in files)
    if not below:
      raise ValueError(f"{path}: not an exported jaxseg model ({MODEL_FILE} and variables/ "
                       f"written by jaxseg.train.checkpoint.save_model), nor a directory of them")
    found.extend(below)
  return found


def _window_option(values: Sequence[str] | None) -> Any:
  if values is None:
    return CARD
  if len(values) == 1 and values[0] == "whole":
    return None
  try:
    window = tuple(int(v) for v in values)
  except ValueError:
    window = ()
  if len(window) not in (2, 3) or min(window) < 1:
    raise ValueError(f"expected 2 or 3 positive sizes or 'whole', got {' '.join(values)}")
  return window


def _run_file(srcs: Sequence[str], dst: str, members: Sequence[tuple[Any, Any, ModelCard]],
              options: Options, args: argparse.Namespace) -> None:
  tic = time.perf_counter()
  kind = _require_kind(srcs[0])
  if _kind(dst) != kind:
    want = ".nii or .nii.gz" if kind == "nifti" else ".npy"
    raise ValueError(f"output {dst} must be a {want} file like the input")
  card = members[0][2]
  source = _read_case(srcs, card, args.spacing, args.npy_axes)
  result = _segment(members, source.image, source.spacing, options, mesh=None)
  labels = result.labels
  if args.largest_component:
    labels = keep_largest_component(labels)
  _write(dst, result.probs if args.probabilities else labels, source)
  extra = ""
  if options.mc_samples:
    for tag, data in (("mean", result.probs), ("variance", result.variance),
                      ("entropy", result.entropy)):
      _write(_derived(dst, tag), data, source)
    extra = f", {result.passes} passes -> {_derived(dst, '{mean,variance,entropy}')}"
  elif result.passes > 1:
    extra = f", {result.passes} passes averaged"
  note = ""
  if result.resampled:
    s = "x".join(f"{v:g}" for v in source.spacing)
    t = "x".join(f"{v:g}" for v in card.spacing)
    note = f", resampled {s} -> {t} mm and back"
  fraction = float(np.count_nonzero(labels)) / labels.size
  name = srcs[0] if len(srcs) == 1 else " + ".join(srcs)
  print(f"{name} -> {dst}: shape {source.shape}, foreground {fraction:.4f}{note}{extra}, "
        f"{time.perf_counter() - tic:.2f} s", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
  """Command-line entry point; returns the exit status (0 ok, 2 bad input or arguments)."""
  parser = _parser()
  try:
    args = parser.parse_args(argv)
  except SystemExit as e:  # argparse exits on --help (0) and on bad arguments (2).
    return e.code if isinstance(e.code, int) else 2
  if args.batch_size < 1:
    _fail("--batch-size", f"must be a positive integer, got {args.batch_size}")
    return 2
  if not (math.isfinite(args.threshold) and 0.0 <= args.threshold <= 1.0):
    _fail("--threshold", f"must be in [0, 1], got {args.threshold}")
    return 2
  if not (math.isfinite(args.overlap) and 0.0 <= args.overlap < 1.0):
    _fail("--overlap", f"must be in [0, 1), got {args.overlap}")
    return 2
  if args.mc_samples < 0:
    _fail("--mc-samples", f"must be an integer >= 0, got {args.mc_samples}")
    return 2
  if args.flip_axes is not None and args.tta != "flips":
    _fail("--flip-axes", "chooses the axes of --tta flips; add --tta flips or drop it")
    return 2
  if args.largest_component and args.probabilities:
    _fail("--largest-component", "applies to labels; drop it or --probabilities")
    return 2
  try:
    window = _window_option(args.window)
  except ValueError as e:
    _fail("--window", e)
    return 2
  if args.spacing is not None:
    try:
      validate_spacing(args.spacing, name="--spacing")
    except ValueError as e:
      _fail("--spacing", e)
      return 2
  for inp in args.input:
    if not os.path.exists(inp):
      _fail(inp, "no such file or directory")
      return 2
  try:
    jobs = _jobs(args.input, args.output)
  except ValueError as e:
    _fail(args.input[0], e)
    return 2

  from jaxseg.train.checkpoint import load_model  # pylint: disable=import-outside-toplevel
  members = []
  where = " ".join(args.checkpoint)
  try:
    for directory in model_directories(args.checkpoint):
      where = directory
      model, variables, card = load_model(directory)
      variables = jax.device_put(variables)
      _check_model(model, variables, card)
      if isinstance(window, tuple):
        _check_window(model, card, window)
      members.append((model, variables, card))
    where = " ".join(args.checkpoint)
    check_ensemble([card for _, _, card in members])
    if args.mc_samples:
      for model, variables, _ in members:
        check_stochastic(model, variables)
  except Exception as e:  # orbax / nibabel raise many types for a bad checkpoint.
    _fail(f"checkpoint {where}", e)
    return 2
  options = Options(batch_size=args.batch_size, threshold=args.threshold, window=window,
                    overlap=args.overlap, blend=args.blend, tta=args.tta == "flips",
                    flip_axes=None if args.flip_axes is None else tuple(args.flip_axes),
                    mc_samples=args.mc_samples, seed=args.seed)
  if options.tta:
    try:
      axes = mirrored_axes([card for _, _, card in members], options.flip_axes)
    except ValueError as e:
      _fail("--tta", e)
      return 2
    origin = ("--flip-axes" if args.flip_axes is not None else
              "every spatial axis: the card does not record the mirrored ones"
              if all(card.flip_axes is None for _, _, card in members) else
              "the axes training mirrored, from the model card")
    print(f"test-time mirroring over axes {' '.join(map(str, axes))} ({origin})", flush=True)
  if len(members) > 1:
    print(f"ensemble of {len(members)} models (probabilities averaged)", flush=True)

  status = 0
  for srcs, dst in jobs:
    try:
      _run_file(srcs, dst, members, options, args)
    except (ValueError, OSError) as e:
      _fail(srcs[0], e)
      status = 2
  return status


if __name__ == "__main__":
  sys.exit(main())
