"""The ``prostatex_gland`` dataset (seed 002): phantom and PROSTATEx whole-gland configs.

``datasets.load`` builds it if needed and returns its splits in memory::

  import datasets
  splits = datasets.load("prostatex_gland", "phantom", num_cases=8, phantom_shape=(64, 64, 16),
                                phantom_spacing=(3.0, 3.0, 3.0))
  splits["train"][0]["image"]  # float32 (x, y, z), z-scored
  splits["train"][0]["label"]  # uint8 (x, y, z), 1 = prostate gland
"""

from datasets.prostatex_gland.prostatex_gland import *  # noqa: F401,F403  (its __all__)
from datasets.prostatex_gland.prostatex_gland import __all__
