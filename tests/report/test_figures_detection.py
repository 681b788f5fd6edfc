"""Calibration and detection figures of jaxseg.report.figures: files written, bad input refused."""

import matplotlib.image
import numpy as np
import pytest

from jaxseg.metrics import calibration, detection
from jaxseg.report import figures


def _read_png(path):
  image = matplotlib.image.imread(path)
  assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50
  assert float(image[..., :3].std()) > 0.01  # not a blank canvas
  return image


def test_probability_histograms(tmp_path):
  rng = np.random.default_rng(0)
  values = {"CE": {"TZ": rng.beta(5, 1, 500), "PZ": rng.beta(8, 1, 300)},
            "focal": {"TZ": rng.beta(2, 2, 500), "PZ": np.zeros(0)}}
  path = tmp_path / "hist.png"
  figures.plot_probability_histograms(values, path, title="t")
  _read_png(path)
  with pytest.raises(ValueError, match="empty"):
    figures.plot_probability_histograms({}, tmp_path / "x.png")
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    figures.plot_probability_histograms({"CE": {"TZ": np.array([0.5, 1.5])}}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="bins"):
    figures.plot_probability_histograms(values, tmp_path / "x.png", bins=0)


def test_froc_curves_with_bands(tmp_path):
  rng = np.random.default_rng(1)
  cases = [detection.LesionMatches([(bool(rng.random() < 0.4), float(rng.random()))
                                    for _ in range(4)], 1) for _ in range(10)]
  f = detection.froc(cases)
  grid = np.geomspace(0.05, 4.0, 30)
  curves = {"CE": {"fp_per_case": f["fp_per_case"], "sensitivity": f["sensitivity"],
                   "band_fp": grid, "band_low": np.zeros(30), "band_high": np.full(30, 0.8)},
            "focal": {"fp_per_case": f["fp_per_case"], "sensitivity": f["sensitivity"] * 0.5}}
  for log_x in (True, False):
    path = tmp_path / f"froc_{log_x}.png"
    figures.plot_froc_curves(curves, path, log_x=log_x)
    _read_png(path)
  with pytest.raises(ValueError, match="equal length"):
    figures.plot_froc_curves({"CE": {"fp_per_case": np.zeros(3), "sensitivity": np.zeros(2)}},
                             tmp_path / "x.png")
  with pytest.raises(ValueError, match="band"):
    figures.plot_froc_curves({"CE": {**curves["CE"], "band_low": np.zeros(3)}}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="fp_range"):
    figures.plot_froc_curves(curves, tmp_path / "x.png", fp_range=(2.5, 0.1))
  with pytest.raises(ValueError, match="empty"):
    figures.plot_froc_curves({}, tmp_path / "x.png")


def test_reliability_diagrams(tmp_path):
  rng = np.random.default_rng(2)
  probs = rng.dirichlet(np.ones(3), size=(20, 20))
  labels = rng.integers(0, 3, (20, 20))
  d = calibration.reliability_diagram(probs, labels, num_bins=10)
  path = tmp_path / "rel.png"
  figures.plot_reliability_diagrams({"CE": d, "focal": d}, path, ece={"CE": 0.1}, title="t")
  _read_png(path)
  bad = {**d, "counts": d["counts"][:-1]}
  with pytest.raises(ValueError, match="bin_edges"):
    figures.plot_reliability_diagrams({"CE": bad}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="empty"):
    figures.plot_reliability_diagrams({}, tmp_path / "x.png")


def test_probability_overlays(tmp_path):
  rng = np.random.default_rng(3)
  images = [rng.normal(size=(16, 12)) for _ in range(2)]
  maps = {"CE": [rng.random((16, 12)) for _ in range(2)],
          "focal": [rng.random((16, 12)) for _ in range(2)]}
  masks = [np.zeros((16, 12), bool), np.zeros((16, 12), bool)]
  masks[0][4:8, 4:8] = True
  path = tmp_path / "ov.png"
  figures.plot_probability_overlays(images, maps, path, contours=masks, row_titles=["a", "b"])
  _read_png(path)
  with pytest.raises(ValueError, match="rows"):
    figures.plot_probability_overlays(images, {"CE": maps["CE"][:1]}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="shape"):
    figures.plot_probability_overlays(images, {"CE": [np.zeros((3, 3))] * 2}, tmp_path / "x.png")
  with pytest.raises(ValueError, match="contours"):
    figures.plot_probability_overlays(images, maps, tmp_path / "x.png", contours=masks[:1])
  with pytest.raises(ValueError, match="images"):
    figures.plot_probability_overlays([], maps, tmp_path / "x.png")
