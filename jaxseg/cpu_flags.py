"""XLA CPU settings that jaxseg's entry points apply before JAX starts its backend.

In jaxlib 0.10 the CPU backend runs every convolution through YNNPACK, whose weight-gradient
convolutions reach only 5-15 GFLOP/s on the machines we measured; letting XLA's own kernels run
convolutions (``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``) made the
seed-000 U-Net train step about 3x faster with identical values (``benchmarks/train_step.py``,
BENCHMARKS.md). XLA aborts on flags it does not know, so the flag is added only for the jaxlib
versions it was measured on, and never when ``XLA_FLAGS`` already mentions it.

Flags are read when the backend starts, so :func:`apply` must run before the first JAX
computation; the experiment scripts, benchmarks and the test suite call it at import.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=-individual_convolution"
_MEASURED_JAXLIB = ("0.10.",)


def apply() -> bool:
  """Adds the CPU convolution flag to ``XLA_FLAGS``; returns whether it was added.

  Set ``JAXSEG_KEEP_XLA_FLAGS=1`` to leave ``XLA_FLAGS`` untouched.
  """
  if os.environ.get("JAXSEG_KEEP_XLA_FLAGS"):
    return False
  try:
    import jaxlib  # pylint: disable=import-outside-toplevel
  except ImportError:
    return False
  if not jaxlib.__version__.startswith(_MEASURED_JAXLIB):
    return False
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" in flags:
    return False
  os.environ["XLA_FLAGS"] = (flags + " " + YNN_FLAG).strip()
  return True
