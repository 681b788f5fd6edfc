"""The ``prostatex_gland`` dataset (seed 002): phantom and PROSTATEx whole-gland configs.

``load()`` builds the dataset if needed and returns its splits in memory::

  from datasets import prostatex_gland
  splits = prostatex_gland.load("phantom", num_cases=8, phantom_shape=(64, 64, 16),
                                phantom_spacing=(3.0, 3.0, 3.0))
  splits["train"][0]["image"]  # float32 (x, y, z), z-scored
  splits["train"][0]["label"]  # uint8 (x, y, z), 1 = prostate gland
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.prostatex_gland.prostatex_gland import MASKS_URL
from datasets.prostatex_gland.prostatex_gland import PHANTOM
from datasets.prostatex_gland.prostatex_gland import PROSTATEX
from datasets.prostatex_gland.prostatex_gland import PROSTATEX_LAYOUT
from datasets.prostatex_gland.prostatex_gland import ProstatexGland
from datasets.prostatex_gland.prostatex_gland import ProstatexGlandConfig
from datasets.prostatex_gland.prostatex_gland import TCIA_URL
from datasets.prostatex_gland.prostatex_gland import builder_config
from datasets.prostatex_gland.prostatex_gland import canonical_case_id
from datasets.prostatex_gland.prostatex_gland import preprocess_case

__all__ = [
    "MASKS_URL",
    "PHANTOM",
    "PROSTATEX",
    "PROSTATEX_LAYOUT",
    "ProstatexGland",
    "ProstatexGlandConfig",
    "TCIA_URL",
    "builder_config",
    "canonical_case_id",
    "load",
    "preprocess_case",
]


def load(
    config: str | ProstatexGlandConfig = "phantom",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``prostatex_gland`` into memory.

  Args:
    config: ``"phantom"`` (default), ``"prostatex"``, or a `ProstatexGlandConfig`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: directory holding PROSTATEx_masks and the T2 images (config ``prostatex``).
    **overrides: settings of `ProstatexGlandConfig` (e.g. ``num_cases=8``); the resulting config
      gets a distinct name derived from its settings, so cached builds never mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``: lists of examples (dicts of NumPy
    arrays, ``case_id`` as str) sorted by ``case_id``.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(ProstatexGland, config=cfg, data_dir=data_dir, manual_dir=manual_dir)
