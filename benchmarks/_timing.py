"""The one timing loop of the benchmarks that time a call in a loop of their own."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable


def median_time(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.0,
                max_calls: int = 2000) -> tuple[float, int]:
  """Median seconds per call of ``fn`` and the number of timed calls.

  Two untimed calls first (compilation, first touch); then at least ``repeats`` calls and at
  least ``min_seconds`` of them (at most ``max_calls``). ``fn`` must block until its result is
  ready (``jax.block_until_ready``).
  """
  fn()
  fn()
  times: list[float] = []
  while len(times) < repeats or (sum(times) < min_seconds and len(times) < max_calls):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return statistics.median(times), len(times)
