"""The ``nnunet`` dataset: your own segmentation data in nnU-Net's raw (or Decathlon) layout.

``load()`` builds the dataset if needed and returns its splits in memory; `metadata` gives the
class and channel names that came with the data::

  from datasets import nnunet
  splits = nnunet.load("raw", manual_dir="nnUNet_raw/Dataset012_PROMISE12")
  splits["train"][0]["image"]  # float32 (x, y, z, C), each channel z-scored per case
  splits["train"][0]["label"]  # uint8 class indices 0..K-1
  nnunet.metadata("raw")["class_names"]  # e.g. ["background", "prostate"]

There is no phantom config: without a manual directory, ``load`` stops with an error that gives
the layout to provide (`RAW_LAYOUT`, `MSD_LAYOUT`).
"""

from __future__ import annotations

import os
from typing import Any

from datasets import _common
from datasets.nnunet.nnunet import AFFINE_TOLERANCE_MM
from datasets.nnunet.nnunet import MSD
from datasets.nnunet.nnunet import MSD_LAYOUT
from datasets.nnunet.nnunet import NIFTI_ENDINGS
from datasets.nnunet.nnunet import NNUNET_URL
from datasets.nnunet.nnunet import RAW
from datasets.nnunet.nnunet import RAW_LAYOUT
from datasets.nnunet.nnunet import NnUnet
from datasets.nnunet.nnunet import NnUnetConfig
from datasets.nnunet.nnunet import builder_config
from datasets.nnunet.nnunet import parse_labels
from datasets.nnunet.nnunet import remap_labels
from jaxseg.errors import as_data_error

__all__ = [
    "AFFINE_TOLERANCE_MM",
    "MSD",
    "MSD_LAYOUT",
    "NIFTI_ENDINGS",
    "NNUNET_URL",
    "NnUnet",
    "NnUnetConfig",
    "RAW",
    "RAW_LAYOUT",
    "builder_config",
    "load",
    "metadata",
    "parse_labels",
    "remap_labels",
]


def load(
    config: str | NnUnetConfig = "raw",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    manual_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, list[dict[str, Any]]]:
  """Builds (if needed) and reads ``nnunet`` into memory.

  Args:
    config: ``"raw"`` (default, nnU-Net v2 raw layout), ``"msd"`` (Medical Segmentation
      Decathlon task), or an `NnUnetConfig`.
    data_dir: tfds data directory (default ``$JAXSEG_DATA_DIR`` or ``~/.cache/jaxseg/tfds``).
    manual_dir: the dataset folder (the one holding ``dataset.json``), or a folder with exactly
      one dataset folder in it (layouts: `RAW_LAYOUT`, `MSD_LAYOUT`).
    **overrides: settings of `NnUnetConfig` (e.g. ``target_spacing=(1.0, 1.0, 3.0)``,
      ``split_fractions=(0.6, 0.2, 0.2)``); the resulting config gets a distinct name derived
      from its settings, so cached builds never mix.

  Returns:
    ``{"train": [...], "validation": [...], "test": [...]}``: lists of examples (dicts of NumPy
    arrays, ``case_id`` as str) sorted by ``case_id``.
  """
  cfg = builder_config(config, **overrides)
  return _common.prepare(NnUnet, config=cfg, data_dir=data_dir, manual_dir=manual_dir)


def metadata(
    config: str | NnUnetConfig = "raw",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
  """The metadata of a build made by `load` (same ``config``, ``data_dir`` and overrides).

  Returns:
    ``{"class_names": [...], "channel_names": [...], "label_values": [...], "settings": {...},
    "config_fingerprint": ...}``: class ``k`` is ``class_names[k]`` (stored as
    ``label_values[k]`` in the label files), image channel ``c`` is ``channel_names[c]``.

  Raises:
    jaxseg.errors.DataError: the dataset is not built yet in ``data_dir`` (also a
      `FileNotFoundError`).
  """
  cfg = builder_config(config, **overrides)
  data_dir = os.fspath(data_dir) if data_dir is not None else _common.default_data_dir()
  with _common.quiet_tfds():
    builder = NnUnet(config=cfg, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      raise as_data_error(FileNotFoundError(
          f"nnunet/{cfg.name} is not built in {data_dir}; build it with "
          "datasets.nnunet.load(..., manual_dir=...) first."
      ))
    return dict(builder.info.metadata)
