"""Wall time of ``python -m jaxseg.predict`` on a real 384 x 384 x 19 T2W volume (issue 14).

The model is the ``anatomical_vs_diagnostic`` study's CPU preset (``ProbAttentionUNet3D``,
``ProbUNet3DConfig.cpu`` with the preset's overrides), exported with the card the study writes
(training spacing 2 x 2 x 4 mm, sliding window = the 24 x 24 x 8 training patch). Its variables
are a random initialisation: the time of a forward pass does not depend on the weights, and no
training is needed to time inference. The volume is the real ProstateX exam in
``../shared/data/prostatex_sample/converted_nifti`` (T2W 384 x 384 x 19 at 0.5 x 0.5 x 3 mm; for
the diagnostic row also its ADC and high-b maps, 84 x 128 x 19 at 2 x 2 x 3 mm, resampled onto
the T2W grid through their affines).

Each row times ``jaxseg.predict.main`` in this process: the first call (reading, resampling to
2 x 2 x 4 mm, normalising, compiling the sliding-window program, predicting, resampling the
probabilities back, writing the NIfTI) and a second, warm call. The last row runs the default
command in a fresh ``python -m jaxseg.predict`` process (imports and compilation included), as a
user would. Not run by the tests.

Usage: ``python -m benchmarks.predict_volume [--repeats 1] [--exam DIR]``
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._machine import cpu_name, load_average
from experiments.configs import anatomical_vs_diagnostic as avd_config
from jaxseg import predict
from jaxseg.model_card import ModelCard, percentile_zscore, scale
from jaxseg.models import ProbAttentionUNet3D, ProbUNet3DConfig
from jaxseg.train.checkpoint import save_model

EXAMS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prostatex_sample" / (
    "converted_nifti")


def export(directory: str, *, diagnostic: bool) -> str:
  """The CPU-preset 3D model of one task, randomly initialised, exported with its card."""
  cfg = avd_config.get_config("cpu")
  classes = ("background", "csPCa") if diagnostic else ("background", "TZ", "PZ")
  channels = ("T2W", "DWI", "ADC") if diagnostic else ("T2W",)
  overrides = {**cfg.model.overrides.to_dict(), "num_classes": len(classes),
               "in_channels": len(channels)}
  overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
  model = ProbAttentionUNet3D(ProbUNet3DConfig.cpu(**overrides))
  window = tuple(cfg.train.patch)
  variables = model.init(jax.random.key(0), jnp.zeros((1, *window, len(channels))))
  norm = ((percentile_zscore(),) * 2 + (scale(3000.0),)) if diagnostic else (percentile_zscore(),)
  card = ModelCard(activation="softmax", class_names=classes, channels=channels,
                   spacing=tuple(cfg.data.sources.phantom.settings.target_spacing),
                   normalization=norm, inference="volume", window=window,
                   info={"study": "anatomical_vs_diagnostic", "note": "random initialisation"})
  path = os.path.join(directory, "diagnostic" if diagnostic else "anatomical")
  save_model(path, model=model, variables=variables, card=card)
  return path


def _timed(argv: list[str]) -> float:
  tic = time.perf_counter()
  if predict.main(argv) != 0:
    raise SystemExit(f"jaxseg.predict failed: {' '.join(argv)}")
  return time.perf_counter() - tic


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--exam", default=str(EXAMS), help="directory of the ProstateX NIfTI exam")
  p.add_argument("--repeats", type=int, default=1, help="warm calls per row (median)")
  args = p.parse_args(argv)
  exam = Path(args.exam)
  t2w = sorted(exam.glob("*_t2w.nii.gz"))
  if not t2w:
    raise SystemExit(f"no *_t2w.nii.gz in {exam}: the shared ProstateX sample is needed")
  stem = str(t2w[0])[:-len("t2w.nii.gz")]
  print(f"jaxseg.predict on {os.path.basename(stem)}t2w.nii.gz (384x384x19 at 0.5x0.5x3 mm); "
        f"CPU: {cpu_name()}, {os.cpu_count()} cores; jax {jax.__version__}; load average "
        f"{load_average()}", flush=True)
  with tempfile.TemporaryDirectory() as tmp:
    anatomical, diagnostic = export(tmp, diagnostic=False), export(tmp, diagnostic=True)
    out = os.path.join(tmp, "seg.nii.gz")
    rows = [
        ("anatomical (T2W), card window 24x24x8, overlap 0.5, Gaussian", [anatomical], [], 1),
        ("anatomical, --tta flips (8 mirrorings)", [anatomical], ["--tta", "flips"], 8),
        ("anatomical, --mc-samples 4 (the preset's MC samples)", [anatomical],
         ["--mc-samples", "4"], 4),
        ("anatomical, --window whole (one call, no windows)", [anatomical],
         ["--window", "whole"], 1),
        ("diagnostic (T2W + high-b + ADC files), card window", [diagnostic], [], 1),
    ]
    table = ["| prediction | passes | first call s (compile included) | warm call s |",
             "|---|---:|---:|---:|"]
    for label, ckpt, extra, passes in rows:
      inputs = ["--input", stem + "t2w.nii.gz"]
      if ckpt[0] == diagnostic:
        inputs += ["--input", stem + "hbv.nii.gz", "--input", stem + "adc.nii.gz"]
      argv = ["--checkpoint", ckpt[0], *inputs, "--output", out, *extra]
      first = _timed(argv)
      warm = float(np.median([_timed(argv) for _ in range(max(args.repeats, 1))]))
      table.append(f"| {label} | {passes} | {first:.1f} | {warm:.1f} |")
    cmd = [sys.executable, "-m", "jaxseg.predict", "--checkpoint", anatomical, "--input",
           stem + "t2w.nii.gz", "--output", out]
    tic = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    cold = time.perf_counter() - tic
    table.append(f"| `python -m jaxseg.predict` in a fresh process, anatomical default | 1 | "
                 f"{cold:.1f} | — |")
  print("\n".join(table))
  print(f"load average after: {load_average()}")
  print(f"fresh-process prediction of one 384x384x19 T2W volume: {cold:.1f} s (target <= 30 s)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
