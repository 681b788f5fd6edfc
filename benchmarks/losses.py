"""Parity and speed of jaxseg's losses and metrics against MONAI's, on the same inputs.

Every loss and metric that MONAI also has is computed by both libraries on the same arrays, with
arguments chosen so that the two follow the same convention (MONAI is channels-first, jaxseg
channels-last; the values are compared element by element after transposing). The table gives the
largest absolute difference, whether it is within ``--atol`` (1e-5), the convention used, and the
time ratio MONAI / jaxseg (median of at least ``--repeats`` calls and ``--min-time`` seconds of
calls, after two untimed ones; > 1 means jaxseg is faster). Losses are timed as value *and*
gradient with respect to the logits (what a train step pays):
``jax.jit(jax.value_and_grad(...))`` against MONAI's forward + ``backward()``; metrics as values
(jaxseg's overlap metrics jitted; its surface metrics are host NumPy/SciPy, like MONAI's).
jaxseg runs with its own XLA CPU flags (``jaxseg.cpu_flags.apply``), as its entry points do.

Rows where the two libraries *define* a value differently are kept, with the reason, instead of
being dropped: the empty-mask conventions of the Dice metric (REFERENCE "Conventions": jaxseg
returns NaN only when a class is absent from both masks, and 0 when it is absent from the truth but
predicted; MONAI's ``ignore_empty=True`` returns NaN whenever the truth is empty), and the
cross-entropy term of Dice + CE with ``include_background=False`` (jaxseg drops the class-0 terms,
MONAI's ``DiceCELoss`` keeps them: Project-MONAI/MONAI#6855). Losses MONAI lacks, or composes differently (focal Tversky;
Dice + CE without the background; Dice + softmax focal), are compared with a reference composed from
MONAI's parts, named in the row.

Inputs: ``--batch`` x ``--size`` x ``--size`` logits with ``--classes`` channels, N(0, 3^2), and
uniform labels (NumPy seed ``--seed``); the metric rows use the argmax prediction against labels
in which one class is absent from the truth but predicted (case 0) and one class is absent from
both (case 1). The HD95 row uses the 160 x 160 x 20 random-ellipsoid pair of ``benchmarks/hd95.py``
with spacing (0.5, 0.5, 3.0) mm.

Needs the optional ``bench`` extra (PyTorch + MONAI), see ``benchmarks/README.md``.

Usage::

  python -m benchmarks.losses                      # batch 4, 128 x 128, 9 classes
                                                   # (>= 7 calls and >= 0.5 s per row)
  python -m benchmarks.losses --repeats 2 --size 64   # quick check
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import warnings
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from jaxseg import cpu_flags  # pylint: disable=wrong-import-position

cpu_flags.apply()  # jaxseg's XLA CPU flags, as its entry points set them (before JAX starts)

from benchmarks._machine import cpu_name, load_average  # pylint: disable=wrong-import-position
from benchmarks._timing import median_time  # pylint: disable=wrong-import-position


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


def build_rows(args) -> list[Row]:
  import jax
  import jax.numpy as jnp
  import torch
  from monai import losses as ml
  from monai import metrics as mm

  from benchmarks.hd95 import SPACING, random_ellipsoid
  from jaxseg import losses as jl
  from jaxseg.losses import compound as jc
  from jaxseg.losses import region as jr
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
    # The labels are an argument, not a closed-over constant: XLA would fold the label-only
    # work (one-hot, skeletons) into constants at compile time and time only the rest.
    grad = jax.jit(jax.value_and_grad(lambda z, y: jnp.mean(jax_fn(z, y))))

    def monai_grad():
      leaf = zt.detach().clone().requires_grad_(True)
      out = monai_fn(leaf, yt).mean()
      out.backward()
      return out

    return Row(name, convention,
               jax_value=lambda: np.asarray(value(zj, yj)),
               monai_value=lambda: to_jax_layout(monai_fn(zt, yt)),
               jax_timed=lambda: jax.block_until_ready(grad(zj, yj)),
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
      note="per pixel the two differ by float32 rounding: jaxseg's log(1 - p_y) is exact (for "
      "an integer label map, the log-sum-exp of the other classes minus the true logit, "
      "through a log-sigmoid), MONAI computes log(1 - exp(log p_c))"))
  # -- Focal Tversky (not in MONAI: composed from TverskyLoss) -------------------------------
  rows.append(loss_row(
      "Focal Tversky loss, sigmoid, batch (not in MONAI)",
      "jaxseg focal_tversky_loss(alpha=0.3 FP, beta=0.7 FN, gamma=4/3) vs MONAI "
      "TverskyLoss(alpha=0.3, beta=0.7, smooth 1, batch=True, reduction='none') ** 0.75",
      lambda z, y: jr.focal_tversky_loss(z, y, alpha=0.3, beta=0.7, gamma=4.0 / 3.0,
                                         reduction="none")[0],
      (zb_j, yb_j), lambda z, y: tv_sig(z, y) ** 0.75, (zb_t, yb_t),
      lambda v: v.detach().numpy().reshape(-1)))
  # -- Generalized Dice ----------------------------------------------------------------------
  # Labels with empty classes exercise MONAI's rule (infinite weight -> the example's max).
  labels_e = labels.copy()
  labels_e[0][labels_e[0] == c - 1] = 0  # class C-1 absent from case 0
  labels_e[1][labels_e[1] == c - 2] = 1  # class C-2 absent from case 1
  ye_j = jnp.asarray(labels_e)
  ye_t = torch.from_numpy(labels_e).long()[:, None]
  bin_labels_e = bin_labels.copy()
  bin_labels_e[0] = 0.0  # an empty mask: every weight 0, loss 1 - s_nr / s_dr = 0
  ybe_j, ybe_t = jnp.asarray(bin_labels_e), torch.from_numpy(bin_labels_e)[:, None]
  for w_type, include_bg, batch in (("square", True, False), ("square", False, True),
                                    ("simple", False, False), ("uniform", True, False)):
    gdl_m = ml.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, w_type=w_type,
                                   include_background=include_bg, batch=batch,
                                   reduction="none")
    rows.append(loss_row(
        f"Generalized Dice, softmax, w_type={w_type}, "
        f"{'all classes' if include_bg else 'foreground'}, {'batch' if batch else 'per image'}",
        "empty classes in cases 0 and 1 (weight -> max weight of the example); "
        + ("one pooled value" if batch else "(batch,) values"),
        lambda z, y, w=w_type, ib=include_bg, bt=batch: jr.generalized_dice_loss(
            z, y, weight_type=w, include_background=ib, batch=bt)[:1 if bt else None],
        (z_j, ye_j), lambda z, y, m=gdl_m: m(z, y), (z_t, ye_t),
        lambda v: v.detach().numpy().reshape(-1)))
  gdl_sig = ml.GeneralizedDiceLoss(sigmoid=True, reduction="none")
  rows.append(loss_row(
      "Generalized Dice, sigmoid, 1 channel, one empty mask",
      "w_type=square; case 0 has an empty mask (loss 0 in both)",
      lambda z, y: jr.generalized_dice_loss(z, y, activation="sigmoid"), (zb_j, ybe_j),
      lambda z, y: gdl_sig(z, y), (zb_t, ybe_t), lambda v: v.detach().numpy().reshape(-1)))
  # -- DiceCE --------------------------------------------------------------------------------
  dice_ce = ml.DiceCELoss(softmax=True, to_onehot_y=True)
  rows.append(loss_row(
      "DiceCE loss, softmax, all classes",
      "mean over the batch of dice_ce_loss; lambdas 1",
      lambda z, y: jnp.mean(jc.dice_ce_loss(z, y))[None], (z_j, y_j),
      lambda z, y: dice_ce(z, y)[None], (z_t, y_t), lambda v: v.detach().numpy().reshape(-1)))
  dice_ce_sig = ml.DiceCELoss(sigmoid=True, lambda_dice=0.5, lambda_ce=2.0)
  rows.append(loss_row(
      "DiceCE loss, sigmoid, 1 channel (BCE)",
      "activation='sigmoid', lambda_dice=0.5, lambda_ce=2",
      lambda z, y: jnp.mean(jc.dice_ce_loss(z, y, activation="sigmoid", lambda_dice=0.5,
                                            lambda_ce=2.0))[None], (zb_j, yb_j),
      lambda z, y: dice_ce_sig(z, y)[None], (zb_t, yb_t),
      lambda v: v.detach().numpy().reshape(-1)))
  dice_fg = ml.DiceLoss(softmax=True, to_onehot_y=True, include_background=False)

  def monai_dice_ce_fg(z, y):  # MONAI Dice (foreground) + CE without the class-0 terms
    ce = torch.nn.functional.cross_entropy(z, y[:, 0], reduction="none") * (y[:, 0] != 0)
    return dice_fg(z, y) + ce.mean()

  rows.append(loss_row(
      "DiceCE loss, softmax, include_background=False",
      "composed MONAI reference: DiceLoss(include_background=False) + mean over pixels of "
      "CE * (label != 0) (jaxseg drops the class-0 CE terms)",
      lambda z, y: jnp.mean(jc.dice_ce_loss(z, y, include_background=False))[None], (z_j, y_j),
      lambda z, y: monai_dice_ce_fg(z, y)[None], (z_t, y_t),
      lambda v: v.detach().numpy().reshape(-1)))
  dice_ce_fg_m = ml.DiceCELoss(softmax=True, to_onehot_y=True, include_background=False)
  rows.append(loss_row(
      "DiceCE loss, softmax, include_background=False vs MONAI DiceCELoss", "documented "
      "difference",
      lambda z, y: jnp.mean(jc.dice_ce_loss(z, y, include_background=False))[None], (z_j, y_j),
      lambda z, y: dice_ce_fg_m(z, y)[None], (z_t, y_t),
      lambda v: v.detach().numpy().reshape(-1), expect_equal=False,
      note="MONAI keeps the background in its CE term (Project-MONAI/MONAI#6855)"))
  # -- DiceFocal -----------------------------------------------------------------------------
  dice_focal_sig = ml.DiceFocalLoss(sigmoid=True, gamma=2.0, alpha=0.25)
  rows.append(loss_row(
      "DiceFocal loss, sigmoid, 1 channel",
      "gamma 2, alpha 0.25; mean over the batch of dice_focal_loss",
      lambda z, y: jnp.mean(jc.dice_focal_loss(z, y, activation="sigmoid", gamma=2.0,
                                               alpha=0.25))[None], (zb_j, yb_j),
      lambda z, y: dice_focal_sig(z, y)[None], (zb_t, yb_t),
      lambda v: v.detach().numpy().reshape(-1)))
  dice_focal_fg = ml.DiceFocalLoss(sigmoid=True, to_onehot_y=True, include_background=False,
                                   gamma=2.0)
  rows.append(loss_row(
      "DiceFocal loss, sigmoid, one-hot, foreground",
      "include_background=False drops channel 0 from both terms (both libraries)",
      lambda z, y: jnp.mean(jc.dice_focal_loss(z, y, activation="sigmoid",
                                               include_background=False))[None], (z_j, y_j),
      lambda z, y: dice_focal_fg(z, y)[None], (z_t, y_t),
      lambda v: v.detach().numpy().reshape(-1)))
  focal_soft_all = ml.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=2.0,
                                reduction="none")

  def monai_dice_focal_softmax(z, y):  # MONAI's DiceFocalLoss would use a sigmoid focal term
    return dice_m(z, y).mean() + focal_soft_all(z, y).sum(1).mean()

  rows.append(loss_row(
      "DiceFocal loss, softmax, all classes",
      "composed MONAI reference: DiceLoss(softmax) + FocalLoss(use_softmax=True, "
      "reduction='none') summed over classes, mean over pixels (MONAI's DiceFocalLoss(softmax="
      "True) uses a sigmoid focal term)",
      lambda z, y: jnp.mean(jc.dice_focal_loss(z, y, gamma=2.0))[None], (z_j, y_j),
      lambda z, y: monai_dice_focal_softmax(z, y)[None], (z_t, y_t),
      lambda v: v.detach().numpy().reshape(-1)))

  # -- clDice (MONAI >= 1.5: one ratio per example over the kept channels; its harmonic mean adds
  # `smooth` (1e-4 by default) to the denominator, the paper's does not: 1e-12 here) ----------
  cl_kw = dict(iterations=3, smooth=1.0, batch=False, pool_classes=True)
  cl_monai = dict(iter_=3, smooth_nr=1.0, smooth_dr=1.0, smooth=1e-12)
  onehot_t = torch.nn.functional.one_hot(torch.from_numpy(labels).long(), c).permute(
      0, 3, 1, 2).float()
  cl_soft = ml.SoftclDiceLoss(softmax=True, include_background=False, reduction="none",
                              **cl_monai)
  rows.append(loss_row(
      "soft clDice loss, softmax, foreground, per image",
      "MONAI SoftclDiceLoss(softmax, include_background=False, iter_ 3, smooth_nr = smooth_dr = 1) "
      "vs jaxseg include_background=False, pool_classes=True, smooth 1",
      lambda z, y: jl.soft_cldice_loss(z, y, activation="softmax", include_background=False,
                                       reduction="none", **cl_kw).reshape(-1),
      (z_j, y_j), cl_soft, (z_t, onehot_t), lambda v: v.detach().numpy().reshape(-1)))
  cl_sig = ml.SoftclDiceLoss(sigmoid=True, reduction="none", **cl_monai)
  rows.append(loss_row(
      "soft clDice loss, sigmoid, 1 channel, per image",
      "MONAI SoftclDiceLoss(sigmoid, iter_ 3) vs jaxseg activation='sigmoid'",
      lambda z, y: jl.soft_cldice_loss(z, y, activation="sigmoid", include_background=True,
                                       reduction="none", **cl_kw).reshape(-1),
      (zb_j, yb_j), cl_sig, (zb_t, yb_t), lambda v: v.detach().numpy().reshape(-1)))
  dcl_sig = ml.SoftDiceclDiceLoss(sigmoid=True, alpha=0.5, reduction="mean", **cl_monai)
  rows.append(loss_row(
      "soft Dice + clDice loss (alpha 0.5), sigmoid, 1 channel",
      "MONAI SoftDiceclDiceLoss(sigmoid, alpha 0.5) (batch mean) vs jaxseg dice_cldice_loss; with "
      "several foreground channels MONAI's Dice part is per class, its clDice part pooled",
      lambda z, y: jnp.mean(jl.dice_cldice_loss(z, y, activation="sigmoid", alpha=0.5,
                                                include_background=True, **cl_kw))[None],
      (zb_j, yb_j), lambda z, y: dcl_sig(z, y)[None], (zb_t, yb_t),
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
  parser.add_argument("--repeats", type=int, default=7, help="timed calls per library, at least")
  parser.add_argument("--min-time", type=float, default=0.5,
                      help="seconds of timed calls per library and row, at least (a call of "
                      "0.2-4 ms needs hundreds of calls for a stable median)")
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
        f"median of >= {args.repeats} calls and >= {args.min_time:g} s per library and row; "
        "losses timed as value + gradient")
  print(f"CPU: {cpu_name()}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '(unset)')}; "
        f"load average before: {load_average()}")
  print()
  print("| function | convention | max abs diff | equal (atol "
        f"{args.atol:g}) | jaxseg ms | MONAI ms | MONAI / jaxseg |")
  print("|---|---|---:|:---:|---:|---:|---:|")
  failures, calls = [], []
  for row in build_rows(args):
    diff, equal, nan_mismatch = compare(row.jax_value(), row.monai_value(), args.atol)
    t_j, n_j = median_time(row.jax_timed, args.repeats, args.min_time)
    t_m, n_m = median_time(row.monai_timed, args.repeats, args.min_time)
    calls.append(min(n_j, n_m))
    if row.expect_equal:
      verdict = "yes" if equal else "**NO**"
      if not equal:
        failures.append(row.name)
    else:
      nans = f"{nan_mismatch} NaN entries, " if nan_mismatch else ""
      verdict = f"differs by design: {nans}{row.note}"
    convention = row.convention + (f"; {row.note}" if row.note and row.expect_equal else "")
    print(f"| {row.name} | {convention} | {diff:.1e} | {verdict} | {t_j * 1e3:.2f} | "
          f"{t_m * 1e3:.2f} | {t_m / t_j:.1f}x |", flush=True)
  print()
  print(f"timed calls per library and row: {min(calls)} to {max(calls)}; load average after: "
        f"{load_average()}")
  if failures:
    print(f"MISMATCH in {len(failures)} row(s): {', '.join(failures)}")
    raise SystemExit(1)
  print("all rows that share a convention agree within the tolerance")


if __name__ == "__main__":
  main()
