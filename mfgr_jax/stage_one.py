"""Stage I kinds: what a method records of the frozen old model before an
incremental task, and how stage II replays it.

- `NONE`: nothing (no stage I; stage II trains on real images only).
- `generator(terms, loss_section)`: MFGR's knowledge recording, a fresh
  generator trained against the old model with the named loss terms
  (`inversion.GENERATOR_TERMS`), weighted by `generator.weights` or by the
  `generator_weights` of a method's own section (ABD); stage II samples new
  images from it at every step.
- `PIXEL_POOL`: DeepInversion, a fixed pool of images optimised pixel by pixel;
  stage II draws from it.

A kind is a record of pure functions, like a `methods.Method`; a method names
its kind in `Method.stage_one`. Each kind's settings are a config section
(`CONFIG`, with `replay`, the settings of stage II's replayed batch).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Callable, Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import classifier
from mfgr_jax import config_fields as F
from mfgr_jax import inversion
from mfgr_jax import keys
from mfgr_jax import parallel
from mfgr_jax import results
from mfgr_jax.data.loading import image_shape
from mfgr_jax.errors import UserError
from mfgr_jax.models.generator import generator_features
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

CONFIG = {
    # Stage I of the generator methods (mfgr, lwf_g_bn, g_bn, lwf_g_base, icarl_mfgr):
    # a fresh DAFL generator per incremental task, trained against the frozen old
    # model. The paper's CIFAR setting: 60000 steps at batch 512.
    # architecture: 'dafl' (Generator32: two upsampling blocks) or 'pyramid'
    # (Generator128/256 of the CUB experiments: 4x4 start, one block per doubling).
    # image_size: 0 = the data's size; else made at this size, then resized.
    # diversity_pairs: the code: 200 pairs of a 512 batch. weights: of the loss
    # terms, a method uses the subset it names (methods/mfgr.py); code defaults,
    # the paper's diversity weight lambda3 = 0.1.
    # sample_statistics: how stage II's samples are normalised by the generator's
    # BatchNorm: 'batch' (the replayed batch's statistics; MFGR's code, which never
    # calls generator.eval()) or 'running' (running statistics kept while it trains,
    # PyTorch's momentum 0.1 and unbiased variance; ABD's and R-DFCIL's code sample
    # in eval mode). The sample grid is drawn the same way.
    # warm_start: False = a fresh generator and Adam per task (MFGR's and R-DFCIL's
    # code); True = one generator and one Adam for the whole run, each task's stage I
    # going on from the previous one's (ABD's code).
    'generator': dict(
        steps=F.positive_integer(300), batch_size=F.positive_integer(128),
        learning_rate=F.positive_number(0.01), latent_dim=F.positive_integer(1000),
        hidden=F.positive_integer(128), architecture=F.choice('dafl', ('dafl', 'pyramid')),
        image_size=F.integer(0), diversity_pairs=F.positive_integer(50),
        weights={name: F.number(weight) for name, weight in dict(
            one_hot=1.0, class_balance=5.0, activation=0.1, signed_difference=10.0,
            bn_statistics=20.0, diversity=0.1).items()},
        sample_statistics=F.added(F.choice('batch', ('batch', 'running'))),
        warm_start=F.added(F.boolean(False)),
        log_every_steps=F.positive_integer(50)),
    # Stage I of deepinversion: `batches` batches of images, each optimised from
    # noise for `iterations` Adam steps against the frozen old model (NVlabs/DeepInversion
    # `cifar10/deepinversion_cifar10.py`; its CIFAR setting: 2000 iterations at batch 256, lr 0.05), with
    # class-balanced targets and jitter (random shift up to `jitter` px, flip).
    # bn_statistics is MFGR's term and weight (a mean over layers; DeepInversion
    # sums over layers with r = 10), so that the comparison is pool vs generator.
    'deepinversion': dict(
        batches=F.positive_integer(2), batch_size=F.positive_integer(128),
        iterations=F.positive_integer(200), learning_rate=F.positive_number(0.05),
        jitter=F.integer(2), flip=F.boolean(True),
        weights={name: F.number(weight) for name, weight in dict(
            target_ce=1.0, bn_statistics=20.0, total_variation=2.5e-5, l2_prior=1e-5).items()},
        log_every_steps=F.positive_integer(50)),
    # Stage II: generated images per step next to each real batch (the code: 512
    # with 128 real). balance: 'fixed' = always generated_batch_size (the code);
    # 'per_class' = as many generated images per old class as real ones per new
    # class (the paper's 1:1). single_pass: True = one train-mode pass over
    # generated + real images (the code: two passes, BN statistics threaded).
    'replay': dict(generated_batch_size=F.positive_integer(128),
                   balance=F.choice('fixed', ('fixed', 'per_class')),
                   single_pass=F.boolean(False)),
}


class StageIRunner(Protocol):
  """What the loop gives a kind's `record` to run its stage of a task
  (`stage_runner.StageOneRun`): the kind says what a step is, the loop runs,
  logs, checkpoints and resumes it."""

  def run_to_end(self, stage: str, state: Any, step: Callable[..., tuple[Any, dict]],
                 arguments: tuple, log_every: int) -> tuple[Any, float | None]:
    """`state, metrics = step(state, *arguments)` to the stage's last step from
    `state` (host) or its progress checkpoint; (final state on devices, steps/s)."""

  def write_images(self, stage: str, grid: np.ndarray) -> None:
    """Shows a grid of the stage's images (WORKDIR/samples/, TensorBoard)."""


# (experiment, task, the old model's variables on devices, the stage's runner, what
# the kind carried from the previous task's stage I or None) -> (what stage II
# replays from, as host arrays; throughput; what it carries to the next task's
# stage I, as host arrays, or None).
Record = Callable[['Experiment', Task, Any, StageIRunner, Any], tuple[Any, dict, Any]]


def _no_steps(config: ml_collections.ConfigDict) -> int:
  del config
  return 0


def _no_checks(config: ml_collections.ConfigDict) -> None:
  del config


def _nothing_to_prepare(experiment: Experiment) -> None:
  del experiment


def _carries_nothing(experiment: Experiment) -> None:
  del experiment


@dataclasses.dataclass(frozen=True)
class StageOne:
  """A kind of stage I; the defaults are `NONE`'s."""
  stage: str = ''  # the stage's name in logs, results' seconds and checkpoints
  section: str = ''  # its config section (part of the checkpoint fingerprint)
  steps: Callable[[ml_collections.ConfigDict], int] = _no_steps  # per incremental task
  record: Record | None = None
  # (experiment, task) -> where stage II's replayed images come from.
  source: Callable[[Experiment, Task], classifier.ReplaySource] | None = None
  # experiment -> host arrays shaped like what `record` returns: a restore target.
  arrays_like: Callable[[Experiment], Any] | None = None
  check_config: Callable[[ml_collections.ConfigDict], None] = _no_checks
  # Checks that need the data, after it is loaded.
  prepare: Callable[[Experiment], None] = _nothing_to_prepare
  # experiment -> host arrays shaped like what `record` carries to the next task
  # (a restore target; saved with the task), or None when it carries nothing.
  carried_like: Callable[[Experiment], Any] = _carries_nothing


NONE = StageOne()


def generated_batch_size(config: ml_collections.ConfigDict, task: Task) -> int:
  """Generated images per stage II step (`config.replay.balance`)."""
  if config.replay.balance == 'fixed':
    return config.replay.generated_batch_size
  # 'per_class': as many per old class as real images per new class, rounded
  # up to a multiple of the device count.
  wanted = config.train.batch_size * task.num_old / task.num_new
  return int(np.ceil(wanted / parallel.device_count()) * parallel.device_count())


def _show_samples(stage: str, experiment: Experiment, images: np.ndarray,
                  runner: StageIRunner) -> None:
  """A grid of stage I's images, as the loop shows them (WORKDIR/samples/, TensorBoard)."""
  shown = 128 if images.shape[1] <= 64 else 32  # keeps 224-pixel grids a few MB
  runner.write_images(stage, inversion.image_grid(parallel.to_host(images)[:shown],
                                                  experiment.dataset.mean, experiment.dataset.std))


def _check_replay(config: ml_collections.ConfigDict) -> None:
  if config.replay.balance == 'fixed':
    parallel.check_divisible(config.replay.generated_batch_size, 'replay.generated_batch_size')


# --- generator (MFGR) ---------------------------------------------------------


def _record_with_generator(terms: tuple[str, ...], loss_section: str, experiment: Experiment,
                           task: Task, old_vars: Any, runner: StageIRunner,
                           carried: Any) -> tuple[Any, dict, Any]:
  """Trains a generator against the frozen old model, a fresh one or (with
  `generator.warm_start`) the previous task's with its Adam state (`carried`);
  returns what stage II samples it with (`_replay_arrays`) and, warm-starting,
  its final state for the next task."""
  config = experiment.config.generator
  generator, teacher = experiment.generator(), experiment.model(task.num_old)
  tx = inversion.make_optimizer(config)
  if loss_section:
    own = experiment.config[loss_section]
    step = inversion.make_generator_step(generator, teacher, tx, config, terms,
                                         own.generator_weights, own.content_temperature)
  else:
    step = inversion.make_generator_step(generator, teacher, tx, config, terms)
  if carried is not None:  # its step counts this stage's steps; Adam's own count goes on
    state = carried['generator'].replace(step=jnp.zeros((), jnp.int32))
  else:
    state = inversion.init_state(generator, experiment.task_key(task, keys.GENERATOR_INIT), tx)
  state, steps_per_second = runner.run_to_end(
      results.GENERATOR_STAGE, state, step,
      (old_vars, experiment.task_key(task, keys.GENERATOR_STEPS)), config.log_every_steps)
  arrays = parallel.to_host(_replay_arrays(state))
  count = config.batch_size  # the batch size its BN statistics expect
  samples = inversion.make_sampler(generator, count)(parallel.replicate(state.variables()),
                                                     experiment.task_key(task, keys.SAMPLES))
  _show_samples(results.GENERATOR_STAGE, experiment, samples, runner)
  return arrays, {'generator_images_per_second': (
      steps_per_second * config.batch_size if steps_per_second else None)}, (
          {'generator': parallel.to_host(state)} if config.warm_start else None)


def _replay_arrays(state: inversion.GeneratorState) -> Any:
  """The generator's parameters, or with running statistics its variables
  (`classifier.generator_source`)."""
  return state.variables() if isinstance(state, inversion.RunningGeneratorState) else state.params


def _generator_source(experiment: Experiment, task: Task) -> classifier.ReplaySource:
  return classifier.generator_source(experiment.generator(),
                                     generated_batch_size(experiment.config, task))


def _generator_state_like(experiment: Experiment) -> dict | None:
  """With `generator.warm_start`: host zeros shaped like the carried generator state."""
  if not experiment.config.generator.warm_start:
    return None
  generator, tx = experiment.generator(), inversion.make_optimizer(experiment.config.generator)
  return {'generator': parallel.zeros_shaped_like(
      lambda key: inversion.init_state(generator, key, tx), jax.random.PRNGKey(0))}


def _generator_arrays_like(experiment: Experiment) -> Any:
  variables = parallel.zeros_shaped_like(experiment.generator().init, jax.random.PRNGKey(0),
                                         jnp.zeros((2, experiment.config.generator.latent_dim)))
  return variables if 'batch_stats' in variables else variables['params']


def _check_generator(terms: tuple[str, ...], config: ml_collections.ConfigDict) -> None:
  parallel.check_divisible(config.generator.batch_size, 'generator.batch_size')
  _check_replay(config)
  if 'diversity' in terms and 2 * config.generator.diversity_pairs > config.generator.batch_size:
    raise UserError(f'generator.diversity_pairs={config.generator.diversity_pairs} needs '
                    f'generator.batch_size >= {2 * config.generator.diversity_pairs} (pairs join '
                    'the two halves of the batch); lower the pairs or raise the batch')
  shape = image_shape(config.data)
  if shape is None:  # photographs of any size without data.image_size: refused with the data
    return
  height, width, _ = shape
  if height != width:
    raise UserError(f'the generator makes square images but {config.data.name} has '
                    f'{height}x{width} images; set --config.data.image_size to resize them')
  try:
    generator_features(config.generator.architecture, config.generator.hidden,
                       config.generator.image_size or height)
  except ValueError as e:
    raise UserError(f'generator: {e}; fix --config.generator.image_size or .architecture') from None


def generator(terms: tuple[str, ...], loss_section: str = '') -> StageOne:
  """MFGR's stage I with the generator loss terms `terms`, weighted by
  `generator.weights`, or by `generator_weights` (with `content_temperature`)
  of the config section `loss_section` if given. The generator and its budget
  (steps, batch, learning rate) are always the `generator` section's."""
  return StageOne(stage=results.GENERATOR_STAGE, section='generator',
                   steps=lambda config: config.generator.steps,
                   record=functools.partial(_record_with_generator, terms, loss_section),
                   source=_generator_source, arrays_like=_generator_arrays_like,
                   check_config=functools.partial(_check_generator, terms),
                   carried_like=_generator_state_like)


# --- pixel pool (DeepInversion) -----------------------------------------------


def _record_pixel_pool(experiment: Experiment, task: Task, old_vars: Any, runner: StageIRunner,
                       carried: None) -> tuple[Any, dict, None]:
  """Optimises a pool of images against the frozen old model; returns the pool."""
  del carried  # every task's pool is new
  config = experiment.config.deepinversion
  tx = inversion.make_pixel_optimizer(config)
  step = inversion.make_pixel_step(experiment.model(task.num_old), tx, config, task.num_old)
  state = inversion.init_pixel_state(config, experiment.dataset.image_shape, tx)
  state, steps_per_second = runner.run_to_end(
      results.PIXEL_POOL_STAGE, state, step,
      (old_vars, experiment.task_key(task, keys.PIXEL_POOL)), config.log_every_steps)
  pool = parallel.to_host(state.pool)
  _show_samples(results.PIXEL_POOL_STAGE, experiment, pool, runner)
  return pool, {'synthesis_images_per_second': (
      steps_per_second * config.batch_size / config.iterations if steps_per_second else None)}, None


def _pool_source(experiment: Experiment, task: Task) -> classifier.ReplaySource:
  return classifier.pool_source(inversion.pool_size(experiment.config.deepinversion),
                                generated_batch_size(experiment.config, task))


def _pool_like(experiment: Experiment) -> np.ndarray:
  return np.zeros((inversion.pool_size(experiment.config.deepinversion),) +
                  experiment.dataset.image_shape, np.float32)


def _check_pixel_pool(config: ml_collections.ConfigDict) -> None:
  parallel.check_divisible(config.deepinversion.batch_size, 'deepinversion.batch_size')
  _check_replay(config)


def _prepare_pixel_pool(experiment: Experiment) -> None:
  most_old = max((t.num_old for t in experiment.tasks_to_run), default=0)
  size = inversion.pool_size(experiment.config.deepinversion)
  if size < most_old:
    raise UserError(f'the deepinversion pool ({size} images) cannot hold one image of each of '
                    f'{most_old} old classes; raise --config.deepinversion.batches or .batch_size')


PIXEL_POOL = StageOne(
    stage=results.PIXEL_POOL_STAGE, section='deepinversion',
    steps=lambda config: config.deepinversion.batches * config.deepinversion.iterations,
    record=_record_pixel_pool, source=_pool_source, arrays_like=_pool_like,
    check_config=_check_pixel_pool, prepare=_prepare_pixel_pool)
