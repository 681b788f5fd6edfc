"""Region (overlap) losses: soft Dice, generalized Dice, Tversky, focal Tversky.

All are computed from per-class soft confusion counts over the spatial
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
  result is the batch loss.  The pooling covers whatever batch the function is
  given: jaxseg's Trainer jits the step over globally sharded arrays, so under
  ``jit`` with sharded inputs the counts are pooled over the whole **global**
  batch (XLA inserts the cross-device sums); only inside a per-device function
  (``pmap`` / ``shard_map``) would the pooling cover one device's examples.
* bf16 / fp16 logits are promoted to float32 before anything is computed
  (:func:`jaxseg.losses._checks.compute_dtype`), so the losses are float32.

References:
  Milletari et al., "V-Net: Fully Convolutional Neural Networks for Volumetric
  Medical Image Segmentation", 3DV 2016.
  Salehi et al., "Tversky loss function for image segmentation using 3D fully
  convolutional deep networks", MLMI 2017.
  Sudre et al., "Generalised Dice overlap as a deep learning loss function for
  highly unbalanced segmentations", DLMIA 2017.
  Abraham & Khan, "A novel focal Tversky loss function with improved attention
  U-Net for lesion segmentation", ISBI 2019.
  MONAI ``DiceLoss`` / ``GeneralizedDiceLoss`` / ``TverskyLoss``; optax
  ``optax.losses.dice_loss``.
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
  """Returns ``(probs, targets)``, both ``(batch, *spatial, C)``, >= float32."""
  logits = _checks.compute_dtype(logits)
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
  """Soft TP, FP, FN per (example, class), or per class if ``batch``.

  :math:`FP = \\sum p (1 - t) = \\sum p - TP` and :math:`FN = \\sum (1 - p) t = \\sum t - TP`:
  one product and two plain sums over the pixels instead of three products (the same values to
  float32 rounding; fewer passes for XLA:CPU in the forward and the backward pass).
  """
  axes = tuple(range(0 if batch else 1, probs.ndim - 1))
  tp = jnp.sum(probs * targets, axis=axes)
  fp = jnp.sum(probs, axis=axes) - tp
  fn = jnp.sum(targets, axis=axes) - tp
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


_WEIGHT_TYPES = ("square", "simple", "uniform")


def generalized_dice_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    include_background: bool = True,
    weight_type: str = "square",
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
    reduction: str = "mean",
) -> jax.Array:
  r"""Generalized Dice loss (Sudre et al.; MONAI ``GeneralizedDiceLoss``).

  The classes are combined inside one ratio, each weighted by a function of
  its target volume :math:`G_c = \sum_i t_{i,c}`:

  .. math::
    L = 1 - \frac{2 \sum_c w_c \sum_i p_{i,c} t_{i,c} + s_{nr}}
                 {\sum_c w_c \left(\sum_i p_{i,c} + \sum_i t_{i,c}\right)
                  + s_{dr}},
    \qquad
    w_c = \begin{cases} 1 / G_c^2 & \text{"square" (Sudre et al.)} \\
                        1 / G_c & \text{"simple"} \\
                        1 & \text{"uniform"} \end{cases}

  Empty classes (MONAI's rule, reproduced exactly): a class absent from the
  target has :math:`G_c = 0` and an infinite weight; that weight is set to 0
  and then replaced by the **largest finite weight of the same example** (of
  the pooled batch with ``batch=True``), so a false positive of an absent
  class is penalised like one of the rarest present class.  An example whose
  target is empty in every kept channel has all weights 0 and scores
  :math:`1 - s_{nr} / s_{dr}` (0 with the default equal smoothing) whatever
  the prediction, with zero gradient.  The weights are constants for the
  gradient (they depend on the targets only).

  ``reduction``: the classes are already reduced inside the ratio, so there
  is one value per example.  ``"mean"`` (default) and ``"none"`` both return
  it, shape ``(batch,)`` (MONAI's ``reduction="none"`` values); ``"sum"`` has
  no meaning here and raises.

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.  Integer
      values outside ``[0, classes)`` raise a ``ValueError`` when concrete and
      become all-zero target rows under ``jit`` (see the module docstring).
    activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.
    include_background: if False, channel 0 is left out (before the weights
      are computed, as in MONAI).
    weight_type: ``"square"`` (default), ``"simple"`` or ``"uniform"``.
    smooth_nr: constant added to the numerator, >= 0.
    smooth_dr: constant added to the denominator, >= 0.
    batch: pool the sums (and the weights' volumes) over the batch; the one
      batch value is broadcast to every example.
    reduction: ``"mean"`` or ``"none"`` (identical, see above).

  Returns:
    ``(batch,)`` loss values.

  References:
    Sudre et al., "Generalised Dice overlap as a deep learning loss function
    for highly unbalanced segmentations", DLMIA 2017; MONAI
    ``GeneralizedDiceLoss``.
  """
  if weight_type not in _WEIGHT_TYPES:
    raise ValueError(
        f"weight_type must be one of {_WEIGHT_TYPES}, got {weight_type!r}.")
  if reduction == "sum":
    raise ValueError(
        "reduction='sum' has no meaning for the generalized Dice loss: the "
        "classes are combined inside one ratio (one value per example); use "
        "'mean' or 'none'.")
  for name, value in (("smooth_nr", smooth_nr), ("smooth_dr", smooth_dr)):
    if isinstance(value, (int, float)) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  probs, targets = _probs_and_targets(logits, labels, activation)
  _check_common(probs.shape[-1], include_background, reduction)
  if not include_background:
    probs, targets = probs[..., 1:], targets[..., 1:]
  tp, fp, fn = _confusion(probs, targets, batch)
  volume = jax.lax.stop_gradient(tp + fn)  # sum_i t_ic
  if weight_type == "square":
    weights = 1.0 / (volume * volume)
  elif weight_type == "simple":
    weights = 1.0 / volume
  else:
    weights = jnp.ones_like(volume)
  infinite = jnp.isinf(weights)
  weights = jnp.where(infinite, 0.0, weights)
  weights = jnp.where(
      infinite, jnp.max(weights, axis=-1, keepdims=True), weights)
  numer = 2.0 * jnp.sum(weights * tp, axis=-1) + smooth_nr
  denom = jnp.sum(weights * (2.0 * tp + fp + fn), axis=-1) + smooth_dr
  loss = 1.0 - numer / denom
  return jnp.broadcast_to(loss, (probs.shape[0],))


def _safe_power(x: jax.Array, exponent) -> jax.Array:
  """``x ** exponent`` (``x >= 0``), with a finite gradient (0) at ``x = 0``."""
  positive = x > 0
  safe = jnp.where(positive, x, 1.0)
  return jnp.where(positive, safe ** exponent, 0.0)


def focal_tversky_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: float = 0.3,
    beta: Optional[float] = None,
    gamma: float = 4.0 / 3.0,
    smooth: float = 1.0,
    activation: str = "sigmoid",
    include_background: bool = True,
    batch: bool = True,
    reduction: str = "mean",
) -> jax.Array:
  r"""Focal Tversky loss (Abraham & Khan); ``alpha`` weights false positives.

  .. math::
    T_c = \frac{TP_c + s}{TP_c + \alpha FP_c + \beta FN_c + s}, \qquad
    L_c = (1 - T_c)^{1/\gamma}

  **Exponent**: ``gamma`` is the paper's :math:`\gamma` and the exponent is
  :math:`1/\gamma` (the paper: :math:`\gamma \in [1, 3]`, best
  :math:`4/3`, i.e. :math:`(1 - T_c)^{0.75}`, the default).  ``gamma=1`` is
  :func:`tversky_loss`.  Implementations that write :math:`(1 - T)^\gamma`
  with :math:`\gamma = 0.75` are the same loss with ``gamma = 1 / 0.75``.

  **alpha / beta**: as in :func:`tversky_loss` (Salehi et al., optax),
  ``alpha`` multiplies the **false positives** and ``beta`` the false
  negatives.  The paper writes :math:`TI = TP / (TP + \alpha FN + \beta FP)`,
  i.e. its :math:`\alpha` weighs the false *negatives*: its best setting
  (:math:`\alpha = 0.7` on FN, :math:`\beta = 0.3` on FP) is ``alpha=0.3,
  beta=0.7`` here, the defaults.

  Defaults otherwise follow :func:`tversky_loss` and the paper's code: one
  sigmoid channel, ``smooth = 1``, counts pooled over the whole batch
  (``batch=True``, the reference Keras code flattens the batch).  The paper
  sums :math:`L_c` over the classes (``reduction="sum"``); the default
  ``"mean"`` averages them.

  :math:`1 - T_c \in [0, 1]`; at :math:`T_c = 1` the power's derivative is
  infinite for :math:`\gamma > 1`, so the power is evaluated with a guard
  that keeps the value exact and returns a zero gradient there (the loss's
  minimum); everywhere else the gradient is the exact one (finite, though it
  grows as :math:`(1 - T_c)^{1/\gamma - 1}` near a perfect prediction).

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.  Integer
      values outside ``[0, classes)`` raise a ``ValueError`` when concrete and
      become all-zero target rows under ``jit`` (see the module docstring).
    alpha: weight of the false positives, >= 0 (number or scalar array).
    beta: weight of the false negatives, >= 0; ``None`` means ``1 - alpha``.
    gamma: the paper's :math:`\gamma > 0`; the exponent is ``1 / gamma``
      (number or scalar array).
    smooth: constant added to numerator and denominator, >= 0.
    activation: ``"sigmoid"``, ``"softmax"`` or ``"none"``.
    include_background: if False, channel 0 is left out.
    batch: pool the counts over the batch (default True).
    reduction: ``"mean"`` | ``"sum"`` over classes, or ``"none"``.

  Returns:
    ``(batch,)`` loss values, or ``(batch, classes_kept)`` for
    ``reduction="none"``.

  References:
    Abraham & Khan, "A novel focal Tversky loss function with improved
    attention U-Net for lesion segmentation", ISBI 2019.
  """
  if beta is None:
    beta = 1.0 - alpha
  for name, value in (("alpha", alpha), ("beta", beta), ("smooth", smooth)):
    if isinstance(value, (int, float)) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")
  if isinstance(gamma, (int, float)) and not gamma > 0:
    raise ValueError(f"gamma must be > 0, got {gamma}.")
  probs, targets = _probs_and_targets(logits, labels, activation)
  _check_common(probs.shape[-1], include_background, reduction)
  tp, fp, fn = _confusion(probs, targets, batch)
  index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
  # Clip the rounding noise of a ratio <= 1 (never needed with exact sums).
  complement = jnp.clip(1.0 - index, 0.0, 1.0)
  per_class = _safe_power(complement, 1.0 / gamma)
  return _select_and_reduce(
      per_class, probs.shape[0], include_background, reduction)
