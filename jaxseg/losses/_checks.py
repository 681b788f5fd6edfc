"""Label-range checks shared by the losses (private; one home for the check).

A loss that takes an integer class map ``(batch, *spatial)`` with ``C``
classes needs every value in ``[0, C)``; a loss that takes an integer binary
mask needs every value in ``{0, 1}``.  Out-of-range values are a data bug
(e.g. an "ignore" value of -1 or 255, or a mask stored as 0/255) that the
losses cannot handle meaningfully, so these helpers raise a ``ValueError``
naming the offending values and the valid range.  A *floating* class map
must hold whole numbers: a value such as 1.5 (what linear resampling makes of
a label map) has no class, and each loss would read it differently (truncated
to 1 by an integer cast, an all-zero one-hot row, ...), so it is rejected with
the fix (resample labels with nearest-neighbour interpolation, or round).  A
floating single-channel mask may be a soft target and must lie in ``[0, 1]``.

:func:`compute_dtype` is the other shared rule: every loss computes in at
least float32, so bf16 / fp16 logits (mixed-precision models) give float32
losses and gradients of the logits' dtype.

The check needs the label values, so it runs only when the labels are
concrete: eager calls, ``jax.disable_jit``, labels closed over by a function
under ``jax.grad``, or a concrete ``jax.Array`` closed over by a jitted
function (checked once, at trace time).  Under ``jax.jit`` / ``vmap`` the labels are tracers and the
check is skipped at no cost to the compiled step; each loss's docstring says
what it returns then (NaN for the cross-entropy-type losses, which the
training loop's non-finite-loss check reports with the step).
"""

import jax
import jax.numpy as jnp
import numpy as np

_SHOWN = 10  # Offending values listed in the message at most.


def _is_traced(labels: jax.typing.ArrayLike) -> bool:
  return isinstance(labels, jax.core.Tracer)


def compute_dtype(logits: jax.typing.ArrayLike) -> jax.Array:
  """Returns ``logits`` as a floating array of at least float32 precision.

  bf16 and fp16 inputs are promoted to float32 (float64 stays float64 under
  ``jax_enable_x64``); the cast is differentiable, so the gradient comes back
  in the input dtype.  Non-floating input is returned unchanged for the
  caller's own dtype check.
  """
  logits = jnp.asarray(logits)
  if jnp.issubdtype(logits.dtype, jnp.floating):
    return logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  return logits


def _extremes(labels) -> tuple:
  """``(min, max, any non-integer)`` of concrete labels, on the host."""
  floating = jnp.issubdtype(jnp.result_type(labels), jnp.floating)
  if isinstance(labels, np.ndarray):
    frac = bool(np.any(labels != np.round(labels))) if floating else False
    return labels.min(), labels.max(), frac
  # Concrete labels may be closed over by a function being traced; without
  # this context the reductions would be staged into it.  One small
  # device -> host transfer of three scalars.
  with jax.ensure_compile_time_eval():
    frac = jnp.any(labels != jnp.round(labels)) if floating else False
    lo, hi, frac = jax.device_get((jnp.min(labels), jnp.max(labels), frac))
  return lo, hi, bool(frac)


def _raise_fractional(labels, name: str) -> None:
  values = np.asarray(labels)
  bad = values != np.round(values)
  shown = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:_SHOWN].tolist())
  raise ValueError(
      f"{name} must be whole class indices, but a floating label map holds non-integer values: "
      f"{shown} ({int(bad.sum())} of {values.size} positions); resample label maps with "
      "nearest-neighbour interpolation (order=0) or round them before the loss.")


def check_class_indices(
    labels: jax.typing.ArrayLike,
    num_classes: int,
    *,
    name: str = "labels",
    what: str = "class indices",
) -> None:
  """Raises ``ValueError`` if concrete ``labels`` fall outside ``[0, num_classes)``.

  Boolean labels are 0/1 and pass for ``num_classes >= 2``.  Integer and
  floating labels are range-checked (a NaN counts as out of range), and
  floating labels must hold whole numbers.  Traced labels are not checked (see
  the module docstring).

  Args:
    labels: the label array (any shape).
    num_classes: number of classes ``C``; valid values are ``0 .. C - 1``.
    name: what to call the array in the message.
    what: what the values should be, for the message.

  Raises:
    ValueError: some value lies outside ``[0, num_classes)`` or is not a
      whole number; the message lists up to ten distinct offending values and
      counts the positions.
  """
  if _is_traced(labels):
    return
  dtype = jnp.result_type(labels)
  if dtype == jnp.bool_ and num_classes >= 2:
    return
  if jnp.size(labels) == 0:
    return
  lo, hi, fractional = _extremes(labels)
  if fractional:
    _raise_fractional(labels, name)
  if lo >= 0 and hi < num_classes:  # False for NaN.
    return
  values = np.asarray(labels)
  bad = ~((values >= 0) & (values < num_classes))
  outside = np.unique(values[bad])
  shown = ", ".join(str(v) for v in outside[:_SHOWN].tolist())
  more = " ..." if outside.size > _SHOWN else ""
  raise ValueError(
      f"{name} must be {what} in [0, {num_classes}) (0..{num_classes - 1}); "
      f"got values outside that range: {shown}{more} "
      f"({int(bad.sum())} of {values.size} positions).")


def check_binary_mask(
    labels: jax.typing.ArrayLike, *, name: str = "labels") -> None:
  """Raises ``ValueError`` if a concrete mask is not binary (or soft, for floats).

  Integer masks must hold 0 and 1 only.  Floating masks may be soft targets
  and must lie in ``[0, 1]`` (a NaN fails); booleans are always 0/1.  Traced
  labels are not checked.

  Args:
    labels: binary mask (any shape).
    name: what to call the array in the message.

  Raises:
    ValueError: an integer value outside ``{0, 1}`` (e.g. a 0/255 mask), or
      a floating value outside ``[0, 1]``.
  """
  if _is_traced(labels):
    return
  dtype = jnp.result_type(labels)
  if jnp.issubdtype(dtype, jnp.integer):
    check_class_indices(labels, 2, name=name, what="binary mask values")
    return
  if not jnp.issubdtype(dtype, jnp.floating) or jnp.size(labels) == 0:
    return
  lo, hi, _ = _extremes(labels)
  if lo >= 0 and hi <= 1:  # False for NaN.
    return
  values = np.asarray(labels)
  bad = ~((values >= 0) & (values <= 1))
  shown = ", ".join(f"{v:g}" for v in np.unique(values[bad])[:_SHOWN].tolist())
  raise ValueError(
      f"{name} must be a binary or soft mask with values in [0, 1]; got {shown} "
      f"({int(bad.sum())} of {values.size} positions). A 0/255 mask needs `mask > 0`.")
