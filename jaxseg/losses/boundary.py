"""Kervadec boundary loss, Dice + boundary, and Kervadec's weight schedule.

The boundary loss integrates the predicted probabilities against the signed
distance map of the ground-truth boundary (negative inside the object,
positive outside), so it is minimised by predicting foreground exactly where
the map is negative:

.. math::
  L_B = \\mathrm{mean}_i \\sum_{c \\in \\mathcal{C}} p_{i,c} \\, \\phi_{i,c}

The maps :math:`\\phi` are an **input**: compute them once per label volume
in the input pipeline with :func:`jaxseg.data.distance.signed_distance_maps`
(never inside the loss; a class absent from a case gets an all-zero map).
bf16 / fp16 logits are promoted to float32 (the maps are cast to the same
dtype).  The loss is negative whenever the prediction overlaps the object, by
design, and it is meant to be trained together with a region loss, e.g. with
:func:`kervadec_schedule`.

Reference:
  Kervadec et al., "Boundary loss for highly unbalanced segmentation",
  MIDL 2019 / Medical Image Analysis 2021.
"""

import numbers
from typing import Union

import jax
import jax.numpy as jnp

from jaxseg.losses import _checks
from jaxseg.losses import region

_ACTIVATIONS = ("softmax", "sigmoid", "none")


def boundary_loss(
    logits: jax.typing.ArrayLike,
    dist_maps: jax.typing.ArrayLike,
    *,
    activation: str = "softmax",
    include_background: bool = False,
) -> jax.Array:
  r"""Kervadec boundary (surface) loss from precomputed signed distance maps.

  .. math::
    L_B = \frac{1}{N} \sum_{i=1}^{N} \sum_{c} p_{i,c} \, \phi_{i,c}

  per example, with :math:`N` the number of pixels/voxels and :math:`c`
  running over the kept channels (the foreground classes when
  ``include_background=False``, the default, as in seed 001).  Kervadec's
  reference code averages over the classes as well (``mean`` over
  ``b, k, x, y``); that differs by the constant factor ``K`` (identical for
  one foreground class).

  Args:
    logits: ``(batch, *spatial, classes)`` logits, or probabilities with
      ``activation="none"``.
    dist_maps: ``(batch, *spatial, classes_kept)`` signed distance maps,
      ``classes_kept = classes - 1`` without the background channel (the
      output of ``signed_distance_maps(..., include_background=False)``).
    activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.
    include_background: if False, channel 0 of the probabilities is dropped
      before pairing them with ``dist_maps``.  With a single sigmoid channel
      (channel 0 is the foreground) pass ``include_background=True``.

  Returns:
    ``(batch,)`` loss values (may be negative).

  References:
    Kervadec et al., "Boundary loss for highly unbalanced segmentation",
    MIDL 2019.
  """
  logits = _checks.compute_dtype(logits)
  dist_maps = jnp.asarray(dist_maps)
  if activation not in _ACTIVATIONS:
    raise ValueError(
        f"activation must be one of {_ACTIVATIONS}, got {activation!r}.")
  if logits.ndim < 3 or logits.size == 0:
    raise ValueError(
        "logits must be non-empty and channels-last (batch, *spatial, "
        f"classes); got {logits.shape}.")
  if activation == "softmax" and logits.shape[-1] < 2:
    raise ValueError("softmax needs at least two channels.")
  if activation == "softmax":
    probs = jax.nn.softmax(logits, axis=-1)
  elif activation == "sigmoid":
    probs = jax.nn.sigmoid(logits)
  else:
    probs = logits
  if not include_background:
    probs = probs[..., 1:]
  if probs.shape[-1] == 0:
    raise ValueError(
        "No channel left after dropping the background; with a single "
        "sigmoid channel use include_background=True.")
  if dist_maps.shape != probs.shape:
    raise ValueError(
        f"dist_maps must have shape {probs.shape} (channels kept: "
        f"{probs.shape[-1]}); got {dist_maps.shape}.")
  per_pixel = jnp.sum(probs * dist_maps.astype(probs.dtype), axis=-1)
  return jnp.mean(per_pixel, axis=tuple(range(1, per_pixel.ndim)))


def dice_boundary_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    dist_maps: jax.typing.ArrayLike,
    *,
    w_region: Union[float, jax.typing.ArrayLike],
    w_boundary: Union[float, jax.typing.ArrayLike],
    activation: str = "softmax",
    include_background: bool = False,
    smooth_nr: float = 1e-5,
    smooth_dr: float = 1e-5,
    batch: bool = False,
) -> jax.Array:
  r"""Weighted soft Dice + boundary loss ("DB", seed 001).

  .. math::
    L = w_R \, L_{Dice} + w_B \, L_B

  where :math:`L_{Dice}` is :func:`jaxseg.losses.region.soft_dice_loss`
  (mean over the kept classes) and :math:`L_B` is :func:`boundary_loss`, both
  over the same channels (foreground only by default).  Saha et al. sum the
  two (``w_region = w_boundary = 1``) with the Dice
  ``1 - 2 sum(y p) / (sum(y + p) + eps)``, i.e. ``smooth_nr=0,
  smooth_dr=eps``; Kervadec et al. schedule the weights over epochs, see
  :func:`kervadec_schedule`.  The weights may be traced scalars (e.g. fed
  from the train state), so the step does not recompile each epoch.

  Integer labels outside ``[0, classes)`` raise a ``ValueError`` when
  concrete (in :func:`jaxseg.losses.region.soft_dice_loss`); under ``jit``
  they become all-zero target rows of the Dice term.

  Args:
    logits: ``(batch, *spatial, classes)`` logits.
    labels: integer map ``(batch, *spatial)`` with values in
      ``[0, classes)``, or one-hot targets.
    dist_maps: ``(batch, *spatial, classes_kept)`` signed distance maps.
    w_region: weight of the Dice term.
    w_boundary: weight of the boundary term.
    activation: ``"softmax"`` or ``"sigmoid"``.
    include_background: keep channel 0 in both terms.
    smooth_nr: Dice numerator smoothing.
    smooth_dr: Dice denominator smoothing.
    batch: pool the Dice counts over the batch.

  Returns:
    ``(batch,)`` loss values.

  References:
    Kervadec et al., MIDL 2019; Saha et al., 2021 (seed 001).
  """
  dice = region.soft_dice_loss(
      logits, labels, activation=activation,
      include_background=include_background, smooth_nr=smooth_nr,
      smooth_dr=smooth_dr, batch=batch, reduction="mean")
  surface = boundary_loss(
      logits, dist_maps, activation=activation,
      include_background=include_background)
  return w_region * dice + w_boundary * surface


def kervadec_schedule(
    epoch: Union[int, jax.typing.ArrayLike],
    *,
    region_start: float = 1.0,
    region_min: float = 0.1,
    boundary_start: float = 0.01,
    step: float = 0.01,
):
  r"""Kervadec's "steal weight" schedule: ``(w_region, w_boundary)`` per epoch.

  .. math::
    w_R(e) = \max(0.1,\; 1 - 0.01\, e), \qquad
    w_B(e) = 0.01 + 0.01\, e

  for the 0-based epoch :math:`e`.  This is the closed form of the reference
  code's ``StealWeight(to_steal=0.01)`` started from weights ``[1, 0.01]``
  and applied after every epoch: the region weight falls by 0.01 per epoch
  and stops at 0.1 (reached at epoch 90); the boundary weight keeps growing
  by 0.01 per epoch without bound.

  Args:
    epoch: 0-based epoch, a non-negative int or an integer/float array.
    region_start: region weight at epoch 0.
    region_min: floor of the region weight.
    boundary_start: boundary weight at epoch 0.
    step: amount moved per epoch.

  Returns:
    ``(w_region, w_boundary)``: Python floats for an int epoch, arrays
    otherwise.
  """
  if isinstance(epoch, numbers.Integral):
    if epoch < 0:
      raise ValueError(f"epoch must be >= 0, got {epoch}.")
    return (float(max(region_min, region_start - step * int(epoch))),
            float(boundary_start + step * int(epoch)))
  epoch = jnp.asarray(epoch, jnp.result_type(float))
  return (jnp.maximum(region_min, region_start - step * epoch),
          boundary_start + step * epoch)
