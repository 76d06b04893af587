"""Pure loss functions, one per term of the paper/code.

No state and no config objects: every function takes arrays and returns a
scalar (batch mean unless stated). Formulas follow docs `mfgr_spec.md`.
"""

import jax
import jax.numpy as jnp
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels over all given logits."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def cut_cross_entropy(logits: jax.Array, labels: jax.Array, num_old: int) -> jax.Array:
  """CE over the new-class logits only (the code's `set_targets_cut`).

  `labels` are in [num_old, C); the softmax runs over logits[:, num_old:].
  """
  return cross_entropy(logits[:, num_old:], labels - num_old)


def distillation(student_logits: jax.Array, teacher_logits: jax.Array,
                 temperature: float = 2.0, scale_by_t_squared: bool = False) -> jax.Array:
  """Soft-target cross-entropy at temperature T, batch mean (LwF's KD).

  The code uses soft CE (same gradient as KL), with no T^2 factor; Hinton's
  T^2 scaling is an option. The teacher is not differentiated.
  """
  teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / temperature, axis=-1)
  log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  loss = -jnp.mean(jnp.sum(teacher * log_student, axis=-1))
  return loss * temperature**2 if scale_by_t_squared else loss
