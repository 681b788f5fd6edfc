"""Topology-preserving losses: soft skeleton, soft clDice, Dice + clDice.

The soft skeleton of a probability map :math:`x` (Shit et al., Algorithm 1)
is built from a soft erosion (a min-pool) and a soft dilation (a max-pool):

.. math::
  \\mathrm{open}(x) = \\mathrm{dilate}(\\mathrm{erode}(x)), \\qquad
  S_0 = \\mathrm{ReLU}(x - \\mathrm{open}(x)),

  x_k = \\mathrm{erode}(x_{k-1}), \\quad
  \\delta_k = \\mathrm{ReLU}(x_k - \\mathrm{open}(x_k)), \\quad
  S_k = S_{k-1} + \\mathrm{ReLU}(\\delta_k - S_{k-1} \\delta_k)

for :math:`k = 1 .. K` (``iterations``).  As in the authors' code (and
MONAI), the erosion is the element-wise minimum of 3-wide min-pools along each
spatial axis (a cross-shaped structuring element: ``3x1`` and ``1x3`` in 2D,
the three axis pools in 3D) and the dilation is a full ``3x3`` (``3x3x3``)
max-pool; both use stride 1 and "same" padding with the neutral element
(:math:`+\\infty` for the min, :math:`-\\infty` for the max), so the image
border does not erode the foreground.

Soft clDice (per class :math:`c`, over the spatial axes; :math:`S_P, S_L` the
soft skeletons of the prediction :math:`P` and of the labels :math:`L`):

.. math::
  T_{prec} = \\frac{\\sum S_P \\odot L + s}{\\sum S_P + s}, \\quad
  T_{sens} = \\frac{\\sum S_L \\odot P + s}{\\sum S_L + s}, \\quad
  L_{clDice} = 1 - \\frac{2 T_{prec} T_{sens}}{T_{prec} + T_{sens}}

Conventions (as in :mod:`jaxseg.losses.region`): channels-last logits
``(batch, *spatial, classes)`` with any number of spatial axes (2D and 3D in
practice); integer labels ``(batch, *spatial)`` or one-hot / binary / soft
labels with the logits' shape; one value per example, shape ``(batch,)``;
``batch=True`` pools the sums over the batch and broadcasts the batch value to
every example; ``pool_classes=True`` sums over the kept channels before the
ratios (MONAI / the authors' code).

Reproducing MONAI 1.6 (``benchmarks/losses.py``, within 1e-7):
``monai.losses.SoftclDiceLoss(iter_=K, smooth_nr=s, smooth_dr=s, softmax=True,
include_background=False, reduction="none")(input, target)`` (channels-first
logits, one-hot target) is ``soft_cldice_loss(logits, labels, iterations=K,
smooth=s, include_background=False, pool_classes=True)``: one ratio per example
over the kept channels.  MONAI adds its ``smooth`` (default 1e-4) to the
denominator of the harmonic mean, :math:`1 - 2 T_p T_s / (T_p + T_s + 10^{-4})`;
jaxseg keeps the paper's harmonic mean (the two agree when MONAI's ``smooth`` is
tiny).  MONAI's ``SoftDiceclDiceLoss`` adds a per-class ``DiceLoss`` to that
pooled clDice, so :func:`dice_cldice_loss` matches it with a single kept
channel (e.g. one sigmoid channel), not with several.  MONAI releases before
1.5 took ``(target, probabilities)`` and pooled over the batch.

References:
  Shit et al., "clDice -- a Novel Topology-Preserving Loss Function for
  Tubular Structure Segmentation", CVPR 2021 (arXiv:2003.07311).
  MONAI ``monai.losses.cldice``; https://github.com/jocpae/clDice.
"""

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import _checks
from jaxseg.losses import region

_REDUCTIONS = ("mean", "sum", "none")


def _pool(x: jax.Array, minimum: bool, window: tuple[int, ...]) -> jax.Array:
  """Stride-1 min / max pool over the spatial axes with neutral padding."""
  dims = (1,) + window + (1,)
  padding = ((0, 0),) + tuple((w // 2, w // 2) for w in window) + ((0, 0),)
  if minimum:
    init, op = np.array(np.inf, x.dtype), jax.lax.min
  else:
    init, op = np.array(-np.inf, x.dtype), jax.lax.max
  return jax.lax.reduce_window(x, init, op, dims, (1,) * x.ndim, padding)


def _soft_erode(x: jax.Array) -> jax.Array:
  """Minimum of the 3-wide min-pools along each spatial axis."""
  spatial = x.ndim - 2
  out = None
  for axis in range(spatial):
    window = tuple(3 if a == axis else 1 for a in range(spatial))
    pooled = _pool(x, True, window)
    out = pooled if out is None else jnp.minimum(out, pooled)
  return out


def _soft_dilate(x: jax.Array) -> jax.Array:
  """Full 3^n max-pool."""
  return _pool(x, False, (3,) * (x.ndim - 2))


def _soft_open(x: jax.Array) -> jax.Array:
  return _soft_dilate(_soft_erode(x))


def _check_iterations(iterations) -> None:
  if (isinstance(iterations, bool)
      or not isinstance(iterations, (int, np.integer)) or iterations < 0):
    raise ValueError(
        f"iterations must be a non-negative Python int, got {iterations!r}.")


def _skeleton(x: jax.Array, iterations: int) -> jax.Array:
  skel = jax.nn.relu(x - _soft_open(x))
  for _ in range(iterations):
    x = _soft_erode(x)
    delta = jax.nn.relu(x - _soft_open(x))
    skel = skel + jax.nn.relu(delta - skel * delta)
  return skel


def soft_skeleton(
    probs: jax.typing.ArrayLike, *, iterations: int = 3) -> jax.Array:
  r"""Soft skeleton of a channels-last probability map (Shit et al., Alg. 1).

  .. math::
    S_0 = \mathrm{ReLU}(x - \mathrm{open}(x)), \quad
    x_k = \mathrm{erode}(x_{k-1}), \quad
    S_k = S_{k-1} + \mathrm{ReLU}(\delta_k - S_{k-1} \delta_k), \quad
    \delta_k = \mathrm{ReLU}(x_k - \mathrm{open}(x_k))

  with the cross-shaped soft erosion (minimum of 3-wide min-pools along each
  spatial axis), the full ``3^n`` soft dilation (max-pool) and
  :math:`\mathrm{open} = \mathrm{dilate} \circ \mathrm{erode}`; every pool has
  stride 1 and neutral "same" padding (see the module docstring).  Each channel
  is skeletonised on its own.  For a hard binary mask the result is a binary
  (morphological, cross-element) skeleton; structures thicker than about
  ``2 * iterations + 1`` pixels are only partly skeletonised.

  Args:
    probs: ``(batch, *spatial, channels)`` values in ``[0, 1]`` (at least one
      spatial axis; 2D and 3D are the intended cases).
    iterations: number :math:`K` of erosion steps, a non-negative Python int.

  Returns:
    ``(batch, *spatial, channels)`` soft skeleton, in at least float32.

  References:
    Shit et al., clDice, CVPR 2021, Algorithm 1; MONAI ``soft_skel``.
  """
  probs = _checks.compute_dtype(probs)
  _check_iterations(iterations)
  if probs.ndim < 3:
    raise ValueError(
        "probs must be channels-last (batch, *spatial, channels) with at least "
        f"one spatial axis; got shape {probs.shape}.")
  if not jnp.issubdtype(probs.dtype, jnp.floating):
    raise ValueError(f"probs must be floating point, got {probs.dtype}.")
  return _skeleton(probs, iterations)


def _check_args(smooth, include_background, num_classes, reduction) -> None:
  if reduction not in _REDUCTIONS:
    raise ValueError(
        f"reduction must be one of {_REDUCTIONS}, got {reduction!r}.")
  if isinstance(smooth, (int, float)) and smooth < 0:
    raise ValueError(f"smooth must be >= 0, got {smooth}.")
  if not include_background and num_classes < 2:
    raise ValueError(
        "include_background=False drops channel 0, which leaves no channel "
        "for a single-channel output; keep include_background=True (with a "
        "sigmoid output, channel 0 is the foreground).")


def _sum(x: jax.Array, batch: bool, pool_classes: bool) -> jax.Array:
  """Sums over space (and batch / classes): ``(batch or 1, classes or 1)``."""
  axes = tuple(range(1, x.ndim - 1))
  out = jnp.sum(x, axis=axes)  # (batch, classes)
  if batch:
    out = jnp.sum(out, axis=0, keepdims=True)
  if pool_classes:
    out = jnp.sum(out, axis=-1, keepdims=True)
  return out


def _reduce(per_class: jax.Array, batch_size: int, reduction: str) -> jax.Array:
  per_class = jnp.broadcast_to(per_class, (batch_size, per_class.shape[-1]))
  if reduction == "mean":
    return jnp.mean(per_class, axis=-1)
  if reduction == "sum":
    return jnp.sum(per_class, axis=-1)
  return per_class


def _cldice_per_class(probs, targets, iterations, smooth, batch, pool_classes):
  skel_pred = _skeleton(probs, iterations)
  skel_true = _skeleton(targets, iterations)
  tprec = ((_sum(skel_pred * targets, batch, pool_classes) + smooth)
           / (_sum(skel_pred, batch, pool_classes) + smooth))
  tsens = ((_sum(skel_true * probs, batch, pool_classes) + smooth)
           / (_sum(skel_true, batch, pool_classes) + smooth))
  return 1.0 - 2.0 * tprec * tsens / (tprec + tsens)


def _prepare(logits, labels, activation, iterations, smooth,
             include_background, reduction):
  logits = _checks.compute_dtype(logits)
  _check_iterations(iterations)
  probs, targets = region._probs_and_targets(logits, labels, activation)  # pylint: disable=protected-access
  _check_args(smooth, include_background, probs.shape[-1], reduction)
  if not include_background:
    probs, targets = probs[..., 1:], targets[..., 1:]
  return probs, targets


def soft_cldice_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    iterations: int = 3,
    smooth: float = 1.0,
    include_background: bool = False,
    batch: bool = False,
    pool_classes: bool = False,
    reduction: str = "mean",
) -> jax.Array:
  r"""Soft clDice loss (Shit et al. 2021), channels-last.

  For every kept class :math:`c` (and every example unless ``batch=True``),
  with :math:`P` the probabilities, :math:`L` the targets and
  :math:`S_P, S_L` their :func:`soft_skeleton`\ s:

  .. math::
    T_{prec} = \frac{\sum_i S_{P,i} L_i + s}{\sum_i S_{P,i} + s}, \quad
    T_{sens} = \frac{\sum_i S_{L,i} P_i + s}{\sum_i S_{L,i} + s}, \quad
    L_c = 1 - \frac{2\, T_{prec} T_{sens}}{T_{prec} + T_{sens}}

  then the class values are averaged (``reduction="mean"``), summed
  (``"sum"``) or returned (``"none"``).  With ``pool_classes=True`` the sums
  run over all kept channels together (one ratio, as in MONAI).

  MONAI's ``SoftclDiceLoss`` is ``include_background=False, pool_classes=True``
  (module docstring, "Reproducing MONAI").

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (for a single channel: the binary
      mask) or one-hot / binary / soft targets with the logits' shape (see
      :mod:`jaxseg.losses.region` for the out-of-range policy).
    activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.
    iterations: skeletonisation steps :math:`K` (Python int >= 0); should be
      about half the largest structure thickness in pixels.
    smooth: constant :math:`s` added to the numerators and denominators, >= 0;
      keep it > 0 (an empty skeleton gives 0/0 = NaN with ``smooth=0``).
    include_background: if False (default, as in MONAI), channel 0 is left
      out.
    batch: pool the sums over the batch (MONAI); the batch value is broadcast
      to every example.
    pool_classes: sum over the kept channels before the ratios (MONAI)
      instead of one ratio per class; ``reduction="none"`` then has one column.
    reduction: ``"mean"`` | ``"sum"`` over classes, or ``"none"``.

  Returns:
    ``(batch,)`` loss values, or ``(batch, classes_kept)`` (``(batch, 1)``
    with ``pool_classes``) for ``reduction="none"``.

  References:
    Shit et al., "clDice -- a Novel Topology-Preserving Loss Function for
    Tubular Structure Segmentation", CVPR 2021; MONAI ``SoftclDiceLoss``.
  """
  probs, targets = _prepare(logits, labels, activation, iterations, smooth,
                            include_background, reduction)
  per_class = _cldice_per_class(
      probs, targets, iterations, smooth, batch, pool_classes)
  return _reduce(per_class, probs.shape[0], reduction)


def dice_cldice_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    alpha: float = 0.5,
    activation: str = "softmax",
    iterations: int = 3,
    smooth: float = 1.0,
    include_background: bool = False,
    batch: bool = False,
    pool_classes: bool = False,
    reduction: str = "mean",
) -> jax.Array:
  r"""Soft Dice + soft clDice (Shit et al. 2021; MONAI ``SoftDiceclDiceLoss``).

  .. math::
    L_c = (1 - \alpha) \Big(1 - \frac{2 \sum_i P_i L_i + s}
                                  {\sum_i P_i + \sum_i L_i + s}\Big)
          + \alpha\, L_{clDice, c}

  with :math:`L_{clDice, c}` as in :func:`soft_cldice_loss` and the sums taken
  over the same axes (space; the batch with ``batch=True``; the kept channels
  with ``pool_classes=True``).  With ``pool_classes=False`` the Dice term is
  :func:`jaxseg.losses.soft_dice_loss` with ``smooth_nr = smooth_dr = smooth``
  (same ``batch`` / ``include_background``); MONAI's ``soft_dice`` pools the
  foreground channels (``pool_classes=True``), which differs from the per-class
  mean of ``soft_dice_loss`` when more than one foreground class is kept.

  MONAI's ``SoftDiceclDiceLoss`` agrees with a single kept channel (module
  docstring, "Reproducing MONAI").

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` or one-hot / binary / soft
      targets with the logits' shape.
    alpha: weight of the clDice term (the paper uses values in ``[0, 0.5]``),
      in ``[0, 1]``; a Python number or a scalar array.
    activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.
    iterations: skeletonisation steps (Python int >= 0).
    smooth: constant added to numerators and denominators of both terms, >= 0.
    include_background: if False (default), channel 0 is left out.
    batch: pool the sums over the batch; broadcast to every example.
    pool_classes: sum over the kept channels before the ratios (MONAI).
    reduction: ``"mean"`` | ``"sum"`` over classes, or ``"none"``.

  Returns:
    ``(batch,)`` loss values, or ``(batch, classes_kept)`` (``(batch, 1)``
    with ``pool_classes``) for ``reduction="none"``.

  References:
    Shit et al., clDice, CVPR 2021, Eq. 4; MONAI ``SoftDiceclDiceLoss``.
  """
  if isinstance(alpha, (int, float)) and not 0.0 <= alpha <= 1.0:
    raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
  probs, targets = _prepare(logits, labels, activation, iterations, smooth,
                            include_background, reduction)
  inter = _sum(probs * targets, batch, pool_classes)
  total = _sum(probs, batch, pool_classes) + _sum(targets, batch, pool_classes)
  dice = 1.0 - (2.0 * inter + smooth) / (total + smooth)
  cldice = _cldice_per_class(
      probs, targets, iterations, smooth, batch, pool_classes)
  per_class = (1.0 - alpha) * dice + alpha * cldice
  return _reduce(per_class, probs.shape[0], reduction)
