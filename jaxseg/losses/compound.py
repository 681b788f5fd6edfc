"""Compound losses: soft Dice + cross entropy, soft Dice + focal (MONAI-style).

Both are weighted sums of two per-example losses of this package,

.. math::
  L = \\lambda_{Dice} \\, L_{Dice} + \\lambda_{2} \\, L_{2}

with :math:`L_{Dice}` = :func:`jaxseg.losses.region.soft_dice_loss` (mean over
the kept classes) and :math:`L_2` the cross entropy
(:func:`jaxseg.losses.cross_entropy.softmax_cross_entropy` /
:func:`~jaxseg.losses.cross_entropy.sigmoid_binary_cross_entropy`) or the
focal loss (:func:`jaxseg.losses.focal.softmax_focal_loss` /
:func:`~jaxseg.losses.focal.sigmoid_focal_loss`), each a mean over the pixels
of an example.  They return ``(batch,)`` values; their mean over the batch is
MONAI's ``DiceCELoss`` / ``DiceFocalLoss`` (``reduction="mean"``) wherever the
conventions below agree.

``include_background=False`` drops channel 0 from **both** terms (MONAI's
``DiceCELoss`` drops it from the Dice term only, Project-MONAI/MONAI#6855).
"Dropping channel 0" of a pixel-wise term means leaving out the channel-0
summands of its one-hot form:

* softmax: the per-pixel cross entropy :math:`-\\sum_c t_c \\log p_c` (and the
  focal :math:`-\\sum_c \\alpha_c t_c (1 - p_c)^\\gamma \\log p_c`) keeps the
  classes :math:`c \\ge 1`; :math:`p` is still the softmax over **all**
  classes and the mean is still over all pixels, so pixels of class 0
  contribute 0.  This is the class weight :math:`w_0 = 0`.
* sigmoid: channel 0 is removed before the per-channel binary terms, which
  are averaged over pixels and the remaining channels (MONAI's
  ``DiceFocalLoss`` / ``FocalLoss(include_background=False)``).

bf16 / fp16 logits are computed in float32 (by the composed losses).

References:
  MONAI ``DiceCELoss``, ``DiceFocalLoss``; Milletari et al., V-Net, 3DV 2016;
  Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
"""

from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import _checks
from jaxseg.losses import cross_entropy
from jaxseg.losses import focal
from jaxseg.losses import region

_ACTIVATIONS = ("softmax", "sigmoid")


def _check_args(logits, activation, include_background, lambdas) -> None:
  if activation not in _ACTIVATIONS:
    raise ValueError(
        f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
  if jnp.ndim(logits) < 3:
    raise ValueError(
        "logits must be channels-last (batch, *spatial, classes) with at least "
        f"one spatial axis; got shape {jnp.shape(logits)}.")
  if not include_background and jnp.shape(logits)[-1] < 2:
    raise ValueError(
        "include_background=False drops channel 0, which leaves no channel "
        "for a single-channel output; keep include_background=True.")
  for name, value in lambdas.items():
    if isinstance(value, (int, float)) and value < 0:
      raise ValueError(f"{name} must be >= 0, got {value}.")


def _dice_term(logits, labels, activation, include_background, lambdas, *,
               smooth_nr, smooth_dr, batch):
  """Checked float32-or-wider inputs and the per-example soft Dice term."""
  logits = _checks.compute_dtype(logits)
  labels = jnp.asarray(labels)
  _check_args(logits, activation, include_background, lambdas)
  dice = region.soft_dice_loss(
      logits, labels, activation=activation,
      include_background=include_background, smooth_nr=smooth_nr,
      smooth_dr=smooth_dr, batch=batch, reduction="mean")
  return logits, labels, dice


def _sigmoid_targets(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Binary targets with the logits' shape (one-hot for an integer map)."""
  num_classes = logits.shape[-1]
  if labels.shape == logits.shape:
    _checks.check_binary_mask(labels)
    return labels.astype(logits.dtype)
  if labels.shape == logits.shape[:-1]:
    if num_classes == 1:
      _checks.check_binary_mask(labels)
      return labels.astype(logits.dtype)[..., None]
    _checks.check_class_indices(labels, num_classes)
    return jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  raise ValueError(
      f"labels must have shape {logits.shape} (one-hot / binary) or "
      f"{logits.shape[:-1]} (integer map); got {labels.shape}.")


def _class_vector(value, num_classes: int, dtype, name: str) -> jax.Array:
  if value is None:
    return jnp.ones((num_classes,), dtype)
  value = jnp.asarray(value, dtype)
  if value.shape != (num_classes,):
    raise ValueError(
        f"{name} must have shape ({num_classes},), got {value.shape}.")
  return value


def dice_ce_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    include_background: bool = True,
    lambda_dice: Union[float, jax.typing.ArrayLike] = 1.0,
    lambda_ce: Union[float, jax.typing.ArrayLike] = 1.0,
    class_weights: Optional[jax.typing.ArrayLike] = None,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> jax.Array:
  r"""Soft Dice + cross entropy (MONAI ``DiceCELoss``), background in both.

  .. math::
    L = \lambda_{Dice} \, L_{Dice} + \lambda_{CE} \, L_{CE}, \qquad
    L_{CE} = \begin{cases}
      -\frac{1}{N} \sum_i \sum_{c \in K} w_c \, t_{i,c} \log p_{i,c},
        \; p = \mathrm{softmax}(x) & \text{softmax} \\
      -\frac{1}{N |K|} \sum_i \sum_{c \in K} \left[ w_c t_{i,c} \log
        \sigma(x_{i,c}) + (1 - t_{i,c}) \log \sigma(-x_{i,c}) \right]
        & \text{sigmoid}
    \end{cases}

  over the :math:`N` pixels of an example and the kept channels :math:`K`
  (all, or :math:`c \ge 1` with ``include_background=False``; see the module
  docstring for what dropping channel 0 means for the softmax CE).
  :math:`L_{Dice}` is :func:`jaxseg.losses.region.soft_dice_loss` with the
  same ``activation``, ``include_background``, smoothing and ``batch``.

  Equal to MONAI ``DiceCELoss(softmax=True | sigmoid=True, ...)`` (batch mean
  of this loss) for ``include_background=True`` and ``class_weights=None``,
  and for a single sigmoid channel.  Deliberate differences:

  * ``include_background=False`` also drops channel 0 from the CE term
    (MONAI keeps it there, issue #6855);
  * ``class_weights`` weight the CE term only, divided by the number of
    pixels as in :func:`~jaxseg.losses.cross_entropy.softmax_cross_entropy`
    (PyTorch's weighted CE divides by the summed weights of the targets, and
    MONAI >= 1.4 also weights its Dice term); with a sigmoid they are the
    per-channel positive weights (MONAI's ``pos_weight``);
  * with a sigmoid and several channels the CE term is the per-channel binary
    cross entropy (MONAI switches to the softmax CE whenever there is more
    than one channel).

  Integer labels outside ``[0, classes)`` raise a ``ValueError`` when
  concrete; under ``jit`` the softmax CE term of such an example is NaN (see
  :func:`~jaxseg.losses.cross_entropy.pixelwise_softmax_cross_entropy`).

  Args:
    logits: ``(batch, *spatial, classes)`` logits.
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.
    activation: ``"softmax"`` (needs >= 2 channels) or ``"sigmoid"``.
    include_background: if False, channel 0 is left out of both terms.
    lambda_dice: weight of the Dice term, >= 0.
    lambda_ce: weight of the cross-entropy term, >= 0.
    class_weights: optional ``(classes,)`` CE weights (all channels, channel 0
      included; it is ignored when the background is dropped).
    smooth_nr: Dice numerator smoothing.
    smooth_dr: Dice denominator smoothing.
    batch: pool the Dice counts over the batch (the CE term is per example).

  Returns:
    ``(batch,)`` loss values.

  References:
    MONAI ``DiceCELoss``; Milletari et al., V-Net, 3DV 2016.
  """
  logits, labels, dice = _dice_term(
      logits, labels, activation, include_background,
      {"lambda_dice": lambda_dice, "lambda_ce": lambda_ce},
      smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch)
  num_classes = logits.shape[-1]
  weights = _class_vector(class_weights, num_classes, logits.dtype,
                          "class_weights")
  if activation == "softmax":
    if not include_background:
      weights = weights.at[0].set(0.0)
    if labels.shape == logits.shape[:-1]:
      ce = cross_entropy.softmax_cross_entropy(
          logits, labels,
          class_weights=(None if class_weights is None and include_background
                         else weights))
    else:  # One-hot / soft targets: -sum_c w_c t_c log p_c (= focal, gamma 0).
      ce = focal.softmax_focal_loss(logits, labels, alpha=weights, gamma=0.0)
  else:
    targets = _sigmoid_targets(logits, labels)
    if not include_background:
      logits, targets, weights = logits[..., 1:], targets[..., 1:], weights[1:]
    ce = cross_entropy.sigmoid_binary_cross_entropy(
        logits, targets, pos_weight=None if class_weights is None else weights)
  return lambda_dice * dice + lambda_ce * ce


def dice_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    include_background: bool = True,
    gamma: float = 2.0,
    alpha: Optional[Union[float, jax.typing.ArrayLike]] = None,
    lambda_dice: Union[float, jax.typing.ArrayLike] = 1.0,
    lambda_focal: Union[float, jax.typing.ArrayLike] = 1.0,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> jax.Array:
  r"""Soft Dice + focal loss (MONAI ``DiceFocalLoss``), background in both.

  .. math::
    L = \lambda_{Dice} \, L_{Dice} + \lambda_{F} \, L_{F}, \qquad
    L_{F} = \begin{cases}
      \frac{1}{N} \sum_i \sum_{c \in K} -\alpha_c t_{i,c}
        (1 - p_{i,c})^\gamma \log p_{i,c}, \; p = \mathrm{softmax}(x)
        & \text{softmax} \\
      \frac{1}{N |K|} \sum_i \sum_{c \in K} -\alpha_{t} (1 - p_{t})^\gamma
        \log p_{t}, \; p = \sigma(x_{i,c}) & \text{sigmoid}
    \end{cases}

  with :math:`p_t = p` where :math:`t = 1` and :math:`1 - p` where
  :math:`t = 0`, :math:`\alpha_t = \alpha t + (1 - \alpha)(1 - t)`, the
  :math:`N` pixels of an example and the kept channels :math:`K` (see the
  module docstring).  The focal term is
  :func:`jaxseg.losses.focal.softmax_focal_loss` /
  :func:`~jaxseg.losses.focal.sigmoid_focal_loss`, the Dice term
  :func:`jaxseg.losses.region.soft_dice_loss`, both with the same
  ``activation``: with ``gamma=0`` and ``alpha=None`` this is
  :func:`dice_ce_loss`.

  ``alpha``: with a sigmoid, the scalar positive-class weight in [0, 1] (or
  None); with a softmax, None (all ones), a ``(classes,)`` vector of class
  weights, or a scalar :math:`a` meaning ``[1 - a, a, ..., a]`` (MONAI's
  softmax convention).  ``include_background=False`` sets the class-0 weight
  to 0 (softmax) or removes channel 0 (sigmoid).

  Equal to MONAI ``DiceFocalLoss(sigmoid=True, ...)`` (batch mean of this
  loss), with or without the background.  Deliberate difference: MONAI's
  ``DiceFocalLoss(softmax=True)`` applies the softmax to its Dice term only
  and a per-channel *sigmoid* focal term to the same logits; here the focal
  term uses the softmax too (the sum over classes of the softmax focal loss,
  equal to MONAI ``FocalLoss(use_softmax=True, reduction="none")`` summed
  over the channels and averaged over the pixels).

  Args:
    logits: ``(batch, *spatial, classes)`` logits.
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape.
    activation: ``"softmax"`` (needs >= 2 channels) or ``"sigmoid"``.
    include_background: if False, channel 0 is left out of both terms.
    gamma: focusing exponent >= 0.
    alpha: class / positive weighting, see above.
    lambda_dice: weight of the Dice term, >= 0.
    lambda_focal: weight of the focal term, >= 0.
    smooth_nr: Dice numerator smoothing.
    smooth_dr: Dice denominator smoothing.
    batch: pool the Dice counts over the batch (the focal term is per
      example).

  Returns:
    ``(batch,)`` loss values.

  References:
    MONAI ``DiceFocalLoss``; Lin et al., "Focal Loss for Dense Object
    Detection", ICCV 2017.
  """
  logits, labels, dice = _dice_term(
      logits, labels, activation, include_background,
      {"lambda_dice": lambda_dice, "lambda_focal": lambda_focal},
      smooth_nr=smooth_nr, smooth_dr=smooth_dr, batch=batch)
  num_classes = logits.shape[-1]
  if activation == "softmax":
    if alpha is not None and np.ndim(alpha) == 0:
      a = jnp.asarray(alpha, logits.dtype)
      weights = jnp.full((num_classes,), a).at[0].set(1.0 - a)
    else:
      weights = _class_vector(alpha, num_classes, logits.dtype, "alpha")
    if not include_background:
      weights = weights.at[0].set(0.0)
    term = focal.softmax_focal_loss(logits, labels, alpha=weights, gamma=gamma)
  else:
    if alpha is not None and np.ndim(alpha) != 0:
      raise ValueError(
          "with activation='sigmoid', alpha is the scalar positive-class "
          f"weight; got shape {np.shape(alpha)}.")
    targets = _sigmoid_targets(logits, labels)
    if not include_background:
      logits, targets = logits[..., 1:], targets[..., 1:]
    term = focal.sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma)
  return lambda_dice * dice + lambda_focal * term
