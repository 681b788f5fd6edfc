"""The ``promise12`` dataset (seed 002, Tversky study): real prostate MRI, gland labels.

``datasets.load`` builds it if needed and returns its splits in memory::

  import datasets
  splits = datasets.load("promise12", "preprocessed", manual_dir="../shared/data/promise12")
  splits["train"][0]["image"]  # float32 (x, y, z) = (cols, rows, slices), z-scored per case
  splits["train"][0]["label"]  # uint8, 1 = prostate gland
"""

from datasets.promise12.promise12 import *  # noqa: F401,F403  (its __all__)
from datasets.promise12.promise12 import __all__
