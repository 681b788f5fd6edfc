"""``benchmarks.sweep_choice`` reports the cost model's choice for the studies' real models."""

import pytest

from benchmarks import sweep_choice


def _rows(capsys, *argv):
  sweep_choice.main(list(argv))
  lines = capsys.readouterr().out.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("| study |"))
  cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[header + 2:]
           if line.startswith("|")]
  return {(row[0], row[1]): row for row in cells}


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
