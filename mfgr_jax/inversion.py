"""Stage I, knowledge recording: invert the frozen old classifier into images.

Two ways: train a generator against it (MFGR, `make_generator_step`), or
optimise a pool of images pixel by pixel (DeepInversion, `make_pixel_step`).
Both steps are pure per-device functions run data-parallel (see `parallel.py`):
each device makes its rows of the global batch, runs the frozen old model in
eval mode with its BatchNorm layers reporting their input moments, and every
loss term that depends on the whole batch (class balance, BN statistics, the
image priors, diversity pairs) is formed from cross-device means or gathered
images, so the loss and the update equal the single-device ones on the same
global batch.
"""

import functools
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import losses
from mfgr_jax import numerics
from mfgr_jax import parallel
from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics

# Loss terms of the inverted images, by the name of their weight in the config:
# a generator's (`generator.weights`; a method uses a subset) and DeepInversion's
# (`deepinversion.weights`: CE to chosen classes, BN statistics, TV and L2 priors).
GENERATOR_TERMS = ('one_hot', 'class_balance', 'activation', 'signed_difference',
                   'bn_statistics', 'diversity',
                   # ABD's (`methods/abd.py`): tempered content CE, normalised class
                   # balance, Gaussian KL to the BN statistics, smoothness prior.
                   'content', 'normalised_balance', 'bn_kl', 'smoothness')
DEEPINVERSION_TERMS = ('target_ce', 'bn_statistics', 'total_variation', 'l2_prior')


@flax.struct.dataclass
class GeneratorState:
  step: jax.Array
  params: Any
  opt_state: Any

  def variables(self) -> dict:
    """What `Generator.apply` takes."""
    return {'params': self.params}


@flax.struct.dataclass
class RunningGeneratorState(GeneratorState):
  """The state of a generator with `track_running_statistics`: also its running
  BatchNorm statistics. (A class of its own, so that `GeneratorState` and the
  checkpoints that hold it keep their layout.)"""
  batch_stats: Any = None

  def variables(self) -> dict:
    return {'params': self.params, 'batch_stats': self.batch_stats}


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam(lr 0.01, betas (0.9, 0.999), eps 1e-8), no decay, no schedule
  (xmengxin/MFGR `train_mfgr.py`, the generator's optimiser)."""
  return optax.adam(config.learning_rate, b1=0.9, b2=0.999, eps=1e-8)


@functools.partial(jax.jit, static_argnums=0)
def _initial_variables(generator: nn.Module, key: jax.Array) -> dict:
  # Jitted (once per generator shape; bitwise the same numbers as eager): else each
  # initialiser compiles op by op, and nothing of that is kept by the persistent cache.
  return generator.init(key, jnp.zeros((2, generator.latent_dim)))


def init_state(generator: nn.Module, key: jax.Array,
               tx: optax.GradientTransformation) -> GeneratorState:
  variables = _initial_variables(generator, key)
  params, step = variables['params'], jnp.zeros((), jnp.int32)
  if 'batch_stats' in variables:
    return RunningGeneratorState(step=step, params=params, opt_state=tx.init(params),
                                 batch_stats=variables['batch_stats'])
  return GeneratorState(step=step, params=params, opt_state=tx.init(params))


def inversion_loss_terms(teacher: nn.Module, teacher_vars: Any, images: jax.Array,
                         terms: tuple[str, ...], pair_key: jax.Array | None = None,
                         num_pairs: int = 0, targets: jax.Array | None = None,
                         content_temperature: float = 1.0,
                         ) -> tuple[dict[str, jax.Array], dict[str, jax.Array]]:
  """Per-device values of the active loss terms on a device's `images`, and diagnostics.

  Terms of the whole batch are computed from cross-device means and marked
  per-device (see `parallel.per_device`), so summing them with the local terms
  and averaging gradients over devices differentiates the global loss.
  `pair_key`/`num_pairs` serve 'diversity', `targets` (the device's class of
  each image) 'target_ce', `content_temperature` 'content'.
  """
  teacher_vars = jax.lax.stop_gradient(teacher_vars)  # the old model is frozen
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
  if 'bn_statistics' in terms or 'bn_kl' in terms:
    layers = bn_input_statistics(state[BN_INPUT_MOMENTS], teacher_vars['batch_stats'],
                                 parallel.AXIS)
  if 'bn_statistics' in terms:
    values['bn_statistics'] = parallel.per_device(losses.bn_statistics_loss(layers))
  if 'bn_kl' in terms:
    values['bn_kl'] = parallel.per_device(losses.bn_kl_loss(layers))
  if 'content' in terms:
    values['content'] = losses.content_loss(logits, content_temperature)
  if 'normalised_balance' in terms:
    values['normalised_balance'] = parallel.per_device(
        losses.normalised_class_balance_loss(mean_probs))
  if 'smoothness' in terms:  # a mean over images: the mean of the devices' means
    values['smoothness'] = losses.smoothness_prior_loss(images)
  if 'diversity' in terms:
    values['diversity'] = parallel.per_device(
        losses.pixel_diversity_loss(parallel.all_gather(images), pair_key, num_pairs))
  if 'target_ce' in terms:
    values['target_ce'] = losses.cross_entropy(logits, targets)
  if 'total_variation' in terms:
    values['total_variation'] = parallel.per_device(
        losses.total_variation_l2_loss(parallel.all_gather(images)))
  if 'l2_prior' in terms:
    values['l2_prior'] = parallel.per_device(losses.l2_prior_loss(parallel.all_gather(images)))
  counts = jnp.sum(jax.nn.one_hot(jnp.argmax(logits, -1), logits.shape[-1]), axis=0)
  diagnostics = {
      'mean_prediction_entropy': -jnp.sum(jax.scipy.special.xlogy(mean_probs, mean_probs)),
      'class_counts': jax.lax.psum(counts, parallel.AXIS)}
  return values, diagnostics


def make_generator_step(generator: nn.Module, teacher: nn.Module, tx: optax.GradientTransformation,
                        config: ml_collections.ConfigDict, terms: tuple[str, ...],
                        weights: Mapping[str, float] | None = None,
                        content_temperature: float = 1.0) -> Callable:
  """Returns `step(state, teacher_vars, key) -> (state, metrics)`, jitted and data-parallel.

  `config` is the generator's section (batch size, diversity pairs); the terms'
  weights are `weights` if given (a method's own section, e.g. ABD's), else
  `config.weights`.

  `key` is the stage's key; the step's noise and diversity pairs come from
  `fold_in(key, state.step)`. A generator with `track_running_statistics` updates
  its running statistics (`RunningGeneratorState.batch_stats`) at every step.
  Metrics hold every active term (unweighted), the weighted total, the entropy
  (nats) of the mean prediction and the histogram of the teacher's argmax classes
  (`class_counts`).
  """
  unknown = set(terms) - set(GENERATOR_TERMS)
  if unknown:
    raise ValueError(f'unknown generator loss terms {sorted(unknown)}')
  weights = {t: (config.weights if weights is None else weights)[t] for t in terms}

  def per_device(state, teacher_vars, z, pair_key):
    running = isinstance(state, RunningGeneratorState)

    def loss_fn(params):
      if not running:
        images, batch_stats = generator.apply({'params': params}, z), None
      else:
        images, updated = generator.apply({'params': params, 'batch_stats': state.batch_stats},
                                          z, mutable=['batch_stats'])
        batch_stats = updated['batch_stats']  # the same on every device (global moments)
      values, diagnostics = inversion_loss_terms(teacher, teacher_vars, images, terms, pair_key,
                                                 config.diversity_pairs,
                                                 content_temperature=content_temperature)
      total = sum(weights[t] * values[t] for t in terms)
      return total, ({**values, 'loss': total, **diagnostics}, batch_stats)

    grads, (metrics, batch_stats) = jax.grad(loss_fn, has_aux=True)(
        parallel.per_device(state.params))
    grads, metrics = parallel.pmean((grads, metrics))
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    new_state = state.replace(step=state.step + 1,
                              params=optax.apply_updates(state.params, updates),
                              opt_state=opt_state,
                              **({'batch_stats': batch_stats} if running else {}))
    return numerics.guard(numerics.all_finite((grads, metrics, new_state.params)), new_state,
                          state, metrics)

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


@flax.struct.dataclass
class PixelState:
  """DeepInversion: the batch being optimised, its Adam state, and the finished pool."""
  step: jax.Array
  pixels: jax.Array  # (batch_size, H, W, C), in the classifier's normalised input space
  opt_state: Any
  pool: jax.Array  # (batches * batch_size, H, W, C); batch b is filled when it finishes


def jitter(images: jax.Array, key: jax.Array, max_shift: int, flip: bool) -> jax.Array:
  """DeepInversion's augmentation, one draw for the whole batch: a cyclic shift
  by up to `max_shift` pixels along each axis, then a horizontal flip with probability 1/2."""
  shift_key, flip_key = jax.random.split(key)
  shifts = jax.random.randint(shift_key, (2,), -max_shift, max_shift + 1)
  images = jnp.roll(images, (shifts[0], shifts[1]), axis=(1, 2))
  if not flip:
    return images
  return jnp.where(jax.random.bernoulli(flip_key), images[:, :, ::-1], images)


def pool_size(config: ml_collections.ConfigDict) -> int:
  """Images in DeepInversion's pool (`config`: the `deepinversion` section)."""
  return config.batches * config.batch_size


def make_pixel_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Adam on the pixels, DeepInversion's optimiser; restarted for every batch."""
  return optax.adam(config.learning_rate)


def init_pixel_state(config: ml_collections.ConfigDict, image_shape: tuple[int, ...],
                     tx: optax.GradientTransformation) -> PixelState:
  """Step 0, an empty pool; the first step draws the first batch's pixels."""
  pixels = jnp.zeros((config.batch_size,) + tuple(image_shape), jnp.float32)
  return PixelState(step=jnp.zeros((), jnp.int32), pixels=pixels, opt_state=tx.init(pixels),
                    pool=jnp.zeros((pool_size(config),) + tuple(image_shape)))


def make_pixel_step(teacher: nn.Module, tx: optax.GradientTransformation,
                    config: ml_collections.ConfigDict, num_classes: int) -> Callable:
  """DeepInversion: returns `step(state, teacher_vars, key) -> (state, metrics)`, jitted.

  Step s optimises batch b = s // iterations of the pool: at its first
  iteration the pixels start from N(0, 1) noise keyed by b with a fresh
  optimiser state; every iteration takes one step on the DeepInversion loss of
  the jittered batch; at its last the batch is written into the pool. Image i
  of the pool has target class i mod `num_classes`, so the pool is class-
  balanced (exactly, when its size is a multiple of the classes).
  """
  weights = {t: config.weights[t] for t in DEEPINVERSION_TERMS}

  def per_device(pixels, opt_state, teacher_vars, targets, jitter_key):
    def loss_fn(pixels):
      images = jitter(pixels, jitter_key, config.jitter, config.flip)
      values, diagnostics = inversion_loss_terms(teacher, teacher_vars, images,
                                                 DEEPINVERSION_TERMS, targets=targets)
      total = sum(weights[t] * values[t] for t in DEEPINVERSION_TERMS)
      return total, {**values, 'loss': total, **diagnostics}

    grads, metrics = jax.grad(loss_fn, has_aux=True)(pixels)
    # Each device owns its rows, so no gradient averaging; differentiating the
    # per-device loss (see `parallel.per_device`) gives `devices` times the
    # global loss's gradient w.r.t. the device's pixels.
    grads = grads / jax.lax.psum(1, parallel.AXIS)
    updates, opt_state = tx.update(grads, opt_state, pixels)
    pixels = optax.apply_updates(pixels, updates)
    # Every device must agree, as each holds only its rows' gradients.
    finite = jax.lax.pmin(numerics.all_finite((grads, metrics, pixels)).astype(jnp.int32),
                          parallel.AXIS).astype(bool)
    return pixels, opt_state, parallel.pmean(metrics), finite

  example_opt_state = tx.init(jnp.zeros((config.batch_size, 1)))
  opt_specs = jax.tree.map(lambda x: parallel.SHARDED if x.ndim else parallel.REPLICATED,
                           example_opt_state)
  mapped = parallel.data_parallel(
      per_device, in_specs=(parallel.SHARDED, opt_specs, parallel.REPLICATED, parallel.SHARDED,
                            parallel.REPLICATED),
      out_specs=(parallel.SHARDED, opt_specs, parallel.REPLICATED, parallel.REPLICATED))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, teacher_vars, key):
    batch, iteration = jnp.divmod(state.step, config.iterations)
    noise_key, jitter_key = jax.random.split(jax.random.fold_in(key, batch))
    start = iteration == 0
    fresh = parallel.sharded_normal(noise_key, state.pixels.shape)
    pixels = jnp.where(start, fresh, state.pixels)
    opt_state = jax.tree.map(lambda new, old: jnp.where(start, new, old), tx.init(pixels),
                             state.opt_state)
    targets = (batch * config.batch_size + jnp.arange(config.batch_size)) % num_classes
    new_pixels, new_opt_state, metrics, finite = mapped(pixels, opt_state, teacher_vars,
                                                        parallel.sharded(targets),
                                                        jax.random.fold_in(jitter_key, iteration))
    pixels, opt_state = numerics.keep_if_finite(finite, (new_pixels, new_opt_state),
                                                (pixels, opt_state))
    written = jax.lax.dynamic_update_slice_in_dim(state.pool, pixels,
                                                  batch * config.batch_size, axis=0)
    pool = jnp.where(iteration == config.iterations - 1, written, state.pool)
    return (PixelState(step=state.step + 1, pixels=pixels, opt_state=opt_state, pool=pool),
            numerics.with_skipped(metrics, finite))

  return step


def make_sampler(generator: nn.Module, batch_size: int) -> Callable:
  """Returns jitted, data-parallel `sample(variables, key) -> images`; its BatchNorm
  uses the running statistics in `variables` if it has them, else the batch's."""
  mapped = parallel.data_parallel(
      lambda variables, z: generator.apply(
          variables, z, use_running_average='batch_stats' in variables),
      in_specs=(parallel.REPLICATED, parallel.SHARDED), out_specs=parallel.SHARDED)

  @jax.jit
  def sample(variables, key):
    return mapped(variables, parallel.sharded_normal(key, (batch_size, generator.latent_dim)))

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
