"""What a benchmark prints about the machine it ran on: the CPU model and the load."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
  """The CPU model with its family / model numbers and widest vector ISA, from
  ``/proc/cpuinfo`` (``platform.processor()`` elsewhere), e.g. ``"AMD EPYC (family 26 model 2,
  AVX-512)"``: machines that report the same model name differ in their vector units."""
  info: dict[str, str] = {}
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "cpu family", "model", "flags") and key not in info:
          info[key] = value.strip()
        if not line.strip() and info:
          break
  except OSError:
    pass
  if "model name" not in info:
    return platform.processor() or "unknown CPU"
  flags = set(info.get("flags", "").split())
  isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags
         else "SSE/NEON" if flags else "ISA unknown")
  family = (f"family {info['cpu family']} model {info['model']}, "
            if "cpu family" in info and "model" in info else "")
  return f"{info['model name']} ({family}{isa})"


def load_average() -> str:
  """``"a / b / c (1 / 5 / 15 min)"``, or ``"unknown"`` where the OS does not tell."""
  try:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
  except OSError:
    return "unknown"
