"""The ``micro_us`` dataset (seed 003): phantom and MicroSegNet (Zenodo 10475293) configs.

``load()`` builds the dataset if needed and returns its splits in memory::

  from datasets import micro_us
  splits = micro_us.load("phantom", num_cases=6, num_slices=4, phantom_size=(64, 64),
                         phantom_spacing=(0.7, 5.0), image_size=32)
  ex = splits["train"][0]
  ex["image"]       # float32 (H, W, slices) in [0, 1]
  ex["label"]       # uint8 expert mask, same shape
  ex["non_expert"]  # uint8 non-expert mask, same shape
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.micro_us.micro_us import MICROSEGNET
from datasets.micro_us.micro_us import MICROSEGNET_LAYOUT
from datasets.micro_us.micro_us import MICROSEGNET_SPACING_MM
from datasets.micro_us.micro_us import MICROSEGNET_URL
from datasets.micro_us.micro_us import MicroUs
from datasets.micro_us.micro_us import MicroUsConfig
from datasets.micro_us.micro_us import PHANTOM
from datasets.micro_us.micro_us import builder_config
from datasets.micro_us.micro_us import preprocess_case

__all__ = [
    "MICROSEGNET",
    "MICROSEGNET_LAYOUT",
    "MICROSEGNET_SPACING_MM",
    "MICROSEGNET_URL",
    "MicroUs",
    "MicroUsConfig",
    "PHANTOM",
    "builder_config",
    "load",
    "preprocess_case",
]


def load(
    config: str | MicroUsConfig = "phantom",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``micro_us`` into memory.

  Args:
    config: ``"phantom"`` (default), ``"microsegnet"``, or a `MicroUsConfig`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: directory holding the extracted Zenodo 10475293 release (config
      ``microsegnet``).
    **overrides: settings of `MicroUsConfig` (e.g. ``num_cases=8``, ``image_size=128``); the
      resulting config gets a distinct name derived from its settings, so cached builds never
      mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``: lists of examples (dicts of NumPy
    arrays, ``case_id`` as str) sorted by ``case_id``; one example per patient.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(MicroUs, config=cfg, data_dir=data_dir, manual_dir=manual_dir)
