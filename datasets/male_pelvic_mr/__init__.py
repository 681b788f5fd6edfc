"""The ``male_pelvic_mr`` dataset (seed 000): phantom and Zenodo 7013610 configs.

``datasets.load`` builds it if needed and returns its splits in memory::

  import datasets
  splits = datasets.load("male_pelvic_mr", "phantom", num_cases=8, phantom_shape=(48, 48, 8))
  splits["train"][0]["image"]  # float32 (x, y, z), z-scored
"""

from datasets.male_pelvic_mr.male_pelvic_mr import *  # noqa: F401,F403  (its __all__)
from datasets.male_pelvic_mr.male_pelvic_mr import __all__
