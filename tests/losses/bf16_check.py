"""The bf16 rule every loss test checks: bf16 logits compute in float32 (one home for the check)."""

import jax
import jax.numpy as jnp
import numpy as np


def assert_bf16_like_float32(test, fn, *args):
  """``fn(bf16, *args)`` is float32 and equals ``fn(float32 copy, *args)``."""
  low = jnp.asarray(args[0], jnp.bfloat16)
  got = jax.jit(lambda x: fn(x, *args[1:]))(low)
  test.assertEqual(got.dtype, jnp.float32)
  np.testing.assert_allclose(
      got, fn(low.astype(jnp.float32), *args[1:]), rtol=1e-6, atol=1e-7)
  grad = jax.grad(lambda x: jnp.sum(fn(x, *args[1:])))(low)
  test.assertEqual(grad.dtype, jnp.bfloat16)
