"""The ``nnunet`` dataset: your own segmentation data in nnU-Net's raw (or Decathlon) layout.

``datasets.load`` builds it if needed and returns its splits in memory; `datasets.metadata`
gives the class and channel names that came with the data::

  import datasets
  splits = datasets.load("nnunet", "raw", manual_dir="nnUNet_raw/Dataset012_PROMISE12")
  splits["train"][0]["image"]  # float32 (x, y, z, C), each channel z-scored per case
  splits["train"][0]["label"]  # uint8 class indices 0..K-1
  datasets.metadata("nnunet", "raw")["class_names"]  # e.g. ["background", "prostate"]

There is no phantom config: without a manual directory, ``load`` stops with an error that gives
the layout to provide (`RAW_LAYOUT`, `MSD_LAYOUT`).
"""

from datasets.nnunet.nnunet import *  # noqa: F401,F403  (its __all__)
from datasets.nnunet.nnunet import __all__
