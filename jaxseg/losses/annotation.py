"""Annotation-guided losses for micro-ultrasound (seed 003, MicroSegNet).

Regions where an expert and a non-expert annotator disagree are "hard"; the
losses weight them more than the "easy" rest of the image:

* :func:`hard_region_mask`: ``hard = dilate(expert XOR non_expert)``;
* :func:`ag_bce_loss`: annotation-guided binary cross entropy (MicroSegNet);
* :func:`adaptive_focal_loss`: focal loss with a data-driven exponent that
  weights hard regions by :math:`\\gamma` and easy ones by :math:`1/\\gamma`.

All losses take channels-last logits ``(batch, *spatial, 1)`` of a single
sigmoid output (several independent channels also work) and return one value
per example, ``(batch,)``; their mean over the batch is the study's
``/(B*H*W)`` normalisation.  Logs are exact log-sigmoids
(``_stable.log_sigmoids``): the original code's ``log(p + 1e-6)`` /
probability clamping to ``[1e-6, 1 - 1e-6]`` is not reproduced, so a
confidently wrong pixel keeps its full (finite) loss and gradient instead of
being capped at
:math:`-\\log 10^{-6} \\approx 13.8`.  bf16 / fp16 logits are promoted to
float32 first (:func:`jaxseg.losses._checks.compute_dtype`).

References:
  Jiang et al., "MicroSegNet: A deep learning approach for prostate
  segmentation on micro-ultrasound images", CMIG 2024 (AG-BCE).
  Seed 003 (adaptive focal loss on MicroSegNet).
"""

from typing import Union

import jax
import jax.numpy as jnp

from jaxseg.losses import _checks, _stable
from jaxseg.losses import focal


def hard_region_mask(
    expert: jax.typing.ArrayLike,
    non_expert: jax.typing.ArrayLike,
    *,
    kernel_size: int = 1,
) -> jax.Array:
  r"""Hard regions: disagreement of two annotations, dilated.

  .. math::
    H = \mathrm{dilate}_{k \times k}(E \oplus N)

  with :math:`\oplus` the XOR of the two binarised masks (threshold 0.5) and a
  square :math:`k \times k` structuring element (a max filter,
  ``jax.lax.reduce_window``) over every non-batch axis.  ``kernel_size=1``
  means no dilation.  MicroSegNet uses ``k = 1, 2, 3, 4`` for its heads at
  28, 56, 112 and 224 px.

  Even kernels are not centred; they follow OpenCV's ``cv2.dilate`` default
  anchor (``k // 2``): the output at index ``i`` is the maximum over input
  indices ``i - k//2 .. i + k - 1 - k//2`` (for ``k = 2``: ``i - 1, i``), so
  an even kernel grows the region by one more pixel towards higher indices
  (down / right) than towards lower ones.  Pixels outside the image count as
  easy (zero padding).

  Args:
    expert: ``(batch, *spatial)`` binary mask (bool, 0/1, or 0/255).  A
      trailing channel axis of size 1 is allowed (it is left untouched).
    non_expert: mask of the same shape.
    kernel_size: side of the square structuring element, >= 1.

  Returns:
    Float {0, 1} array of the input shape.

  References:
    Jiang et al., MicroSegNet, CMIG 2024.
  """
  expert = jnp.asarray(expert)
  non_expert = jnp.asarray(non_expert)
  if expert.shape != non_expert.shape:
    raise ValueError(
        f"expert and non_expert must have the same shape; got {expert.shape} "
        f"and {non_expert.shape}.")
  if expert.ndim < 2 or expert.size == 0:
    raise ValueError(
        f"masks must be non-empty (batch, *spatial); got {expert.shape}.")
  if not isinstance(kernel_size, int) or kernel_size < 1:
    raise ValueError(f"kernel_size must be an int >= 1, got {kernel_size}.")
  dtype = jnp.result_type(float)
  disagree = ((expert > 0.5) != (non_expert > 0.5)).astype(dtype)
  if kernel_size == 1:
    return disagree
  k = kernel_size
  window = (1,) + (k,) * (disagree.ndim - 1)
  padding = ((0, 0),) + ((k // 2, k - 1 - k // 2),) * (disagree.ndim - 1)
  return jax.lax.reduce_window(
      disagree, jnp.array(0, dtype), jax.lax.max, window,
      (1,) * disagree.ndim, padding)


def _binary_like(logits: jax.Array, x: jax.Array, name: str) -> jax.Array:
  if x.shape == logits.shape:
    return x.astype(logits.dtype)
  if logits.shape[-1] == 1 and x.shape == logits.shape[:-1]:
    return x.astype(logits.dtype)[..., None]
  raise ValueError(
      f"{name} must have the logits' shape {logits.shape} (or "
      f"{logits.shape[:-1]} for a single channel); got {x.shape}.")


def _check_logits(logits: jax.Array) -> None:
  if logits.ndim < 2 or logits.size == 0:
    raise ValueError(
        f"logits must be non-empty (batch, *spatial, 1); got {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be floating point, got {logits.dtype}.")


def ag_bce_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    hard_mask: jax.typing.ArrayLike,
    *,
    hard_weight: float = 4.0,
) -> jax.Array:
  r"""Annotation-guided binary cross entropy (AG-BCE, MicroSegNet).

  Per example, with :math:`N` pixels (times channels), hard mask :math:`h`,
  easy mask :math:`1 - h` and :math:`w` = ``hard_weight``:

  .. math::
    l_i = -\tfrac12 y_i \log p_i - \tfrac12 (1 - y_i) \log(1 - p_i), \qquad
    L = \frac{\sum_i (1 - h_i) l_i + w \sum_i h_i l_i}{(1 + w) N}

  with :math:`\log p = \log\sigma(x)` and :math:`\log(1-p) = \log\sigma(-x)`.
  This is MicroSegNet's ``((easy_loss + w * hard_loss) / (1 + w)) / N``
  (its code weights the two sums by ``1/(1+w)`` and ``w/(1+w)``).  Since the
  weights of a pixel are :math:`1/(1+w)` (easy) and :math:`w/(1+w)` (hard),
  ``hard_weight = 1`` gives every pixel weight 1/2:
  :math:`L = \frac{1}{2N} \sum_i l_i = \frac{1}{4N} \sum_i
  \mathrm{BCE}_i`, i.e. half the mean of the 0.5-scaled BCE :math:`l`.
  MicroSegNet uses :math:`w = W_{hard}/W_{easy} = 4`.

  Integer labels other than 0 and 1 (e.g. a 0/255 mask) raise a
  ``ValueError`` when concrete; under ``jit`` the check cannot run and they
  are used as given (a finite, meaningless value).

  Args:
    logits: ``(batch, *spatial, 1)`` logits.
    labels: binary (or soft) expert mask, the logits' shape or without the
      channel axis.
    hard_mask: {0, 1} (or fractional) hard-region mask, same shape as
      ``labels``; see :func:`hard_region_mask`.
    hard_weight: weight of hard pixels relative to easy ones, >= 0.

  Returns:
    ``(batch,)`` loss values.

  References:
    Jiang et al., MicroSegNet, CMIG 2024.
  """
  logits = _checks.compute_dtype(logits)
  _check_logits(logits)
  if isinstance(hard_weight, (int, float)) and hard_weight < 0:
    raise ValueError(f"hard_weight must be >= 0, got {hard_weight}.")
  labels = jnp.asarray(labels)
  _checks.check_binary_mask(labels)
  y = _binary_like(logits, labels, "labels")
  hard = _binary_like(logits, jnp.asarray(hard_mask), "hard_mask")
  log_p, log_q = _stable.log_sigmoids(logits)
  per_pixel = 0.5 * (-y * log_p - (1.0 - y) * log_q)
  axes = tuple(range(1, logits.ndim))
  n = logits[0].size
  easy_sum = jnp.sum((1.0 - hard) * per_pixel, axis=axes)
  hard_sum = jnp.sum(hard * per_pixel, axis=axes)
  return (easy_sum + hard_weight * hard_sum) / (1.0 + hard_weight) / n


def adaptive_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    hard_mask: jax.typing.ArrayLike,
    disagreement: jax.typing.ArrayLike,
    *,
    per_example: bool = False,
    min_gamma: float = 1e-2,
    exponent: Union[None, float] = None,
) -> jax.Array:
  r"""Adaptive focal loss of seed 003, annotation-variability quirk fixed.

  .. math::
    \gamma = \mathrm{sg}\big[\max\big(\underbrace{1 - \bar p}_{\text{sample
      difficulty}} + \underbrace{\bar d}_{\text{annotation variability}},
      \gamma_{min}\big)\big]

  .. math::
    f_i = -\tfrac12 (1 - p_{t,i})^{\gamma} \log p_{t,i}, \qquad
    L = \frac{\gamma \sum_i h_i f_i + \gamma^{-1} \sum_i (1 - h_i) f_i}{N}

  where :math:`\bar p` is the mean sigmoid probability, :math:`\bar d` the
  mean of the annotation-disagreement map (e.g. ``expert XOR non_expert``, or
  the per-pixel standard deviation of several annotations),
  :math:`\mathrm{sg}` is ``jax.lax.stop_gradient`` (so :math:`\gamma` is a
  constant for the gradient), :math:`h` the (dilated) hard mask and
  :math:`N` the number of pixels per example.  :math:`\log p_t` and
  :math:`\log(1 - p_t)` come from log-sigmoids (stable form).

  Fixed quirk: the original code used the non-expert foreground fraction as
  "annotation variability"; here it is the mean of ``disagreement``.

  Per batch vs per example: the study computes one :math:`\gamma` for the
  whole batch (``per_example=False``, the default): :math:`\bar p` and
  :math:`\bar d` are means over every pixel of the batch, so an example's loss
  depends on the other examples through :math:`\gamma` (not through the
  gradient).  ``per_example=True`` computes one :math:`\gamma` per example
  instead.

  :math:`\gamma` is floored at ``min_gamma`` because :math:`1/\gamma` blows up
  when the model predicts foreground everywhere and the annotators agree.

  Integer labels other than 0 and 1 (e.g. a 0/255 mask) raise a
  ``ValueError`` when concrete; under ``jit`` the check cannot run and they
  act as soft targets outside [0, 1] (a meaningless value, NaN at some
  pixels).

  Args:
    logits: ``(batch, *spatial, 1)`` logits.
    labels: binary expert mask, the logits' shape or without the channel axis.
    hard_mask: hard-region mask of the same shape as ``labels``.
    disagreement: ``(batch, ...)`` annotation-disagreement map in [0, 1]
      (any shape with a leading batch axis).
    per_example: one :math:`\gamma` per example instead of per batch.
    min_gamma: floor of :math:`\gamma`, > 0.
    exponent: focusing exponent of the focal term; None (default) uses the
      adaptive :math:`\gamma` itself (the formula above).  A fixed number
      (e.g. 2) decouples the focusing from the hard/easy weighting.

  Returns:
    ``(batch,)`` loss values.

  References:
    Seed 003 (adaptive focal loss for MicroSegNet); Lin et al., ICCV 2017.
  """
  logits = _checks.compute_dtype(logits)
  _check_logits(logits)
  if not min_gamma > 0:
    raise ValueError(f"min_gamma must be > 0, got {min_gamma}.")
  labels = jnp.asarray(labels)
  _checks.check_binary_mask(labels)
  y = _binary_like(logits, labels, "labels")
  hard = _binary_like(logits, jnp.asarray(hard_mask), "hard_mask")
  disagreement = jnp.asarray(disagreement, logits.dtype)
  if disagreement.ndim < 1 or disagreement.shape[0] != logits.shape[0]:
    raise ValueError(
        "disagreement must have a leading batch axis of size "
        f"{logits.shape[0]}; got {disagreement.shape}.")

  axes = tuple(range(1, logits.ndim))
  probs = jax.nn.sigmoid(logits)
  if per_example:
    difficulty = 1.0 - jnp.mean(probs, axis=axes)
    variability = jnp.mean(
        disagreement, axis=tuple(range(1, disagreement.ndim)))
  else:
    difficulty = 1.0 - jnp.mean(probs)
    variability = jnp.mean(disagreement)
  gamma = jax.lax.stop_gradient(
      jnp.maximum(difficulty + variability, min_gamma))
  # Shape gamma to broadcast against (batch, *spatial, C) when per example.
  gamma_b = jnp.reshape(gamma, jnp.shape(gamma) + (1,) * (logits.ndim - 1))
  focusing = gamma_b if exponent is None else exponent
  per_pixel = 0.5 * focal.sigmoid_focal_loss(
      logits, y, alpha=None, gamma=focusing, reduction="none")
  n = logits[0].size
  hard_sum = jnp.sum(hard * per_pixel, axis=axes)
  easy_sum = jnp.sum((1.0 - hard) * per_pixel, axis=axes)
  return (gamma * hard_sum + easy_sum / gamma) / n
