"""The ``prostatex_bpmri`` dataset (seed 001): phantom, ProstateX and PI-CAI bpMRI configs.

``datasets.load`` builds it if needed and returns its splits in memory::

  import datasets
  splits = datasets.load("prostatex_bpmri", "phantom", num_cases=8, phantom_shape=(64, 64, 20),
                         phantom_spacing=(1.5, 1.5, 3.0), target_spacing=(1.5, 1.5, 3.0),
                         crop_shape=(48, 48, 16))
  ex = splits["train"][0]
  ex["image"]          # float32 (x, y, z, 3): T2W (z-score), DWI (z-score), ADC / 3000
  ex["zones"]          # uint8 (x, y, z): 0 background, 1 TZ, 2 PZ
  ex["lesions"]        # uint8 (x, y, z): 1 = csPCa (ISUP >= 2)
  ex["patient_label"]  # int64 (): 1 = csPCa

PI-CAI as published (the ``.mha`` images read with the ``itk`` extra, ``picai_labels``), with
the expert Pooch25 lesions and without the ProstateX exams it shares with ``prostatex``::

  splits = datasets.load("prostatex_bpmri", "picai", manual_dir="PICAI_DIR",
                         lesion_annotation="human_expert/Pooch25",
                         exclude_prostatex=True)   # or exclude_ids=("10000_1000000",)
"""

from datasets.prostatex_bpmri.prostatex_bpmri import *  # noqa: F401,F403  (its __all__)
from datasets.prostatex_bpmri.prostatex_bpmri import __all__
