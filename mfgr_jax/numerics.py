"""Non-finite steps: an update whose loss, gradient or result holds NaN/Inf is not applied.

Every train step (classifier, generator, DeepInversion's pixels) computes
`all_finite` of its loss terms, gradients and new parameters on the device and keeps the
previous state when it is false, advancing only the step counter, so training
never continues from garbage. The step reports `skipped` (1.0 or 0.0); the
outer loop reads it lazily at log and checkpoint steps and, by
`config.on_nonfinite`, stops naming the step and the terms, or counts it.
"""

from typing import Any

import jax
import jax.numpy as jnp

SKIPPED = 'skipped'


def all_finite(tree: Any) -> jax.Array:
  """True iff every element of every leaf of `tree` is finite."""
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def keep_if_finite(finite: jax.Array, new: Any, old: Any) -> Any:
  """`new` if `finite`, else `old` (trees of the same structure)."""
  return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)


def with_skipped(metrics: dict, finite: jax.Array) -> dict:
  return {**metrics, SKIPPED: 1.0 - finite.astype(jnp.float32)}


def guard(finite: jax.Array, new_state: Any, old_state: Any, metrics: dict) -> tuple[Any, dict]:
  """The state to continue from (`old_state` with the new step counter if not
  `finite`), and `metrics` with `SKIPPED`."""
  kept = keep_if_finite(finite, new_state, old_state).replace(step=new_state.step)
  return kept, with_skipped(metrics, finite)
