"""The classifier's train state, optimiser, train step and eval step.

Steps are pure per-device functions (see `parallel.py`): gradients, metrics
and BatchNorm batch statistics are averaged over the data-parallel axis, so the
update equals the single-device update on the same global batch.
"""

from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mfgr_jax import parallel
from mfgr_jax.data.augment import augment, normalize
from mfgr_jax.methods import ClassifierLoss


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """SGD with coupled L2 weight decay and a per-step cosine to 0 (spec §3)."""
  schedule = optax.cosine_decay_schedule(config.learning_rate, max(total_steps, 1), alpha=0.0)
  return optax.chain(optax.add_decayed_weights(config.weight_decay),
                     optax.sgd(schedule, momentum=config.momentum or None))


def init_train_state(params: Any, batch_stats: Any, tx: optax.GradientTransformation) -> TrainState:
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn: ClassifierLoss,
                    augment_kwargs: dict, teacher: nn.Module | None = None) -> Callable:
  """Returns a data-parallel `step(state, teacher_vars, batch) -> (state, metrics)`.

  `batch` holds uint8 `image`, output-index `label` and one PRNG key per
  example (`aug_key`). The teacher, if any, runs in eval mode on the same
  augmented images and is never differentiated.
  """

  def step(state: TrainState, teacher_vars: Any, batch: dict) -> tuple[TrainState, dict]:
    images = augment(batch['image'], batch['aug_key'], **augment_kwargs)
    teacher_logits = None
    if teacher is not None:
      teacher_logits, _ = teacher.apply(jax.lax.stop_gradient(teacher_vars), images, train=False)

    def loss_and_stats(params):
      (logits, _), updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                         images, train=True, mutable=['batch_stats'])
      loss, metrics = loss_fn(logits, batch['label'], teacher_logits)
      accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
      return loss, (updates['batch_stats'], {**metrics, 'loss': loss, 'train_accuracy': accuracy})

    grads, (batch_stats, metrics) = jax.grad(loss_and_stats, has_aux=True)(
        parallel.per_device(state.params))
    grads, metrics = parallel.pmean((grads, metrics))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                           batch_stats=batch_stats, opt_state=opt_state)
    return new_state, metrics

  return parallel.data_parallel(
      step, in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.SHARDED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED), donate_argnums=(0,))


def make_predict_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
  """Returns a data-parallel `predict(variables, images) -> argmax labels` (eval mode)."""

  def predict(variables: Any, images: jax.Array) -> jax.Array:
    logits, _ = model.apply(variables, normalize(images, mean, std), train=False)
    return jnp.argmax(logits, axis=-1)

  return parallel.data_parallel(predict, in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                out_specs=parallel.SHARDED)
