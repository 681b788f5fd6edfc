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

LABEL_COLOURS = ("#000000", "#f7e13b", "#e6e6e6", "#d1495b", "#4cc9f0", "#3a86ff", "#8d5524",
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
