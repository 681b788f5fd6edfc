"""Label-range checks shared by the losses (private; one home for the check).

A loss that takes an integer class map ``(batch, *spatial)`` with ``C``
classes needs every value in ``[0, C)``; a loss that takes an integer binary
mask needs every value in ``{0, 1}``.  Out-of-range values are a data bug
(e.g. an "ignore" value of -1 or 255, or a mask stored as 0/255) that the
losses cannot handle meaningfully, so these helpers raise a ``ValueError``
naming the offending values and the valid range.

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


def check_class_indices(
    labels: jax.typing.ArrayLike,
    num_classes: int,
    *,
    name: str = "labels",
    what: str = "class indices",
) -> None:
  """Raises ``ValueError`` if concrete ``labels`` fall outside ``[0, num_classes)``.

  Boolean labels are 0/1 and pass for ``num_classes >= 2``.  Integer and
  floating labels are range-checked (a NaN counts as out of range).  Traced
  labels are not checked (see the module docstring).

  Args:
    labels: the label array (any shape).
    num_classes: number of classes ``C``; valid values are ``0 .. C - 1``.
    name: what to call the array in the message.
    what: what the values should be, for the message.

  Raises:
    ValueError: some value lies outside ``[0, num_classes)``; the message
      lists up to ten distinct offending values and counts the positions.
  """
  if _is_traced(labels):
    return
  dtype = jnp.result_type(labels)
  if dtype == jnp.bool_ and num_classes >= 2:
    return
  if jnp.size(labels) == 0:
    return
  if isinstance(labels, np.ndarray):
    lo, hi = labels.min(), labels.max()
  else:
    # Concrete labels may be closed over by a function being traced; without
    # this context the reductions would be staged into it.  One small
    # device -> host transfer of two scalars.
    with jax.ensure_compile_time_eval():
      lo, hi = jax.device_get((jnp.min(labels), jnp.max(labels)))
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
  """Raises ``ValueError`` if a concrete integer mask has values other than 0, 1.

  Only integer dtypes are checked: floating labels may be soft targets and
  booleans are always 0/1.  Traced labels are not checked.

  Args:
    labels: binary mask (any shape).
    name: what to call the array in the message.

  Raises:
    ValueError: an integer value outside ``{0, 1}``, e.g. a 0/255 mask.
  """
  if _is_traced(labels):
    return
  if not jnp.issubdtype(jnp.result_type(labels), jnp.integer):
    return
  check_class_indices(labels, 2, name=name, what="binary mask values")
