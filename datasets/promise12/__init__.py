"""The ``promise12`` dataset (seed 002, Tversky study): real prostate MRI, gland labels.

``load()`` builds the dataset if needed and returns its splits in memory::

  from datasets import promise12
  splits = promise12.load("preprocessed", manual_dir="../shared/data/promise12")
  splits["train"][0]["image"]  # float32 (x, y, z) = (cols, rows, slices), z-scored per case
  splits["train"][0]["label"]  # uint8, 1 = prostate gland
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.promise12.promise12 import CLASS_NAMES
from datasets.promise12.promise12 import NUM_CLASSES
from datasets.promise12.promise12 import ORIGINAL
from datasets.promise12.promise12 import ORIGINAL_LAYOUT
from datasets.promise12.promise12 import PREPROCESSED
from datasets.promise12.promise12 import PREPROCESSED_LAYOUT
from datasets.promise12.promise12 import PROMISE12_URL
from datasets.promise12.promise12 import Promise12
from datasets.promise12.promise12 import Promise12Config
from datasets.promise12.promise12 import builder_config
from datasets.promise12.promise12 import lps_to_ras_affine
from datasets.promise12.promise12 import preprocess_case
from datasets.promise12.promise12 import read_metaimage

__all__ = [
    "CLASS_NAMES",
    "NUM_CLASSES",
    "ORIGINAL",
    "ORIGINAL_LAYOUT",
    "PREPROCESSED",
    "PREPROCESSED_LAYOUT",
    "PROMISE12_URL",
    "Promise12",
    "Promise12Config",
    "builder_config",
    "load",
    "lps_to_ras_affine",
    "preprocess_case",
    "read_metaimage",
]


def load(
    config: str | Promise12Config = "preprocessed",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``promise12`` into memory.

  Args:
    config: ``"preprocessed"`` (default, npy teaching release), ``"original"`` (challenge
      MetaImage files; needs SimpleITK), or a `Promise12Config`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: directory holding the downloaded files (layouts: `PREPROCESSED_LAYOUT`,
      `ORIGINAL_LAYOUT`).
    **overrides: settings of `Promise12Config` (e.g. ``assumed_spacing=(0.6, 0.6, 3.6)``,
      ``target_spacing=...``); the resulting config gets a distinct name derived from its
      settings, so cached builds never mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``: lists of examples (dicts of NumPy
    arrays, ``case_id`` as str) sorted by ``case_id``.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(Promise12, config=cfg, data_dir=data_dir, manual_dir=manual_dir)
