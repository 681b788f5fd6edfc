"""Region (overlap) losses: soft Dice and Tversky.

Both losses are computed from per-class soft confusion counts over the spatial
axes (and, with ``batch=True``, over the batch axis too):

.. math::
  TP_c = \\sum_i p_{i,c} t_{i,c}, \\quad
  FP_c = \\sum_i p_{i,c} (1 - t_{i,c}), \\quad
  FN_c = \\sum_i (1 - p_{i,c}) t_{i,c}

where :math:`p` are the probabilities obtained from the logits (softmax over
the channel axis, or an element-wise sigmoid) and :math:`t` are one-hot or
binary targets.

Conventions (see ``docs/developing.md``):

* logits are channels-last ``(batch, *spatial, classes)``;
* labels are either an integer map ``(batch, *spatial)`` (one-hot encoded
  here with ``classes`` classes; for a single sigmoid channel it is the binary
  foreground mask) or a one-hot / binary / soft map with the logits' shape;
  integer values outside ``[0, classes)`` (outside ``{0, 1}`` for a single
  channel) raise a ``ValueError`` when the labels are concrete; under ``jit``
  the check cannot run and they become all-zero target rows (they still count
  as predicted false positives; a single-channel integer mask is used as
  given);
* the default return value holds one loss per example, shape ``(batch,)``;
  ``reduction="none"`` returns ``(batch, classes)``;
* ``batch=True`` pools the counts over the batch (MONAI's "batch Dice"): the
  loss is then one number per class for the whole batch, broadcast to every
  example so that the returned shape is unchanged and ``jnp.mean`` of the
  result is the batch loss.  Note that under data parallelism the pooling only
  covers the examples one device sees.

References:
  Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric
  Medical Image Segmentation", 3DV 2016.
  Salehi et al., "Tversky loss function for image segmentation using 3D fully
  convolutional deep networks", MLMI 2017.
  MONAI ``DiceLoss`` / ``TverskyLoss``; optax ``optax.losses.dice_loss``.
"""

from typing import Optional

import jax
import jax.numpy as jnp

from jaxseg.losses import _checks

_ACTIVATIONS = ("softmax", "sigmoid", "none")
_REDUCTIONS = ("mean", "sum", "none")


def _probs_and_targets(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    activation: str,
) -> tuple[jax.Array, jax.Array]:
  """Returns ``(probs, targets)``, both ``(batch, *spatial, C)``."""
  logits = jnp.asarray(logits)
  labels = jnp.asarray(labels)
  if activation not in _ACTIVATIONS:
    raise ValueError(
        f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
  if logits.ndim < 3:
    raise ValueError(
        "logits must be channels-last (batch, *spatial, classes) with at least "
        f"one spatial axis; got shape {logits.shape}.")
  if logits.size == 0:
    raise ValueError(f"logits must not be empty; got shape {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be floating point, got {logits.dtype}.")
  num_classes = logits.shape[-1]
  if activation == "softmax" and num_classes < 2:
    raise ValueError(
        "softmax over a single channel is constant; use activation='sigmoid' "
        "for a single-channel (binary) output.")

  if labels.shape == logits.shape:
    _checks.check_binary_mask(labels)  # Integer one-hot / multi-hot maps.
    targets = labels.astype(logits.dtype)
  elif labels.shape == logits.shape[:-1]:
    if num_classes == 1:
      _checks.check_binary_mask(labels)
      targets = labels.astype(logits.dtype)[..., None]
    else:
      _checks.check_class_indices(labels, num_classes)
      targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  else:
    raise ValueError(
        f"labels must have shape {logits.shape} (one-hot / binary) or "
        f"{logits.shape[:-1]} (integer map); got {labels.shape}.")

  if activation == "softmax":
    probs = jax.nn.softmax(logits, axis=-1)
  elif activation == "sigmoid":
    probs = jax.nn.sigmoid(logits)
  else:
    probs = logits
  return probs, targets


def _confusion(
    probs: jax.Array, targets: jax.Array, batch: bool
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Soft TP, FP, FN per (example, class), or per class if ``batch``."""
  axes = tuple(range(0 if batch else 1, probs.ndim - 1))
  tp = jnp.sum(probs * targets, axis=axes)
  fp = jnp.sum(probs * (1.0 - targets), axis=axes)
  fn = jnp.sum((1.0 - probs) * targets, axis=axes)
  return tp, fp, fn


def _select_and_reduce(
    per_class: jax.Array,
    batch_size: int,
    include_background: bool,
    reduction: str,
) -> jax.Array:
  """Drops channel 0 if asked, broadcasts batch values, reduces classes."""
  if not include_background:
    per_class = per_class[..., 1:]
  if per_class.ndim == 1:  # Pooled over the batch: one value per class.
    per_class = jnp.broadcast_to(per_class, (batch_size,) + per_class.shape)
  if reduction == "mean":
    return jnp.mean(per_class, axis=-1)
  if reduction == "sum":
    return jnp.sum(per_class, axis=-1)
  return per_class


def _check_common(
    num_classes: int, include_background: bool, reduction: str
) -> None:
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
  if not include_background and num_classes < 2:
    raise ValueError(
        "include_background=False drops channel 0, which leaves no channel "
        "for a single-channel output; keep include_background=True (with a "
        "sigmoid output, channel 0 is the foreground).")


def soft_dice_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    include_background: bool = True,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    reduction: str = "mean",
) -> jax.Array:
  r"""Soft Dice loss (MONAI ``DiceLoss`` semantics), channels-last.

  For every class :math:`c` (and every example unless ``batch=True``):

  .. math::
    L_c = 1 - \frac{2 \sum_i p_{i,c} t_{i,c} + s_{nr}}
                   {\sum_i p_{i,c} + \sum_i t_{i,c} + s_{dr}}

  then the class values are averaged (``reduction="mean"``), summed
  (``"sum"``) or returned as they are (``"none"``).

  Relation to optax: ``optax.losses.dice_loss(logits, targets, smooth=s)``
  (with its default :math:`\alpha = \beta = 0.5`) equals this loss with
  ``smooth_nr = smooth_dr = 2 s`` (optax applies softmax for more than one
  channel and a sigmoid for one; ``ignore_background`` is
  ``include_background=False``).  Seed 001 (Saha et al.) uses
  :math:`1 - 2\sum y p / (\sum (y + p) + \epsilon)` over the foreground
  channels: ``include_background=False, smooth_nr=0, smooth_dr=eps``.

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.  Integer
      values outside ``[0, classes)`` raise a ``ValueError`` when concrete and
      become all-zero target rows under ``jit`` (see the module docstring).
    activation: ``"softmax"`` (mutually exclusive classes, needs at least two
      channels), ``"sigmoid"`` (independent channels) or ``"none"`` (inputs
      already are probabilities).
    include_background: if False, channel 0 is left out (also with a sigmoid,
      as in MONAI).
    smooth_nr: constant added to the numerator; with ``smooth_nr > 0`` a class
      that is absent from both target and prediction scores loss 0.
    smooth_dr: constant added to the denominator; keep it > 0 unless every
      class is present in every example (0/0 otherwise gives NaN).
    batch: if True, pool the sums over the batch before the ratio ("batch
      Dice"); the per-class batch values are broadcast over the examples.
    reduction: ``"mean"`` | ``"sum"`` over classes, or ``"none"``.

  Returns:
    ``(batch,)`` loss values, or ``(batch, classes_kept)`` for
    ``reduction="none"``.

  References:
    Milletari et al., V-Net, 3DV 2016; MONAI ``DiceLoss``.
  """
  probs, targets = _probs_and_targets(logits, labels, activation)
  _check_common(probs.shape[-1], include_background, reduction)
  for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
    if isinstance(value, (int, float)) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  tp, fp, fn = _confusion(probs, targets, batch)
  # sum(p) + sum(t) = 2 TP + FP + FN.
  dice = (2.0 * tp + smooth_nr) / (2.0 * tp + fp + fn + smooth_dr)
  return _select_and_reduce(
      1.0 - dice, probs.shape[0], include_background, reduction)


def tversky_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: float = 0.5,
    beta: Optional[float] = None,
    smooth: float = 1.0,
    activation: str = "sigmoid",
    include_background: bool = True,
    batch: bool = True,
    reduction: str = "mean",
) -> jax.Array:
  r"""Tversky loss; ``alpha`` weights false positives, ``beta`` false negatives.

  .. math::
    T_c = \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}, \qquad
    L_c = 1 - T_c

  with :math:`TP_c = \sum p t`, :math:`FP_c = \sum p (1 - t)`,
  :math:`FN_c = \sum (1 - p) t`.  **alpha multiplies the false positives**:
  raising it penalises predicting extra foreground (favouring precision),
  raising beta penalises missed foreground (favouring recall).  Several
  libraries have shipped the two swapped; this follows Salehi et al. and
  optax (``optax.losses.dice_loss(alpha=..., beta=...)`` equals this loss with
  ``batch=False``).

  With :math:`\alpha = \beta = 1/2`, :math:`T_c = (2 TP_c + 2s) /
  (\sum p + \sum t + 2s)`, i.e. :func:`soft_dice_loss` with
  ``smooth_nr = smooth_dr = 2 * smooth``.

  Defaults follow seed 002 (Tversky vs BCE on the prostate gland): a single
  sigmoid channel, ``smooth = 1``, ``beta = 1 - alpha``, and the counts pooled
  over the **whole batch** (``batch=True``): the study computes one Tversky
  index for the flattened batch, not a mean of per-image indices.  The batch
  value is broadcast to every example (see the module docstring).

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.  Integer
      values outside ``[0, classes)`` raise a ``ValueError`` when concrete and
      become all-zero target rows under ``jit`` (see the module docstring).
    alpha: weight of the false positives, >= 0 (a Python number or a scalar
      array, so that a sweep can ``vmap`` over it).
    beta: weight of the false negatives, >= 0; ``None`` means ``1 - alpha``.
    smooth: constant added to numerator and denominator, >= 0.
    activation: ``"sigmoid"``, ``"softmax"`` or ``"none"``.
    include_background: if False, channel 0 is left out.
    batch: pool the counts over the batch (default True, seed 002).
    reduction: ``"mean"`` | ``"sum"`` over classes, or ``"none"``.

  Returns:
    ``(batch,)`` loss values, or ``(batch, classes_kept)`` for
    ``reduction="none"``.

  References:
    Salehi et al., "Tversky loss function for image segmentation using 3D
    fully convolutional deep networks", MLMI 2017.
  """
  if beta is None:
    beta = 1.0 - alpha
  for name, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
    if isinstance(value, (int, float)) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  probs, targets = _probs_and_targets(logits, labels, activation)
  _check_common(probs.shape[-1], include_background, reduction)
  tp, fp, fn = _confusion(probs, targets, batch)
  index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
  return _select_and_reduce(
      1.0 - index, probs.shape[0], include_background, reduction)
