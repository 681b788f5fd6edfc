"""Focal losses (sigmoid and softmax), computed in log space.

The focal loss scales the cross entropy of every pixel by
:math:`(1 - p_t)^\\gamma`, where :math:`p_t` is the probability given to the
true class, so that well-classified pixels contribute little.

Both functions take channels-last logits ``(batch, *spatial, channels)`` and
return per-example values ``(batch,)`` (the mean over pixels) by default;
``reduction="none"`` gives the per-pixel values.  Everything is computed from
exact log-sigmoids (:func:`jaxseg.losses._stable.log_sigmoids`) and
log-sum-exps (never ``log(sigmoid)``), and the modulating factor as
:math:`\\exp(\\gamma \\log(1 - p_t))` with an exact log, so values and
gradients are finite at logits of :math:`\\pm 10^4` for every
:math:`\\gamma \\ge 0`.  bf16 / fp16 logits are promoted to float32 first
(:func:`jaxseg.losses._checks.compute_dtype`).

Reference:
  Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
"""

from typing import Optional, Union

import jax
import jax.numpy as jnp

from jaxseg.losses import _checks, _stable

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(per_pixel: jax.Array, reduction: str) -> jax.Array:
  if reduction == "none":
    return per_pixel
  axes = tuple(range(1, per_pixel.ndim))
  if reduction == "mean":
    return jnp.mean(per_pixel, axis=axes)
  return jnp.sum(per_pixel, axis=axes)


def _check_reduction(reduction: str) -> None:
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")


def _check_gamma(gamma) -> None:
  if isinstance(gamma, (int, float)) and gamma < 0:
    raise ValueError(f"gamma must be >= 0, got {gamma}.")


def _log_one_minus_pt(log_p: jax.Array, log_q: jax.Array, labels: jax.Array) -> jax.Array:
  r"""Exact :math:`\log(1 - p_t)` with :math:`1 - p_t = y (1-p) + (1-y) p`, from
  ``log_p`` :math:`= \log\sigma(x)` and ``log_q`` :math:`= \log\sigma(-x)`.

  Hard labels (0 or 1) use a log-sigmoid directly; soft labels in (0, 1)
  satisfy :math:`1 - p_t \ge \min(y, 1-y) > 0`, so a plain log is safe there.
  The ``where`` guards keep the unused branch from producing NaN gradients.
  """
  is_hard = (labels == 0) | (labels == 1)
  hard = jnp.where(labels > 0.5, log_q, log_p)
  soft_arg = labels * jnp.exp(log_q) + (1.0 - labels) * jnp.exp(log_p)
  soft = jnp.log(jnp.where(is_hard, 1.0, soft_arg))
  return jnp.where(is_hard, hard, soft)


def _log_one_minus_softmax(log_p: jax.Array) -> jax.Array:
  r"""Exact :math:`\log(1 - p_c)` from ``log_p = log_softmax(x)``, in O(C).

  Classes other than the arg-max have :math:`p_c \le 1/2` (since
  :math:`p_c \le p_a` and :math:`p_c + p_a \le 1`), where
  :math:`\mathrm{log1p}(-e^{\log p_c})` loses no precision.  For the arg-max
  :math:`a`, :math:`1 - p_a = \sum_{j \ne a} p_j`, so
  :math:`\log(1 - p_a) = \mathrm{logsumexp}_{j \ne a} \log p_j`: one
  log-sum-exp per pixel, finite since at least one other class exists.  Both
  branches get safe inputs where unused (``log1p(-1)`` would give an infinite
  gradient that ``where`` turns into NaN).
  """
  is_max = jax.nn.one_hot(
      jnp.argmax(log_p, axis=-1), log_p.shape[-1], dtype=jnp.bool_)
  others = jnp.where(is_max, -jnp.inf, log_p)
  log_1mp_max = jax.nn.logsumexp(others, axis=-1, keepdims=True)
  safe_log_p = jnp.where(is_max, -1.0, log_p)
  log_1mp_rest = jnp.log1p(-jnp.exp(safe_log_p))
  return jnp.where(is_max, log_1mp_max, log_1mp_rest)


def _true_class_focal(logits: jax.Array, labels: jax.Array, alpha: jax.Array,
                      gamma) -> jax.Array:
  r"""Per-pixel softmax focal loss of an integer label map, from the true class alone.

  With one-hot targets only the true class :math:`y` contributes,
  :math:`\alpha_y (1 - p_y)^\gamma (-\log p_y)`. Both logs follow from one number, the logit
  of "not :math:`y`":

  .. math::
    r = \log \frac{1 - p_y}{p_y} = \log \sum_{j \ne y} e^{x_j} - x_y, \qquad
    \log(1 - p_y) = \log\sigma(r), \qquad -\log p_y = -\log\sigma(-r)

  with the log-sum-exp shifted by :math:`\max_{j \ne y} x_j` and the pair of log-sigmoids of
  :func:`jaxseg.losses._stable.log_sigmoids`: exact as :math:`p_y \to 1` and as
  :math:`p_y \to 0`. One masked log-sum-exp per pixel instead of a log and a modulating factor
  for every class (the general path, :func:`_log_one_minus_softmax`); the same values. Labels
  outside ``[0, C)`` (possible only under ``jit``) give 0, as an all-zero target row does.
  """
  is_true = labels[..., None] == jnp.arange(logits.shape[-1])
  x_true = jnp.sum(jnp.where(is_true, logits, 0.0), axis=-1)
  others = jnp.where(is_true, -jnp.inf, logits)
  shift = jax.lax.stop_gradient(jnp.max(others, axis=-1, keepdims=True))
  # (shift - x_true) first: both may be large (1e4) while r is small.
  r = jnp.log(jnp.sum(jnp.exp(others - shift), axis=-1)) + (shift[..., 0] - x_true)
  log_rest, log_p = _stable.log_sigmoids(r)
  weight = jnp.sum(jnp.where(is_true, alpha, 0.0), axis=-1)
  valid = (labels >= 0) & (labels < logits.shape[-1])
  return jnp.where(valid, weight * jnp.exp(gamma * log_rest) * (-log_p), 0.0)


def _binary_targets(logits: jax.Array, labels: jax.Array) -> jax.Array:
  if labels.shape == logits.shape:
    return labels.astype(logits.dtype)
  if logits.shape[-1] == 1 and labels.shape == logits.shape[:-1]:
    return labels.astype(logits.dtype)[..., None]
  raise ValueError(
      f"labels must have the logits' shape {logits.shape} (or "
      f"{logits.shape[:-1]} for a single channel); got {labels.shape}.")


def sigmoid_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: Optional[float] = 0.25,
    gamma: Union[float, jax.typing.ArrayLike] = 2.0,
    reduction: str = "mean",
) -> jax.Array:
  r"""Sigmoid (binary / multi-label) focal loss, optax semantics per pixel.

  .. math::
    FL = -\alpha_t (1 - p_t)^\gamma \log p_t, \qquad
    p = \sigma(x), \quad
    1 - p_t = y (1 - p) + (1 - y) p, \quad
    \alpha_t = \alpha y + (1 - \alpha)(1 - y)

  with the cross-entropy part written for soft labels as
  :math:`-y \log \sigma(x) - (1-y) \log \sigma(-x)` (log-sigmoid).  For
  :math:`\gamma = 0` this is the :math:`\alpha`-weighted binary cross entropy;
  ``alpha=None`` drops the weighting (optax's default).  The per-pixel values
  (``reduction="none"``) equal ``optax.sigmoid_focal_loss``.

  Seed 003's baseline (alpha 0.25, gamma 2, mean over pixels) applied the
  sigmoid twice (a sigmoid layer followed by a loss that applies its own);
  that quirk is not reproduced: the sigmoid is applied once, here.

  Integer labels other than 0 and 1 (e.g. a 0/255 mask) raise a
  ``ValueError`` when they are concrete; under ``jit`` the check cannot run
  and they act as soft targets outside [0, 1], giving a meaningless value
  (NaN where :math:`1 - p_t < 0`).

  Args:
    logits: ``(batch, *spatial, channels)`` logits, one independent sigmoid per
      channel (usually one channel).
    labels: binary or soft targets in [0, 1] with the logits' shape, or
      ``(batch, *spatial)`` for a single channel.
    alpha: weight of the positive class in (0, 1), or None for no weighting.
    gamma: focusing exponent >= 0 (a number, or an array broadcastable to the
      logits, e.g. a per-example ``(batch, 1, ..., 1)`` value).
    reduction: ``"mean"`` (default) or ``"sum"`` over all non-batch axes, giving
      ``(batch,)``; ``"none"`` gives the per-element values.

  Returns:
    ``(batch,)`` values, or the logits' shape for ``reduction="none"``.

  References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
  """
  logits = _checks.compute_dtype(logits)
  labels = jnp.asarray(labels)
  _check_reduction(reduction)
  _check_gamma(gamma)
  if logits.ndim < 2 or logits.size == 0:
    raise ValueError(
        f"logits must be (batch, ...) and non-empty; got {logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be floating point, got {logits.dtype}.")
  if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
  _checks.check_binary_mask(labels)
  targets = _binary_targets(logits, labels)

  log_p, log_q = _stable.log_sigmoids(logits)
  ce = -targets * log_p - (1.0 - targets) * log_q
  modulating = jnp.exp(gamma * _log_one_minus_pt(log_p, log_q, targets))
  loss = modulating * ce
  if alpha is not None:
    loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
  return _reduce(loss, reduction)


def softmax_focal_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: Optional[jax.typing.ArrayLike] = None,
    gamma: float = 2.0,
    clip_eps: Optional[float] = None,
    reduction: str = "mean",
) -> jax.Array:
  r"""Multi-class (softmax) focal loss with per-class weights.

  Per pixel (seed 001, Saha et al.; Lin et al. with class weights):

  .. math::
    FL = \sum_c \alpha_c \, y_c \, (1 - p_c)^\gamma \, (-\log p_c),
    \qquad p = \mathrm{softmax}(x)

  then the mean over pixels.  With :math:`\gamma = 0` it is the class-balanced
  cross entropy :math:`\mathrm{mean}_i \sum_c \alpha_c y_{i,c} (-\log
  p_{i,c})` (the plain CE when all :math:`\alpha_c = 1`).  Seed 001 uses
  ``alpha = [0.05, 0.30, 0.65]`` (background, TZ, PZ) and ``[0.75, 0.25]``
  (background, csPCa), gamma 2.

  :math:`\log p_c` and :math:`\log(1 - p_c)` are computed exactly (see below),
  so no clipping is needed for finiteness.  The original (Keras) code clipped
  the probabilities to ``[1e-7, 1 - 1e-7]``, which bounds the per-pixel loss at
  :math:`-\log 10^{-7} \approx 16` and zeroes the gradient of pixels whose
  true-class probability is below ``1e-7``; pass ``clip_eps=1e-7`` to
  reproduce that behaviour (for comparison only, the default is exact).

  An integer label map takes a shorter path with the same values: only the
  true class :math:`y` contributes, and :math:`-\log p_y` and
  :math:`\log(1 - p_y)` are the two log-sigmoids of
  :math:`r = \mathrm{logsumexp}_{j \ne y} x_j - x_y` (one masked log-sum-exp
  per pixel, exact in both tails; :func:`_true_class_focal`).

  Memory (one-hot or soft targets, and ``clip_eps``): :math:`\log(1 - p_c)` is
  exact in :math:`O(C)` per pixel (no ``(..., C, C)`` temporary).  Every class
  except the arg-max has
  :math:`p_c \le 1/2`, where :math:`\log(1 - p_c) =
  \mathrm{log1p}(-e^{\log p_c})` is accurate; for the arg-max class
  :math:`a`, :math:`\log(1 - p_a) = \mathrm{logsumexp}_{j \ne a} \log p_j`
  (one log-sum-exp per pixel with class :math:`a` masked to
  :math:`-\infty`), which stays exact as :math:`p_a \to 1`.  The branch not
  taken is fed a safe input, so gradients are finite for every
  :math:`\gamma \ge 0`.

  Integer labels outside ``[0, classes)`` raise a ``ValueError`` when they are
  concrete; under ``jit`` the check cannot run and such a pixel gets an
  all-zero target row, i.e. contributes 0 to the loss.

  Args:
    logits: ``(batch, *spatial, classes)`` logits, ``classes >= 2``.
    labels: integer map ``(batch, *spatial)`` with values in
      ``[0, classes)``, or one-hot / soft targets with the logits' shape.
    alpha: per-class weights, shape ``(classes,)``; None means all ones.
    gamma: focusing exponent >= 0.
    clip_eps: if set, clip the softmax probabilities to
      ``[clip_eps, 1 - clip_eps]`` before the log and the modulating factor
      (Keras-style, reproduces seed 001's code).
    reduction: ``"mean"`` (default) or ``"sum"`` over pixels, giving
      ``(batch,)``; ``"none"`` gives per-pixel values ``(batch, *spatial)``.

  Returns:
    ``(batch,)`` values, or ``(batch, *spatial)`` for ``reduction="none"``.

  References:
    Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    Saha et al., "Anatomical and Diagnostic Bayesian Segmentation in Prostate
    MRI -- Should Different Clinical Objectives Mandate Different Loss
    Functions?", 2021.
  """
  logits = _checks.compute_dtype(logits)
  labels = jnp.asarray(labels)
  _check_reduction(reduction)
  _check_gamma(gamma)
  if logits.ndim < 2 or logits.size == 0:
    raise ValueError(
        f"logits must be (batch, ..., classes) and non-empty; got "
        f"{logits.shape}.")
  if not jnp.issubdtype(logits.dtype, jnp.floating):
    raise ValueError(f"logits must be floating point, got {logits.dtype}.")
  num_classes = logits.shape[-1]
  if num_classes < 2:
    raise ValueError(
        "softmax_focal_loss needs at least two classes; use "
        "sigmoid_focal_loss for a single channel.")
  if labels.shape == logits.shape:
    _checks.check_binary_mask(labels)  # Integer one-hot maps.
    targets = labels.astype(logits.dtype)
  elif labels.shape == logits.shape[:-1]:
    _checks.check_class_indices(labels, num_classes)
    targets = None  # an integer map: only the true class's term is not zero
  else:
    raise ValueError(
        f"labels must have shape {logits.shape} (one-hot) or "
        f"{logits.shape[:-1]} (integer map); got {labels.shape}.")
  if alpha is None:
    alpha = jnp.ones((num_classes,), logits.dtype)
  else:
    alpha = jnp.asarray(alpha, logits.dtype)
    if alpha.shape != (num_classes,):
      raise ValueError(
          f"alpha must have shape ({num_classes},), got {alpha.shape}.")
  if clip_eps is not None and not 0.0 < clip_eps < 0.5:
    raise ValueError(f"clip_eps must be in (0, 0.5), got {clip_eps}.")

  if targets is None and clip_eps is None:
    return _reduce(_true_class_focal(logits, labels, alpha, gamma), reduction)
  if targets is None:
    targets = jax.nn.one_hot(labels, num_classes, dtype=logits.dtype)
  if clip_eps is None:
    log_p = jax.nn.log_softmax(logits, axis=-1)
    modulating = jnp.exp(gamma * _log_one_minus_softmax(log_p))
  else:
    p = jnp.clip(jax.nn.softmax(logits, axis=-1), clip_eps, 1.0 - clip_eps)
    log_p = jnp.log(p)
    modulating = (1.0 - p) ** gamma
  per_pixel = jnp.sum(alpha * targets * modulating * (-log_p), axis=-1)
  return _reduce(per_pixel, reduction)
