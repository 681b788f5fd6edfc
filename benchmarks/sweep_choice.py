"""Which program a sweep of each study's model runs by default: the cost model of
``jaxseg.train.loop.choose_sweep_impl``, read from the convolutions of the model's forward pass.

``vmap`` turns every ``lax.conv_general_dilated`` of a model into a grouped convolution, which
XLA:CPU runs slowly, so on CPUs a model with convolutions is unrolled (one copy of the step per
configuration) and one without (every convolution a patch-matrix product) is vmapped; on
accelerators every sweep is vmapped. For each study and preset the table gives the model, the
convolutions and matrix products in its forward pass (traced at a batch of one, nothing
compiled), the preset's ``train.mode`` and the sweep program on CPUs and on accelerators. The
measurements behind the rule are in BENCHMARKS.md ("Sweep vs one after another").

  python -m benchmarks.sweep_choice                     # cpu and paper presets of every study
  python -m benchmarks.sweep_choice --presets cpu
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Sequence

import jax

from benchmarks._machine import cpu_name
from jaxseg.train.loop import choose_sweep_impl, count_primitive

PRESETS = ("cpu", "paper")


def main(argv: Sequence[str] | None = None) -> None:
  from benchmarks.accelerator import STUDIES, build  # pylint: disable=import-outside-toplevel
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--presets", default=",".join(PRESETS),
                      help=f"comma-separated subset of {','.join(PRESETS)}")
  parser.add_argument("--studies", default=",".join(STUDIES),
                      help=f"comma-separated subset of {','.join(STUDIES)}")
  args = parser.parse_args(argv)
  presets = [p for p in args.presets.split(",") if p]
  studies = [s for s in args.studies.split(",") if s]
  if not presets or any(p not in PRESETS for p in presets):
    parser.error(f"--presets takes a comma-separated subset of {','.join(PRESETS)}")
  if not studies or any(s not in STUDIES for s in studies):
    parser.error(f"--studies takes a comma-separated subset of {','.join(STUDIES)}")
  cpu = [types.SimpleNamespace(platform="cpu")]
  accelerator = [types.SimpleNamespace(platform="gpu")]
  print(f"CPU: {cpu_name()}; jax {jax.__version__}; each forward pass traced at batch 1\n")
  print("| study | preset | model | train.mode | convolutions | matrix products | sweep on CPUs "
        "| sweep on accelerators |")
  print("|---|---|---|---|---:|---:|---|---|")
  for preset in presets:
    for study in studies:
      setup = build(study, preset=preset, batch_size=1)
      jaxpr = setup.trainer.init_jaxpr(setup.batch)  # what the Trainer counts
      convs = count_primitive(jaxpr, "conv_general_dilated")
      print(f"| {study} | {preset} | {setup.model_label()} | {setup.cfg.train.mode} | {convs} | "
            f"{count_primitive(jaxpr, 'dot_general')} | {choose_sweep_impl(cpu, convs)} | "
            f"{choose_sweep_impl(accelerator, convs)} |", flush=True)


if __name__ == "__main__":
  main()
