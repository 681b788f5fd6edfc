"""Figures shared by the experiment reports (matplotlib, Agg backend, PNG files).

One figure style, used by every study:

* Orientation. Every slice is drawn through `display_slice`, in the radiological convention
  (axial: anterior up, the patient's right on the viewer's left; coronal: superior up, right on
  the left; sagittal: superior up, anterior on the left), with ``imshow``'s default
  ``origin="upper"``. The slice's array axes are described by anatomical direction codes
  (``axes=("R", "A")``: index 0 grows towards the patient's right, index 1 towards anterior),
  which is the RAS+ voxel order of the phantoms (docs/developing.md) and the default.
  Loaded NIfTI volumes are *not* reoriented (`jaxseg.data.preprocess.load_nifti` keeps the file's
  voxel order; PROMISE12 is LPS, for instance), so pass ``axes=slice_axes(volume.affine)`` for
  them. The first image panel of a figure carries orientation letters (up, viewer's left).
* Layout. Constrained layout; figure legends and colour bars sit outside the axes but inside the
  figure, so titles, row titles, legends and colour bars are never cut off.
* Labels. Metric keys (``val_dice``) are shown in words (`metric_label`: "validation Dice").
* Colours. Configurations (runs, losses, metrics of one plot) are coloured by `config_colours`:
  the Okabe-Ito palette (colour-blind safe) for up to 8, tab10 / tab20 beyond. On images the
  ground truth is drawn in white with a black outline and a thicker line (`TRUTH_COLOUR`; white
  is not in the palette, and the outline keeps it visible over bright tissue); configuration
  contours get a thin dark outline too. Classes of label maps keep `LABEL_COLOURS`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import colors as mcolors  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from jaxseg.data.preprocess import validate_spacing  # noqa: E402

LABEL_COLOURS = ("#000000", "#f7e13b", "#2ec4b6", "#d1495b", "#4cc9f0", "#3a86ff", "#8d5524",
                 "#70e000", "#ff6d00", "#c77dff")

# Okabe & Ito (2008) colour-blind-safe palette, most distinct first; black (last) only at n = 8.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")
TRUTH_COLOUR = "#FFFFFF"
_TRUTH_WIDTH = 2.6
_CONFIG_WIDTH = 1.3
_OUTLINE = "#000000"

# Axial slices of RAS+ volumes (the phantoms): index 0 -> patient's right, index 1 -> anterior.
RAS_AXIAL = ("R", "A")

_WORLD_AXIS = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
# Radiological display per plane (the pair of world axes a slice spans):
# (direction towards the top of the screen, direction towards the viewer's left).
_SCREEN = {frozenset({0, 1}): ("A", "R"),  # axial
           frozenset({0, 2}): ("S", "R"),  # coronal
           frozenset({1, 2}): ("S", "A")}  # sagittal


class _Estimate(Protocol):
  value: float
  low: float
  high: float


# -- Orientation ----------------------------------------------------------------------------------


def _display_plan(axes: Sequence[str]) -> tuple[bool, bool, bool, str, str]:
  """(transpose, flip rows, flip columns, up code, viewer's-left code) for slice axes codes."""
  if isinstance(axes, str) or len(axes) != 2:
    raise ValueError(f"axes must be two direction codes such as ('R', 'A'), got {axes!r}")
  codes = tuple(str(c).upper() for c in axes)
  if any(c not in _WORLD_AXIS for c in codes):
    raise ValueError(f"axes codes must be among R, L, A, P, S, I, got {axes!r}")
  w0, w1 = (_WORLD_AXIS[c] for c in codes)
  if w0 == w1:
    raise ValueError(f"axes {axes!r} run along the same anatomical axis")
  up, left = _SCREEN[frozenset({w0, w1})]
  transpose = _WORLD_AXIS[up] != w0  # the vertical (up-down) axis must become the rows
  vertical, horizontal = (codes[1], codes[0]) if transpose else codes
  return transpose, vertical == up, horizontal == left, up, left


def display_slice(array: Any, axes: Sequence[str] = RAS_AXIAL) -> np.ndarray:
  """Orients a 2-D slice for ``imshow`` (default ``origin="upper"``) in radiological display.

  Assumes the slice's first two array axes point in the anatomical directions ``axes``: each
  code (R, L, A, P, S, I) names the direction in which that index grows. The default
  ``("R", "A")`` is an axial slice ``volume[:, :, z]`` of a RAS+ volume in NIfTI voxel order
  ``(x, y, z)`` (the phantoms: index 0 from the patient's left to right, index 1 from posterior
  to anterior). Loaded NIfTI volumes keep the file's voxel order, so derive their codes with
  `slice_axes` (a PROMISE12 axial slice is ``("L", "P")``).

  Axial slices come back with rows from anterior (row 0, top) to posterior and columns from the
  patient's right (column 0, viewer's left) to left: for RAS+ input that is
  ``array.T[::-1, ::-1]``, i.e. ``out[r, c] = array[nx - 1 - c, ny - 1 - r]``. Coronal slices
  have superior at the top and the patient's right on the left; sagittal slices superior at the
  top and anterior on the left.

  Args:
    array: ``(n0, n1)`` or ``(n0, n1, C)`` (RGB / RGBA, or any trailing channel axis, which is
      kept last).
    axes: the direction codes of array axes 0 and 1.

  Returns:
    A view of ``array`` with rows = the display's top-to-bottom and columns = its left-to-right.

  Raises:
    ValueError: the array is not 2-D or 3-D, or ``axes`` are not two codes along different
      anatomical axes.
  """
  a = np.asarray(array)
  if a.ndim not in (2, 3):
    raise ValueError(f"expected a (n0, n1) or (n0, n1, C) slice, got shape {a.shape}")
  transpose, flip_rows, flip_cols, _, _ = _display_plan(axes)
  if transpose:
    a = np.swapaxes(a, 0, 1)
  if flip_rows:
    a = a[::-1]
  if flip_cols:
    a = a[:, ::-1]
  return a


def display_aspect(spacing: Sequence[float], axes: Sequence[str] = RAS_AXIAL) -> float:
  """``imshow``'s ``aspect`` (pixel height / width) for a slice shown with `display_slice`.

  Args:
    spacing: voxel size (mm) along the slice's array axes 0 and 1.
    axes: the direction codes of array axes 0 and 1 (as for `display_slice`).

  Returns:
    The spacing of the displayed rows divided by that of the displayed columns.
  """
  s = validate_spacing(spacing, ndim=2)
  transpose = _display_plan(axes)[0]
  rows, cols = (s[1], s[0]) if transpose else (s[0], s[1])
  return float(rows / cols)


def slice_axes(affine: Any, slice_axis: int = 2) -> tuple[str, str]:
  """The direction codes (for `display_slice`) of a volume's slices, from its affine.

  Args:
    affine: the volume's 4x4 voxel-to-world (RAS+, NIfTI / nibabel convention) matrix.
    slice_axis: the voxel axis the slices are taken along (2: ``volume[:, :, k]``).

  Returns:
    The codes of the two remaining voxel axes, in order (e.g. ``("R", "A")`` for a RAS+ axial
    slice, ``("L", "P")`` for LPS voxel order); each axis gets the world direction it is closest
    to (`nibabel.orientations.aff2axcodes`).
  """
  from nibabel.orientations import aff2axcodes  # pylint: disable=import-outside-toplevel
  a = np.asarray(affine, np.float64)
  if a.shape != (4, 4) or not np.all(np.isfinite(a)):
    raise ValueError(f"affine must be a finite 4x4 matrix, got shape {a.shape}")
  if slice_axis not in (0, 1, 2):
    raise ValueError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
  codes = aff2axcodes(a)
  if any(c is None for c in codes):
    raise ValueError(f"affine has a degenerate axis: {codes}")
  kept = tuple(str(c) for k, c in enumerate(codes) if k != slice_axis)
  return kept[0], kept[1]


def _orientation_marks(ax: Any, axes: Sequence[str]) -> None:
  """Direction letters at the top and the viewer's-left edge of an image panel."""
  _, _, _, up, left = _display_plan(axes)
  style = dict(transform=ax.transAxes, color="white", fontsize=7, fontweight="bold",
               path_effects=[patheffects.withStroke(linewidth=1.5, foreground="black")])
  ax.text(0.5, 0.97, up, ha="center", va="top", **style)
  ax.text(0.03, 0.5, left, ha="left", va="center", **style)


# -- Words and colours ----------------------------------------------------------------------------

_PREFIXES = (("validation_", "validation"), ("valid_", "validation"), ("val_", "validation"),
             ("training_", "training"), ("train_", "training"), ("test_", "test"))
_WORDS = {"dice": "Dice", "hd95": "HD95", "hd": "HD", "nll": "NLL", "ece": "ECE", "mce": "MCE",
          "auroc": "AUROC", "auc": "AUC", "pauc": "pAUC", "froc": "FROC", "f1": "F1",
          "iou": "IoU", "assd": "ASSD", "asd": "ASD", "brier": "Brier", "lr": "learning rate",
          "ppv": "PPV", "npv": "NPV", "tpr": "TPR", "fpr": "FPR", "tz": "TZ", "pz": "PZ",
          "cg": "CG", "sv": "SV", "nvb": "NVB", "cspca": "csPCa", "isup": "ISUP"}
_UNITS = {"hd95": "mm", "hd": "mm", "assd": "mm", "asd": "mm"}


def metric_label(key: str) -> str:
  """A metric key in words, for axis labels and legends.

  A ``val_`` / ``validation_`` / ``train_`` / ``test_`` prefix becomes "validation" /
  "training" / "test"; known metric names are spelled properly (Dice, HD95, NLL, ECE, AUROC,
  F1, ...); distances get their unit; other words are kept, underscores becoming spaces.

  >>> metric_label("val_dice"), metric_label("train_loss"), metric_label("hd95")
  ('validation Dice', 'training loss', 'HD95 (mm)')

  Args:
    key: a metric key such as ``"val_soft_dice"``.

  Returns:
    The label, e.g. "validation soft Dice".
  """
  if not isinstance(key, str) or not key.strip():
    raise ValueError(f"metric key must be a non-empty string, got {key!r}")
  rest, words = key.strip(), []
  for prefix, word in _PREFIXES:
    if rest.lower().startswith(prefix) and len(rest) > len(prefix):
      rest, words = rest[len(prefix):], [word]
      break
  units = []
  for word in rest.split("_"):
    if not word:
      continue
    low = word.lower()
    words.append(_WORDS.get(low, word))
    if low in _UNITS and _UNITS[low] not in units:
      units.append(_UNITS[low])
  label = " ".join(words)
  if units and not any(w.lower() in units for w in words):
    label += f" ({', '.join(units)})"
  return label


def _sentence(label: str) -> str:
  return label[:1].upper() + label[1:]


def config_colours(n: int) -> list[str]:
  """``n`` colours (hex) that can be told apart, one per configuration of a plot.

  Okabe-Ito (colour-blind safe, black last) for ``n <= 8``, tab10 for ``n <= 10``, tab20 for
  ``n <= 20``, evenly spaced turbo colours beyond. None is `TRUTH_COLOUR` (white).

  Args:
    n: number of configurations (>= 0).

  Returns:
    A list of ``n`` ``"#rrggbb"`` strings.
  """
  if int(n) != n or n < 0:
    raise ValueError(f"n must be a non-negative integer, got {n}")
  n = int(n)
  if n <= len(OKABE_ITO):
    return list(OKABE_ITO[:n])
  if n <= 20:
    cmap = matplotlib.colormaps["tab10" if n <= 10 else "tab20"]
    return [mcolors.to_hex(cmap(i)) for i in range(n)]
  return [mcolors.to_hex(c) for c in matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))]


def label_colormap(num_classes: int) -> ListedColormap:
  """The fixed class colours (`LABEL_COLOURS`) of label-map overlays."""
  if num_classes > len(LABEL_COLOURS):
    raise ValueError(f"at most {len(LABEL_COLOURS)} classes can be coloured")
  return ListedColormap(LABEL_COLOURS[:num_classes])


# -- Shared drawing helpers -----------------------------------------------------------------------


def _save(fig: Any, path: str | os.PathLike, *, dpi: int = 110) -> None:
  fig.savefig(path, dpi=dpi)
  plt.close(fig)


def _outline(width: float, alpha: float = 1.0) -> list[Any]:
  return [patheffects.withStroke(linewidth=width, foreground=_OUTLINE, alpha=alpha)]


def _truth_line(label: str) -> Line2D:
  return Line2D([], [], color=TRUTH_COLOUR, lw=_TRUTH_WIDTH, label=label,
                path_effects=_outline(_TRUTH_WIDTH + 1.4))


def _config_line(colour: str, label: str) -> Line2D:
  return Line2D([], [], color=colour, lw=_CONFIG_WIDTH + 0.5, label=label,
                path_effects=_outline(_CONFIG_WIDTH + 1.7, 0.6))


def _panel_height(images: Sequence[Any], axes: Sequence[str], width: float) -> float:
  """Height (inches) of an image panel ``width`` wide, from the displayed slices' shape."""
  rows, cols = display_slice(np.zeros(np.shape(images[0])[:2], bool), axes).shape
  return width * float(np.clip(rows / cols, 0.5, 2.0))


def _slice_grid(images: Sequence[Any], num_columns: int, axes: Sequence[str], *,
                footer: float, width: float = 2.6) -> tuple[Any, Any]:
  """A constrained-layout figure of one row per slice and ``num_columns`` panels per row;
  ``footer`` inches below the panels hold the legend or colour bar."""
  height = (_panel_height(images, axes, width) + 0.3) * len(images) + footer
  return plt.subplots(len(images), num_columns, figsize=(width * num_columns, height),
                      squeeze=False, layout="constrained")


def _image_panel(ax: Any, image: Any, axes: Sequence[str]) -> None:
  ax.imshow(display_slice(np.asarray(image, np.float64), axes), cmap="gray",
            interpolation="nearest")
  ax.set_xticks([])
  ax.set_yticks([])


def _contour(ax: Any, values: Any, axes: Sequence[str], *, level: float, colour: str,
             truth: bool = False) -> None:
  """The ``level`` iso-line of a slice (skipped when the slice does not cross it)."""
  z = display_slice(np.asarray(values, np.float64), axes)
  finite = z[np.isfinite(z)]
  if not finite.size or not finite.min() < level <= finite.max():
    return
  width = _TRUTH_WIDTH if truth else _CONFIG_WIDTH
  cs = ax.contour(z, levels=[level], colors=[colour], linewidths=width)
  cs.set_path_effects(_outline(width + 1.4) if truth else _outline(width + 1.2, 0.6))


def _figure_legend(fig: Any, handles: Sequence[Any], *, fontsize: float = 8) -> None:
  """A legend below the axes, with as many columns as fit the figure's width."""
  if not handles:
    return
  longest = max(len(h.get_label()) for h in handles)
  entry = fontsize * (0.62 * longest + 4.5)  # points: handle, padding and text
  width = fig.get_figwidth() * 72.0 * 0.92
  fit = int(max(1, min(len(handles), width // entry)))
  ncol = math.ceil(len(handles) / math.ceil(len(handles) / fit))  # balanced rows
  fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=fontsize,
             frameon=False)


def _check_runs(mapping: Mapping[str, Any], what: str) -> None:
  if not mapping:
    raise ValueError(f"{what} is empty: pass at least one run")


def _check_slices(images: Sequence[Any], named: Mapping[str, Sequence[Any]], what: str) -> None:
  if not len(images):
    raise ValueError("images is empty")
  for im in images:
    if np.ndim(im) != 2:
      raise ValueError(f"images must be 2-D slices, got shape {np.shape(im)}")
  for name, rows in named.items():
    if len(rows) != len(images):
      raise ValueError(f"{what}[{name!r}] has {len(rows)} rows, images has {len(images)}")
    for r, (m, im) in enumerate(zip(rows, images)):
      if np.shape(m) != np.shape(im):
        raise ValueError(f"{what}[{name!r}][{r}] shape {np.shape(m)} != image {np.shape(im)}")


# -- Curves ---------------------------------------------------------------------------------------


def plot_training_curves(histories: Mapping[str, Sequence[Mapping[str, Any]]],
                         path: str | os.PathLike, *, metric: str = "val_dice") -> None:
  """Training loss and a validation metric per epoch, one line per run.

  Args:
    histories: ``histories[run]`` = per-epoch dicts with ``epoch`` (0-based), ``train_loss``
      and, where evaluated, ``metric``.
    path: PNG file to write.
    metric: the key of the right-hand panel (labelled with `metric_label`).
  """
  _check_runs(histories, "histories")
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.9), layout="constrained")
  handles = []
  for colour, (name, history) in zip(config_colours(len(histories)), histories.items()):
    epochs = [h["epoch"] + 1 for h in history]
    axes[0].plot(epochs, [h["train_loss"] for h in history], marker="o", ms=3, color=colour)
    handles += axes[1].plot(epochs, [h.get(metric, np.nan) for h in history], marker="o", ms=3,
                            color=colour, label=name)
  for ax, key in zip(axes, ("train_loss", metric)):
    ax.set(xlabel="epoch", ylabel=metric_label(key), title=_sentence(metric_label(key)))
    ax.grid(alpha=0.3)
  _figure_legend(fig, handles)
  _save(fig, path)


def plot_metric_vs_parameter(path: str | os.PathLike, parameter_values: Sequence[float],
                             estimates: Mapping[str, Sequence[_Estimate]], *,
                             parameter_label: str,
                             baselines: Mapping[str, _Estimate] | None = None,
                             baseline_label: str = "baseline", title: str = "") -> None:
  """Metrics with confidence intervals against a swept hyperparameter.

  Args:
    path: PNG file to write.
    parameter_values: the swept values (x axis), one per configuration.
    estimates: ``estimates[metric key]`` = one estimate (``.value``, ``.low``, ``.high``, e.g.
      `jaxseg.metrics.stats.Estimate`) per parameter value, drawn as an error-bar line.
    parameter_label: the x-axis label, in words.
    baselines: ``baselines[metric key]`` = the estimate of a reference configuration, drawn as a
      dashed horizontal line (and a faint band for its interval) in the metric's colour.
    baseline_label: the reference's name in the legend.
    title: figure title.
  """
  xs = np.asarray(parameter_values, np.float64).reshape(-1)
  if not xs.size or not np.all(np.isfinite(xs)):
    raise ValueError(f"parameter_values must be finite and non-empty, got {parameter_values!r}")
  _check_runs(estimates, "estimates")
  baselines = dict(baselines or {})
  for key, est in estimates.items():
    if len(est) != xs.size:
      raise ValueError(f"estimates[{key!r}] has {len(est)} values for {xs.size} parameters")
  keys = list(estimates) + [k for k in baselines if k not in estimates]
  colour = dict(zip(keys, config_colours(len(keys))))
  fig, ax = plt.subplots(figsize=(5.8, 4.2), layout="constrained")
  handles = []  # each metric, then its baseline
  for key in keys:
    if key in estimates:
      v, lo, hi = (np.array([getattr(e, a) for e in estimates[key]], np.float64)
                   for a in ("value", "low", "high"))
      yerr = np.nan_to_num(np.maximum(np.stack([v - lo, hi - v]), 0.0), nan=0.0)
      handles.append(ax.errorbar(xs, v, yerr=yerr, marker="o", ms=4, capsize=3, lw=1.5,
                                 color=colour[key], label=metric_label(key)))
    if key in baselines:
      est = baselines[key]
      handles.append(ax.axhline(est.value, ls="--", lw=1.2, color=colour[key],
                                label=f"{metric_label(key)} ({baseline_label})"))
      if np.isfinite(est.low) and np.isfinite(est.high) and est.high > est.low:
        ax.axhspan(est.low, est.high, color=colour[key], alpha=0.08, lw=0)
  if xs.size <= 12:
    ax.set_xticks(np.unique(xs))
  ax.set(xlabel=parameter_label, ylabel=metric_label(keys[0]) if len(keys) == 1 else "value")
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(handles=handles, fontsize=8, loc="best")
  _save(fig, path)


def plot_matrices(matrices: Mapping[str, np.ndarray], names: Sequence[str],
                  path: str | os.PathLike, *, title: str = "", log: bool = True,
                  fmt: str = ".0f") -> None:
  """Side-by-side annotated heatmaps (rows: truth, columns: prediction) on a shared scale."""
  _check_runs(matrices, "matrices")
  values = [np.asarray(m, dtype=np.float64) for m in matrices.values()]
  top = max(float(v.max()) for v in values) or 1.0
  fig, axes = plt.subplots(1, len(values), figsize=(5.2 * len(values), 5.0), squeeze=False,
                           layout="constrained")
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
  _save(fig, path, dpi=120)


# -- Slices ---------------------------------------------------------------------------------------


def plot_label_overlays(images: Sequence[np.ndarray], labels: Mapping[str, Sequence[np.ndarray]],
                        path: str | os.PathLike, *, class_names: Sequence[str],
                        row_titles: Sequence[str] | None = None,
                        axes: Sequence[str] = RAS_AXIAL) -> None:
  """Rows of 2D slices; columns: the image, then each named label map overlaid on it.

  Args:
    images: 2-D slices, one per row, with array axes ``axes`` (`display_slice`).
    labels: ``labels[name]`` = one integer label slice per row (0 = background, transparent).
    path: PNG file to write.
    class_names: names of the classes, index = label (coloured by `LABEL_COLOURS`).
    row_titles: optional label per row.
    axes: direction codes of the slices' array axes.
  """
  _check_slices(images, labels, "labels")
  cmap = label_colormap(len(class_names))
  columns = ["image"] + list(labels)
  fig, grid = _slice_grid(images, len(columns), axes, footer=0.6)
  for r, image in enumerate(images):
    for c, name in enumerate(columns):
      ax = grid[r, c]
      _image_panel(ax, image, axes)
      if c:
        lab = display_slice(np.asarray(labels[name][r]), axes)
        ax.imshow(np.ma.masked_where(lab == 0, lab), cmap=cmap, vmin=0,
                  vmax=len(class_names) - 1, alpha=0.55, interpolation="nearest")
      if r == 0:
        ax.set_title(name, fontsize=9)
      if c == 0 and row_titles:
        ax.set_ylabel(row_titles[r], fontsize=8)
  _orientation_marks(grid[0, 0], axes)
  _figure_legend(fig, [Patch(color=LABEL_COLOURS[i], label=n)
                       for i, n in enumerate(class_names) if i], fontsize=7)
  _save(fig, path)


def plot_contour_overlays(path: str | os.PathLike, images: Sequence[np.ndarray],
                          truths: Sequence[np.ndarray],
                          predictions: Mapping[str, Sequence[np.ndarray]], *,
                          row_titles: Sequence[str] | None = None, truth_label: str = "truth",
                          threshold: float = 0.5, axes: Sequence[str] = RAS_AXIAL) -> None:
  """Each configuration's contour and the truth's on the same slices, one panel per slice.

  The image is grey, the truth a thick white line with a black outline, each configuration its
  `config_colours` line at ``threshold``; one legend below the panels.

  Args:
    path: PNG file to write.
    images: 2-D slices with array axes ``axes`` (e.g. ``volume.image[:, :, z]``).
    truths: binary truth masks, one per slice (same shapes).
    predictions: ``predictions[config name]`` = one probability (or binary) slice per image.
    row_titles: optional title per panel (e.g. ``"case-3 z=12"``).
    truth_label: the truth's name in the legend (e.g. ``"expert"``).
    threshold: the iso-level of the prediction contours.
    axes: direction codes of the slices' array axes (`display_slice`).
  """
  _check_slices(images, {truth_label: truths}, "truths")
  _check_slices(images, predictions, "predictions")
  if row_titles is not None and len(row_titles) != len(images):
    raise ValueError(f"{len(row_titles)} row_titles for {len(images)} images")
  if not np.isfinite(threshold):
    raise ValueError(f"threshold must be finite, got {threshold}")
  n = len(images)
  ncols = min(n, 4)
  nrows = math.ceil(n / ncols)
  fig, grid = plt.subplots(nrows, ncols, figsize=(
      max(3.3 * ncols, 6.0), (_panel_height(images, axes, 3.3) + 0.35) * nrows + 0.8),
                           squeeze=False, layout="constrained")
  colours = config_colours(len(predictions))
  for i, ax in enumerate(grid.flat):
    if i >= n:
      ax.axis("off")
      continue
    _image_panel(ax, images[i], axes)
    _contour(ax, truths[i], axes, level=0.5, colour=TRUTH_COLOUR, truth=True)
    for colour, slices in zip(colours, predictions.values()):
      _contour(ax, slices[i], axes, level=float(threshold), colour=colour)
    if row_titles is not None:
      ax.set_title(row_titles[i], fontsize=9)
  _orientation_marks(grid[0, 0], axes)
  _figure_legend(fig, [_truth_line(truth_label)] +
                 [_config_line(c, name) for c, name in zip(colours, predictions)])
  _save(fig, path)


def plot_probability_overlays(images: Sequence[np.ndarray],
                              maps: Mapping[str, Sequence[np.ndarray]],
                              path: str | os.PathLike, *,
                              contours: Sequence[np.ndarray] | None = None,
                              row_titles: Sequence[str] | None = None,
                              cmap: str = "inferno", threshold: float = 0.05,
                              axes: Sequence[str] = RAS_AXIAL) -> None:
  """Rows of 2D slices; columns: the image, then each named probability map over it.

  Probabilities below ``threshold`` are transparent; ``contours`` (one binary mask per row, e.g.
  the ground-truth lesions) are drawn in the truth style (white, black outline) on every panel,
  as in the appendix of Saha et al. (seed 001).

  Args:
    images: 2-D slices, one per row, with array axes ``axes`` (`display_slice`).
    maps: ``maps[name]`` = one 2-D probability map per row (the shape of the row's image).
    path: PNG file to write.
    contours: optional binary masks, one per row.
    row_titles: optional label per row.
    cmap: colour map of the probabilities (fixed range [0, 1]).
    threshold: probabilities below it are not drawn.
    axes: direction codes of the slices' array axes.
  """
  _check_runs(maps, "maps")
  _check_slices(images, maps, "maps")
  if contours is not None and len(contours) != len(images):
    raise ValueError(f"{len(contours)} contours for {len(images)} images")
  columns = ["image"] + list(maps)
  fig, grid = _slice_grid(images, len(columns), axes, footer=0.9)
  shown = None
  for r, image in enumerate(images):
    for c, name in enumerate(columns):
      ax = grid[r, c]
      _image_panel(ax, image, axes)
      if c:
        p = display_slice(np.asarray(maps[name][r], np.float64), axes)
        shown = ax.imshow(np.ma.masked_where(p < threshold, p), cmap=cmap, vmin=0.0, vmax=1.0,
                          alpha=0.75, interpolation="nearest")
      if contours is not None:
        _contour(ax, contours[r], axes, level=0.5, colour=TRUTH_COLOUR, truth=True)
      if r == 0:
        ax.set_title(name, fontsize=9)
      if c == 0 and row_titles:
        ax.set_ylabel(row_titles[r], fontsize=8)
  _orientation_marks(grid[0, 0], axes)
  if shown is not None:
    fig.colorbar(shown, ax=grid, location="bottom", shrink=0.5, aspect=40, label="probability")
  _save(fig, path)


# -- Calibration and detection figures (seed 001: anatomical vs diagnostic losses) -------------


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
  fig, axes = plt.subplots(1, len(values), figsize=(3.4 * len(values), 3.4), squeeze=False,
                           sharey=True, layout="constrained")
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
  _save(fig, path)


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
  fig, ax = plt.subplots(figsize=(5.4, 4.6), layout="constrained")
  ax.axvspan(a, b, color="0.92", zorder=0)
  top = b
  handles = []
  for colour, (run, c) in zip(config_colours(len(curves)), curves.items()):
    fp = np.asarray(c["fp_per_case"], np.float64)
    sens = np.asarray(c["sensitivity"], np.float64)
    if fp.shape != sens.shape or fp.ndim != 1:
      raise ValueError(f"{run}: fp_per_case {fp.shape} and sensitivity {sens.shape} must be "
                       "1-D of equal length")
    handles.append(Line2D([], [], color=colour, lw=1.5, label=run))
    if fp.size:
      ax.plot(fp, sens, color=colour, lw=1.5)
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
  _figure_legend(fig, handles)
  _save(fig, path)


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
  accuracy_colour, gap_colour = OKABE_ITO[0], OKABE_ITO[3]
  fig, axes = plt.subplots(2, len(diagrams), figsize=(3.3 * len(diagrams), 4.9), squeeze=False,
                           gridspec_kw={"height_ratios": (3, 1)}, sharex=True,
                           layout="constrained")
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
    ax.bar(centres[ok], acc[ok], width=widths[ok], color=accuracy_colour, alpha=0.7,
           edgecolor=accuracy_colour, label="accuracy")
    ax.bar(centres[ok], conf[ok] - acc[ok], bottom=acc[ok], width=widths[ok], color=gap_colour,
           alpha=0.3, label="gap to confidence")
    name = run if ece is None or run not in ece else f"{run}\n{metric_label('ece')} {ece[run]:.3f}"
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
  _save(fig, path)
