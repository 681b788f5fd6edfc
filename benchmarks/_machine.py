"""What a benchmark prints about the machine it ran on: the CPU model and the load."""

from __future__ import annotations

import os
import platform


def cpu_name() -> str:
  """The CPU model from ``/proc/cpuinfo`` (``platform.processor()`` elsewhere)."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def load_average() -> str:
  """``"a / b / c (1 / 5 / 15 min)"``, or ``"unknown"`` where the OS does not tell."""
  try:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
  except OSError:
    return "unknown"
