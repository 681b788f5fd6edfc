"""The figure style of jaxseg.report.figures: orientation, layout, labels, colours, new plots."""

from __future__ import annotations

import itertools

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import matplotlib.text
import numpy as np
import pytest
from matplotlib import colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg

from jaxseg.data.phantoms import pelvis
from jaxseg.metrics import calibration, detection, stats
from jaxseg.report import figures

# -- Orientation ----------------------------------------------------------------------------------


def _one_voxel(shape, index):
  a = np.zeros(shape)
  a[index] = 1.0
  return a


def test_display_slice_ras_axial():
  # (x, y) = (5, 4); x grows to the patient's right, y anteriorly (RAS+).
  right_anterior = _one_voxel((5, 4), (4, 3))
  shown = figures.display_slice(right_anterior)
  assert shown.shape == (4, 5)  # rows = y (anterior first), columns = x (right first)
  assert shown[0, 0] == 1.0  # top-left: the patient's right is on the viewer's left
  left_anterior = figures.display_slice(_one_voxel((5, 4), (0, 3)))
  assert left_anterior[0, -1] == 1.0
  right_posterior = figures.display_slice(_one_voxel((5, 4), (4, 0)))
  assert right_posterior[-1, 0] == 1.0
  a = np.arange(20.0).reshape(5, 4)
  np.testing.assert_array_equal(figures.display_slice(a), a.T[::-1, ::-1])


def test_display_slice_other_voxel_orders():
  # LPS (PROMISE12): index 0 grows to the left, index 1 posteriorly; (0, 0) is right-anterior.
  assert figures.display_slice(_one_voxel((5, 4), (0, 0)), ("L", "P"))[0, 0] == 1.0
  # Axes swapped: (y, x) = anterior, right.
  shown = figures.display_slice(_one_voxel((4, 5), (3, 4)), ("A", "R"))
  assert shown.shape == (4, 5) and shown[0, 0] == 1.0
  # Sagittal (y, z) of a RAS+ volume: superior up, anterior on the viewer's left.
  shown = figures.display_slice(_one_voxel((4, 6), (3, 5)), ("A", "S"))
  assert shown.shape == (6, 4) and shown[0, 0] == 1.0
  # Micro-US (along the probe -> superior, depth -> anterior): the same sagittal display.
  assert figures.display_slice(_one_voxel((6, 4), (5, 3)), ("S", "A"))[0, 0] == 1.0
  # Coronal (x, z): superior up, right on the viewer's left.
  assert figures.display_slice(_one_voxel((5, 6), (4, 5)), ("R", "S"))[0, 0] == 1.0


def test_display_slice_keeps_channels():
  rgb = np.zeros((5, 4, 3))
  rgb[4, 3] = (1.0, 0.5, 0.25)
  shown = figures.display_slice(rgb)
  assert shown.shape == (4, 5, 3)
  np.testing.assert_array_equal(shown[0, 0], (1.0, 0.5, 0.25))


@pytest.mark.parametrize("axes", [("R", "L"), ("A", "P"), ("R",), "RA", ("R", "X")])
def test_display_slice_bad_axes(axes):
  with pytest.raises(ValueError):
    figures.display_slice(np.zeros((3, 3)), axes)


def test_display_slice_bad_shape():
  with pytest.raises(ValueError, match="slice"):
    figures.display_slice(np.zeros(3))


def test_displayed_pixels_with_imshow():
  """A right-anterior voxel is drawn in the top-left corner of the rendered image."""
  a = _one_voxel((4, 4), (3, 3))
  fig = plt.figure(figsize=(1, 1), dpi=40)
  ax = fig.add_axes((0, 0, 1, 1))
  ax.imshow(figures.display_slice(a), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
  ax.axis("off")
  fig.canvas.draw()
  pixels = np.asarray(fig.canvas.buffer_rgba())[..., 0].astype(float)
  plt.close(fig)
  h, w = pixels.shape
  quadrants = [pixels[:h // 2, :w // 2], pixels[:h // 2, w // 2:],
               pixels[h // 2:, :w // 2], pixels[h // 2:, w // 2:]]
  assert quadrants[0].mean() > 40 and all(q.mean() < 1 for q in quadrants[1:])


def test_phantom_anatomy_is_anterior_up():
  case = pelvis.make_pelvis_case(0, shape=(48, 48, 12), spacing=(3.0, 3.0, 6.0))
  axes = figures.slice_axes(case.affine)
  assert axes == ("R", "A")

  def mean_row(k):
    rows = np.nonzero(figures.display_slice((case.label == k).any(axis=2), axes))[0]
    return rows.mean()

  assert mean_row(pelvis.BLADDER) < mean_row(pelvis.RECTUM)  # the bladder is anterior


def test_slice_axes():
  ras = np.diag([0.5, 0.5, 3.0, 1.0])
  assert figures.slice_axes(ras) == ("R", "A")
  assert figures.slice_axes(ras, slice_axis=0) == ("A", "S")
  assert figures.slice_axes(np.diag([-0.5, -0.5, 3.0, 1.0])) == ("L", "P")
  micro_us = np.array([[0, 0, 2.5, 0], [0, 0.2, 0, 0], [0.2, 0, 0, 0], [0, 0, 0, 1.0]])
  assert figures.slice_axes(micro_us) == ("S", "A")
  with pytest.raises(ValueError):
    figures.slice_axes(np.eye(3))
  with pytest.raises(ValueError):
    figures.slice_axes(ras, slice_axis=3)


def test_display_aspect():
  assert figures.display_aspect((0.5, 0.75)) == pytest.approx(1.5)  # rows are y
  assert figures.display_aspect((0.5, 3.0), ("A", "S")) == pytest.approx(6.0)
  assert figures.display_aspect((3.0, 0.5), ("S", "A")) == pytest.approx(6.0)
  with pytest.raises(ValueError):
    figures.display_aspect((0.0, 1.0))


# -- Words and colours ----------------------------------------------------------------------------


@pytest.mark.parametrize("key,label", [
    ("val_dice", "validation Dice"),
    ("train_loss", "training loss"),
    ("val_soft_dice", "validation soft Dice"),
    ("hd95", "HD95 (mm)"),
    ("val_hd95", "validation HD95 (mm)"),
    ("test_nll", "test NLL"),
    ("ece", "ECE"),
    ("auroc", "AUROC"),
    ("f1", "F1"),
    ("dice", "Dice"),
    ("precision", "precision"),
    ("hard_region_recall", "hard region recall"),
    ("hd95_skip_either", "HD95 skip either (mm)"),
    ("val_", "val"),
])
def test_metric_label(key, label):
  assert figures.metric_label(key) == label


def test_metric_label_refuses_empty():
  with pytest.raises(ValueError):
    figures.metric_label("")


def test_config_colours():
  for n in range(0, 25):
    colours = figures.config_colours(n)
    assert len(colours) == n
    assert len(set(colours)) == n
    assert mcolors.to_hex(figures.TRUTH_COLOUR) not in colours
  rgb = np.array([mcolors.to_rgb(c) for c in figures.config_colours(8)])
  distances = [np.linalg.norm(a - b) for a, b in itertools.combinations(rgb, 2)]
  assert min(distances) > 0.25
  # The truth (white) is far from every configuration colour.
  assert min(np.linalg.norm(rgb - 1.0, axis=1)) > 0.25
  assert figures.config_colours(3) == figures.config_colours(8)[:3]  # stable order
  with pytest.raises(ValueError):
    figures.config_colours(-1)


# -- Nothing clipped ------------------------------------------------------------------------------


class _Estimate:

  def __init__(self, value, low, high):
    self.value, self.low, self.high = value, low, high


def _slices(n, shape=(14, 10), seed=0):
  rng = np.random.default_rng(seed)
  images = [rng.normal(size=shape) for _ in range(n)]
  truths = []
  for i in range(n):
    t = np.zeros(shape)
    t[3:9, 2 + i % 3:7] = 1
    truths.append(t)
  return images, truths, rng


_LONG = [f"configuration {k}: Tversky α=0.{k}" for k in range(8)]


def _figure_calls():
  """(name, call) for every public plot function, with small inputs and long names."""
  images, truths, rng = _slices(5)
  preds = {name: [np.clip(t + rng.normal(0, 0.3, t.shape), 0, 1) for t in truths]
           for name in _LONG}
  history = [{"epoch": e, "train_loss": 1.0 / (e + 1), "val_dice": 0.1 * e} for e in range(4)]
  probs = rng.dirichlet(np.ones(3), size=(12, 12))
  diagram = calibration.reliability_diagram(probs, rng.integers(0, 3, (12, 12)), num_bins=8)
  cases = [detection.LesionMatches([(bool(rng.random() < 0.5), float(rng.random()))
                                    for _ in range(3)], 1) for _ in range(6)]
  froc = detection.froc(cases)
  est = {"val_dice": [_Estimate(0.5 + 0.1 * k, 0.4 + 0.1 * k, 0.6 + 0.1 * k) for k in range(4)],
         "val_hd95": [_Estimate(2.0, 1.5, 3.0)] * 4}
  labels = [np.asarray(t, np.int64) * 2 for t in truths[:2]]
  class_names = ["background", "bladder", "transition zone", "central gland"]
  return [
      ("training_curves", lambda p: figures.plot_training_curves(
          {name: history for name in _LONG}, p)),
      ("metric_vs_parameter", lambda p: figures.plot_metric_vs_parameter(
          p, [0.1, 0.3, 0.5, 0.7], est, parameter_label="Tversky α (β = 1 − α)",
          baselines={"val_dice": _Estimate(0.55, 0.5, 0.6)}, baseline_label="BCE",
          title="a long title over the metrics plotted against the parameter")),
      ("matrices", lambda p: figures.plot_matrices(
          {"flat": np.arange(16.0).reshape(4, 4), "hierarchical": np.eye(4) * 9}, class_names,
          p, title="confusion matrices with a long suptitle")),
      ("label_overlays", lambda p: figures.plot_label_overlays(
          images[:2], {"truth": labels, "a long prediction name": labels}, p,
          class_names=class_names, row_titles=["case 1 z=3", "case 2 z=7"])),
      ("contour_overlays", lambda p: figures.plot_contour_overlays(
          p, images, truths, preds, row_titles=[f"case-{k} slice {k + 2}" for k in range(5)],
          truth_label="expert annotation")),
      ("probability_overlays", lambda p: figures.plot_probability_overlays(
          images[:2], {"CE": truths[:2], "focal with a long name": truths[:2]}, p,
          contours=truths[:2], row_titles=["row one", "row two"])),
      ("probability_histograms", lambda p: figures.plot_probability_histograms(
          {"CE": {"TZ": rng.random(50)}, "focal": {"TZ": rng.random(40), "PZ": np.zeros(0)}}, p,
          title="a histogram title")),
      ("froc_curves", lambda p: figures.plot_froc_curves(
          {name: froc for name in _LONG}, p, title="FROC of eight configurations")),
      ("reliability_diagrams", lambda p: figures.plot_reliability_diagrams(
          {"CE": diagram, "focal": diagram}, p, ece={"CE": 0.1, "focal": 0.2},
          title="reliability")),
  ]


_CALLS = _figure_calls()


def test_every_public_plot_function_is_checked():
  public = {n.removeprefix("plot_") for n in dir(figures) if n.startswith("plot_")}
  assert public == {name for name, _ in _CALLS}


@pytest.mark.parametrize("name", [name for name, _ in _CALLS])
def test_nothing_clipped(name, tmp_path, monkeypatch):
  captured = []
  monkeypatch.setattr(figures, "_save", lambda fig, path, **kw: captured.append(fig))
  dict(_CALLS)[name](tmp_path / f"{name}.png")
  (fig,) = captured
  extents = []
  draw = matplotlib.text.Text.draw

  def recording_draw(self, renderer):
    draw(self, renderer)
    if self.get_visible() and self.get_text().strip():
      extents.append((self.get_text(), self.get_window_extent(renderer)))

  monkeypatch.setattr(matplotlib.text.Text, "draw", recording_draw)
  FigureCanvasAgg(fig).draw()
  box = fig.bbox
  assert extents, "no text drawn"
  for text, e in extents:
    assert (e.x0 >= box.x0 - 1 and e.y0 >= box.y0 - 1 and e.x1 <= box.x1 + 1
            and e.y1 <= box.y1 + 1), f"{name}: {text!r} at {e} outside the figure {box}"
  plt.close(fig)


# -- New figure functions write PNGs --------------------------------------------------------------


def _read_png(path):
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
  assert float(image[..., :3].std()) > 0.01
  return image


def test_plot_contour_overlays_writes_png(tmp_path):
  images, truths, rng = _slices(3)
  preds = {"BCE": [rng.random(t.shape) for t in truths], "Tversky": truths}
  path = tmp_path / "contours.png"
  figures.plot_contour_overlays(path, images, truths, preds, row_titles=["a", "b", "c"])
  _read_png(path)
  # Slices without a crossing (empty truth, constant prediction) are drawn without contours.
  figures.plot_contour_overlays(tmp_path / "empty.png", images[:1], [np.zeros((14, 10))],
                                {"BCE": [np.zeros((14, 10))]})
  _read_png(tmp_path / "empty.png")
  with pytest.raises(ValueError, match="rows"):
    figures.plot_contour_overlays(tmp_path / "x.png", images, truths, {"BCE": truths[:1]})
  with pytest.raises(ValueError, match="shape"):
    figures.plot_contour_overlays(tmp_path / "x.png", images, [np.zeros((3, 3))] * 3, {})
  with pytest.raises(ValueError, match="row_titles"):
    figures.plot_contour_overlays(tmp_path / "x.png", images, truths, {}, row_titles=["a"])
  with pytest.raises(ValueError, match="images"):
    figures.plot_contour_overlays(tmp_path / "x.png", [], [], {})


def test_plot_metric_vs_parameter_writes_png(tmp_path):
  est = {"dice": [stats.Estimate(0.7, 0.6, 0.8, 10), stats.Estimate(0.75, 0.7, 0.8, 10)],
         "recall": [stats.Estimate(0.6, 0.5, 0.7, 10), stats.Estimate(0.8, 0.7, 0.85, 10)]}
  path = tmp_path / "sweep.png"
  figures.plot_metric_vs_parameter(path, [0.3, 0.7], est, parameter_label="Tversky α",
                                   baselines={"dice": stats.Estimate(0.72, 0.65, 0.79, 10)})
  _read_png(path)
  with pytest.raises(ValueError, match="parameters"):
    figures.plot_metric_vs_parameter(tmp_path / "x.png", [0.3], est, parameter_label="α")
  with pytest.raises(ValueError, match="empty"):
    figures.plot_metric_vs_parameter(tmp_path / "x.png", [0.3], {}, parameter_label="α")
