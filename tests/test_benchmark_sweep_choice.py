"""``benchmarks.sweep_choice`` reports the cost model's choice for the studies' real models."""

import pytest

from benchmarks import sweep_choice
from tests.markdown_table import table_cells


def _rows(capsys, *argv):
  sweep_choice.main(list(argv))
  cells = table_cells(capsys.readouterr().out)
  return {(row[0], row[1]): row for row in cells if row[0] != "study"}  # header left out


def test_cpu_presets_unroll_convolutions_and_vmap_patch_matrices(capsys):
  rows = _rows(capsys, "--presets", "cpu",
               "--studies", "tversky,anatomical_vs_diagnostic/anatomical")
  tversky = rows["tversky", "cpu"]
  assert int(tversky[4]) > 0 and tversky[6:] == ["unroll", "vmap"]  # XLA convolutions
  avd = rows["anatomical_vs_diagnostic/anatomical", "cpu"]
  assert avd[3] == "sweep"
  # every convolution a patch-matrix product: matrix products only, vmapped everywhere
  assert int(avd[4]) == 0 and int(avd[5]) > 0 and avd[6:] == ["vmap", "vmap"]


def test_bad_study_is_a_usage_error(capsys):
  with pytest.raises(SystemExit):
    sweep_choice.main(["--studies", "nope"])
  assert "--studies takes" in capsys.readouterr().err
