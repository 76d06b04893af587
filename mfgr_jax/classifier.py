"""The classifier's train state, optimiser, train step and eval step.

Steps are pure per-device functions (see `parallel.py`): gradients, metrics
and BatchNorm batch statistics are averaged over the data-parallel axis, so the
update equals the single-device update on the same global batch.
"""

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mfgr_jax import parallel
from mfgr_jax.data.augment import augment, normalize
from mfgr_jax.methods import ClassifierLoss, ReplayLoss


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
                    augment_kwargs: dict, teacher: nn.Module | None = None,
                    penalty: Callable[[Any, Any], jax.Array] | None = None) -> Callable:
  """Returns a data-parallel `step(state, teacher_vars, batch, penalty_state) -> (state, metrics)`.

  `batch` holds uint8 `image`, output-index `label` and one PRNG key per
  example (`aug_key`). The teacher, if any, runs in eval mode on the same
  augmented images and is never differentiated. `penalty(params,
  penalty_state)`, if given, is added to the loss (EWC, MAS); pass None as
  `teacher_vars` / `penalty_state` when unused.
  """

  def step(state: TrainState, teacher_vars: Any, batch: dict,
           penalty_state: Any) -> tuple[TrainState, dict]:
    images = augment(batch['image'], batch['aug_key'], **augment_kwargs)
    teacher_logits = None
    if teacher is not None:
      teacher_logits, _ = teacher.apply(jax.lax.stop_gradient(teacher_vars), images, train=False)

    def loss_and_stats(params):
      (logits, _), updates = model.apply({'params': params, 'batch_stats': state.batch_stats},
                                         images, train=True, mutable=['batch_stats'])
      loss, metrics = loss_fn(logits, batch['label'], teacher_logits)
      if penalty is not None:
        metrics = {**metrics, 'penalty': penalty(params, penalty_state)}
        loss = loss + metrics['penalty']
      accuracy = jnp.mean(jnp.argmax(logits, -1) == batch['label'])
      return loss, (updates['batch_stats'], {**metrics, 'loss': loss, 'train_accuracy': accuracy})

    return _apply_gradients(state, tx, loss_and_stats)

  return parallel.data_parallel(
      step, in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.SHARDED,
                      parallel.REPLICATED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED), donate_argnums=(0,))


def _apply_gradients(state: TrainState, tx: optax.GradientTransformation,
                     loss_and_stats: Callable) -> tuple[TrainState, dict]:
  """One optimiser step on the device-averaged gradient of `loss_and_stats(params)`.

  `loss_and_stats` returns (loss, (new batch_stats, metrics)).
  """
  grads, (batch_stats, metrics) = jax.grad(loss_and_stats, has_aux=True)(
      parallel.per_device(state.params))
  grads, metrics = parallel.pmean((grads, metrics))
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  new_state = TrainState(step=state.step + 1, params=optax.apply_updates(state.params, updates),
                         batch_stats=batch_stats, opt_state=opt_state)
  return new_state, metrics


def make_replay_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn: ReplayLoss,
                     augment_kwargs: dict, teacher: nn.Module, generator: nn.Module,
                     generated_batch_size: int, single_pass: bool = False) -> Callable:
  """Stage II: returns `step(state, teacher_vars, generator_params, batch, key)`, jitted.

  Each step draws `generated_batch_size` images from the generator (batch
  statistics, no gradient) with noise from `fold_in(key, state.step)`; the
  frozen teacher labels them and the real batch in eval mode. The classifier
  sees the generated batch, then the real batch, in two train-mode passes whose
  BatchNorm running statistics are threaded (as the code), or, with
  `single_pass`, one pass over both.
  """

  def per_device(state, teacher_vars, generator_params, batch, z):
    images = augment(batch['image'], batch['aug_key'], **augment_kwargs)
    generated = jax.lax.stop_gradient(generator.apply({'params': generator_params}, z))
    teacher_vars = jax.lax.stop_gradient(teacher_vars)
    teacher_real, _ = teacher.apply(teacher_vars, images, train=False)
    teacher_generated, _ = teacher.apply(teacher_vars, generated, train=False)

    def loss_and_stats(params):
      forward = lambda x, stats: model.apply({'params': params, 'batch_stats': stats}, x,
                                             train=True, mutable=['batch_stats'])
      if single_pass:
        (logits, _), updates = forward(jnp.concatenate([generated, images]), state.batch_stats)
        generated_logits, real_logits = jnp.split(logits, [generated.shape[0]])
      else:
        (generated_logits, _), updates = forward(generated, state.batch_stats)
        (real_logits, _), updates = forward(images, updates['batch_stats'])
      loss, metrics = loss_fn(real_logits, batch['label'], teacher_real, generated_logits,
                              teacher_generated)
      accuracy = jnp.mean(jnp.argmax(real_logits, -1) == batch['label'])
      return loss, (updates['batch_stats'], {**metrics, 'loss': loss, 'train_accuracy': accuracy})

    return _apply_gradients(state, tx, loss_and_stats)

  mapped = parallel.data_parallel(
      per_device, in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.REPLICATED,
                            parallel.SHARDED, parallel.SHARDED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, teacher_vars, generator_params, batch, key):
    z = parallel.sharded_normal(jax.random.fold_in(key, state.step),
                                (generated_batch_size, generator.latent_dim))
    return mapped(state, teacher_vars, generator_params, batch, z)

  return step


def make_predict_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
  """Returns a data-parallel `predict(variables, images) -> argmax labels` (eval mode)."""

  def predict(variables: Any, images: jax.Array) -> jax.Array:
    logits, _ = model.apply(variables, normalize(images, mean, std), train=False)
    return jnp.argmax(logits, axis=-1)

  return parallel.data_parallel(predict, in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                out_specs=parallel.SHARDED)
