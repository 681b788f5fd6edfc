"""``benchmarks.sweep_ceiling``: the pinned processes split the configurations and each runs on
one core (the benchmark stops otherwise), and the table's ratios are those of its throughputs."""

import os
import re

import pytest

from benchmarks import sweep_ceiling
from tests.markdown_table import table_cells


def test_shares_give_every_configuration_to_exactly_one_core():
  assert sweep_ceiling.shares(8, [0, 1]) == [(0, [0, 2, 4, 6]), (1, [1, 3, 5, 7])]
  assert sweep_ceiling.shares(3, [4, 5]) == [(4, [0, 2]), (5, [1])]
  assert sweep_ceiling.shares(2, [0, 1, 2, 3]) == [(0, [0]), (1, [1])]  # no idle processes
  assert sweep_ceiling.shares(1, [7]) == [(7, [0])]


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_table_and_ceiling_come_from_the_measured_throughputs(capsys):
  sweep_ceiling.main(["--configs", "2", "--width", "0.0625", "--size", "16", "--batch", "2",
                      "--steps", "1", "--repeats", "1"])
  out = capsys.readouterr().out
  rows = {cells[0]: cells for cells in table_cells(out)
          if cells[0] in sweep_ceiling.LABELS.values()}
  assert len(rows) == 3
  steps = {name: float(rows[label][2]) for name, label in sweep_ceiling.LABELS.items()}
  assert all(v > 0 for v in steps.values())
  cores = min(2, len(os.sched_getaffinity(0)))
  assert rows[sweep_ceiling.LABELS["pinned"]][1] == f"{cores}, one core each"
  assert re.search(r"sweep_impl='(vmap|unroll)'", rows[sweep_ceiling.LABELS["sweep"]][1])
  for name in ("pinned", "sweep"):  # "vs sequential" is the ratio of the printed throughputs
    ratio = float(rows[sweep_ceiling.LABELS[name]][3].rstrip("x"))
    assert ratio == pytest.approx(steps[name] / steps["sequential"], abs=0.011)
  ceiling = float(re.search(r"scheduling ceiling vs sequential: (\d+\.\d\d)", out).group(1))
  assert ceiling == pytest.approx(steps["pinned"] / steps["sequential"], abs=0.011)
  share = int(re.search(r"the sweep reaches (\d+)% of it", out).group(1))
  assert share == pytest.approx(100 * steps["sweep"] / steps["pinned"], abs=1.5)


@pytest.mark.parametrize("argv", [["--configs", "0"], ["--batch", "0"], ["--width", "-1"]])
def test_bad_sizes_are_a_usage_error(capsys, argv):
  with pytest.raises(SystemExit):
    sweep_ceiling.main(argv)
  assert "take positive integers" in capsys.readouterr().err


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_a_worker_that_dies_is_named_with_its_error(monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "--xla_jaxseg_no_such_flag=true")  # XLA aborts at start
  with pytest.raises(SystemExit, match="the sequential worker failed") as error:
    sweep_ceiling.main(["--configs", "2", "--size", "16", "--batch", "2", "--steps", "1",
                        "--repeats", "1"])
  assert "xla_jaxseg_no_such_flag" in str(error.value)  # its stderr, for the fix
