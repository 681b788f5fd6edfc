"""Atomic checkpoints of a :class:`~jaxseg.train.state.TrainState` plus JSON metadata (orbax).

Orbax writes each checkpoint into a temporary directory and renames it when complete, so a run
killed mid-save never leaves a checkpoint that :meth:`Checkpointer.restore` would load; such
leftover temporary directories are removed when a :class:`Checkpointer` is created.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxseg.model_card import ModelCard


class Checkpointer:
  """Saves and restores ``(state, metadata)`` pairs, keyed by epoch, in one directory."""

  def __init__(self, directory: str | os.PathLike, *, max_to_keep: int = 1):
    self.directory = os.path.abspath(os.fspath(directory))
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                             enable_async_checkpointing=False,
                                             # Unfinished saves of a killed run.
                                             cleanup_tmp_directories=True))

  def save(self, epoch: int, state: Any, metadata: dict[str, Any]) -> None:
    """Writes the checkpoint of ``epoch``, replacing one of the same epoch if there is one.

    A run killed after writing epoch ``e`` here but before its other checkpoint directory (or its
    ``latest`` checkpoint) was written resumes from an earlier epoch and redoes ``e``; the stale
    checkpoint is then replaced (orbax itself refuses to save an existing step).
    """
    if epoch in self._manager.all_steps():
      self._manager.delete(epoch)
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


MODEL_FILE = "model.json"
VARIABLES_DIR = "variables"


def save_model(directory: str | os.PathLike, *, model: Any, variables: Any,
               card: ModelCard) -> str:
  """Exports a trained model for inference: ``model.json`` plus an orbax tree of variables.

  ``model.json`` holds ``{"model": registered name, "config": its config, "card":
  card.to_json()}`` (see :mod:`jaxseg.models` and :class:`jaxseg.model_card.ModelCard`): what
  :func:`load_model` callers such as ``python -m jaxseg.predict`` need to reproduce the
  training inputs.

  Args:
    directory: the export directory (created; an older export there is replaced).
    model: a model registered in :data:`jaxseg.models.REGISTRY`.
    variables: its variables.
    card: the model card; its number of classes (and of input channels, for a config that has
      ``in_channels``) must match the model's config (:meth:`ModelCard.check_model`).

  Returns:
    The absolute directory.

  Raises:
    ValueError: ``card`` is not a :class:`ModelCard`, does not fit the model, or the model is
      not registered.
  """
  from jaxseg import models  # pylint: disable=import-outside-toplevel
  if not isinstance(card, ModelCard):
    raise ValueError(f"card must be a jaxseg.model_card.ModelCard, got {type(card).__name__}; "
                     f"build one with ModelCard(activation=..., class_names=..., ...)")
  card.check_model(model)
  directory = os.path.abspath(os.fspath(directory))
  os.makedirs(directory, exist_ok=True)
  name, config = models.describe(model)
  target = os.path.join(directory, VARIABLES_DIR)
  if os.path.exists(target):
    import shutil  # pylint: disable=import-outside-toplevel
    shutil.rmtree(target)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(target, jax.device_get(variables))
  checkpointer.wait_until_finished()
  tmp = os.path.join(directory, MODEL_FILE + ".tmp")
  with open(tmp, "w") as f:
    json.dump({"model": name, "config": config, "card": card.to_json()}, f, indent=2)
  os.replace(tmp, os.path.join(directory, MODEL_FILE))
  return directory


def load_model(directory: str | os.PathLike) -> tuple[Any, Any, ModelCard]:
  """Loads ``(model, variables, card)`` written by :func:`save_model`; the card is validated.

  Raises:
    FileNotFoundError: if ``directory`` holds no exported model.
    ValueError: if ``model.json`` names an unknown model, is malformed, has no valid model card
      (e.g. an export from before model cards) or a card that contradicts the model.
  """
  from jaxseg import models  # pylint: disable=import-outside-toplevel
  directory = os.path.abspath(os.fspath(directory))
  path = os.path.join(directory, MODEL_FILE)
  if not os.path.exists(path) or not os.path.isdir(os.path.join(directory, VARIABLES_DIR)):
    raise FileNotFoundError(f"{directory} is not an exported jaxseg model (expected {MODEL_FILE} "
                            f"and {VARIABLES_DIR}/ written by jaxseg.train.checkpoint.save_model)")
  try:
    with open(path) as f:
      spec = json.load(f)
    if not isinstance(spec, dict):
      raise TypeError(f"expected a JSON object, got {type(spec).__name__}")
    if "card" not in spec:
      raise ValueError(f"{path} has no model card ('card'; an export from before model cards?); "
                       f"re-export it with save_model(..., card=ModelCard(...))")
    unknown = sorted(set(spec) - {"model", "config", "card"})
    if unknown:
      raise ValueError(f"{path} has unknown keys {unknown}; expected model, config, card")
    model = models.build(spec["model"], spec["config"])
    card = ModelCard.from_json(spec["card"])
    card.check_model(model)
  except (json.JSONDecodeError, KeyError, TypeError) as e:
    raise ValueError(f"malformed {path}: {e}") from e
  except ValueError as e:
    if str(e).startswith(path):
      raise
    raise ValueError(f"{path}: {e}") from e
  variables = ocp.StandardCheckpointer().restore(os.path.join(directory, VARIABLES_DIR))
  return model, variables, card
