"""Segments volumes with an exported jaxseg model: ``python -m jaxseg.predict``.

Usage::

  python -m jaxseg.predict --checkpoint CKPT --input IN --output OUT \\
      [--batch-size N] [--threshold 0.5] [--probabilities] [--spacing SX SY SZ] \\
      [--npy-axes {xyz,zyx}] [--largest-component]

``CKPT`` is a directory written by :func:`jaxseg.train.checkpoint.save_model`: every model a study
exports works -- 2D models applied slice by slice (``UNet2D`` with a softmax or a sigmoid output,
``TransUNet`` with its deep-supervision heads, of which the last, full-resolution one is used) and
3D models applied to the whole volume (``ProbAttentionUNet3D``, deterministic pass: prior mean, no
dropout). Everything about the inputs comes from the model's card
(:class:`jaxseg.model_card.ModelCard`, validated once when the checkpoint is loaded): input
channels, training spacing, per-channel normalisation, inference kind (slices / volume),
activation, class names, and the axis order of ``.npy`` inputs.

``IN`` is a NIfTI file (``.nii``, ``.nii.gz``) or a ``.npy`` file. A NIfTI volume is in voxel
order ``(x, y, z)`` (axial slices along the last axis, docs/developing.md). A ``.npy`` array is
in the card's ``layout`` unless ``--npy-axes`` says otherwise: ``xyz`` like NIfTI, or ``zyx``
(slices, rows, cols: PROMISE12's preprocessed ``image_trainNN.npy``; read as ``array.transpose(2,
1, 0)`` exactly like ``datasets/promise12`` does, and written back in the same order, so the
output has the input's shape and its slice ``k`` is the prediction of input slice ``k``). A
single-channel model takes a 3D volume; a trailing singleton axis (``(x, y, z, 1)``) is accepted
and kept in the output. A multi-channel model (e.g. T2W, DWI, ADC) takes one file with a trailing
channel axis, ``(x, y, z, C)`` (``(z, y, x, C)`` for ``zyx``), the channels in the card's order;
anything else is an error. ``OUT`` is written in the input's format, on the input's grid and in
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
3. Probabilities with :func:`jaxseg.inference.predict_probabilities`: logits of every axial
   slice (``inference="slices"``) or of the whole volume (``"volume"``), padded to the model's
   ``size_multiple`` and cropped back, ``model.apply(variables, x, train=False)``; then
   ``sigmoid`` of the single channel or ``softmax`` over the classes (``card.activation``).
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

from jaxseg.data.preprocess import load_nifti, read_nifti, resample, validate_spacing
from jaxseg.inference import (channels_last_volume, final_logits, keep_largest_component,
                              predict_probabilities, size_multiples)
from jaxseg.model_card import LAYOUTS, ModelCard

__all__ = [
    "SPACING_RTOL",
    "main",
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
  shape = tuple(getattr(logits, "shape", ()))
  if len(shape) != ndim + 2 or shape[-1] != card.num_outputs:
    raise ValueError(f"the model's logits for {probe.shape} inputs have shape {shape}, but its "
                     f"card says {card.num_outputs} output channel(s) ({card.activation}, classes "
                     f"{card.class_names})")


def _segment(
    model: Any,
    variables: Any,
    card: ModelCard,
    image: np.ndarray,
    spacing: Sequence[float] | None,
    *,
    batch_size: int,
    threshold: float,
    mesh: Mesh | None,
) -> tuple[np.ndarray, np.ndarray, bool]:
  """``(labels, probabilities, resampled)`` of one volume; see :func:`predict_volume`."""
  image = channels_last_volume(image)
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise ValueError(f"image must be real-valued, got dtype {image.dtype}")
  if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
      batch_size < 1):
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
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
  probs = predict_probabilities(model, variables, image, card, batch_size=int(batch_size),
                                mesh=mesh)
  if card.activation == "sigmoid":
    if resampled:
      probs = resample(probs, target, spacing, order=1, shape=grid).astype(np.float32)
    labels = (probs > threshold).astype(np.uint8)
  else:
    k = probs.shape[-1]
    if resampled:
      probs = np.stack([resample(probs[..., j], target, spacing, order=1, shape=grid)
                        for j in range(k)], axis=-1).astype(np.float32)
    labels = np.argmax(probs, axis=-1).astype(np.uint8 if k <= 256 else np.int32)
  return labels, probs, bool(resampled)


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
    batch_size: slices per model call for a 2D model (fewer if the volume has fewer slices); a
      3D model gets one volume per call.
    threshold: foreground threshold on the sigmoid probability (sigmoid models only).
    probabilities: return probabilities instead of labels.
    mesh: optional device mesh to shard the model's inputs over.

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
  labels, probs, _ = _segment(model, variables, card, image, spacing,
                              batch_size=batch_size, threshold=threshold, mesh=mesh)
  return probs if probabilities else labels


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


def _write(path: str, data: np.ndarray, source: _Source) -> None:
  """Writes ``data`` (``(x, y, z[, K])``) like ``source`` (format, axis order, shape, header)."""
  data = _from_xyz(data, source.layout)
  grid = _from_xyz(source.image, source.layout).shape
  if data.shape == grid and data.shape != source.shape:
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
      description="Segment NIfTI / .npy volumes with an exported jaxseg model (2D models slice "
                  "by slice, 3D models on the whole volume), as its model card says.")
  p.add_argument("--checkpoint", required=True,
                 help="directory written by jaxseg.train.checkpoint.save_model")
  p.add_argument("--input", required=True,
                 help=".nii / .nii.gz / .npy volume, or a directory of them; a multi-channel "
                      "model takes one file with a trailing channel axis in its card's order")
  p.add_argument("--output", required=True,
                 help="output file (same format as the input), or a directory")
  p.add_argument("--batch-size", type=int, default=16,
                 help="slices per model call of a 2D model (16); a 3D model takes one volume")
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
  return p


def _one_line(error: BaseException) -> str:
  text = " ".join(str(error).split())
  return text or type(error).__name__


def _fail(where: str, error: BaseException | str) -> None:
  message = error if isinstance(error, str) else _one_line(error)
  print(f"{_PROG}: error: {where}: {message}", file=sys.stderr, flush=True)


def _jobs(inp: str, out: str) -> list[tuple[str, str]]:
  """``(input, output)`` file pairs; raises ValueError for a bad input/output combination."""
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
      jobs.append((src, os.path.join(out, name)))
    if not jobs:
      raise ValueError(f"{inp}: no .nii, .nii.gz or .npy file in the directory")
    return jobs
  if os.path.isdir(out):
    out = os.path.join(out, os.path.basename(inp))
  return [(inp, out)]


def _run_file(src: str, dst: str, model: Any, variables: Any, card: ModelCard,
              args: argparse.Namespace) -> None:
  tic = time.perf_counter()
  kind = _require_kind(src)
  if _kind(dst) != kind:
    want = ".nii or .nii.gz" if kind == "nifti" else ".npy"
    raise ValueError(f"output {dst} must be a {want} file like the input")
  source = _read(src, card, args.spacing, args.npy_axes)
  labels, probs, resampled = _segment(model, variables, card, source.image, source.spacing,
                                      batch_size=args.batch_size, threshold=args.threshold,
                                      mesh=None)
  if args.largest_component:
    labels = keep_largest_component(labels)
  _write(dst, probs if args.probabilities else labels, source)
  note = ""
  if resampled:
    s = "x".join(f"{v:g}" for v in source.spacing)
    t = "x".join(f"{v:g}" for v in card.spacing)
    note = f", resampled {s} -> {t} mm and back"
  fraction = float(np.count_nonzero(labels)) / labels.size
  print(f"{src} -> {dst}: shape {source.shape}, foreground {fraction:.4f}{note}, "
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
  if args.largest_component and args.probabilities:
    _fail("--largest-component", "applies to labels; drop it or --probabilities")
    return 2
  if args.spacing is not None:
    try:
      validate_spacing(args.spacing, name="--spacing")
    except ValueError as e:
      _fail("--spacing", e)
      return 2
  if not os.path.exists(args.input):
    _fail(args.input, "no such file or directory")
    return 2
  try:
    jobs = _jobs(args.input, args.output)
  except ValueError as e:
    _fail(args.input, e)
    return 2

  from jaxseg.train.checkpoint import load_model  # pylint: disable=import-outside-toplevel
  try:
    model, variables, card = load_model(args.checkpoint)
    variables = jax.device_put(variables)
    _check_model(model, variables, card)
  except Exception as e:  # orbax / nibabel raise many types for a bad checkpoint.
    _fail(f"checkpoint {args.checkpoint}", e)
    return 2

  status = 0
  for src, dst in jobs:
    try:
      _run_file(src, dst, model, variables, card, args)
    except (ValueError, OSError) as e:
      _fail(src, e)
      status = 2
  return status


if __name__ == "__main__":
  sys.exit(main())
