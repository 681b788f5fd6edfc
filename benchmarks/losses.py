"""Parity and speed of jaxseg's losses and metrics against MONAI's, on the same inputs.

Every loss and metric that MONAI also has is computed by both libraries on the same arrays, with
arguments chosen so that the two follow the same convention (MONAI is channels-first, jaxseg
channels-last; the values are compared element by element after transposing). The table gives the
largest absolute difference, whether it is within ``--atol`` (1e-5), the convention used, and the
time ratio MONAI / jaxseg (median of ``--repeats`` runs after a warm-up; > 1 means jaxseg is
faster). Losses are timed as value *and* gradient with respect to the logits (what a train step
pays): ``jax.jit(jax.value_and_grad(...))`` against MONAI's forward + ``backward()``; metrics as
values (jaxseg's overlap metrics jitted; its surface metrics are host NumPy/SciPy, like MONAI's).

Rows where the two libraries *define* a value differently are kept, with the reason, instead of
being dropped: the empty-mask conventions of the Dice metric (REFERENCE "Conventions": jaxseg
returns NaN only when a class is absent from both masks, and 0 when it is absent from the truth but
predicted; MONAI's ``ignore_empty=True`` returns NaN whenever the truth is empty).

Inputs: ``--batch`` x ``--size`` x ``--size`` logits with ``--classes`` channels, N(0, 3^2), and
uniform labels (NumPy seed ``--seed``); the metric rows use the argmax prediction against labels
in which one class is absent from the truth but predicted (case 0) and one class is absent from
both (case 1). The HD95 row uses the 160 x 160 x 20 random-ellipsoid pair of ``benchmarks/hd95.py``
with spacing (0.5, 0.5, 3.0) mm.

Needs the optional ``bench`` extra (PyTorch + MONAI), see ``benchmarks/README.md``.

Usage::

  python -m benchmarks.losses                      # batch 4, 128 x 128, 9 classes, 7 repeats
  python -m benchmarks.losses --repeats 2 --size 64   # quick check
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
import warnings
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass
class Row:
  """One comparison: values from both libraries (same layout) and timing closures."""

  name: str
  convention: str
  jax_value: Callable[[], np.ndarray]
  monai_value: Callable[[], np.ndarray]
  jax_timed: Callable[[], Any]
  monai_timed: Callable[[], Any]
  expect_equal: bool = True
  note: str = ""


def _median_time(fn: Callable[[], Any], repeats: int) -> float:
  fn()  # warm-up (and compilation)
  times = []
  for _ in range(repeats):
    tic = time.perf_counter()
    fn()
    times.append(time.perf_counter() - tic)
  return statistics.median(times)


def build_rows(args) -> list[Row]:
  import jax
  import jax.numpy as jnp
  import torch
  from monai import losses as ml
  from monai import metrics as mm

  from benchmarks.hd95 import SPACING, random_ellipsoid
  from jaxseg import losses as jl
  from jaxseg.metrics import overlap, surface

  torch.set_num_threads(args.threads)
  rng = np.random.default_rng(args.seed)
  b, s, c = args.batch, args.size, args.classes
  logits = (3.0 * rng.normal(size=(b, s, s, c))).astype(np.float32)
  labels = rng.integers(0, c, size=(b, s, s)).astype(np.int32)
  bin_logits = (3.0 * rng.normal(size=(b, s, s, 1))).astype(np.float32)
  bin_labels = (rng.random((b, s, s)) < 0.3).astype(np.float32)
  alpha = np.linspace(0.05, 1.0, c).astype(np.float32)  # per-class weights

  z_j, y_j = jnp.asarray(logits), jnp.asarray(labels)
  zb_j, yb_j = jnp.asarray(bin_logits), jnp.asarray(bin_labels)
  z_t = torch.from_numpy(logits).permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)
  y_t = torch.from_numpy(labels).long()[:, None]  # (B, 1, H, W) for to_onehot_y
  zb_t = torch.from_numpy(bin_logits).permute(0, 3, 1, 2).contiguous()
  yb_t = torch.from_numpy(bin_labels)[:, None]

  def chw_to_last(x):  # MONAI (B, C, *spatial) -> channels-last NumPy
    return np.moveaxis(x.detach().numpy(), 1, -1)

  def loss_row(name, convention, jax_fn, jax_args, monai_fn, monai_args, to_jax_layout, **kw):
    """``jax_fn(z, y) -> values``, ``monai_fn(z, y) -> values``; timed with their gradients."""
    zj, yj = jax_args
    zt, yt = monai_args
    value = jax.jit(jax_fn)
    grad = jax.jit(jax.value_and_grad(lambda z: jnp.mean(jax_fn(z, yj))))

    def monai_grad():
      leaf = zt.detach().clone().requires_grad_(True)
      out = monai_fn(leaf, yt).mean()
      out.backward()
      return out

    return Row(name, convention,
               jax_value=lambda: np.asarray(value(zj, yj)),
               monai_value=lambda: to_jax_layout(monai_fn(zt, yt)),
               jax_timed=lambda: jax.block_until_ready(grad(zj)),
               monai_timed=monai_grad, **kw)

  rows = []
  # -- Dice ---------------------------------------------------------------------------------
  dice_m = ml.DiceLoss(softmax=True, to_onehot_y=True, reduction="none")
  rows.append(loss_row(
      "Dice loss, softmax, per image, all classes",
      "smooth_nr = smooth_dr = 1e-5; (batch, class) values",
      lambda z, y: jl.soft_dice_loss(z, y, reduction="none"), (z_j, y_j),
      lambda z, y: dice_m(z, y), (z_t, y_t), lambda v: v.detach().numpy()[..., 0, 0]))
  dice_fg_batch = ml.DiceLoss(softmax=True, to_onehot_y=True, include_background=False,
                              batch=True, reduction="none")
  rows.append(loss_row(
      "Dice loss, softmax, foreground, batch Dice",
      "include_background=False, batch=True; per-class values",
      lambda z, y: jl.soft_dice_loss(z, y, include_background=False, batch=True,
                                     reduction="none")[0], (z_j, y_j),
      lambda z, y: dice_fg_batch(z, y), (z_t, y_t), lambda v: v.detach().numpy().reshape(-1)))
  dice_sig = ml.DiceLoss(sigmoid=True, reduction="none")
  rows.append(loss_row(
      "Dice loss, sigmoid, 1 channel",
      "activation='sigmoid'; per-image values",
      lambda z, y: jl.soft_dice_loss(z, y, activation="sigmoid", reduction="none"), (zb_j, yb_j),
      lambda z, y: dice_sig(z, y), (zb_t, yb_t), lambda v: v.detach().numpy()[..., 0, 0]))
  # -- Tversky ------------------------------------------------------------------------------
  tv_sig = ml.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7, smooth_nr=1.0, smooth_dr=1.0,
                          batch=True, reduction="none")
  rows.append(loss_row(
      "Tversky loss, sigmoid, batch (seed 002)",
      "alpha=0.3 weights FP, beta=0.7 FN (both libraries); smooth 1; batch=True",
      lambda z, y: jl.tversky_loss(z, y, alpha=0.3, beta=0.7, smooth=1.0, reduction="none")[0],
      (zb_j, yb_j), lambda z, y: tv_sig(z, y), (zb_t, yb_t),
      lambda v: v.detach().numpy().reshape(-1)))
  tv_soft = ml.TverskyLoss(softmax=True, to_onehot_y=True, include_background=False, alpha=0.7,
                           beta=0.3, smooth_nr=1e-5, smooth_dr=1e-5, reduction="none")
  rows.append(loss_row(
      "Tversky loss, softmax, per image, foreground",
      "alpha=0.7, beta=0.3, smooth 1e-5, include_background=False, batch=False",
      lambda z, y: jl.tversky_loss(z, y, alpha=0.7, beta=0.3, smooth=1e-5, activation="softmax",
                                   include_background=False, batch=False, reduction="none"),
      (z_j, y_j), lambda z, y: tv_soft(z, y), (z_t, y_t), lambda v: v.detach().numpy()))
  # -- Focal ---------------------------------------------------------------------------------
  focal_sig = ml.FocalLoss(alpha=0.25, gamma=2.0, reduction="none")
  rows.append(loss_row(
      "Focal loss, sigmoid (alpha 0.25, gamma 2)",
      "per-pixel values; alpha_t = alpha y + (1 - alpha)(1 - y)",
      lambda z, y: jl.sigmoid_focal_loss(z, y, alpha=0.25, gamma=2.0, reduction="none"),
      (zb_j, yb_j[..., None]), lambda z, y: focal_sig(z, y), (zb_t, yb_t), chw_to_last))
  focal_soft = ml.FocalLoss(use_softmax=True, to_onehot_y=True, alpha=alpha.tolist(), gamma=2.0,
                            reduction="none")
  rows.append(loss_row(
      "Focal loss, softmax, class weights (seed 001)",
      "sum over classes of alpha_c y_c (1-p_c)^2 (-log p_c), mean over pixels: (batch,) "
      "values; MONAI alpha=[...], reduction='none', summed over classes",
      lambda z, y: jl.softmax_focal_loss(z, y, alpha=alpha, gamma=2.0), (z_j, y_j),
      lambda z, y: focal_soft(z, y).sum(1), (z_t, y_t),
      lambda v: v.detach().numpy().mean(axis=(1, 2)),
      note="per pixel the two differ by up to ~1.3e-6 relative (float32 rounding of jaxseg's "
      "exact log(1 - p_c) (log1p(-p_c) below 1/2, a log-sum-exp of the other classes for the "
      "arg-max), which MONAI computes as "
      "log(1 - exp(log p_c)))"))
  # -- DiceCE --------------------------------------------------------------------------------
  dice_ce = ml.DiceCELoss(softmax=True, to_onehot_y=True)

  def jax_dice_ce(z, y):
    return (jnp.mean(jl.soft_dice_loss(z, y)) + jnp.mean(jl.softmax_cross_entropy(z, y)))[None]

  rows.append(loss_row(
      "DiceCE loss (softmax Dice + CE)",
      "jaxseg: mean(soft_dice_loss) + mean(softmax_cross_entropy) (composed); lambdas 1",
      jax_dice_ce, (z_j, y_j), lambda z, y: dice_ce(z, y)[None], (z_t, y_t),
      lambda v: v.detach().numpy().reshape(-1)))

  # -- Confusion-matrix metrics --------------------------------------------------------------
  pred = logits.argmax(-1).astype(np.int32)
  truth = labels.copy()
  truth[0][truth[0] == c - 1] = 0  # case 0: class C-1 absent from the truth, but predicted
  pred[1][pred[1] == c - 2] = 0  # case 1: class C-2 absent from both
  truth[1][truth[1] == c - 2] = 0
  pred_t = torch.nn.functional.one_hot(torch.from_numpy(pred).long(), c).permute(0, 3, 1, 2)
  truth_t = torch.nn.functional.one_hot(torch.from_numpy(truth).long(), c).permute(0, 3, 1, 2)
  cm_fn = jax.jit(lambda p, t: overlap.confusion_matrix(p, t, num_classes=c, axis=(1, 2)))
  p_j, t_j = jnp.asarray(pred), jnp.asarray(truth)

  def jax_counts():
    cm = np.asarray(cm_fn(p_j, t_j), np.int64)
    tp = np.diagonal(cm, axis1=-2, axis2=-1)
    fp, fn = cm.sum(-2) - tp, cm.sum(-1) - tp
    tn = s * s - tp - fp - fn
    return np.stack([tp, fp, tn, fn], -1)

  def monai_cm():
    return mm.get_confusion_matrix(pred_t, truth_t, include_background=True)

  rows.append(Row(
      "Confusion counts TP/FP/TN/FN", "per (case, class); MONAI get_confusion_matrix",
      jax_value=jax_counts, monai_value=lambda: monai_cm().numpy().astype(np.int64),
      jax_timed=lambda: jax.block_until_ready(cm_fn(p_j, t_j)), monai_timed=monai_cm))

  def jax_metric(fn, **kw):
    f = jax.jit(lambda p, t: fn(overlap.confusion_matrix(p, t, num_classes=c, axis=(1, 2)), **kw))
    return (lambda: np.asarray(f(p_j, t_j)), lambda: jax.block_until_ready(f(p_j, t_j)))

  for label, fn, monai_name in (("Precision", overlap.precision_from_confusion, "precision"),
                                ("Recall (sensitivity)", overlap.recall_from_confusion,
                                 "sensitivity"),
                                ("Dice = F1 (hard)", overlap.dice_from_confusion, "f1 score")):
    value, timed = jax_metric(fn)
    rows.append(Row(
        label, f"per (case, class); MONAI compute_confusion_matrix_metric('{monai_name}'); "
        "0/0 -> NaN in both",
        jax_value=value,
        monai_value=lambda n=monai_name: mm.compute_confusion_matrix_metric(n, monai_cm()).numpy(),
        jax_timed=timed,
        monai_timed=lambda n=monai_name: mm.compute_confusion_matrix_metric(n, monai_cm())))

  dice_keep = mm.DiceMetric(include_background=True, reduction="none", ignore_empty=False)
  value, timed = jax_metric(overlap.dice_from_confusion, empty="one")
  rows.append(Row(
      "Dice metric, empty='one' vs ignore_empty=False",
      "both empty -> 1, truth empty & predicted -> 0 (same in both)",
      jax_value=value, monai_value=lambda: dice_keep(pred_t, truth_t).numpy(),
      jax_timed=timed, monai_timed=lambda: dice_keep(pred_t, truth_t)))
  dice_ignore = mm.DiceMetric(include_background=True, reduction="none", ignore_empty=True)
  value, timed = jax_metric(overlap.dice_from_confusion, empty="nan")
  rows.append(Row(
      "Dice metric, empty='nan' vs ignore_empty=True", "documented difference",
      jax_value=value, monai_value=lambda: dice_ignore(pred_t, truth_t).numpy(),
      jax_timed=timed, monai_timed=lambda: dice_ignore(pred_t, truth_t), expect_equal=False,
      note="truth empty but predicted: jaxseg 0 (a false positive is an error), MONAI NaN"))

  # -- HD95 ----------------------------------------------------------------------------------
  erng = np.random.default_rng(args.seed)
  a, bmask = random_ellipsoid(erng), random_ellipsoid(erng)
  hd_metric = mm.HausdorffDistanceMetric(include_background=False, percentile=95,
                                         reduction="none")
  onehot = lambda m: torch.from_numpy(np.stack([~m, m])[None].astype(np.float32))  # noqa: E731
  a_t, b_t = onehot(a), onehot(bmask)

  def monai_hd():
    return hd_metric(a_t, b_t, spacing=list(SPACING))

  rows.append(Row(
      "HD95, 160x160x20 pair, spacing (0.5, 0.5, 3) mm",
      "hausdorff_distance(connectivity=1) vs HausdorffDistanceMetric(percentile=95)",
      jax_value=lambda: np.array([surface.hausdorff_distance(a, bmask, spacing=SPACING,
                                                             connectivity=1)]),
      monai_value=lambda: monai_hd().numpy().reshape(-1),
      jax_timed=lambda: surface.hausdorff_distance(a, bmask, spacing=SPACING, connectivity=1),
      monai_timed=monai_hd,
      note="MONAI's distances are float32, jaxseg's float64"))
  return rows


def compare(jv: np.ndarray, mv: np.ndarray, atol: float) -> tuple[float, bool, int]:
  """Largest |difference| over entries defined in both; equal if NaN patterns match too."""
  jv, mv = np.asarray(jv, np.float64), np.asarray(mv, np.float64)
  if jv.shape != mv.shape:
    raise ValueError(f"shape mismatch: jaxseg {jv.shape} vs MONAI {mv.shape}")
  both = ~np.isnan(jv) & ~np.isnan(mv)
  diff = float(np.max(np.abs(jv[both] - mv[both]))) if both.any() else 0.0
  nan_mismatch = int(np.sum(np.isnan(jv) != np.isnan(mv)))
  return diff, diff <= atol and nan_mismatch == 0, nan_mismatch


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--size", type=int, default=128)
  parser.add_argument("--classes", type=int, default=9)
  parser.add_argument("--repeats", type=int, default=7)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--atol", type=float, default=1e-5)
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  args = parser.parse_args(argv)
  if args.classes < 3:
    parser.error("--classes must be >= 3 (the metric rows empty two classes)")
  if min(args.batch, args.size, args.repeats, args.threads) < 1:
    parser.error("batch, size, repeats and threads must be >= 1")
  if args.batch < 2:
    parser.error("--batch must be >= 2 (the metric rows use two cases)")
  try:
    import monai  # noqa: F401
    import torch  # noqa: F401
  except ImportError:
    raise SystemExit("PyTorch and MONAI are needed: install the bench extra (see "
                     "benchmarks/README.md).")
  import monai as _monai
  import torch as _torch

  warnings.filterwarnings("ignore")
  print(f"jaxseg vs MONAI {_monai.__version__} (torch {_torch.__version__}); logits "
        f"{args.batch} x {args.size} x {args.size} x {args.classes}; {args.threads} threads; "
        f"median of {args.repeats}; losses timed as value + gradient")
  print()
  print("| function | convention | max abs diff | equal (atol "
        f"{args.atol:g}) | jaxseg ms | MONAI ms | MONAI / jaxseg |")
  print("|---|---|---:|:---:|---:|---:|---:|")
  failures = []
  for row in build_rows(args):
    diff, equal, nan_mismatch = compare(row.jax_value(), row.monai_value(), args.atol)
    t_j = _median_time(row.jax_timed, args.repeats)
    t_m = _median_time(row.monai_timed, args.repeats)
    if row.expect_equal:
      verdict = "yes" if equal else "**NO**"
      if not equal:
        failures.append(row.name)
    else:
      verdict = f"differs by design: {nan_mismatch} entries ({row.note})"
    convention = row.convention + (f"; {row.note}" if row.note and row.expect_equal else "")
    print(f"| {row.name} | {convention} | {diff:.1e} | {verdict} | {t_j * 1e3:.2f} | "
          f"{t_m * 1e3:.2f} | {t_m / t_j:.1f}x |", flush=True)
  print()
  if failures:
    print(f"MISMATCH in {len(failures)} row(s): {', '.join(failures)}")
    raise SystemExit(1)
  print("all rows that share a convention agree within the tolerance")


if __name__ == "__main__":
  main()
