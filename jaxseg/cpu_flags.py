"""XLA CPU settings that jaxseg's entry points apply before JAX starts its backend.

In jaxlib 0.10 the CPU backend runs every convolution through YNNPACK, whose weight-gradient
convolutions reach only 5-15 GFLOP/s on the machines we measured; letting XLA's own kernels run
convolutions (``--xla_cpu_experimental_ynn_fusion_type=-individual_convolution``) made the
seed-000 U-Net train step about 3x faster with identical values (``benchmarks/train_step.py``,
BENCHMARKS.md). XLA aborts on flags it does not know, so the flag is added only for the jaxlib
versions it was measured on, and never when ``XLA_FLAGS`` already mentions it.

Flags are read when the backend starts, so :func:`apply` must run before the first JAX
computation; the experiment scripts, benchmarks and the test suite call it at import.

:func:`use_huge_pages` is the other CPU setting: ``python -m experiments.<study>`` and
``python -m benchmarks.<name>`` re-execute themselves once with glibc's malloc asking for
transparent huge pages, which removes most of the page faults of XLA's per-step buffers.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Mapping, Sequence

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


# ---------------------------------------------------------------------------------------------
# Transparent huge pages for XLA's buffers (glibc's malloc tunable; read once, at process start).

MALLOC_TUNABLE = "glibc.malloc.hugetlb=1"
"""glibc >= 2.35: malloc's own memory maps are marked ``MADV_HUGEPAGE``."""

KEEP_MALLOC_ENV = "JAXSEG_KEEP_MALLOC"
"""Environment variable: set to ``1`` to never re-execute for :data:`MALLOC_TUNABLE`."""

ENTRY_PACKAGES = ("experiments", "benchmarks")
"""``python -m <package>.<module>`` commands that :func:`use_huge_pages` re-executes."""

_THP_ENABLED = "/sys/kernel/mm/transparent_hugepage/enabled"


def thp_mode(path: str = _THP_ENABLED) -> str:
  """The kernel's transparent-huge-page mode (``always``, ``madvise``, ``never``; ``""``: none)."""
  try:
    with open(path, encoding="ascii") as f:
      text = f.read()
  except OSError:
    return ""
  start, end = text.find("["), text.find("]")
  return text[start + 1:end] if 0 <= start < end else ""


def huge_page_environment(environ: Mapping[str, str], *, mode: str,
                          libc: tuple[str, str]) -> dict[str, str] | None:
  """The environment to re-execute with so that malloc asks for huge pages, or None.

  XLA:CPU allocates each execution's buffers with ``malloc`` and frees them when it ends; the
  large ones (tens of MB for a 2D U-Net step at batch 8) are fresh ``mmap`` regions every step,
  so the kernel faults them in and zeroes them 4 KB at a time: on the machine of BENCHMARKS.md
  ("Huge pages") a quarter of a train step's CPU time was page faults. With
  ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` glibc marks those regions for transparent huge pages
  (2 MB per fault). Only useful, hence only returned, where the kernel's mode is ``madvise`` (with
  ``always`` every region gets huge pages anyway; with ``never`` none can), glibc is 2.35 or newer
  (older versions stop at an unknown tunable), and neither ``JAXSEG_KEEP_MALLOC`` nor an existing
  ``glibc.malloc.hugetlb`` setting says otherwise.

  Args:
    environ: the current environment.
    mode: :func:`thp_mode`.
    libc: ``platform.libc_ver()``, e.g. ``("glibc", "2.36")``.
  """
  if environ.get(KEEP_MALLOC_ENV, "").strip().lower() not in ("", "0", "false", "no"):
    return None
  if mode != "madvise" or libc[0] != "glibc":
    return None
  try:
    version = tuple(int(p) for p in libc[1].split(".")[:2])
  except ValueError:
    return None
  if version < (2, 35):
    return None
  tunables = environ.get("GLIBC_TUNABLES", "")
  if "glibc.malloc.hugetlb" in tunables:
    return None
  env = dict(environ)
  env["GLIBC_TUNABLES"] = f"{tunables}:{MALLOC_TUNABLE}" if tunables else MALLOC_TUNABLE
  return env


def use_huge_pages(packages: Sequence[str] = ENTRY_PACKAGES, *, mode: str | None = None) -> None:
  """Re-executes this ``python -m <package>.<module> ...`` command once with huge pages on.

  Called at the import of the ``experiments`` and ``benchmarks`` packages, so it runs before JAX
  starts. It does nothing unless this process was started as ``python -m`` with a module of
  ``packages`` (never under pytest, in a notebook or when jaxseg is imported as a library) and
  :func:`huge_page_environment` returns an environment. The command line is the same
  (``sys.orig_argv``), so are the results: only where the memory of XLA's buffers comes from
  changes. ``JAXSEG_KEEP_MALLOC=1`` turns it off.

  Args:
    packages: top-level packages whose ``python -m`` modules re-execute.
    mode: the kernel's transparent-huge-page mode; None reads it (:func:`thp_mode`).
  """
  argv = list(getattr(sys, "orig_argv", ()))
  try:
    module = argv[argv.index("-m") + 1]
  except (ValueError, IndexError):
    return
  if module.split(".")[0] not in packages or not sys.platform.startswith("linux"):
    return
  env = huge_page_environment(os.environ, mode=thp_mode() if mode is None else mode,
                              libc=platform.libc_ver())
  if env is None:
    return
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (AttributeError, OSError, ValueError):
      pass
  os.execve(sys.executable, argv, env)
