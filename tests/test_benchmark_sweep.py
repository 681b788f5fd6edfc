"""``benchmarks.sweep``: its last lines are the arithmetic of its own table and rounds."""

import re

import pytest

from benchmarks import sweep
from tests.markdown_table import table_cells


def test_speedup_is_the_ratio_of_the_printed_throughputs(capsys):
  sweep.main(["--configs", "2", "--size", "16", "--batch", "4", "--steps", "1", "--repeats", "2",
              "--conv-impls", "xla", "--modes", "unroll,sequential"])
  out = capsys.readouterr().out
  rows = {cells[0]: float(cells[2]) for cells in table_cells(out)
          if cells[0] in sweep.LABELS.values()}
  assert set(rows) == {sweep.LABELS["unroll"], sweep.LABELS["sequential"]}
  assert all(v > 0 for v in rows.values())
  lines = out.strip().splitlines()
  speedup = float(re.fullmatch(r"sweep speedup vs sequential: (\d+\.\d\d)", lines[-1]).group(1))
  want = rows[sweep.LABELS["unroll"]] / rows[sweep.LABELS["sequential"]]
  assert speedup == pytest.approx(want, rel=0.01, abs=0.011)
  low, high, n = re.fullmatch(r"per round: (\d+\.\d\d) to (\d+\.\d\d) over (\d+) rounds",
                              lines[-2]).groups()
  assert int(n) == 2 and float(low) <= float(high)
  # A median of 2 rounds is their mean, and (a + c) / (b + d) lies between a / b and c / d: the
  # speedup over the medians lies within the per-round range (up to the printed rounding).
  assert float(low) - 0.006 <= speedup <= float(high) + 0.006
  assert "sweep_impl='unroll'" in out  # the Trainer's default for a U-Net on CPU


def test_modes_without_sequential_are_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    sweep.main(["--modes", "unroll"])
  assert "--modes takes sequential" in capsys.readouterr().err
