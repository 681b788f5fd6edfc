"""The model card of an exported model: everything ``python -m jaxseg.predict`` needs to know.

A :class:`ModelCard` is written by the study that exports a model
(:func:`jaxseg.train.checkpoint.save_model`) and validated once, when it is built or read back
(:meth:`ModelCard.from_json`, called by :func:`jaxseg.train.checkpoint.load_model`); code that
holds a card can trust every field. Example (the bpMRI models of ``datasets/prostatex_bpmri``)::

  ModelCard(activation="softmax", class_names=("background", "csPCa"),
            channels=("T2W", "DWI", "ADC"), spacing=(0.5, 0.5, 3.0),
            normalization=(percentile_zscore(), percentile_zscore(), scale(ADC_SCALE)),
            inference="volume", layout="xyz", info={"study": "anatomical_vs_diagnostic"})

Fields:

* ``activation``: ``"sigmoid"`` (one output channel; foreground where ``sigmoid(logit) >
  threshold``) or ``"softmax"`` (``K >= 2`` output channels; label ``argmax``).
* ``class_names``: names of the classes, background first: ``K`` names for a softmax model,
  exactly two (``("background", "<foreground>")``) for a sigmoid model. Unique, non-empty.
* ``channels``: names of the input channels in order (``("T2W",)``, ``("T2W", "DWI", "ADC")``);
  the model takes ``len(channels)`` channels. Unique, non-empty.
* ``spacing``: training voxel spacing ``(sx, sy, sz)`` in mm, or None ("never resample").
* ``normalization``: one intensity normalisation per channel, applied after resampling
  (:meth:`ModelCard.normalize`, :func:`normalize_channel`):

  - ``{"kind": "percentile_zscore", "lower": 0.5, "upper": 99.5}``: clip to the percentiles of
    the whole volume, then z-score (:func:`jaxseg.data.preprocess.normalize_intensity`); T2W and
    DWI of ``datasets/prostatex_bpmri``, the 2D studies' images;
  - ``{"kind": "scale", "divisor": 3000.0}``: divide by the divisor (the ADC channel of
    ``datasets/prostatex_bpmri``, ``ADC_SCALE``);
  - ``{"kind": "none"}``: use the intensities as they are.

* ``inference``: ``"slices"`` (a 2D model applied to every axial slice) or ``"volume"`` (a 3D
  model applied to the whole volume, padded to the model's size multiple).
* ``layout``: axis order of the training data's ``.npy`` files, the default of ``jaxseg.predict``
  for ``.npy`` inputs: ``"xyz"`` (NIfTI voxel order, axial slices last) or ``"zyx"`` (slices,
  rows, cols: PROMISE12's ``image_trainNN.npy``, which ``datasets/promise12`` maps to ``(x, y,
  z)`` with ``.transpose(2, 1, 0)``).
* ``slice_context``: a 2.5D model (``inference="slices"`` only) sees every slice with its
  ``slice_context`` neighbours on each side as extra channels
  (:func:`jaxseg.inference.stack_slice_context`), ``len(channels) * (2 * slice_context + 1)``
  channels in all; 0 for a plain 2D model.
* ``window``: the window the model predicts through, its training patch size (2 sides for
  ``"slices"``, 3 for ``"volume"``): an input larger than it is covered by overlapping windows
  blended with Gaussian weights (:func:`jaxseg.inference.sliding_window_logits`, nnU-Net's
  inference); None: the whole slice or volume in one call.
* ``flip_axes``: the spatial axes (0, 1, 2 = x, y, z) training mirrored the samples along, the
  axes test-time mirroring (``jaxseg.predict --tta flips``) averages over by default: mirroring
  an axis the model never saw flipped costs accuracy (a 2D model trained with left-right flips
  only lost 0.2 Dice on real MRI when its slices were also mirrored antero-posteriorly). ``()``:
  trained without mirroring; None: not recorded (cards exported before the field existed), and
  mirroring then defaults to every spatial axis of the model.
* ``info``: free provenance (study, loss, best epoch, fold, held-out cases...), JSON-able; never
  read by prediction.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxseg.data.preprocess import finite_image, normalize_intensity, validate_spacing

__all__ = [
    "ACTIVATIONS",
    "INFERENCE_KINDS",
    "LAYOUTS",
    "NORMALIZATION_KINDS",
    "ModelCard",
    "no_normalization",
    "normalize_channel",
    "percentile_zscore",
    "scale",
]

ACTIVATIONS = ("sigmoid", "softmax")
INFERENCE_KINDS = ("slices", "volume")
LAYOUTS = ("xyz", "zyx")
NORMALIZATION_KINDS: dict[str, tuple[str, ...]] = {
    "percentile_zscore": ("lower", "upper"),
    "scale": ("divisor",),
    "none": (),
}
"""Normalisation kinds and the keys (besides ``kind``) each one needs."""


def percentile_zscore(lower: float = 0.5, upper: float = 99.5) -> dict[str, Any]:
  """The normalisation ``{"kind": "percentile_zscore", "lower": lower, "upper": upper}``."""
  return {"kind": "percentile_zscore", "lower": float(lower), "upper": float(upper)}


def scale(divisor: float) -> dict[str, Any]:
  """The normalisation ``{"kind": "scale", "divisor": divisor}`` (intensity / divisor)."""
  return {"kind": "scale", "divisor": float(divisor)}


def no_normalization() -> dict[str, Any]:
  """The normalisation ``{"kind": "none"}``."""
  return {"kind": "none"}


# --------------------------------------------------------------------------------------------
# Validation helpers (each raises a one-line ValueError naming the field).
# --------------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


#: Fields added after the first card format, with the value an older card means by leaving them
#: out (a card without ``slice_context`` was exported before 2.5D models existed: plain 2D).
_ADDED_LATER = {"slice_context": 0, "window": None, "flip_axes": None}


def _choice(field: str, value: Any, allowed: Sequence[str]) -> str:
  if not isinstance(value, str) or value not in allowed:
    options = " or ".join(repr(a) for a in allowed)
    raise ValueError(f"ModelCard.{field} must be {options}, got {value!r}")
  return value


def _names(field: str, value: Any) -> tuple[str, ...]:
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
    raise ValueError(f"ModelCard.{field} must be a sequence of names (e.g. a tuple of str), "
                     f"got {value!r}")
  names = tuple(value)
  if not names:
    raise ValueError(f"ModelCard.{field} must name at least one entry, got {value!r}")
  if not all(isinstance(n, str) and n.strip() for n in names):
    raise ValueError(f"ModelCard.{field} must hold non-empty strings, got {value!r}")
  if len(set(names)) != len(names):
    raise ValueError(f"ModelCard.{field} must hold unique names, got {value!r}")
  return names


def _spacing(value: Any) -> tuple[float, float, float] | None:
  if value is None:
    return None
  if isinstance(value, np.ndarray):
    value = value.tolist()
  # JSON types first (no strings or booleans), then the shared spacing check.
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
      or not all(_is_number(v) for v in value)):
    raise ValueError(f"ModelCard.spacing must be None or 3 numbers (mm), got {value!r}")
  spacing = validate_spacing(value, name="ModelCard.spacing")
  return tuple(spacing.tolist())  # type: ignore[return-value]


def _window(value: Any, ndim: int) -> tuple[int, ...] | None:
  if value is None:
    return None
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != ndim
      or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1
                 for v in value)):
    raise ValueError(f"ModelCard.window must be None or {ndim} positive ints (one per spatial "
                     f"axis of a {'slice' if ndim == 2 else 'volume'} model), got {value!r}")
  return tuple(int(v) for v in value)


def _flip_axes(value: Any, ndim: int) -> tuple[int, ...] | None:
  if value is None:
    return None
  if isinstance(value, np.ndarray):
    value = value.tolist()
  if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
      or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and 0 <= v < ndim
                 for v in value) or len(set(value)) != len(value)):
    raise ValueError(f"ModelCard.flip_axes must be None or distinct axes in 0..{ndim - 1} (the "
                     f"spatial axes of a {'slice' if ndim == 2 else 'volume'} model), "
                     f"got {value!r}")
  return tuple(sorted(int(v) for v in value))


def _normalization_entry(value: Any, field: str) -> dict[str, Any]:
  if not isinstance(value, Mapping) or "kind" not in value:
    raise ValueError(f"{field} must be a dict with a 'kind' in {sorted(NORMALIZATION_KINDS)}, "
                     f"got {value!r}")
  kind = value["kind"]
  if not isinstance(kind, str) or kind not in NORMALIZATION_KINDS:
    raise ValueError(f"{field} kind must be one of {sorted(NORMALIZATION_KINDS)}, got {kind!r}")
  keys = NORMALIZATION_KINDS[kind]
  unknown = sorted(set(value) - {"kind", *keys}, key=str)
  missing = [k for k in keys if k not in value]
  if unknown or missing:
    raise ValueError(f"{field} of kind {kind!r} takes exactly the keys {['kind', *keys]}, got "
                     f"{value!r}")
  for k in keys:
    if not _is_number(value[k]) or not math.isfinite(value[k]):
      raise ValueError(f"{field} {k!r} must be a finite number, got {value[k]!r}")
  out: dict[str, Any] = {"kind": kind, **{k: float(value[k]) for k in keys}}
  if kind == "percentile_zscore" and not 0.0 <= out["lower"] <= out["upper"] <= 100.0:
    raise ValueError(f"{field} needs 0 <= lower <= upper <= 100, got {value!r}")
  if kind == "scale" and out["divisor"] <= 0:
    raise ValueError(f"{field} 'divisor' must be positive, got {value['divisor']!r}")
  return out


def _jsonable(value: Any, where: str) -> Any:
  """A plain-JSON copy of ``value`` (NumPy scalars and arrays, tuples converted)."""
  if isinstance(value, np.ndarray):
    value = value.tolist()
  elif isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, Mapping):
    out = {}
    for k, v in value.items():
      if not isinstance(k, str):
        raise ValueError(f"ModelCard.info keys must be strings, got {k!r} in {where}")
      out[k] = _jsonable(v, f"{where}[{k!r}]")
    return out
  if isinstance(value, (list, tuple)):
    return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
  if value is None or isinstance(value, (str, bool, int)):
    return value
  if isinstance(value, float):
    if not math.isfinite(value):
      raise ValueError(f"ModelCard.info must be finite JSON, got {value!r} at {where}")
    return value
  raise ValueError(f"ModelCard.info must be JSON-able (dict, list, str, number, bool, None), "
                   f"got {type(value).__name__} at {where}")


# --------------------------------------------------------------------------------------------
# Normalisation.
# --------------------------------------------------------------------------------------------


def normalize_channel(image: np.ndarray, normalization: Mapping[str, Any]) -> np.ndarray:
  """One channel normalised as ``normalization`` says (module docstring); float32, same shape.

  Raises:
    ValueError: non-numeric or empty image, NaN/Inf voxels, or an unknown normalisation.
  """
  spec = _normalization_entry(normalization, "normalization")
  kind = spec["kind"]
  if kind == "percentile_zscore":
    return normalize_intensity(image, lower=spec["lower"], upper=spec["upper"])
  x = finite_image(image)
  if kind == "scale":  # as datasets/prostatex_bpmri: float64 division, then float32
    x = x / spec["divisor"]
  return x.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The card.
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelCard:
  """What prediction needs to know about an exported model (module docstring).

  Built with any sequences (lists from JSON included); they are validated and stored as tuples,
  normalisation entries and ``info`` as plain copies. Every field error is a one-line
  ``ValueError`` naming the field, the value and what is allowed.

  Attributes:
    activation: ``"sigmoid"`` or ``"softmax"``.
    class_names: class names, background first (two for a sigmoid model).
    channels: input channel names, in order.
    spacing: training voxel spacing in mm, or None (never resample).
    normalization: one normalisation dict per channel.
    inference: ``"slices"`` or ``"volume"``.
    layout: ``"xyz"`` or ``"zyx"``, the axis order of the training data's ``.npy`` files.
    slice_context: neighbouring slices on each side as extra channels (2.5D; 0: none).
    window: sliding-window size (the training patch), or None for whole-input inference.
    flip_axes: the axes training mirrored (the default of test-time mirroring); None: unknown.
    info: free JSON-able provenance, never read by prediction.
  """

  activation: str
  class_names: tuple[str, ...]
  channels: tuple[str, ...]
  spacing: tuple[float, float, float] | None
  normalization: tuple[dict, ...]
  inference: str
  layout: str = "xyz"
  slice_context: int = 0
  window: tuple[int, ...] | None = None
  flip_axes: tuple[int, ...] | None = None
  info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    set_ = lambda k, v: object.__setattr__(self, k, v)
    activation = _choice("activation", self.activation, ACTIVATIONS)
    class_names = _names("class_names", self.class_names)
    if activation == "sigmoid" and len(class_names) != 2:
      raise ValueError(f"ModelCard.class_names of a sigmoid model must be 2 names "
                       f"('background', '<foreground>'), got {self.class_names!r}")
    if activation == "softmax" and len(class_names) < 2:
      raise ValueError(f"ModelCard.class_names of a softmax model must be >= 2 names (one per "
                       f"output channel), got {self.class_names!r}")
    channels = _names("channels", self.channels)
    spacing = _spacing(self.spacing)
    norm = self.normalization
    if isinstance(norm, Mapping) or not isinstance(norm, Sequence):
      raise ValueError(f"ModelCard.normalization must be a sequence of dicts, one per channel, "
                       f"got {norm!r}")
    if len(norm) != len(channels):
      raise ValueError(f"ModelCard.normalization needs one entry per channel {channels} "
                       f"({len(channels)}), got {len(norm)}: {norm!r}")
    norm = tuple(_normalization_entry(n, f"ModelCard.normalization[{i}]")
                 for i, n in enumerate(norm))
    inference = _choice("inference", self.inference, INFERENCE_KINDS)
    layout = _choice("layout", self.layout, LAYOUTS)
    context = self.slice_context
    if isinstance(context, bool) or not isinstance(context, numbers.Integral) or context < 0:
      raise ValueError(f"ModelCard.slice_context must be an integer >= 0, got {context!r}")
    if context and inference != "slices":
      raise ValueError(f"ModelCard.slice_context = {context} needs inference 'slices' (a 2.5D "
                       f"model), got {inference!r}")
    window = _window(self.window, 2 if inference == "slices" else 3)
    flips = _flip_axes(self.flip_axes, 2 if inference == "slices" else 3)
    if not isinstance(self.info, Mapping):
      raise ValueError(f"ModelCard.info must be a dict, got {self.info!r}")
    info = _jsonable(self.info, "info")
    for k, v in (("class_names", class_names), ("channels", channels), ("spacing", spacing),
                 ("normalization", norm), ("inference", inference), ("layout", layout),
                 ("slice_context", int(context)), ("window", window), ("flip_axes", flips),
                 ("info", info)):
      set_(k, v)

  @property
  def num_channels(self) -> int:
    """Input channels the model takes."""
    return len(self.channels)

  @property
  def model_channels(self) -> int:
    """Channels of the model's input: :attr:`num_channels` times the slices it sees."""
    return self.num_channels * (2 * self.slice_context + 1)

  @property
  def num_outputs(self) -> int:
    """Output channels of the model: 1 for sigmoid, ``len(class_names)`` for softmax."""
    return 1 if self.activation == "sigmoid" else len(self.class_names)

  def check_model(self, model: Any) -> None:
    """Raises ValueError if the card contradicts ``model``'s config.

    Checked where the config (``model.config``) has them: ``num_classes`` against
    :attr:`num_outputs` (1 for a sigmoid card) and ``in_channels`` against :attr:`num_channels`.
    """
    config = getattr(model, "config", None)
    num_classes = getattr(config, "num_classes", None)
    if num_classes is not None and num_classes != self.num_outputs:
      raise ValueError(f"the model has {num_classes} output channel(s) (config.num_classes) but "
                       f"its card says {self.num_outputs} ({self.activation}, classes "
                       f"{self.class_names}); fix the card's activation / class_names")
    in_channels = getattr(config, "in_channels", None)
    if in_channels is not None and in_channels != self.model_channels:
      raise ValueError(f"the model takes {in_channels} input channel(s) (config.in_channels) "
                       f"but its card gives {self.model_channels}: {self.channels}"
                       + (f" x {2 * self.slice_context + 1} slices" if self.slice_context else "")
                       + "; fix ModelCard.channels / slice_context")

  def normalize(self, image: np.ndarray) -> np.ndarray:
    """``image`` normalised channel by channel (``normalization``), as in training.

    Args:
      image: ``(x, y, z, C)`` intensities with ``C = len(channels)`` (or ``(x, y, z)`` for a
        single-channel model).

    Returns:
      ``(x, y, z, C)`` float32.

    Raises:
      ValueError: wrong shape or channel count, non-numeric or non-finite intensities.
    """
    image = np.asarray(image)
    if image.ndim == 3 and self.num_channels == 1:
      image = image[..., None]
    if image.ndim != 4 or image.shape[-1] != self.num_channels:
      raise ValueError(f"expected an (x, y, z, {self.num_channels}) volume with the channels "
                       f"{self.channels} last, got shape {image.shape}")
    out = []
    for c, (name, spec) in enumerate(zip(self.channels, self.normalization)):
      try:
        out.append(normalize_channel(image[..., c], spec))
      except ValueError as e:
        raise ValueError(f"channel {name!r}: {e}") from e
    return np.stack(out, axis=-1)

  def to_json(self) -> dict[str, Any]:
    """A JSON-able dict that :meth:`from_json` reads back into an equal card."""
    return {
        "activation": self.activation,
        "class_names": list(self.class_names),
        "channels": list(self.channels),
        "spacing": None if self.spacing is None else list(self.spacing),
        "normalization": [dict(n) for n in self.normalization],
        "inference": self.inference,
        "layout": self.layout,
        "slice_context": self.slice_context,
        "window": None if self.window is None else list(self.window),
        "flip_axes": None if self.flip_axes is None else list(self.flip_axes),
        "info": json.loads(json.dumps(self.info)),
    }

  @classmethod
  def from_json(cls, d: Mapping[str, Any]) -> ModelCard:
    """The card of :meth:`to_json`'s dict, every field validated.

    Raises:
      ValueError: ``d`` is not a dict, has unknown or missing keys, or a field is invalid (one
        line naming the field, the value and what is allowed).
    """
    if not isinstance(d, Mapping):
      raise ValueError(f"a model card must be a dict, got {type(d).__name__}: {d!r}")
    fields = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(fields), key=str)
    if unknown:
      raise ValueError(f"model card has unknown keys {unknown}; allowed: {fields}")
    d = {**_ADDED_LATER, **d}  # cards exported before these fields existed
    missing = [f for f in fields if f not in d]
    if missing:
      raise ValueError(f"model card is missing the keys {missing}; required: {fields}")
    return cls(**{f: d[f] for f in fields})
