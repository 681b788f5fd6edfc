"""Lovász losses: convex surrogates of the Jaccard (IoU) loss.

The Jaccard loss of a set of mispredicted pixels is submodular; its Lovász
extension :math:`\\bar\\Delta` is a tractable, piecewise-linear convex
surrogate.  For an error vector :math:`m \\in \\mathbb{R}^N` sorted in
decreasing order, :math:`m_{\\pi_1} \\ge \\dots \\ge m_{\\pi_N}`, with
ground-truth foreground indicators :math:`g` sorted alike:

.. math::
  \\bar\\Delta(m) = \\sum_{k=1}^{N} m_{\\pi_k}\\, d_k, \\qquad
  d_k = J_k - J_{k-1}, \\quad J_0 = 0,

  J_k = 1 - \\frac{G - \\sum_{j \\le k} g_{\\pi_j}}
                 {G + \\sum_{j \\le k} (1 - g_{\\pi_j})}, \\quad G = \\sum_i g_i

(``lovasz_grad`` of the reference code: :math:`J_k` is the Jaccard loss when
the :math:`k` largest errors are counted as mistakes).  The union is at least
1, so no ratio divides by zero.  The sorting permutation is treated as a
constant (as in the reference implementation): the gradient flows through the
gathered errors only.  Everything has static shapes (masks instead of boolean
indexing), so the losses work under ``jit``, ``vmap`` and ``grad``.

At a 0/1 error vector :math:`m = 1_M`, :math:`\\bar\\Delta(1_M)` is the
Jaccard loss :math:`|M| / |G \\cup M|` of the mistake set :math:`M`; for hard
probabilities ``lovasz_softmax_loss`` therefore equals :math:`1 - IoU`.

Conventions: channels-last logits ``(batch, *spatial, classes)``, labels an
integer map ``(batch, *spatial)`` or one-hot / binary targets with the logits'
shape (meant to be hard; soft values are used as given in the formulas); one
value per example, shape ``(batch,)``.  ``per_image=False`` pools all the
pixels of the batch into one Lovász extension (like ``batch=True`` in
:mod:`jaxseg.losses.region`): the batch value is broadcast to every example,
so ``jnp.mean`` of the result is the batch loss (under data parallelism the
pooling only covers the examples one device sees).  Counts are float32
cumulative sums: exact up to :math:`2^{24}` pixels per sorted vector.

References:
  Berman, Rannen Triki, Blaschko, "The Lovász-Softmax loss: A tractable
  surrogate for the optimization of the intersection-over-union measure in
  neural networks", CVPR 2018; https://github.com/bermanmaxim/LovaszSoftmax.
"""

from typing import Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxseg.losses import _checks
from jaxseg.losses import region


def _lovasz_grad(gt_sorted: jax.Array) -> jax.Array:
  """Increments of the Jaccard loss along the last (sorted) axis."""
  gts = jnp.sum(gt_sorted, axis=-1, keepdims=True)
  intersection = gts - jnp.cumsum(gt_sorted, axis=-1)
  union = gts + jnp.cumsum(1.0 - gt_sorted, axis=-1)
  jaccard = 1.0 - intersection / union
  return jnp.concatenate(
      [jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], axis=-1)


def _lovasz_extension(errors: jax.Array, gt: jax.Array) -> jax.Array:
  """``sum_k sorted_errors[k] * lovasz_grad(sorted_gt)[k]`` on the last axis."""
  gt = jax.lax.stop_gradient(gt)
  perm = jnp.argsort(jax.lax.stop_gradient(errors), axis=-1, descending=True)
  errors_sorted = jnp.take_along_axis(errors, perm, axis=-1)
  gt_sorted = jnp.take_along_axis(gt, perm, axis=-1)
  return jnp.sum(errors_sorted * _lovasz_grad(gt_sorted), axis=-1)


def _flatten(x: jax.Array, per_image: bool) -> jax.Array:
  """``(batch, *spatial, C)`` -> ``(groups, C, pixels)``."""
  groups = x.shape[0] if per_image else 1
  return jnp.swapaxes(x.reshape(groups, -1, x.shape[-1]), 1, 2)


def lovasz_hinge_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    per_image: bool = True,
) -> jax.Array:
  r"""Binary Lovász hinge loss (Berman et al. 2018), one channel.

  With signs :math:`\sigma_i = 2 y_i - 1` and hinge errors
  :math:`m_i = 1 - f_i \sigma_i` of the logits :math:`f`:

  .. math::
    L = \sum_{k=1}^{N} \mathrm{ReLU}(m_{\pi_k})\, d_k

  with :math:`\pi` sorting :math:`m` in decreasing order and :math:`d_k` the
  Jaccard-loss increments of the module docstring (the reference
  ``lovasz_hinge``; the paper's default ``per_image=True``).  Pixels with a
  margin :math:`f_i \sigma_i \ge 1` cost nothing.

  Args:
    logits: ``(batch, *spatial, 1)`` real-valued scores (positive =
      foreground); no activation is applied.
    labels: binary mask ``(batch, *spatial)`` or ``(batch, *spatial, 1)``.
      Integer values outside ``{0, 1}`` raise a ``ValueError`` when concrete;
      under ``jit`` they are used as given.
    per_image: if True (default), one Lovász extension per example; if False,
      one over all the pixels of the batch, broadcast to every example.

  Returns:
    ``(batch,)`` loss values.

  References:
    Berman et al., "The Lovász-Softmax loss", CVPR 2018, Sec. 3.1 / Eq. 10.
  """
  logits = _checks.compute_dtype(logits)
  if logits.ndim >= 1 and logits.shape[-1] != 1:
    raise ValueError(
        "lovasz_hinge_loss takes a single channel (batch, *spatial, 1); got "
        f"shape {logits.shape}. Use lovasz_softmax_loss for several classes.")
  scores, targets = region._probs_and_targets(logits, labels, "none")  # pylint: disable=protected-access
  scores, targets = _flatten(scores, per_image), _flatten(targets, per_image)
  signs = 2.0 * targets - 1.0
  errors = 1.0 - scores * signs
  # Sorting relu(m) instead of m only reorders zeros, which add nothing.
  loss = _lovasz_extension(jax.nn.relu(errors), targets)[:, 0]
  return jnp.broadcast_to(loss, (logits.shape[0],))


def lovasz_softmax_loss(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    classes: Union[str, Sequence[int]] = "present",
    per_image: bool = False,
    activation: str = "softmax",
) -> jax.Array:
  r"""Multi-class Lovász-Softmax loss (Berman et al. 2018).

  For every class :math:`c`, with errors :math:`m_{i,c} = |g_{i,c} - p_{i,c}|`
  of the probabilities :math:`p` against the one-hot targets :math:`g`:

  .. math::
    L = \frac{1}{|C'|} \sum_{c \in C'} \sum_{k=1}^{N} m_{\pi^c_k, c}\, d^c_k

  with :math:`\pi^c` sorting :math:`m_{\cdot,c}` decreasingly and :math:`d^c`
  the Jaccard-loss increments of the module docstring.  :math:`C'` is the set
  of classes present in the labels (``classes="present"``, the reference
  default), all classes (``"all"``) or the given class indices.  If
  :math:`C'` is empty (``"present"`` with an all-zero one-hot map) the loss is
  defined as 0 (the reference's ``mean`` of an empty list), with zero gradient.

  With a single sigmoid channel, channel 0 is the foreground (the binary mask);
  the reference code instead compares it with ``labels == 0``.

  Args:
    logits: ``(batch, *spatial, classes)`` logits (or probabilities with
      ``activation="none"``).
    labels: integer map ``(batch, *spatial)`` (single channel: binary mask) or
      one-hot / binary targets with the logits' shape; out-of-range integers
      raise a ``ValueError`` when concrete and become all-zero target rows
      under ``jit`` (counted as absent).
    classes: ``"present"``, ``"all"``, or a sequence of class indices (always
      counted, present or not).
    per_image: if False (default, as in the reference), one Lovász extension
      per class over all the pixels of the batch, broadcast to every example;
      if True, one per example (presence judged per example).
    activation: ``"softmax"``, ``"sigmoid"`` or ``"none"``.

  Returns:
    ``(batch,)`` loss values.

  References:
    Berman et al., "The Lovász-Softmax loss", CVPR 2018, Sec. 3.2 / Eq. 12.
  """
  logits = _checks.compute_dtype(logits)
  probs, targets = region._probs_and_targets(logits, labels, activation)  # pylint: disable=protected-access
  num_classes = probs.shape[-1]
  if isinstance(classes, str):
    if classes not in ("present", "all"):
      raise ValueError(
          "classes must be 'present', 'all' or a sequence of class indices; "
          f"got {classes!r}.")
    selected = np.ones(num_classes, bool)
  else:
    indices = np.asarray(list(classes), dtype=np.int64)
    if (indices.size == 0 or np.any(indices < 0)
        or np.any(indices >= num_classes)):
      raise ValueError(
          "classes must be a non-empty sequence of indices in "
          f"[0, {num_classes}); got {list(classes)!r}.")
    selected = np.zeros(num_classes, bool)
    selected[indices] = True
  probs, targets = _flatten(probs, per_image), _flatten(targets, per_image)
  # (groups, classes): one Lovász extension per group and class.
  per_class = _lovasz_extension(jnp.abs(targets - probs), targets)
  weights = jnp.broadcast_to(
      jnp.asarray(selected, per_class.dtype), per_class.shape)
  if isinstance(classes, str) and classes == "present":
    present = jax.lax.stop_gradient(jnp.sum(targets, axis=-1)) > 0
    weights = weights * present.astype(per_class.dtype)
  count = jnp.sum(weights, axis=-1)
  loss = jnp.sum(per_class * weights, axis=-1) / jnp.maximum(count, 1.0)
  return jnp.broadcast_to(loss, (logits.shape[0],))
