"""Every random number of a run comes from the config seed: a task's key is
fold_in(fold_in(PRNGKey(seed), task index), stream), one stream per use, so a
resumed run replays exactly the stream of an uninterrupted one. A new use
takes a new stream number (never reuse one: runs would change)."""

import jax

# The model's initialisation and its widened head; the classifier's batch order,
# augmentation and replay draws; the generator's initialisation, steps and sample
# grid; MUC's side heads; DeepInversion's pixel pool.
(INIT, HEAD, ORDER, AUGMENT, GENERATOR_INIT, GENERATOR_STEPS, REPLAY, SAMPLES, SIDE_HEADS,
 PIXEL_POOL) = range(10)
# A method's head phase (its batch order, augmentation and replay draws), the
# initialisation of the parameters its loss owns, and its estimate of the
# replayed class counts.
HEAD_PHASE_ORDER, HEAD_PHASE_AUGMENT, HEAD_PHASE_REPLAY, LOSS_PARAMS_INIT, REPLAY_CLASS_COUNTS = (
    range(10, 15))


def task_key(seed: int, task_index: int, stream: int) -> jax.Array:
  return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(seed), task_index), stream)
