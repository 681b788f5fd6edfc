"""Numerically stable pieces shared by the sigmoid losses."""

import jax
import jax.numpy as jnp


def log_sigmoids(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  r"""Both :math:`\log\sigma(x)` and :math:`\log\sigma(-x) = \log(1 - \sigma(x))`, exactly.

  With :math:`s = \mathrm{log1p}(e^{-|x|})`:

  .. math::
    \log\sigma(x) = \begin{cases} -s & x \ge 0 \\ x - s & x < 0 \end{cases}, \qquad
    \log\sigma(-x) = \begin{cases} -x - s & x \ge 0 \\ -s & x < 0 \end{cases}

  The same values as ``jax.nn.log_sigmoid(x)`` and ``jax.nn.log_sigmoid(-x)`` (both are
  ``-softplus``), from one exponential and one ``log1p`` shared by the pair; finite, with finite
  gradients, at any finite logit. :math:`-|x|` is written as a ``where`` on the sign, so the
  derivatives, :math:`\sigma(-x)` and :math:`-\sigma(x)`, are exact at :math:`x = 0` too (1/2
  and -1/2) instead of depending on how ``max`` and ``abs`` split their kinks.

  Why not ``jax.nn.log_sigmoid`` twice: ``softplus`` is ``logaddexp(x, 0)``, whose infinity and
  NaN guards XLA:CPU fuses into slow loops; the sigmoid focal loss's value and gradient ran about
  3x faster this way (BENCHMARKS.md, "Losses and metrics vs MONAI").
  """
  nonneg = x >= 0
  shared = jnp.log1p(jnp.exp(jnp.where(nonneg, -x, x)))
  return jnp.where(nonneg, -shared, x - shared), jnp.where(nonneg, -x - shared, -shared)
