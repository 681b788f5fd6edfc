"""Test-session setup: four fake CPU devices so that sharded code is tested on any laptop."""

import os

_FLAG = "--xla_force_host_platform_device_count=4"
if _FLAG not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from jaxseg import cpu_flags  # noqa: E402  (imports no JAX computation)

cpu_flags.apply()
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
