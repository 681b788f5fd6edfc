"""Per-epoch metrics as TensorBoard event files, written without TensorFlow (tensorboardX).

:meth:`jaxseg.train.loop.Trainer.fit` writes the record of every epoch to ``metrics.jsonl`` and,
through a :class:`MetricWriter`, to TensorBoard event files under ``<workdir>/tensorboard/``:

* a single run writes to ``<workdir>/tensorboard/``;
* a sweep of ``K`` configurations writes one TensorBoard *run* per configuration,
  ``<workdir>/tensorboard/config0/`` ... ``config{K-1}/`` (:func:`run_logdirs`), so that
  ``tensorboard --logdir <workdir>/tensorboard`` draws the configurations as separate curves of
  the same charts.

The x axis (TensorBoard's step) is the epoch, counted from 0 as in ``metrics.jsonl``. Tags
(:func:`epoch_scalars`): ``train_loss`` -> ``train/loss``, ``val_<metric>`` -> ``val/<metric>``
(grouped in TensorBoard by the part before ``/``), ``seconds`` -> ``time/epoch_seconds``;
``epoch``, ``step`` and ``config`` are not written (they are the x axis and the run). Values are
stored as TensorBoard's 32-bit ``simple_value``.

Event files are written synchronously (one ``Event`` per :meth:`MetricWriter.write_scalars`
call, flushed to the file at once), so a run that is killed keeps every epoch it wrote. A
resumed run writes to a new file in the same directory and starts it with a
``SessionLog.START`` event at the first epoch it (re)computes (``purge_step``): TensorBoard then
hides the events of that epoch and later ones that the killed run had written, so an epoch
written twice shows once, with its last values. A fresh (not resumed) run removes the old
``tensorboard/`` directory with the old checkpoints.
"""

from __future__ import annotations

import numbers
import os
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorboardX.event_file_writer import EventsWriter
from tensorboardX.proto.event_pb2 import Event, SessionLog
from tensorboardX.proto.summary_pb2 import Summary

__all__ = ["TENSORBOARD_DIR", "MetricWriter", "epoch_scalars", "run_logdirs"]

TENSORBOARD_DIR = "tensorboard"
"""Subdirectory of a training workdir that holds the event files."""

_SKIPPED = frozenset({"epoch", "step", "config"})
_RENAMED = {"seconds": "time/epoch_seconds"}


def run_logdirs(workdir: str | os.PathLike[str], num_configs: int | None = None) -> list[str]:
  """The event directories of a workdir: ``[tensorboard]``, or ``config{k}`` per configuration.

  Args:
    workdir: the training workdir.
    num_configs: ``None`` for a single run; the number of configurations of a sweep.

  Returns:
    One directory per configuration (a single one for a single run).
  """
  root = os.path.join(os.fspath(workdir), TENSORBOARD_DIR)
  if num_configs is None:
    return [root]
  return [os.path.join(root, f"config{k}") for k in range(num_configs)]


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
  """The TensorBoard scalars of one ``metrics.jsonl`` record (tags in the module docstring).

  Args:
    record: ``{"epoch": ..., "step": ..., "train_loss": ..., "val_dice": ..., "seconds": ...}``
      (and ``"config"`` in a sweep).

  Returns:
    ``{tag: value}`` of the record's real-valued entries (booleans and non-numbers skipped).
  """
  out: dict[str, float] = {}
  for key, value in record.items():
    if key in _SKIPPED or isinstance(value, bool) or not isinstance(value, numbers.Real):
      continue
    if key in _RENAMED:
      tag = _RENAMED[key]
    elif key.startswith(("train_", "val_")):
      prefix, name = key.split("_", 1)
      tag = f"{prefix}/{name}"
    else:
      tag = key
    out[tag] = float(value)
  return out


class MetricWriter:
  """Writes scalars to a TensorBoard event file in ``logdir`` (created at the first write).

  Usage::

    with MetricWriter(os.path.join(workdir, "tensorboard")) as writer:
      writer.write_scalars(epoch, {"train/loss": 0.3, "val/dice": 0.8})

  Args:
    logdir: directory of the event file (one TensorBoard run).
    purge_step: if given, the file starts with a ``SessionLog.START`` event at this step, which
      makes TensorBoard drop the events of earlier files in ``logdir`` at this step and later
      (for a resumed run; see the module docstring).
    enabled: ``False`` makes every method a no-op (processes other than 0 of a
      ``jax.distributed`` job).
  """

  def __init__(self, logdir: str | os.PathLike[str], *, purge_step: int | None = None,
               enabled: bool = True):
    self.logdir = os.fspath(logdir)
    self.purge_step = purge_step
    self.enabled = enabled
    self._writer: EventsWriter | None = None
    self._path: str | None = None
    self._closed = False

  def _file(self) -> EventsWriter:
    if self._writer is None:
      os.makedirs(self.logdir, exist_ok=True)
      # tensorboardX names files by the second; the nanoseconds make the names of two files
      # of one second distinct and sorted in the order they were made (TensorBoard reads a
      # directory's files in name order).
      self._writer = EventsWriter(os.path.join(self.logdir, "events"), f".{time.time_ns()}")
      self._path = self._writer._file_name  # pylint: disable=protected-access
      if self.purge_step is not None:
        self._writer.write_event(Event(wall_time=time.time(), step=int(self.purge_step),
                                       session_log=SessionLog(status=SessionLog.START)))
    return self._writer

  @property
  def path(self) -> str | None:
    """The event file (``None`` before the first write, or when disabled)."""
    return self._path

  def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    """Writes ``scalars`` (``{tag: value}``) as one event at ``step`` and flushes the file.

    Args:
      step: the x axis (the epoch in `Trainer.fit`).
      scalars: ``{tag: value}``; a value is a real number or a 0-d real array.

    Raises:
      ValueError: the writer is closed, or a value is not a real number.
    """
    if not self.enabled:
      return
    if self._closed:
      raise ValueError(f"MetricWriter({self.logdir!r}) is closed")
    values = [Summary.Value(tag=str(tag), simple_value=_real(tag, value))
              for tag, value in scalars.items()]
    writer = self._file()
    writer.write_event(Event(wall_time=time.time(), step=int(step),
                             summary=Summary(value=values)))
    writer.flush()

  def flush(self) -> None:
    """Flushes the event file (every write flushes already)."""
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    """Closes the event file; idempotent."""
    if self._writer is not None:
      self._writer.close()
      self._writer = None
    self._closed = True

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.close()


def _real(tag: str, value: Any) -> float:
  """``value`` as a float: a real number or a 0-d real (not boolean) array."""
  if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
    return float(value)
  arr = np.asarray(value) if hasattr(value, "__array__") else None
  if arr is not None and arr.shape == () and arr.dtype.kind in "fiu":
    return float(arr)
  raise ValueError(f"scalar {tag!r} must be a real number, got {value!r}")
