"""Pieces shared by the experiment scripts: command-line flags, inference and model export."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from jaxseg.data.pipeline import Volume
from jaxseg.inference import predict_slices
from jaxseg.train.loop import Trainer


def add_common_arguments(parser: argparse.ArgumentParser, *, presets: Sequence[str],
                         data: Sequence[str], workdir: str) -> None:
  """Flags every experiment has: preset, data source, directories, resume, seed, progress."""
  parser.add_argument("--preset", choices=sorted(presets), default="cpu",
                      help="cpu: minutes on a laptop; paper: the published settings (GPU)")
  parser.add_argument("--data", choices=tuple(data), default=data[0],
                      help="dataset config: the synthetic phantom (default) or a real release "
                      "read from --manual-dir")
  parser.add_argument("--manual-dir", default=None,
                      help="directory holding the real data in its published layout")
  parser.add_argument("--data-dir", default=None,
                      help="tfds data directory (default $JAXSEG_DATA_DIR or ~/.cache/jaxseg/tfds)")
  parser.add_argument("--workdir", default=workdir, help="output directory")
  parser.add_argument("--resume", action="store_true",
                      help="continue interrupted runs from their latest checkpoints")
  parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
  parser.add_argument("--no-progress", action="store_true", help="no progress bars")


@dataclasses.dataclass(frozen=True)
class Override:
  """A command-line flag that replaces one field of a preset (or one dataset setting).

  Attributes:
    field: the field replaced; also the flag's ``dest``.
    type: the type of each value.
    nargs: number of values (``"+"`` for one or more); the value is then a tuple.
    flag: the flag (default ``--`` + ``field`` with dashes).
    help: help text.
  """

  field: str
  type: type = int
  nargs: int | str | None = None
  flag: str | None = None
  help: str | None = None


def add_overrides(parser: argparse.ArgumentParser, overrides: Sequence[Override], *,
                  title: str = "preset overrides") -> None:
  """Adds one flag per override (default None: keep the preset's value)."""
  group = parser.add_argument_group(title)
  for o in overrides:
    metavar = o.field.split("_")[-1].upper() if o.nargs else None
    group.add_argument(o.flag or "--" + o.field.replace("_", "-"), dest=o.field, type=o.type,
                       nargs=o.nargs, metavar=metavar, help=o.help)


def given_overrides(args: argparse.Namespace, overrides: Sequence[Override]) -> dict[str, Any]:
  """``field -> value`` of the overrides given on the command line (tuples for several values)."""
  out = {}
  for o in overrides:
    value = getattr(args, o.field)
    if value is not None:
      out[o.field] = tuple(value) if o.nargs else value
  return out


def banner(name: str, args: argparse.Namespace) -> None:
  """Prints what runs where; with ``--no-progress`` also silences the dataset build's bars."""
  if args.no_progress:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    tfds.disable_progress_bar()
  print(f"jaxseg {name}: preset={args.preset} data={args.data} devices={jax.device_count()} "
        f"({jax.devices()[0].platform})", flush=True)


def to_volumes(splits: dict[str, list[dict[str, Any]]]) -> dict[str, list[Volume]]:
  return {name: [Volume.from_example(e) for e in examples] for name, examples in splits.items()}


def predict_logits(trainer: Trainer, state, volumes: Sequence[Volume], *,
                   batch_size: int) -> list[np.ndarray]:
  """Whole-volume logits ``(x, y, z, K)`` of a 2D model, slice by slice."""
  logits_fn = trainer.logits_fn(state)
  return [predict_slices(logits_fn, v.image, batch_size=batch_size,
                         size_multiple=trainer.model.size_multiple, mesh=trainer.mesh)
          for v in volumes]


def export_model(directory: str, trainer: Trainer, state, *, spacing: Sequence[float],
                 activation: str, class_names: Sequence[str], input_channels: int = 1,
                 **extra: Any) -> None:
  """Saves a best model with the metadata ``python -m jaxseg.predict`` needs."""
  from jaxseg.train.checkpoint import save_model  # pylint: disable=import-outside-toplevel
  save_model(directory, model=trainer.model, variables=state.variables, metadata={
      "spacing": [float(s) for s in spacing], "activation": activation,
      "normalization": {"kind": "percentile_zscore", "lower": 0.5, "upper": 99.5},
      "class_names": list(class_names), "input_channels": input_channels, **extra})

