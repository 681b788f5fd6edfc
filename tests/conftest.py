"""Test-session setup: four fake CPU devices, and XLA settings that make compiling fast.

Set here, through environment variables and before anything imports JAX (XLA reads its flags
when the backend starts, JAX reads ``JAX_*`` variables when it is imported), so that the worker
processes that tests start (tests/reliability) inherit them:

* ``--xla_force_host_platform_device_count=4``: sharded code is tested on any laptop.
* ``--xla_backend_optimization_level=0``: XLA:CPU spends most of a compile in LLVM's optimiser;
  level 0 skips its passes, which makes compiling the tiny test programs several times faster
  (threefry random-number code in particular) at the cost of slower generated loops, which the
  test shapes never notice. Programs, shardings and collectives are unchanged, and the values
  agree with the optimised build to float32 rounding (tests/losses, tests/models, tests/train
  and tests/reliability pass with the same tolerances either way).
* A persistent compilation cache shared by test sessions, ``<tempdir>/jaxseg-tests-xla-cache-
  <uid>-jax<version>-jaxlib<version>`` (``JAX_COMPILATION_CACHE_DIR``), for the programs that
  take at least 0.5 s to compile (``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``): a rerun of
  the suite skips their compilation. JAX's cache key includes ``XLA_FLAGS`` and the devices, so
  differently configured runs never share entries.

Each setting is left alone when the environment sets it already (``XLA_FLAGS`` mentioning the
flag, or the ``JAX_*`` variable); ``JAXSEG_TEST_NO_XLA_CACHE=1`` turns the cache off.
"""

import importlib.metadata
import os
import tempfile

_FLAGS = {
    "--xla_force_host_platform_device_count": "4",
    "--xla_backend_optimization_level": "0",
}
for _flag, _value in _FLAGS.items():
  if _flag not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + f" {_flag}={_value}").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")


def _cache_dir() -> str:
  """The persistent compilation cache of this user and these JAX/jaxlib versions."""
  versions = []
  for package in ("jax", "jaxlib"):
    try:
      versions.append(package + importlib.metadata.version(package))
    except importlib.metadata.PackageNotFoundError:
      versions.append(package + "-unknown")
  user = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
  return os.path.join(tempfile.gettempdir(),
                      f"jaxseg-tests-xla-cache-{user}-{'-'.join(versions)}")


if not os.environ.get("JAXSEG_TEST_NO_XLA_CACHE"):
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _cache_dir())
  os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

from jaxseg import cpu_flags  # noqa: E402  (imports no JAX computation)

cpu_flags.apply()
os.environ.setdefault("TFDS_DISABLE_GCS", "1")
