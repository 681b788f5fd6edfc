"""The ``micro_us`` dataset (seed 003): phantom and MicroSegNet (Zenodo 10475293) configs.

``datasets.load`` builds it if needed and returns its splits in memory::

  import datasets
  splits = datasets.load("micro_us", "phantom", num_cases=6, num_slices=4, phantom_size=(64, 64),
                         phantom_spacing=(0.7, 5.0), image_size=32)
  ex = splits["train"][0]
  ex["image"]       # float32 (H, W, slices) in [0, 1]
  ex["label"]       # uint8 expert mask, same shape
  ex["non_expert"]  # uint8 non-expert mask, same shape
"""

from datasets.micro_us.micro_us import *  # noqa: F401,F403  (its __all__)
from datasets.micro_us.micro_us import __all__
