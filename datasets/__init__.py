"""The tfds builders of jaxseg, one package per release, and the one way to load any of them.

Every dataset is loaded the same way: its name, a config name (default: the builder's default,
the phantom where there is one), and the settings of that config::

  import datasets
  splits = datasets.load("prostatex_gland", num_cases=8)            # the phantom config
  splits = datasets.load("promise12", "preprocessed", manual_dir="../shared/data/promise12")
  splits["train"][0]["image"]  # float32 (x, y, z[, channels]); also "label", "case_id", ...
  datasets.builder_config("promise12", "preprocessed", target_spacing=(1.0, 1.0, 3.0))
  datasets.metadata("nnunet", "raw")["class_names"]  # what a build recorded about its data

`load` builds the dataset on first use (tfds ``array_record`` files under ``data_dir``) and
returns every split in memory (`datasets._common.prepare`, which also keeps a cached build in step
with its manual directory). A setting the config does not have is an error that lists the ones
it has. Each package (`NAMES`) documents its release: the published layout to put in the manual
directory, its label map, and its phantom.

The packages live at the top level of the repository and are not installed with jaxseg (they
would shadow Hugging Face ``datasets``): import them from the repository root.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

__all__ = ["NAMES", "builder_class", "builder_config", "load", "metadata"]

NAMES = ("male_pelvic_mr", "micro_us", "nnunet", "promise12", "prostatex_bpmri",
         "prostatex_gland")
"""The datasets, by package name (= tfds name)."""


def builder_class(name: str):
  """The tfds builder class of dataset ``name`` (one of `NAMES`)."""
  from datasets import _builder  # pylint: disable=import-outside-toplevel
  from jaxseg.errors import ConfigError  # pylint: disable=import-outside-toplevel
  if name not in NAMES:
    raise ConfigError(f"Unknown dataset {name!r}; available: {', '.join(NAMES)}.")
  module = importlib.import_module(f"datasets.{name}")
  for value in vars(module).values():
    if (isinstance(value, type) and issubclass(value, _builder.CaseBuilder)
        and getattr(value, "name", None) == name):
      return value
  raise ImportError(f"datasets.{name} defines no builder named {name!r}")


def builder_config(name: str, config: Any = None, **settings: Any):
  """Dataset ``name``'s config ``config`` (a name, a config object, or None: the default), with
  ``settings`` applied (`datasets._common.JaxsegBuilderConfig.replace`: a distinct name)."""
  from datasets import _common  # pylint: disable=import-outside-toplevel
  cls = builder_class(name)
  return _common.builder_config(cls, cls.DEFAULT_BUILDER_CONFIG_NAME if config is None
                                else config, **settings)


def load(name: str, config: Any = None, *, data_dir: str | os.PathLike[str] | None = None,
         manual_dir: str | os.PathLike[str] | None = None,
         **settings: Any) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads dataset ``name`` into memory.

  Args:
    name: the dataset, one of `NAMES`.
    config: config name or object (None: the builder's default).
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: the directory holding a real release in its published layout (the package's
      docstring gives it), for the configs that read one.
    **settings: settings of the config (e.g. ``num_cases=8``); the resulting config gets a
      distinct name derived from its settings, so cached builds never mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}`` (the non-empty splits): lists of
    examples (dicts of NumPy arrays, ``case_id`` as str) sorted by ``case_id``.
  """
  from datasets import _common  # pylint: disable=import-outside-toplevel
  cfg = builder_config(name, config, **settings)
  return _common.prepare(builder_class(name), config=cfg, data_dir=data_dir,
                         manual_dir=manual_dir)


def metadata(name: str, config: Any = None, *, data_dir: str | os.PathLike[str] | None = None,
             **settings: Any) -> dict[str, Any]:
  """The metadata a build made by `load` (same arguments) recorded, e.g. ``class_names``.

  Raises:
    jaxseg.errors.DataError: the dataset is not built yet in ``data_dir`` (also a
      `FileNotFoundError`).
  """
  from datasets import _common  # pylint: disable=import-outside-toplevel
  from jaxseg.errors import as_data_error  # pylint: disable=import-outside-toplevel
  cfg = builder_config(name, config, **settings)
  data_dir = os.fspath(data_dir) if data_dir is not None else _common.default_data_dir()
  with _common.quiet_tfds():
    builder = builder_class(name)(config=cfg, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      raise as_data_error(FileNotFoundError(
          f"{name}/{cfg.name} is not built in {data_dir}; build it with "
          f"datasets.load({name!r}, ..., manual_dir=...) first."))
    return dict(builder.info.metadata)
