"""The ``prostatex_bpmri`` dataset (seed 001): phantom, ProstateX and PI-CAI bpMRI configs.

``load()`` builds the dataset if needed and returns its splits in memory::

  from datasets import prostatex_bpmri
  splits = prostatex_bpmri.load("phantom", num_cases=8, phantom_shape=(64, 64, 20),
                                phantom_spacing=(1.5, 1.5, 3.0), target_spacing=(1.5, 1.5, 3.0),
                                crop_shape=(48, 48, 16))
  ex = splits["train"][0]
  ex["image"]          # float32 (x, y, z, 3): T2W (z-score), DWI (z-score), ADC / 3000
  ex["zones"]          # uint8 (x, y, z): 0 background, 1 TZ, 2 PZ
  ex["lesions"]        # uint8 (x, y, z): 1 = csPCa (ISUP >= 2)
  ex["patient_label"]  # int64 (): 1 = csPCa

PI-CAI as published (the ``.mha`` images read with the ``itk`` extra, ``picai_labels``), with
the expert Pooch25 lesions and without the ProstateX exams it shares with ``prostatex``::

  splits = prostatex_bpmri.load("picai", manual_dir="PICAI_DIR",
                                lesion_annotation="human_expert/Pooch25",
                                exclude_prostatex=True)   # or exclude_ids=("10000_1000000",)
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.prostatex_bpmri.prostatex_bpmri import ADC_SCALE
from datasets.prostatex_bpmri.prostatex_bpmri import CHANNELS
from datasets.prostatex_bpmri.prostatex_bpmri import PHANTOM
from datasets.prostatex_bpmri.prostatex_bpmri import PICAI
from datasets.prostatex_bpmri.prostatex_bpmri import PICAI_LAYOUT
from datasets.prostatex_bpmri.prostatex_bpmri import PROSTATEX
from datasets.prostatex_bpmri.prostatex_bpmri import PROSTATEX_LAYOUT
from datasets.prostatex_bpmri.prostatex_bpmri import ProstatexBpmri
from datasets.prostatex_bpmri.prostatex_bpmri import ProstatexBpmriConfig
from datasets.prostatex_bpmri.prostatex_bpmri import ZONE_CLASSES
from datasets.prostatex_bpmri.prostatex_bpmri import builder_config
from datasets.prostatex_bpmri.prostatex_bpmri import center_crop_or_pad
from datasets.prostatex_bpmri.prostatex_bpmri import lesion_kind
from datasets.prostatex_bpmri.prostatex_bpmri import preprocess_case
from datasets.prostatex_bpmri.prostatex_bpmri import remap_picai_zones
from datasets.prostatex_bpmri.prostatex_bpmri import resample_to_reference

__all__ = [
    "ADC_SCALE",
    "CHANNELS",
    "PHANTOM",
    "PICAI",
    "PICAI_LAYOUT",
    "PROSTATEX",
    "PROSTATEX_LAYOUT",
    "ProstatexBpmri",
    "ProstatexBpmriConfig",
    "ZONE_CLASSES",
    "builder_config",
    "center_crop_or_pad",
    "lesion_kind",
    "load",
    "preprocess_case",
    "remap_picai_zones",
    "resample_to_reference",
]


def load(
    config: str | ProstatexBpmriConfig = "phantom",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``prostatex_bpmri`` into memory.

  Args:
    config: ``"phantom"`` (default), ``"prostatex"``, ``"picai"``, or a `ProstatexBpmriConfig`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: directory holding the manually downloaded data (``prostatex`` / ``picai``).
    **overrides: settings of `ProstatexBpmriConfig` (e.g. ``num_cases=8``,
      ``split_fractions=(0, 0, 1)``, ``exclude_ids=(...)``); the resulting config gets a
      distinct name derived from its settings, so cached builds never mix.

  Returns:
    ``{split: [...]}`` for the non-empty splits among ``train`` / ``validation`` / ``test``:
    lists of examples (dicts of NumPy arrays, ``case_id`` as str) sorted by ``case_id``.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(ProstatexBpmri, config=cfg, data_dir=data_dir, manual_dir=manual_dir)
