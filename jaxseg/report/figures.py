"""Figures shared by the experiment reports (matplotlib, Agg backend, PNG files)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402

LABEL_COLOURS = ("#000000", "#f7e13b", "#2ec4b6", "#d1495b", "#4cc9f0", "#3a86ff", "#8d5524",
                 "#70e000", "#ff6d00", "#c77dff")


def label_colormap(num_classes: int) -> ListedColormap:
  if num_classes > len(LABEL_COLOURS):
    raise ValueError(f"at most {len(LABEL_COLOURS)} classes can be coloured")
  return ListedColormap(LABEL_COLOURS[:num_classes])


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | os.PathLike, *, metric: str = "val_dice") -> None:
  """Training loss and a validation metric per epoch, one line per run."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
  for name, history in histories.items():
    epochs = [h["epoch"] + 1 for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, label=name)
    axes[1].plot(epochs, [h.get(metric, np.nan) for h in history], marker="o", ms=3, label=name)
  axes[0].set(xlabel="epoch", ylabel="training loss", title="Training loss")
  axes[1].set(xlabel="epoch", ylabel=metric, title=f"Validation {metric.removeprefix('val_')}")
  for ax in axes:
    ax.grid(alpha=0.3)
  axes[1].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_matrices(matrices: Mapping[str, np.ndarray], names: Sequence[str],
                  path: str | os.PathLike, *, title: str = "", log: bool = True,
                  fmt: str = ".0f") -> None:
  """Side-by-side annotated heatmaps (rows: truth, columns: prediction) on a shared scale."""
  values = [np.asarray(m, dtype=np.float64) for m in matrices.values()]
  top = max(float(v.max()) for v in values) or 1.0
  fig, axes = plt.subplots(1, len(values), figsize=(5.2 * len(values), 4.8), squeeze=False)
  for ax, (name, m) in zip(axes[0], zip(matrices, values)):
    shown = np.log10(1 + m) if log else m
    ax.imshow(shown, cmap="magma", vmin=0, vmax=np.log10(1 + top) if log else top)
    for (i, j), v in np.ndenumerate(m):
      if v > 0:
        ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=5.5,
                color="white" if shown[i, j] < 0.6 * shown.max() else "black")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set(xlabel="predicted", ylabel="truth", title=name)
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def plot_label_overlays(images: Sequence[np.ndarray], labels: Mapping[str, Sequence[np.ndarray]],
                        path: str | os.PathLike, *, class_names: Sequence[str],
                        row_titles: Sequence[str] | None = None) -> None:
  """Rows of 2D slices; columns: the image, then each named label map overlaid on it."""
  cmap = label_colormap(len(class_names))
  columns = ["image"] + list(labels)
  fig, axes = plt.subplots(len(images), len(columns), figsize=(2.6 * len(columns),
                                                               2.6 * len(images)), squeeze=False)
  for r, image in enumerate(images):
    for c, name in enumerate(columns):
      ax = axes[r, c]
      ax.imshow(np.rot90(image), cmap="gray")
      if c:
        lab = np.rot90(labels[name][r])
        ax.imshow(np.ma.masked_where(lab == 0, lab), cmap=cmap, vmin=0,
                  vmax=len(class_names) - 1, alpha=0.55, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
      if c == 0 and row_titles:
        ax.set_ylabel(row_titles[r], fontsize=8)
  handles = [matplotlib.patches.Patch(color=LABEL_COLOURS[i], label=n)
             for i, n in enumerate(class_names) if i]
  fig.legend(handles=handles, loc="lower center", ncol=min(8, len(handles)), fontsize=7)
  fig.tight_layout(rect=(0, 0.05, 1, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


# -- Calibration and detection figures (seed 001: anatomical vs diagnostic losses) -------------


def _check_runs(mapping: Mapping[str, Any], what: str) -> None:
  if not mapping:
    raise ValueError(f"{what} is empty: pass at least one run")


def plot_probability_histograms(values: Mapping[str, Mapping[str, np.ndarray]],
                                path: str | os.PathLike, *, bins: int = 20, title: str = "",
                                log: bool = True) -> None:
  """Histograms of predicted probabilities: one panel per run, one colour per class.

  The appendix figure of Saha et al. (seed 001): for each loss, the probabilities a model gives
  to the class it predicts, over the voxels of the predicted segment(s). Sharp peaks at 1 show
  a polarised (over-confident) model, mass spread over (0.5, 1) a softer one.

  Args:
    values: ``values[run][class_name]`` = 1-D probabilities in [0, 1] (any length, empty
      allowed: the class is then listed in the legend as empty).
    path: PNG file to write.
    bins: number of equal-width bins on [0, 1].
    title: figure title.
    log: logarithmic count axis.
  """
  _check_runs(values, "values")
  if int(bins) != bins or bins < 1:
    raise ValueError(f"bins must be a positive integer, got {bins}")
  edges = np.linspace(0.0, 1.0, int(bins) + 1)
  fig, axes = plt.subplots(1, len(values), figsize=(3.4 * len(values), 3.2), squeeze=False,
                           sharey=True)
  for ax, (run, per_class) in zip(axes[0], values.items()):
    for i, (name, v) in enumerate(per_class.items()):
      v = np.asarray(v, np.float64).reshape(-1)
      if v.size and (not np.all(np.isfinite(v)) or v.min() < 0 or v.max() > 1):
        raise ValueError(f"{run}/{name}: probabilities must be finite and in [0, 1]")
      colour = LABEL_COLOURS[(i + 1) % len(LABEL_COLOURS)]
      ax.hist(v, bins=edges, histtype="stepfilled", alpha=0.45, color=colour, edgecolor=colour,
              label=f"{name} (n={v.size})" if v.size else f"{name} (empty)")
    if log:
      ax.set_yscale("log")
    ax.set(xlabel="predicted probability", xlim=(0, 1), title=run)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
  axes[0, 0].set_ylabel("voxels")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_froc_curves(curves: Mapping[str, Mapping[str, np.ndarray]], path: str | os.PathLike, *,
                     fp_range: tuple[float, float] = (0.1, 2.5), title: str = "",
                     log_x: bool = True) -> None:
  """FROC curves (lesion sensitivity vs false positives per case), with optional CI bands.

  Args:
    curves: ``curves[run]`` holds ``fp_per_case`` and ``sensitivity`` (the operating points of
      :func:`jaxseg.metrics.detection.froc`, same length) and optionally a confidence band
      ``band_fp``, ``band_low``, ``band_high`` (same length as each other), drawn as a
      transparent area.
    path: PNG file to write.
    fp_range: the false-positive range of the partial area, shaded on the plot.
    title: figure title.
    log_x: logarithmic false-positive axis (points at 0 FP are then not drawn).
  """
  _check_runs(curves, "curves")
  a, b = (float(v) for v in fp_range)
  if not 0.0 <= a < b:
    raise ValueError(f"fp_range must satisfy 0 <= a < b, got {fp_range}")
  fig, ax = plt.subplots(figsize=(5.4, 4.2))
  ax.axvspan(a, b, color="0.92", zorder=0)
  top = b
  for i, (run, c) in enumerate(curves.items()):
    fp = np.asarray(c["fp_per_case"], np.float64)
    sens = np.asarray(c["sensitivity"], np.float64)
    if fp.shape != sens.shape or fp.ndim != 1:
      raise ValueError(f"{run}: fp_per_case {fp.shape} and sensitivity {sens.shape} must be "
                       "1-D of equal length")
    colour = f"C{i}"
    if fp.size:
      ax.plot(fp, sens, color=colour, lw=1.5, label=run)
      top = max(top, float(np.nanmax(fp)))
    if "band_fp" in c:
      band = [np.asarray(c[k], np.float64) for k in ("band_fp", "band_low", "band_high")]
      if len({x.shape for x in band}) != 1 or band[0].ndim != 1:
        raise ValueError(f"{run}: band_fp, band_low and band_high must be 1-D of equal length")
      ax.fill_between(band[0], band[1], band[2], color=colour, alpha=0.2, lw=0)
  if log_x:
    ax.set_xscale("log")
    ax.set_xlim(min(0.05, a if a > 0 else 0.05), top * 1.1)
  else:
    ax.set_xlim(0, top * 1.05)
  ax.set(ylim=(0, 1.02), xlabel="false positives per case", ylabel="lesion sensitivity",
         title=title or "FROC")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize=8, loc="lower right")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_reliability_diagrams(diagrams: Mapping[str, Mapping[str, np.ndarray]],
                              path: str | os.PathLike, *, title: str = "",
                              ece: Mapping[str, float] | None = None) -> None:
  """Reliability diagrams: per run, accuracy against confidence per bin, with bin counts.

  Args:
    diagrams: ``diagrams[run]`` = the dict of
      :func:`jaxseg.metrics.calibration.reliability_diagram` (``bin_edges`` ``(M + 1,)``,
      ``confidence``, ``accuracy``, ``counts`` ``(M,)``; NaN for empty bins).
    path: PNG file to write.
    title: figure title.
    ece: optional ECE per run, shown in the panel titles.
  """
  _check_runs(diagrams, "diagrams")
  fig, axes = plt.subplots(2, len(diagrams), figsize=(3.3 * len(diagrams), 4.6), squeeze=False,
                           gridspec_kw={"height_ratios": (3, 1)}, sharex=True)
  for j, (run, d) in enumerate(diagrams.items()):
    edges = np.asarray(d["bin_edges"], np.float64)
    acc, conf, counts = (np.asarray(d[k], np.float64) for k in ("accuracy", "confidence",
                                                                  "counts"))
    if edges.ndim != 1 or edges.size < 2 or not (acc.shape == conf.shape == counts.shape
                                                 == (edges.size - 1,)):
      raise ValueError(f"{run}: expected bin_edges (M + 1,) and accuracy, confidence, counts "
                       f"(M,), got {edges.shape}, {acc.shape}, {conf.shape}, {counts.shape}")
    centres, widths = 0.5 * (edges[:-1] + edges[1:]), np.diff(edges)
    ok = counts > 0
    ax = axes[0, j]
    ax.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1)
    ax.bar(centres[ok], acc[ok], width=widths[ok], color="C0", alpha=0.7, edgecolor="C0",
           label="accuracy")
    ax.bar(centres[ok], conf[ok] - acc[ok], bottom=acc[ok], width=widths[ok], color="C3",
           alpha=0.3, label="gap to confidence")
    name = run if ece is None or run not in ece else f"{run}\nECE {ece[run]:.3f}"
    ax.set(xlim=(0, 1), ylim=(0, 1), title=name)
    if j == 0:
      ax.set_ylabel("accuracy")
      ax.legend(fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    low = axes[1, j]
    low.bar(centres, np.maximum(counts, 0), width=widths, color="0.4")
    if counts.max(initial=0) > 0:
      low.set_yscale("log")
    low.set(xlabel="confidence")
    if j == 0:
      low.set_ylabel("voxels")
  if title:
    fig.suptitle(title)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_probability_overlays(images: Sequence[np.ndarray],
                              maps: Mapping[str, Sequence[np.ndarray]],
                              path: str | os.PathLike, *,
                              contours: Sequence[np.ndarray] | None = None,
                              row_titles: Sequence[str] | None = None,
                              cmap: str = "inferno", threshold: float = 0.05) -> None:
  """Rows of 2D slices; columns: the image, then each named probability map over it.

  Probabilities below ``threshold`` are transparent; ``contours`` (one binary mask per row, e.g.
  the ground-truth lesions) are drawn as white lines on every panel, as in the appendix of Saha
  et al. (seed 001).

  Args:
    images: 2-D slices, one per row.
    maps: ``maps[name]`` = one 2-D probability map per row (the shape of the row's image).
    path: PNG file to write.
    contours: optional binary masks, one per row.
    row_titles: optional label per row.
    cmap: colour map of the probabilities (fixed range [0, 1]).
    threshold: probabilities below it are not drawn.
  """
  if not images:
    raise ValueError("images is empty")
  _check_runs(maps, "maps")
  for name, rows in maps.items():
    if len(rows) != len(images):
      raise ValueError(f"maps[{name!r}] has {len(rows)} rows, images has {len(images)}")
    for r, (m, im) in enumerate(zip(rows, images)):
      if np.shape(m) != np.shape(im):
        raise ValueError(f"maps[{name!r}][{r}] shape {np.shape(m)} != image {np.shape(im)}")
  if contours is not None and len(contours) != len(images):
    raise ValueError(f"{len(contours)} contours for {len(images)} images")
  columns = ["image"] + list(maps)
  fig, axes = plt.subplots(len(images), len(columns),
                           figsize=(2.6 * len(columns), 2.6 * len(images) + 0.5), squeeze=False)
  shown = None
  for r, image in enumerate(images):
    for c, name in enumerate(columns):
      ax = axes[r, c]
      ax.imshow(np.rot90(image), cmap="gray")
      if c:
        p = np.rot90(np.asarray(maps[name][r], np.float64))
        shown = ax.imshow(np.ma.masked_where(p < threshold, p), cmap=cmap, vmin=0.0, vmax=1.0,
                          alpha=0.75, interpolation="nearest")
      if contours is not None and np.any(contours[r]):
        ax.contour(np.rot90(np.asarray(contours[r], np.float64)), levels=[0.5], colors="white",
                   linewidths=0.8)
      ax.set_xticks([])
      ax.set_yticks([])
      if r == 0:
        ax.set_title(name, fontsize=9)
      if c == 0 and row_titles:
        ax.set_ylabel(row_titles[r], fontsize=8)
  fig.tight_layout(rect=(0, 0.06, 1, 1))
  if shown is not None:
    cax = fig.add_axes((0.3, 0.025, 0.4, 0.018))
    fig.colorbar(shown, cax=cax, orientation="horizontal", label="probability")
  fig.savefig(path, dpi=110)
  plt.close(fig)
