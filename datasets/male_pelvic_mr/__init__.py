"""The ``male_pelvic_mr`` dataset (seed 000): phantom and Zenodo 7013610 configs.

``load()`` builds the dataset if needed and returns its splits in memory::

  from datasets import male_pelvic_mr
  splits = male_pelvic_mr.load("phantom", num_cases=8, phantom_shape=(48, 48, 8))
  splits["train"][0]["image"]  # float32 (x, y, z), z-scored
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.male_pelvic_mr.male_pelvic_mr import MalePelvicMr
from datasets.male_pelvic_mr.male_pelvic_mr import MalePelvicMrConfig
from datasets.male_pelvic_mr.male_pelvic_mr import NUM_CLASSES
from datasets.male_pelvic_mr.male_pelvic_mr import PHANTOM
from datasets.male_pelvic_mr.male_pelvic_mr import ZENODO
from datasets.male_pelvic_mr.male_pelvic_mr import ZENODO_URL
from datasets.male_pelvic_mr.male_pelvic_mr import builder_config
from datasets.male_pelvic_mr.male_pelvic_mr import preprocess_case

__all__ = [
    "MalePelvicMr",
    "MalePelvicMrConfig",
    "NUM_CLASSES",
    "PHANTOM",
    "ZENODO",
    "ZENODO_URL",
    "builder_config",
    "load",
    "preprocess_case",
]


def load(
    config: str | MalePelvicMrConfig = "phantom",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``male_pelvic_mr`` into memory.

  Args:
    config: ``"phantom"`` (default), ``"zenodo"``, or a `MalePelvicMrConfig`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: directory holding the Zenodo download (config ``zenodo``).
    **overrides: settings of `MalePelvicMrConfig` (e.g. ``num_cases=8``); the resulting config
      gets a distinct name derived from its settings, so cached builds never mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``: lists of examples (dicts of NumPy
    arrays, ``case_id`` / ``institution`` as str) sorted by ``case_id``.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(MalePelvicMr, config=cfg, data_dir=data_dir, manual_dir=manual_dir)
