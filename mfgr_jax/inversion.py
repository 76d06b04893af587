"""Stage I, knowledge recording: train a generator against the frozen old classifier.

The generator step is a pure per-device function run data-parallel (see
`parallel.py`): each device generates its rows of the global batch, runs the
frozen old model in eval mode with its BatchNorm layers reporting their input
moments, and every loss term that depends on the whole batch (class balance,
BN statistics, the signed-difference term, diversity pairs) is formed from
cross-device means or gathered images, so the loss and the update equal the
single-device ones on the same global batch.
"""

import functools
from typing import Any, Callable

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import losses
from mfgr_jax import parallel
from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics

# Stage I loss terms, by the name of their weight in `config.generator.weights`.
TERMS = ('one_hot', 'class_balance', 'activation', 'signed_difference', 'bn_statistics',
         'diversity')


@flax.struct.dataclass
class GeneratorState:
  step: jax.Array
  params: Any
  opt_state: Any


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(lr 0.01, betas (0.9, 0.999), eps 1e-8), no decay, no schedule (spec §4)."""
  return optax.adam(config.learning_rate, b1=0.9, b2=0.999, eps=1e-8)


def init_state(generator: nn.Module, key: jax.Array,
               tx: optax.GradientTransformation) -> GeneratorState:
  params = generator.init(key, jnp.zeros((2, generator.latent_dim)))['params']
  return GeneratorState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def generator_loss_terms(generator: nn.Module, teacher: nn.Module, params: Any, teacher_vars: Any,
                         z: jax.Array, pair_key: jax.Array, terms: tuple[str, ...],
                         num_pairs: int) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Per-device values of the active loss terms, and diagnostics of the batch.

  Terms of the whole batch are computed from cross-device means and marked
  per-device (see `parallel.per_device`), so summing them with the local terms
  and averaging gradients over devices differentiates the global loss.
  """
  teacher_vars = jax.lax.stop_gradient(teacher_vars)  # the old model is frozen
  images = generator.apply({'params': params}, z)
  (logits, features), state = teacher.apply(teacher_vars, images, train=False,
                                            mutable=[BN_INPUT_MOMENTS])
  # The global batch's mean prediction, from the devices' mean predictions.
  mean_probs = parallel.pmean(jnp.mean(jax.nn.softmax(logits), axis=0))
  values = {}
  if 'one_hot' in terms:
    values['one_hot'] = losses.one_hot_loss(logits)
  if 'activation' in terms:
    values['activation'] = losses.activation_loss(features)
  if 'class_balance' in terms:
    values['class_balance'] = parallel.per_device(losses.class_balance_loss(mean_probs))
  if 'signed_difference' in terms:
    values['signed_difference'] = parallel.per_device(
        losses.signed_difference_loss(parallel.all_gather(images)))
  if 'bn_statistics' in terms:
    layers = bn_input_statistics(state[BN_INPUT_MOMENTS], teacher_vars['batch_stats'],
                                 parallel.AXIS)
    values['bn_statistics'] = parallel.per_device(losses.bn_statistics_loss(layers))
  if 'diversity' in terms:
    values['diversity'] = parallel.per_device(
        losses.pixel_diversity_loss(parallel.all_gather(images), pair_key, num_pairs))
  counts = jnp.sum(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]), axis=0)
  diagnostics = {
      'mean_prediction_entropy': -jnp.sum(jax.scipy.special.xlogy(mean_probs, mean_probs)),
      'class_counts': jax.lax.psum(counts, parallel.AXIS)}
  return values, diagnostics


def make_generator_step(generator: nn.Module, teacher: nn.Module, tx: optax.GradientTransformation,
                        config: ml_collections.ConfigDict, terms: tuple[str, ...]) -> Callable:
  """Returns `step(state, teacher_vars, key) -> (state, metrics)`, jitted and data-parallel.

  `key` is the stage's key; the step's noise and diversity pairs come from
  `fold_in(key, state.step)`. Metrics hold every active term (unweighted), the
  weighted total, the entropy (nats) of the mean prediction and the histogram
  of the teacher's argmax classes (`class_counts`).
  """
  unknown = set(terms) - set(TERMS)
  if unknown:
    raise ValueError(f'unknown generator loss terms {sorted(unknown)}')
  weights = {t: config.weights[t] for t in terms}

  def per_device(state, teacher_vars, z, pair_key):
    def loss_fn(params):
      values, diagnostics = generator_loss_terms(generator, teacher, params, teacher_vars, z,
                                                 pair_key, terms, config.diversity_pairs)
      total = sum(weights[t] * values[t] for t in terms)
      return total, {**values, 'loss': total, **diagnostics}

    grads, metrics = jax.grad(loss_fn, has_aux=True)(parallel.per_device(state.params))
    grads, metrics = parallel.pmean((grads, metrics))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = GeneratorState(step=state.step + 1,
                               params=optax.apply_updates(state.params, updates),
                               opt_state=opt_state)
    return new_state, metrics

  mapped = parallel.data_parallel(
      per_device, in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.SHARDED,
                            parallel.REPLICATED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, teacher_vars, key):
    noise_key, pair_key = jax.random.split(jax.random.fold_in(key, state.step))
    z = parallel.sharded_normal(noise_key, (config.batch_size, generator.latent_dim))
    return mapped(state, teacher_vars, z, pair_key)

  return step


def make_sampler(generator: nn.Module, batch_size: int) -> Callable:
  """Returns jitted, data-parallel `sample(params, key) -> images` (batch statistics BN)."""
  mapped = parallel.data_parallel(lambda params, z: generator.apply({'params': params}, z),
                                  in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                  out_specs=parallel.SHARDED)

  @jax.jit
  def sample(params, key):
    return mapped(params, parallel.sharded_normal(key, (batch_size, generator.latent_dim)))

  return sample


def image_grid(images: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...],
               columns: int = 16) -> np.ndarray:
  """uint8 grid (H, W, C) of generated images, mapped back to pixels with the data's mean/std."""
  pixels = np.clip((np.asarray(images) * np.asarray(std) + np.asarray(mean)) * 255.0, 0, 255)
  pixels = pixels.astype(np.uint8)
  n, h, w, c = pixels.shape
  rows = -(-n // columns)
  grid = np.zeros((rows * (h + 2), columns * (w + 2), c), np.uint8)
  for i, image in enumerate(pixels):
    r, col = divmod(i, columns)
    grid[r * (h + 2) + 1:r * (h + 2) + 1 + h, col * (w + 2) + 1:col * (w + 2) + 1 + w] = image
  return grid
