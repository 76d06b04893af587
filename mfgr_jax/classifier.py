"""The classifier's train state, optimiser, train step and eval step.

Steps are pure per-device functions (see `parallel.py`): gradients, metrics
and BatchNorm batch statistics are averaged over the data-parallel axis, so the
update equals the single-device update on the same global batch.
"""

import functools
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from mfgr_jax import numerics
from mfgr_jax import parallel
from mfgr_jax.data.augment import augment, normalize
from mfgr_jax.models.resnet import Forward, classify

# A method's loss, run inside the jitted step: (the model's outputs, logits over
# the seen classes; output-index labels; the teacher's outputs on the same
# images, or None; what the method carries from earlier tasks, or None)
# -> (loss, metrics).
ClassifierLoss = Callable[[Forward, jax.Array, Forward | None, Any],
                          tuple[jax.Array, dict[str, jax.Array]]]
# Replay (stage II): (outputs on the real batch, labels, teacher outputs on it,
# outputs on the replayed batch, teacher outputs on it) -> (loss, metrics).
ReplayLoss = Callable[[Forward, jax.Array, Forward, Forward, Forward],
                      tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int) -> optax.GradientTransformation:
  """SGD with coupled L2 weight decay and the learning-rate schedule of `config`
  (`learning_rate_schedule`) over the task's `total_steps`."""
  return sgd_with_weight_decay(learning_rate_schedule(config, total_steps), config.weight_decay,
                               config.momentum)


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`config.schedule`: 'cosine', a per-step cosine to 0 (xmengxin/MFGR
  `train_mfgr.py`); or 'multistep', PyTorch's `MultiStepLR` stepped once per epoch
  (ABD's and R-DFCIL's code): the rate times `lr_decay` at each milestone epoch."""
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(config.learning_rate, max(total_steps, 1), alpha=0.0)
  # optax scales update `count` by each factor whose boundary is <= count: from the
  # first step of a milestone epoch on, as PyTorch (two milestones on one step: both).
  factors = {}
  for step in milestone_steps(parse_milestones(config.milestones), config.epochs, total_steps):
    factors[step] = factors.get(step, 1.0) * config.lr_decay
  return optax.piecewise_constant_schedule(config.learning_rate, factors)


def parse_milestones(milestones: str) -> list[float]:
  """'100,150,200' (epochs) or '0.4,0.6,0.8' (fractions of the task's epochs) as
  numbers; raises ValueError unless they increase and are all whole epochs or all
  fractions below 1."""
  values = [float(part) for part in milestones.split(',')] if milestones.strip() else []
  fractions = all(0 < v < 1 for v in values)
  if not (fractions or all(v >= 1 and v.is_integer() for v in values)):
    raise ValueError(f'{milestones!r} mixes fractions and epochs, or is not positive')
  if any(b <= a for a, b in zip(values, values[1:])):
    raise ValueError(f'{milestones!r} does not increase')
  return values


def milestone_steps(milestones: list[float], epochs: int, total_steps: int) -> list[int]:
  """The first step of each milestone (an epoch, or a fraction of the `epochs`)."""
  return [round(m * total_steps) if m < 1 else round(m * total_steps / epochs)
          for m in milestones]


def sgd_with_weight_decay(learning_rate: optax.ScalarOrSchedule, weight_decay: float,
                          momentum: float) -> optax.GradientTransformation:
  """SGD with coupled L2 weight decay (PyTorch's `SGD(weight_decay=...)`)."""
  return optax.chain(optax.add_decayed_weights(weight_decay),
                     optax.sgd(learning_rate, momentum=momentum or None))


def init_train_state(params: Any, batch_stats: Any, tx: optax.GradientTransformation,
                     trainable: str | None = None) -> TrainState:
  """A step-0 state; with `trainable`, only `params[trainable]` (e.g. 'head') is optimised."""
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=tx.init(params if trainable is None else params[trainable]))


def make_train_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn: ClassifierLoss,
                    augment_kwargs: dict, teacher: nn.Module | None = None) -> Callable:
  """Returns a data-parallel `step(state, batch, teacher_vars, method_state) -> (state, metrics)`.

  `batch` holds uint8 `image`, output-index `label` and one PRNG key per
  example (`aug_key`). The teacher, if any, runs in eval mode on the same
  augmented images and is never differentiated. `method_state` is what the
  method carries from earlier tasks (replicated; e.g. EWC's anchor and importance),
  passed to the loss; pass None as `teacher_vars` / `method_state` when unused.
  """

  def step(state: TrainState, batch: dict, teacher_vars: Any,
           method_state: Any) -> tuple[TrainState, dict]:
    images = augment(batch['image'], batch['aug_key'], **augment_kwargs)
    teacher_out = None
    if teacher is not None:
      teacher_out, _ = classify(teacher, jax.lax.stop_gradient(teacher_vars), images, train=False)

    def loss_and_stats(params):
      out, batch_stats = classify(model, {'params': params, 'batch_stats': state.batch_stats},
                                  images, train=True)
      loss, metrics = loss_fn(out, batch['label'], teacher_out, method_state)
      accuracy = jnp.mean(jnp.argmax(out.logits, -1) == batch['label'])
      return loss, (batch_stats, {**metrics, 'loss': loss, 'train_accuracy': accuracy})

    return _apply_gradients(state, tx, loss_and_stats)

  return parallel.data_parallel(
      step, in_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.REPLICATED,
                      parallel.REPLICATED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED), donate_argnums=(0,))


def _apply_gradients(state: TrainState, tx: optax.GradientTransformation,
                     loss_and_stats: Callable, trainable: str | None = None
                     ) -> tuple[TrainState, dict]:
  """One optimiser step on the device-averaged gradient of `loss_and_stats(params)`.

  `loss_and_stats` returns (loss, (new batch_stats, metrics)). With `trainable`,
  it takes and the optimiser updates only `params[trainable]`; the rest is fixed.
  """
  params = state.params if trainable is None else state.params[trainable]
  grads, (batch_stats, metrics) = jax.grad(loss_and_stats, has_aux=True)(
      parallel.per_device(params))
  grads, metrics = parallel.pmean((grads, metrics))
  updates, opt_state = tx.update(grads, state.opt_state, params)
  new_params = optax.apply_updates(params, updates)
  if trainable is not None:
    new_params = {**state.params, trainable: new_params}
  new_state = TrainState(step=state.step + 1, params=new_params, batch_stats=batch_stats,
                         opt_state=opt_state)
  return numerics.guard(numerics.all_finite((grads, metrics, new_state.params)), new_state, state,
                        metrics)


class ReplaySource(NamedTuple):
  """Where stage II's replayed images come from, as two pure functions.

  `draw(key)` makes a step's global inputs (sharded along the batch: generator
  noise, or indices into a synthesised pool); `render(source, inputs)` turns a
  device's share of them into images, given the source's arrays (generator
  parameters or the pool), which the step receives replicated.
  """
  draw: Callable[[jax.Array], jax.Array]
  render: Callable[[Any, jax.Array], jax.Array]


def generator_source(generator: nn.Module, batch_size: int) -> ReplaySource:
  """`batch_size` fresh samples per step from the generator's parameters (its
  BatchNorm with the batch's statistics), or with `track_running_statistics` from
  its variables (with the running statistics: the generator in eval mode)."""
  if generator.track_running_statistics:
    render = lambda variables, z: generator.apply(variables, z, use_running_average=True)
  else:
    render = lambda params, z: generator.apply({'params': params}, z)
  return ReplaySource(
      draw=lambda key: parallel.sharded_normal(key, (batch_size, generator.latent_dim)),
      render=render)


def pool_source(pool_size: int, batch_size: int) -> ReplaySource:
  """`batch_size` images per step drawn uniformly, with replacement, from a fixed pool."""
  return ReplaySource(
      draw=lambda key: parallel.sharded(jax.random.randint(key, (batch_size,), 0, pool_size)),
      render=lambda pool, indices: pool[indices])


def make_replay_step(model: nn.Module, tx: optax.GradientTransformation, loss_fn: ReplayLoss,
                     augment_kwargs: dict, teacher: nn.Module, source: ReplaySource,
                     single_pass: bool = False, head_only: bool = False) -> Callable:
  """Stage II: returns `step(state, batch, teacher_vars, source_arrays, key)`, jitted.

  Each step draws replayed images from `source` (no gradient) with the inputs
  `source.draw(fold_in(key, state.step))`; the frozen teacher labels them and
  the real batch in eval mode. The classifier sees the replayed batch, then the
  real batch, in two train-mode passes whose BatchNorm running statistics are
  threaded (as the code), or, with `single_pass`, one pass over both.

  With `head_only` (a method's head phase; the state from `init_train_state(...,
  trainable='head')`) the backbone is frozen in eval mode: only `params['head']`
  is differentiated and updated, and the BatchNorm statistics stay as they are.
  """

  def per_device(state, teacher_vars, source_arrays, batch, inputs):
    images = augment(batch['image'], batch['aug_key'], **augment_kwargs)
    generated = jax.lax.stop_gradient(source.render(source_arrays, inputs))
    teacher_vars = jax.lax.stop_gradient(teacher_vars)
    teacher_real, _ = classify(teacher, teacher_vars, images, train=False)
    teacher_generated, _ = classify(teacher, teacher_vars, generated, train=False)

    def loss_and_stats(trainable):
      params = {**state.params, 'head': trainable} if head_only else trainable

      def forward(x, stats):
        out, new_stats = classify(model, {'params': params, 'batch_stats': stats}, x,
                                  train=not head_only)
        return out, stats if head_only else new_stats

      if single_pass:
        both, batch_stats = forward(jnp.concatenate([generated, images]), state.batch_stats)
        generated_out, real_out = _split_batch(both, len(generated))
      else:
        generated_out, batch_stats = forward(generated, state.batch_stats)
        real_out, batch_stats = forward(images, batch_stats)
      loss, metrics = loss_fn(real_out, batch['label'], teacher_real, generated_out,
                              teacher_generated)
      accuracy = jnp.mean(jnp.argmax(real_out.logits, -1) == batch['label'])
      return loss, (batch_stats, {**metrics, 'loss': loss, 'train_accuracy': accuracy})

    return _apply_gradients(state, tx, loss_and_stats, 'head' if head_only else None)

  mapped = parallel.data_parallel(
      per_device, in_specs=(parallel.REPLICATED, parallel.REPLICATED, parallel.REPLICATED,
                            parallel.SHARDED, parallel.SHARDED),
      out_specs=(parallel.REPLICATED, parallel.REPLICATED))

  @functools.partial(jax.jit, donate_argnums=(0,))
  def step(state, batch, teacher_vars, source_arrays, key):
    return mapped(state, teacher_vars, source_arrays, batch,
                  source.draw(jax.random.fold_in(key, state.step)))

  return step


def _split_batch(forward: Forward, size: int) -> tuple[Forward, Forward]:
  """The outputs of the first `size` images of a batch, and of the rest."""
  arrays = [jnp.split(x, [size]) for x in (forward.logits, forward.features, forward.feature_map)]
  return tuple(Forward(*(parts[i] for parts in arrays), forward.params) for i in (0, 1))


def make_predict_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
  """Returns a data-parallel `predict(variables, images) -> argmax labels` (eval mode)."""

  def predict(variables: Any, images: jax.Array) -> jax.Array:
    logits, _ = model.apply(variables, normalize(images, mean, std), train=False)
    return jnp.argmax(logits, axis=-1)

  return parallel.data_parallel(predict, in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                out_specs=parallel.SHARDED)


def make_features_step(model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                       flip: bool = False, l2_normalise: bool = True) -> Callable:
  """Returns a data-parallel `features(variables, images)`: the pooled features (eval
  mode) of the images, or of their horizontal flips, L2-normalised unless told not to."""

  def features(variables: Any, images: jax.Array) -> jax.Array:
    images = normalize(images, mean, std)
    if flip:
      images = images[:, :, ::-1]
    _, pooled = model.apply(variables, images, train=False)
    if not l2_normalise:
      return pooled
    return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)

  return parallel.data_parallel(features, in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                out_specs=parallel.SHARDED)
