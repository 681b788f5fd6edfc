"""Deep supervision and the probabilistic U-Net ELBO.

* :func:`deep_supervision_loss` sums a loss over the outputs of several
  decoder scales, each against labels max-pooled to that scale;
  :func:`nnunet_weights` and :func:`downsample_labels` are its parts.
* :func:`elbo_loss` and :func:`kl_diagonal_gaussians` give the training
  objective of the (hierarchical) probabilistic U-Net of seed 001; their
  bf16 / fp16 inputs are computed in float32.

References:
  Isensee et al., "nnU-Net", Nature Methods 2021 (deep supervision weights).
  Jiang et al., "MicroSegNet", CMIG 2024 (equal weights over four heads).
  Kohl et al., "A Probabilistic U-Net for Segmentation of Ambiguous Images",
  NeurIPS 2018; Kohl et al., "A Hierarchical Probabilistic U-Net", 2019.
"""

import numbers
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import _checks

_Factor = Union[int, Sequence[int]]


def nnunet_weights(n: int, *, zero_coarsest: bool = False) -> np.ndarray:
  r"""nnU-Net's deep-supervision weights, ordered fine -> coarse.

  .. math::
    w_i = \frac{2^{-i}}{\sum_{j=0}^{n-1} 2^{-j}}, \quad i = 0 \dots n-1

  where scale :math:`i = 0` is the full-resolution output and every coarser
  scale gets half the weight of the previous one.  nnU-Net v2's trainer also
  sets the coarsest weight to 0 before normalising (``zero_coarsest=True``).
  MicroSegNet instead sums its heads with equal weights (``[1.0] * n``).

  Args:
    n: number of outputs, >= 1.
    zero_coarsest: set the last (coarsest) weight to 0 before normalising
      (ignored for ``n = 1``).

  Returns:
    ``(n,)`` float64 NumPy array summing to 1.
  """
  if not isinstance(n, numbers.Integral) or n < 1:
    raise ValueError(f"n must be an int >= 1, got {n}.")
  weights = 0.5 ** np.arange(n, dtype=np.float64)
  if zero_coarsest and n > 1:
    weights[-1] = 0.0
  return weights / weights.sum()


def _max_pool_init(dtype) -> jax.Array:
  if jnp.issubdtype(dtype, jnp.floating):
    return jnp.array(-jnp.inf, dtype)
  return jnp.array(jnp.iinfo(dtype).min, dtype)


def downsample_labels(
    labels: jax.typing.ArrayLike,
    factor: _Factor,
    *,
    spatial_dims: Optional[int] = None,
) -> jax.Array:
  """Max-pools labels by an integer factor per spatial axis (no erosion).

  Each coarse pixel takes the maximum over its ``factor``-sized window, so a
  foreground pixel anywhere in the window keeps the coarse pixel foreground.
  Strided subsampling (nearest neighbour) or average-then-threshold can drop
  thin or small structures (a neurovascular bundle, a small lesion, a thin
  band of annotator disagreement) from the coarse targets, and the coarse head
  would then be penalised for finding them; max-pooling keeps every structure
  present at every scale, at the cost of dilating it by less than one coarse
  pixel.

  * binary masks and one-hot / multi-hot maps: per-channel max (a coarse
    pixel may then be "on" in several channels, background included: it is a
    multi-hot target; drop the background channel for Dice-type losses);
  * integer label maps: the largest class index in the window wins, which
    never turns foreground into background; among foreground classes the
    higher index takes precedence.

  Args:
    labels: ``(batch, *spatial)`` integer / binary map or
      ``(batch, *spatial, channels)`` one-hot map; bool, integer or float.
    factor: downsampling factor, one int for every spatial axis or one per
      axis; each spatial size must be divisible by it.
    spatial_dims: number of spatial axes (those after the batch axis).  None:
      ``len(factor)`` for a sequence factor, else ``labels.ndim - 1`` (no
      channel axis).

  Returns:
    Array of the same dtype, spatial sizes divided by ``factor``.
  """
  labels = jnp.asarray(labels)
  if spatial_dims is None:
    spatial_dims = (labels.ndim - 1 if isinstance(factor, numbers.Integral)
                    else len(factor))
  if spatial_dims < 1 or labels.ndim not in (spatial_dims + 1,
                                             spatial_dims + 2):
    raise ValueError(
        f"labels of shape {labels.shape} do not fit {spatial_dims} spatial "
        "axes (expected (batch, *spatial) or (batch, *spatial, channels)).")
  if isinstance(factor, numbers.Integral):
    factors = (int(factor),) * spatial_dims
  else:
    factors = tuple(int(f) for f in factor)
  if len(factors) != spatial_dims or any(f < 1 for f in factors):
    raise ValueError(
        f"factor must be >= 1 for each of the {spatial_dims} spatial axes; "
        f"got {factor}.")
  spatial = labels.shape[1:1 + spatial_dims]
  if any(s % f for s, f in zip(spatial, factors)):
    raise ValueError(
        f"spatial shape {spatial} is not divisible by factors {factors}.")
  if all(f == 1 for f in factors):
    return labels
  trailing = (1,) * (labels.ndim - 1 - spatial_dims)
  window = (1,) + factors + trailing
  is_bool = labels.dtype == jnp.bool_
  x = labels.astype(jnp.uint8) if is_bool else labels
  pooled = jax.lax.reduce_window(
      x, _max_pool_init(x.dtype), jax.lax.max, window, window, "VALID")
  return pooled.astype(jnp.bool_) if is_bool else pooled


def deep_supervision_loss(
    outputs: Sequence[jax.typing.ArrayLike],
    labels: Any,
    loss_fn: Callable[..., jax.Array],
    *,
    weights: Optional[Sequence[float]] = None,
    kernel_sizes: Optional[Sequence[int]] = None,
) -> jax.Array:
  r"""Weighted sum of a loss over multi-scale outputs, labels max-pooled.

  .. math::
    L = \sum_{i} w_i \, \ell\big(x^{(i)}, \mathrm{maxpool}_{f_i}(y)\big)

  ``outputs`` are ordered **fine -> coarse** (nnU-Net's order):
  ``outputs[0]`` is the full-resolution head, whose spatial shape usually
  equals the labels'.  The factor :math:`f_i` of each scale is read off the
  shapes (label spatial size / output spatial size, an integer per axis) and
  the labels are reduced with :func:`downsample_labels` (max-pool, so masks
  are never eroded).

  Label values are checked by ``loss_fn`` at every scale (the losses of this
  package raise on concrete out-of-range class indices).  Max-pooling keeps
  a too-large value at every scale, but a negative one (e.g. an "ignore" -1)
  may be pooled away at coarse scales, so it is reported only by the finer
  heads' losses where it survives (e.g. the full-resolution head).

  Args:
    outputs: sequence of logits ``(batch, *spatial_i, C)``, fine -> coarse.
    labels: full-resolution labels ``(batch, *spatial[, channels])``, or a
      pytree (tuple / dict) of such arrays, e.g. ``(expert, non_expert)``;
      every leaf is max-pooled to each scale and the pytree is passed to
      ``loss_fn`` as it is.
    loss_fn: ``loss_fn(logits, labels_i, **kw) -> (batch,)``; hyperparameters
      should be bound beforehand (``functools.partial``).
    weights: per-scale weights in the order of ``outputs``, used as given (not
      renormalised).  None: :func:`nnunet_weights` (``1/2^i`` normalised,
      finest first).  MicroSegNet: equal weights ``[1.0] * n`` (a plain sum).
    kernel_sizes: optional per-scale ints passed as ``kernel_size=`` to
      ``loss_fn``, e.g. the hard-region dilation of MicroSegNet's AG-BCE,
      which grows with resolution: ``(4, 3, 2, 1)`` for heads at 224, 112, 56
      and 28 px (fine -> coarse).

  Returns:
    The weighted sum of the per-scale losses, shape ``(batch,)``.

  Example (MicroSegNet)::

    def ag_loss(logits, masks, *, kernel_size):
      expert, non_expert = masks
      hard = hard_region_mask(expert, non_expert, kernel_size=kernel_size)
      return ag_bce_loss(logits, expert, hard)

    loss = deep_supervision_loss(
        heads, (expert, non_expert), ag_loss, weights=[1.0] * 4,
        kernel_sizes=(4, 3, 2, 1))
  """
  outputs = [jnp.asarray(o) for o in outputs]
  n = len(outputs)
  if n == 0:
    raise ValueError("outputs must hold at least one scale.")
  weights = nnunet_weights(n) if weights is None else list(weights)
  if len(weights) != n:
    raise ValueError(f"got {len(weights)} weights for {n} outputs.")
  if kernel_sizes is not None and len(kernel_sizes) != n:
    raise ValueError(f"got {len(kernel_sizes)} kernel_sizes for {n} outputs.")
  leaves = jax.tree_util.tree_leaves(labels)
  if not leaves:
    raise ValueError("labels must hold at least one array.")

  total = None
  for i, logits in enumerate(outputs):
    w = weights[i]
    if isinstance(w, (numbers.Number, np.number)):
      w = float(w)  # A Python float stays weakly typed (no float64 leak).
      if w == 0.0:
        continue
    spatial_dims = logits.ndim - 2
    if spatial_dims < 1:
      raise ValueError(
          f"outputs[{i}] must be (batch, *spatial, C); got {logits.shape}.")
    out_spatial = logits.shape[1:-1]

    def _down(leaf, out_spatial=out_spatial, spatial_dims=spatial_dims, i=i):
      leaf = jnp.asarray(leaf)
      full = leaf.shape[1:1 + spatial_dims]
      if (len(full) != spatial_dims
          or any(s % o for s, o in zip(full, out_spatial))):
        raise ValueError(
            f"labels spatial shape {full} is not an integer multiple of "
            f"outputs[{i}] spatial shape {out_spatial}.")
      factors = tuple(s // o for s, o in zip(full, out_spatial))
      return downsample_labels(leaf, factors, spatial_dims=spatial_dims)

    labels_i = jax.tree_util.tree_map(_down, labels)
    kwargs = {} if kernel_sizes is None else {"kernel_size": kernel_sizes[i]}
    term = w * loss_fn(logits, labels_i, **kwargs)
    total = term if total is None else total + term
  if total is None:
    raise ValueError("all deep-supervision weights are zero.")
  return total


def kl_diagonal_gaussians(
    mu_q: jax.typing.ArrayLike,
    logvar_q: jax.typing.ArrayLike,
    mu_p: jax.typing.ArrayLike,
    logvar_p: jax.typing.ArrayLike,
) -> jax.Array:
  r"""KL divergence between diagonal Gaussians, summed over latent dimensions.

  .. math::
    \mathrm{KL}(q \,\|\, p) = \frac12 \sum_k \Big[
      \log\sigma_{p,k}^2 - \log\sigma_{q,k}^2
      + \frac{\sigma_{q,k}^2 + (\mu_{q,k} - \mu_{p,k})^2}{\sigma_{p,k}^2}
      - 1 \Big]

  computed from log-variances (``exp(logvar_q - logvar_p)``), summed over all
  non-batch axes (latent channels, and latent spatial positions for the
  hierarchical model's latent maps).

  Args:
    mu_q: posterior means ``(batch, ...)``.
    logvar_q: posterior log-variances, same shape.
    mu_p: prior means, same shape.
    logvar_p: prior log-variances, same shape.

  Returns:
    ``(batch,)`` KL values (>= 0).
  """
  mu_q, logvar_q, mu_p, logvar_p = (
      _checks.compute_dtype(a) for a in (mu_q, logvar_q, mu_p, logvar_p))
  shape = mu_q.shape
  if any(a.shape != shape for a in (logvar_q, mu_p, logvar_p)):
    raise ValueError(
        "mu_q, logvar_q, mu_p, logvar_p must share one shape; got "
        f"{[a.shape for a in (mu_q, logvar_q, mu_p, logvar_p)]}.")
  if mu_q.ndim < 1 or mu_q.size == 0:
    raise ValueError(f"inputs must be non-empty (batch, ...); got {shape}.")
  kl = 0.5 * (logvar_p - logvar_q + jnp.exp(logvar_q - logvar_p)
              + jnp.square(mu_q - mu_p) * jnp.exp(-logvar_p) - 1.0)
  return jnp.sum(kl, axis=tuple(range(1, kl.ndim)))


def elbo_loss(
    segmentation_loss: jax.typing.ArrayLike,
    kl: jax.typing.ArrayLike,
    *,
    beta: float = 10.0,
) -> jax.Array:
  r"""Negative ELBO of the probabilistic U-Net: reconstruction + beta * KL.

  .. math::
    L = L_{seg}\big(y, f(x, z \sim q)\big) + \beta \,
        \mathrm{KL}\big(q(z \mid x, y) \,\|\, p(z \mid x)\big)

  Training decodes with posterior samples; the segmentation loss is any
  per-example loss of this package.  Seed 001 weights the KL by 10.  For the
  hierarchical model, sum :func:`kl_diagonal_gaussians` over the latent
  levels first.

  Args:
    segmentation_loss: ``(batch,)`` reconstruction loss.
    kl: ``(batch,)`` KL divergence.
    beta: KL weight, >= 0.

  Returns:
    ``(batch,)`` loss values.
  """
  segmentation_loss = _checks.compute_dtype(segmentation_loss)
  kl = _checks.compute_dtype(kl)
  if segmentation_loss.shape != kl.shape:
    raise ValueError(
        "segmentation_loss and kl must have the same shape; got "
        f"{segmentation_loss.shape} and {kl.shape}.")
  if isinstance(beta, (int, float)) and beta < 0:
    raise ValueError(f"beta must be >= 0, got {beta}.")
  return segmentation_loss + beta * kl
