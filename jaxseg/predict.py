"""Segments volumes with an exported 2D model, slice by slice: ``python -m jaxseg.predict``.

Usage::

  python -m jaxseg.predict --checkpoint CKPT --input IN --output OUT \\
      [--batch-size N] [--threshold 0.5] [--probabilities] [--spacing SX SY SZ]

``CKPT`` is a directory written by :func:`jaxseg.train.checkpoint.save_model`. ``IN`` is a NIfTI
file (``.nii``, ``.nii.gz``) or a ``.npy`` file holding a 3D array in ``(x, y, z)`` order (axial
slices along the last axis, docs/developing.md); a trailing singleton axis (``(x, y, z, 1)``) is
accepted and kept in the output. ``OUT`` is written in the input's format with the input's shape;
a NIfTI output is built from the input's header, so it keeps the affine, the qform/sform codes,
the voxel sizes and the orientation; only the data type (``uint8`` labels, ``float32``
probabilities) and the display range change. When ``IN`` is a directory, every ``.nii``,
``.nii.gz`` and ``.npy`` file in it (not recursive; other files are skipped with a note) is
segmented into ``OUT/<same name>``. One line per file is printed: ``input -> output``, shape,
foreground fraction (voxels whose label is not 0), seconds. Bad input (unreadable or corrupt
file, not a 3D volume, unsupported extension, a checkpoint directory that is not an exported
model, a model whose input channels do not match the volume) gives a one-line
``jaxseg.predict: error: <file>: <reason>`` on stderr and exit code 2; in directory mode the
other files are still segmented.

Model metadata (``metadata`` of ``save_model``; the keys of :data:`PREDICT_METADATA_KEYS`, other
keys are ignored; a missing key takes the default given):

* ``spacing``: ``[sx, sy, sz]`` voxel spacing in mm of the training volumes, or ``null`` for
  "never resample" (default ``null``).
* ``normalization``: intensity normalisation applied in training, after resampling:
  ``{"kind": "percentile_zscore", "lower": 0.5, "upper": 99.5}`` (clip to the percentiles of the
  whole volume, then z-score: :func:`jaxseg.data.preprocess.normalize_intensity`; the default) or
  ``{"kind": "none"}``. Multi-channel images are normalised channel by channel.
* ``activation``: ``"sigmoid"`` (a 1-channel model: foreground where ``sigmoid(logit) >
  threshold``) or ``"softmax"`` (``K >= 2`` channels: label ``argmax_k p_k``, ties to the lower
  class). Default: sigmoid for one output channel, softmax otherwise.
* ``class_names``: list of the ``K`` class names (for a sigmoid model: background and
  foreground, or just the foreground); only checked against the model's outputs. Default
  ``null``.
* ``input_channels``: number of image channels the model takes. Default ``null``: the model's
  parameters are checked against the image instead (:func:`jax.eval_shape`).

Algorithm (:func:`predict_volume`) for an image of voxel spacing ``s`` and training spacing
``t``:

1. If ``t`` is known and differs from ``s`` (relative tolerance :data:`SPACING_RTOL` per axis),
   resample the image onto the grid of spacing ``t`` (linear, the grid convention of
   :func:`jaxseg.data.preprocess.resample`). ``.npy`` inputs carry no spacing: ``--spacing`` (or
   the ``spacing`` argument) gives it; without it the image is assumed to be at ``t`` already and
   is not resampled. ``--spacing`` applies to ``.npy`` inputs only; NIfTI spacing is read from
   the header (``pixdim``).
2. Normalise intensities as in training (``normalization``).
3. Logits of every axial slice with :func:`jaxseg.inference.predict_slices` (slices padded to the
   model's ``size_multiple``, ``model.apply(variables, x, train=False)``).
4. Probabilities: ``sigmoid`` of the single channel, or ``softmax`` over the classes.
5. If the image was resampled, resample the *probabilities* back onto the input grid (linear,
   with the input's shape given explicitly, so the output has exactly the input's shape), then
   threshold / argmax there. Interpolating probabilities rather than nearest-neighbour labels
   gives boundaries at the input's resolution instead of blocks of the coarser training grid.
   (Linear interpolation is a convex combination, so interpolated softmax probabilities still
   sum to one.)
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import nibabel as nib
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from scipy import special

from jaxseg.data.preprocess import load_nifti, normalize_intensity, resample
from jaxseg.inference import predict_slices

__all__ = [
    "PREDICT_METADATA_KEYS",
    "SPACING_RTOL",
    "check_metadata",
    "main",
    "predict_volume",
]

PREDICT_METADATA_KEYS: tuple[str, ...] = (
    "spacing", "normalization", "activation", "class_names", "input_channels")
"""Keys of the model metadata that prediction reads (module docstring)."""

DEFAULT_NORMALIZATION: dict[str, Any] = {"kind": "percentile_zscore", "lower": 0.5,
                                         "upper": 99.5}
SPACING_RTOL = 1e-4
"""Spacings within this relative difference (per axis) count as equal: no resampling."""

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NUMPY_SUFFIXES = (".npy",)
_PROG = "jaxseg.predict"


# --------------------------------------------------------------------------------------------
# Metadata.
# --------------------------------------------------------------------------------------------


def _as_spacing(value: Any, name: str) -> np.ndarray:
  try:
    arr = np.asarray(value, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} must be 3 numbers, got {value!r}") from e
  if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be 3 finite, positive numbers (mm), got {value!r}")
  return arr


def check_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
  """Validates the prediction keys of a model's metadata and fills in their defaults.

  Args:
    metadata: the metadata of :func:`jaxseg.train.checkpoint.load_model`.

  Returns:
    A dict with exactly the keys of :data:`PREDICT_METADATA_KEYS`: ``spacing`` (float64 ``(3,)``
    or None), ``normalization`` (dict with ``kind`` and, for ``percentile_zscore``, ``lower``
    and ``upper``), ``activation`` (``"sigmoid"``, ``"softmax"`` or None = from the number of
    outputs), ``class_names`` (list of str or None), ``input_channels`` (int or None).

  Raises:
    ValueError: a key has a value of the wrong type or out of range.
  """
  if not isinstance(metadata, Mapping):
    raise ValueError(f"model metadata must be a mapping, got {type(metadata).__name__}")
  spacing = metadata.get("spacing")
  if spacing is not None:
    spacing = _as_spacing(spacing, "metadata 'spacing'")

  norm = metadata.get("normalization")
  if norm is None:
    norm = dict(DEFAULT_NORMALIZATION)
  if not isinstance(norm, Mapping) or "kind" not in norm:
    raise ValueError(f"metadata 'normalization' must be a mapping with a 'kind', got {norm!r}")
  kind = norm["kind"]
  if kind == "percentile_zscore":
    unknown = set(norm) - {"kind", "lower", "upper"}
    if unknown:
      raise ValueError(f"metadata 'normalization' has unknown keys {sorted(unknown)}")
    try:
      lower = float(norm.get("lower", DEFAULT_NORMALIZATION["lower"]))
      upper = float(norm.get("upper", DEFAULT_NORMALIZATION["upper"]))
    except (TypeError, ValueError) as e:
      raise ValueError(f"metadata 'normalization' percentiles must be numbers, got {norm!r}") from e
    if not 0.0 <= lower <= upper <= 100.0:
      raise ValueError(f"metadata 'normalization' needs 0 <= lower <= upper <= 100, got {norm!r}")
    norm = {"kind": kind, "lower": lower, "upper": upper}
  elif kind == "none":
    norm = {"kind": "none"}
  else:
    raise ValueError(f"metadata 'normalization' kind must be 'percentile_zscore' or 'none', "
                     f"got {kind!r}")

  activation = metadata.get("activation")
  if activation not in (None, "sigmoid", "softmax"):
    raise ValueError(f"metadata 'activation' must be 'sigmoid' or 'softmax', got {activation!r}")

  names = metadata.get("class_names")
  if names is not None:
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(
        isinstance(n, str) for n in names):
      raise ValueError(f"metadata 'class_names' must be a list of strings, got {names!r}")
    names = list(names)

  channels = metadata.get("input_channels")
  if channels is not None:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) or channels < 1:
      raise ValueError(f"metadata 'input_channels' must be a positive integer, got {channels!r}")
    channels = int(channels)
  return {"spacing": spacing, "normalization": norm, "activation": activation,
          "class_names": names, "input_channels": channels}


# --------------------------------------------------------------------------------------------
# Prediction.
# --------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnums=0)
def _apply(model: Any, variables: Any, images: jax.Array) -> jax.Array:
  return model.apply(variables, images, train=False)


def _check_channels(model: Any, variables: Any, expected: int | None, channels: int) -> None:
  """Raises ValueError if the model does not take ``channels``-channel images."""
  if expected is not None:
    if expected != channels:
      raise ValueError(f"the model takes {expected}-channel images (metadata 'input_channels') "
                       f"but the volume has {channels} channel(s)")
    return
  m = int(getattr(model, "size_multiple", 1))
  probe = jax.ShapeDtypeStruct((1, m, m, channels), jnp.float32)
  try:
    jax.eval_shape(functools.partial(_apply, model), variables, probe)
  except Exception as e:  # Flax raises ScopeParamShapeError, TypeError... on a mismatch.
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    raise ValueError(f"the model does not accept {channels}-channel images "
                     f"({type(e).__name__}: {first})") from e


def _normalize(image: np.ndarray, norm: Mapping[str, Any]) -> np.ndarray:
  if norm["kind"] == "none":
    image = np.asarray(image)
    if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
      raise ValueError(f"image must be real-valued, got dtype {image.dtype}.")
    bad = int(np.count_nonzero(~np.isfinite(image)))
    if bad:
      raise ValueError(f"image has {bad} non-finite (NaN or Inf) voxel(s) of {image.size}.")
    return image.astype(np.float32)
  return normalize_intensity(image, lower=norm["lower"], upper=norm["upper"])


def _segment(
    model: Any,
    variables: Any,
    settings: Mapping[str, Any],
    image: np.ndarray,
    spacing: Sequence[float] | None,
    *,
    batch_size: int,
    threshold: float,
    mesh: Mesh | None,
) -> tuple[np.ndarray, np.ndarray, bool]:
  """``(labels, probabilities, resampled)`` of one volume; see :func:`predict_volume`."""
  image = np.asarray(image)
  if image.ndim == 3:
    image = image[..., None]
  if image.ndim != 4 or image.size == 0:
    raise ValueError(f"expected a non-empty (x, y, z) or (x, y, z, channels) volume, got shape "
                     f"{image.shape}")
  if not np.issubdtype(image.dtype, np.number) or np.iscomplexobj(image):
    raise ValueError(f"image must be real-valued, got dtype {image.dtype}")
  if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
    raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
  if not 0.0 <= threshold <= 1.0:
    raise ValueError(f"threshold must be in [0, 1], got {threshold}")
  grid = image.shape[:3]
  channels = image.shape[3]
  _check_channels(model, variables, settings["input_channels"], channels)

  target = settings["spacing"]
  spacing = None if spacing is None else _as_spacing(spacing, "spacing")
  resampled = (target is not None and spacing is not None
               and not np.allclose(spacing, target, rtol=SPACING_RTOL, atol=0.0))
  if resampled:
    image = np.stack([resample(image[..., c], spacing, target, order=1)
                      for c in range(channels)], axis=-1)
  image = np.stack([_normalize(image[..., c], settings["normalization"])
                    for c in range(channels)], axis=-1)

  if mesh is not None:
    variables = jax.device_put(variables, NamedSharding(mesh, PartitionSpec()))
    n_dev = mesh.devices.size
    batch = min(batch_size, image.shape[2])
    batch = -(-batch // n_dev) * n_dev
  else:
    variables = jax.device_put(variables)
    batch = min(batch_size, image.shape[2])
  logits = predict_slices(lambda x: _apply(model, variables, x), image, batch_size=batch,
                          size_multiple=int(getattr(model, "size_multiple", 1)), mesh=mesh)

  k = logits.shape[-1]
  activation = settings["activation"] or ("sigmoid" if k == 1 else "softmax")
  if activation == "sigmoid" and k != 1:
    raise ValueError(f"activation 'sigmoid' needs a 1-channel model, this one has {k} outputs")
  if activation == "softmax" and k < 2:
    raise ValueError("activation 'softmax' needs at least 2 output channels, the model has 1")
  names = settings["class_names"]
  if names is not None and len(names) != k and not (k == 1 and len(names) == 2):
    raise ValueError(f"metadata 'class_names' has {len(names)} names for {k} model outputs")

  if activation == "sigmoid":
    probs = special.expit(logits[..., 0]).astype(np.float32)
    if resampled:
      probs = resample(probs, target, spacing, order=1, shape=grid).astype(np.float32)
    labels = (probs > threshold).astype(np.uint8)
  else:
    probs = special.softmax(logits, axis=-1).astype(np.float32)
    if resampled:
      probs = np.stack([resample(probs[..., j], target, spacing, order=1, shape=grid)
                        for j in range(k)], axis=-1).astype(np.float32)
    labels = np.argmax(probs, axis=-1).astype(np.uint8 if k <= 256 else np.int32)
  return labels, probs, bool(resampled)


def predict_volume(
    model: Any,
    variables: Any,
    metadata: Mapping[str, Any],
    image: np.ndarray,
    spacing: Sequence[float] | None,
    *,
    batch_size: int = 16,
    threshold: float = 0.5,
    probabilities: bool = False,
    mesh: Mesh | None = None,
) -> np.ndarray:
  """Segments one volume with a 2D model, axial slice by axial slice (module docstring).

  Args:
    model: a Flax module called as ``model.apply(variables, images, train=False)`` on
      ``(batch, h, w, channels)`` images; its ``size_multiple`` attribute (1 if absent) is the
      multiple that slices are padded to.
    variables: the model's variables (e.g. from :func:`jaxseg.train.checkpoint.load_model`).
    metadata: model metadata (keys :data:`PREDICT_METADATA_KEYS`, see :func:`check_metadata`).
    image: ``(x, y, z)`` or ``(x, y, z, channels)`` intensities.
    spacing: the image's voxel spacing in mm, or None to assume the training spacing (no
      resampling).
    batch_size: slices per model call (fewer if the volume has fewer slices).
    threshold: foreground threshold on the sigmoid probability (sigmoid models only).
    probabilities: return probabilities instead of labels.
    mesh: optional device mesh to shard the slices over.

  Returns:
    ``(x, y, z)`` labels (uint8; int32 beyond 256 classes) on the input grid, or with
    ``probabilities=True`` float32 probabilities: ``(x, y, z)`` foreground probability for a
    sigmoid model, ``(x, y, z, K)`` class probabilities for a softmax model.

  Raises:
    ValueError: bad image shape or values, bad spacing, metadata or settings, or a model whose
      input channels or outputs do not match.
  """
  settings = check_metadata(metadata)
  labels, probs, _ = _segment(model, variables, settings, image, spacing,
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

  image: np.ndarray  # (x, y, z)
  spacing: np.ndarray | None
  kind: str
  shape: tuple[int, ...]  # the file's own shape (may have trailing singleton axes)
  nifti: Any = None  # the nibabel image (header, affine) of a NIfTI input


def _read(path: str, npy_spacing: Sequence[float] | None) -> _Source:
  kind = _require_kind(path)
  if not os.path.isfile(path):
    raise ValueError("no such file")
  if kind == "nifti":
    data, spacing, _ = load_nifti(path)
    img = nib.load(path)
    return _Source(data, spacing, kind, tuple(img.shape), img)
  try:
    data = np.load(path, allow_pickle=False)
  except Exception as e:  # ValueError, EOFError, OSError, zipfile errors... for corrupt files.
    raise ValueError(f"cannot read .npy file (unreadable, truncated or corrupt): "
                     f"{type(e).__name__}: {e}") from e
  if not isinstance(data, np.ndarray):
    raise ValueError(f"not a single .npy array (got {type(data).__name__})")
  shape = tuple(data.shape)
  while data.ndim > 3 and data.shape[-1] == 1:
    data = data[..., 0]
  if data.ndim != 3:
    raise ValueError(f"not a 3D (x, y, z) volume: shape {shape}")
  spacing = None if npy_spacing is None else _as_spacing(npy_spacing, "--spacing")
  return _Source(data, spacing, kind, shape, None)


def _write(path: str, data: np.ndarray, source: _Source) -> None:
  """Writes ``data`` like ``source`` (format, shape, NIfTI header), atomically."""
  if data.shape == source.image.shape and data.shape != source.shape:
    data = data.reshape(source.shape)  # restore trailing singleton axes
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
  try:
    if source.kind == "nifti":
      ref = source.nifti
      out = type(ref)(data, ref.affine, ref.header)
      out.header.set_data_dtype(data.dtype)
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
      description="Segment NIfTI / .npy volumes with an exported jaxseg 2D model, slice by slice.")
  p.add_argument("--checkpoint", required=True,
                 help="directory written by jaxseg.train.checkpoint.save_model")
  p.add_argument("--input", required=True,
                 help=".nii / .nii.gz / .npy volume, or a directory of them")
  p.add_argument("--output", required=True,
                 help="output file (same format as the input), or a directory")
  p.add_argument("--batch-size", type=int, default=16, help="slices per model call (16)")
  p.add_argument("--threshold", type=float, default=0.5,
                 help="foreground threshold of sigmoid models (0.5)")
  p.add_argument("--probabilities", action="store_true",
                 help="write float32 probabilities instead of uint8 labels")
  p.add_argument("--spacing", type=float, nargs=3, metavar=("SX", "SY", "SZ"),
                 help="voxel spacing (mm) of .npy inputs (default: the model's training spacing)")
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


def _run_file(src: str, dst: str, model: Any, variables: Any, settings: Mapping[str, Any],
              args: argparse.Namespace) -> None:
  tic = time.perf_counter()
  kind = _require_kind(src)
  if _kind(dst) != kind:
    want = ".nii or .nii.gz" if kind == "nifti" else ".npy"
    raise ValueError(f"output {dst} must be a {want} file like the input")
  source = _read(src, args.spacing)
  labels, probs, resampled = _segment(model, variables, settings, source.image, source.spacing,
                                      batch_size=args.batch_size, threshold=args.threshold,
                                      mesh=None)
  _write(dst, probs if args.probabilities else labels, source)
  note = ""
  if resampled:
    s = "x".join(f"{v:g}" for v in source.spacing)
    t = "x".join(f"{v:g}" for v in settings["spacing"])
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
  if args.spacing is not None:
    try:
      _as_spacing(args.spacing, "--spacing")
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
    model, variables, metadata = load_model(args.checkpoint)
    settings = check_metadata(metadata)
    variables = jax.device_put(variables)
  except Exception as e:  # orbax / nibabel raise many types for a bad checkpoint.
    _fail(f"checkpoint {args.checkpoint}", e)
    return 2

  status = 0
  for src, dst in jobs:
    try:
      _run_file(src, dst, model, variables, settings, args)
    except (ValueError, OSError) as e:
      _fail(src, e)
      status = 2
  return status


if __name__ == "__main__":
  sys.exit(main())
