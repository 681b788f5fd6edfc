"""Montage of synthetic male-pelvis phantom cases (image and label overlay).

Usage::

  python -m datasets.male_pelvic_mr.montage [--out docs/phantom_pelvis.png]
      [--cases 4] [--first-seed 0]

For each case (one row) the figure shows three axial slices (prostate apex,
mid-gland, base / seminal vesicles) and a mid-sagittal view through the
prostate, first the T2-like image alone, then the same panels with the labels
overlaid in a fixed colormap; a legend names the classes. Every panel is
oriented by `jaxseg.report.figures.display_slice` from the case's affine, in
radiological display: axial panels anterior up with the patient's right on the
viewer's left, the sagittal panel superior up with anterior on the viewer's
left, drawn at the true aspect ratio of the anisotropic voxels.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np
from matplotlib import colors as mcolors
from matplotlib import patches as mpatches
from PIL import Image

from jaxseg.data.phantoms import common
from jaxseg.data.phantoms import pelvis
from jaxseg.report import figures

# One fixed colour per class (index = label); background is transparent.
LABEL_COLOURS = ("#000000", "#ffd700", "#c8b4ff", "#e41a1c", "#00e5ee",
                 "#1f5fd4", "#a0522d", "#32cd32", "#ff00ff")
_ALPHA = 0.55


def _overlay_rgba(label_slice: np.ndarray) -> np.ndarray:
  rgba = np.zeros((*label_slice.shape, 4), np.float32)
  for k in range(1, len(LABEL_COLOURS)):
    m = label_slice == k
    rgba[m, :3] = mcolors.to_rgb(LABEL_COLOURS[k])
    rgba[m, 3] = _ALPHA
  return rgba


def _views(case: common.PhantomCase) -> list[tuple[str, np.ndarray,
                                                   np.ndarray, float]]:
  """(title, image 2D, label 2D, aspect) for the 3 axial + 1 sagittal panels.

  The slices are returned display-ready (`figures.display_slice`, ``imshow``
  with the default ``origin="upper"``), with the pixel aspect of their voxels.
  """
  lb = case.label
  sx, sy, sz = case.spacing
  prostate = (lb == pelvis.TZ) | (lb == pelvis.CG)
  if not prostate.any():
    raise ValueError(f"{case.case_id}: no prostate voxels to centre views on.")
  zs = np.nonzero(prostate.any(axis=(0, 1)))[0]
  cx = int(round(np.nonzero(prostate)[0].mean()))
  z_apex = int(zs[0] + 0.2 * (zs[-1] - zs[0]))
  z_mid = int(round(0.5 * (zs[0] + zs[-1])))
  sv = lb == pelvis.SV
  z_base = (int(round(np.nonzero(sv)[2].mean())) if sv.any() else int(zs[-1]))
  axial = figures.slice_axes(case.affine, slice_axis=2)
  sagittal = figures.slice_axes(case.affine, slice_axis=0)
  out = []
  for name, k in (("apex", z_apex), ("mid", z_mid), ("base/SV", z_base)):
    out.append((f"axial z={k} ({name})",
                figures.display_slice(case.image[:, :, k], axial),
                figures.display_slice(lb[:, :, k], axial),
                figures.display_aspect((sx, sy), axial)))
  out.append((f"sagittal x={cx}", figures.display_slice(case.image[cx], sagittal),
              figures.display_slice(lb[cx], sagittal),
              figures.display_aspect((sy, sz), sagittal)))
  return out


def render_montage(cases: Sequence[common.PhantomCase], out_path: str, *,
                   dpi: int = 90) -> None:
  """Writes a PNG montage of ``cases`` (one row per case) to ``out_path``.

  The PNG is quantised to a 256-colour palette to keep it small.
  """
  if not cases:
    raise ValueError("cases must not be empty.")
  n = len(cases)
  fig, axes = plt.subplots(n, 8, figsize=(18.5, 2.75 * n + 1.0),
                           gridspec_kw=dict(width_ratios=[1, 1, 1, 0.8] * 2),
                           layout="constrained")
  axes = np.atleast_2d(axes)
  for r, case in enumerate(cases):
    vmax = float(np.percentile(case.image, 99.5))
    for c, (title, img, lab, aspect) in enumerate(_views(case)):
      for j, overlay in enumerate((False, True)):
        ax = axes[r, c + 4 * j]
        ax.imshow(img, cmap="gray", vmin=0.0, vmax=vmax, aspect=aspect,
                  interpolation="nearest")
        if overlay:
          ax.imshow(_overlay_rgba(lab), aspect=aspect, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title + (" + labels" if overlay else ""), fontsize=8)
    axes[r, 0].set_ylabel(case.case_id, fontsize=9)
  handles = [
      mpatches.Patch(color=LABEL_COLOURS[k], label=f"{k} {name}")
      for k, name in enumerate(pelvis.PELVIS_CLASS_NAMES) if k > 0
  ]
  fig.legend(handles=handles, loc="outside lower center", ncol=len(handles),
             fontsize=9, frameon=False)
  fig.suptitle("Synthetic T2w male-pelvis phantom "
               f"({cases[0].image.shape}, spacing {cases[0].spacing} mm; "
               "axial: anterior up, R on left; sagittal: superior up, "
               "anterior left)", fontsize=10)
  buf = io.BytesIO()
  fig.savefig(buf, format="png", dpi=dpi)
  plt.close(fig)
  buf.seek(0)
  img = Image.open(buf).convert("RGB")
  # Octree quantisation keeps the few saturated overlay colours distinct.
  img = img.quantize(colors=256, method=Image.Quantize.FASTOCTREE,
                     dither=Image.Dither.NONE)
  img.save(out_path, optimize=True)


def main(argv: Sequence[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="docs/phantom_pelvis.png")
  parser.add_argument("--cases", type=int, default=4)
  parser.add_argument("--first-seed", type=int, default=0)
  args = parser.parse_args(argv)
  if args.cases < 1:
    raise ValueError(f"--cases must be >= 1, got {args.cases}.")
  cases = [pelvis.make_pelvis_case(args.first_seed + i)
           for i in range(args.cases)]
  render_montage(cases, args.out)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
