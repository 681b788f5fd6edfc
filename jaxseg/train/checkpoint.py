"""Atomic checkpoints of a :class:`~jaxseg.train.state.TrainState` plus JSON metadata (orbax).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run
killed mid-save never leaves a checkpoint that :meth:`Checkpointer.restore` would load.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpointer:
  """Saves and restores ``(state, metadata)`` pairs, keyed by epoch, in one directory."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 1):
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False))

  def save(self, epoch: int, state: Any, metadata: dict[str, Any]) -> None:
    self._manager.save(epoch, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      metadata=ocp.args.JsonSave(metadata)),
                       force=True)
    self._manager.wait_until_finished()

  def latest_epoch(self) -> int | None:
    return self._manager.latest_step()

  def restore(self, template: Any, epoch: int | None = None) -> tuple[Any, dict[str, Any]]:
    """Restores the state (shaped and placed like ``template``) and metadata of ``epoch``.

    Raises:
      FileNotFoundError: if the directory holds no checkpoint.
    """
    epoch = self.latest_epoch() if epoch is None else epoch
    if epoch is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self._manager.restore(
        epoch, args=ocp.args.Composite(state=ocp.args.StandardRestore(template),
                                       metadata=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["metadata"])

  def close(self) -> None:
    self._manager.close()
