"""The per-task outer loop: scenario -> for each task: learn, evaluate, checkpoint, report.

Resuming is implicit: `run` continues from the last finished task, or from the
latest mid-task checkpoint, of `workdir`. Every random number comes from keys
derived from `config.seed`, the task index and the step, so a resumed run
replays exactly the stream of an uninterrupted one.
"""

import dataclasses
import fcntl
import json
import os
import pathlib
import socket
import time
from typing import IO, Any, Callable

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import classifier
from mfgr_jax import consolidation
from mfgr_jax import evaluation
from mfgr_jax import exemplars
from mfgr_jax import inversion
from mfgr_jax import numerics
from mfgr_jax import parallel
from mfgr_jax import preemption
from mfgr_jax import report
from mfgr_jax import side_classifiers
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.data.loading import Dataset, load_dataset, subsample_per_class
from mfgr_jax.errors import Interrupted, NonFiniteLoss, UserError
from mfgr_jax.methods import Method, get_method, mas
from mfgr_jax.models.generator import Generator, generator_features
from mfgr_jax.models.resnet import resnet, widen_head
from mfgr_jax.scenario import Task, class_order, listed_classes, make_tasks

# Sub-streams of a task's key (jax.random.fold_in), one per use.
(_INIT, _HEAD, _ORDER, _AUGMENT, _GENERATOR_INIT, _GENERATOR_STEPS, _REPLAY, _SAMPLES,
 _SIDE_HEADS, _SYNTHESIS) = range(10)


@dataclasses.dataclass
class Experiment:
  """Everything fixed for a run: data in output-index space, tasks, method."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  method: Method
  dataset: Dataset
  order: list[int]
  tasks: list[Task]  # the whole scenario, also when `config.scenario.num_tasks` stops early
  train_targets: np.ndarray  # output index of each training image
  test_targets: np.ndarray
  auxiliary: Dataset | None = None  # MUC's unlabelled images

  @property
  def tasks_to_run(self) -> list[Task]:
    return self.tasks[:self.config.scenario.num_tasks or len(self.tasks)]

  def model(self, num_classes: int):
    return resnet(self.config.model.depth, num_classes, self.config.model.width,
                  self.config.model.stem, bn_axis_name=parallel.AXIS,
                  dtype=self.config.model.compute_dtype)

  def generator(self) -> Generator:
    height, _, channels = self.dataset.image_shape
    config = self.config.generator
    size = config.image_size or height
    return Generator(image_size=size, channels=channels, latent_dim=config.latent_dim,
                     hidden=config.hidden, architecture=config.architecture, output_size=height,
                     axis_name=parallel.AXIS)

  def synthesis_steps(self, task: Task) -> int:
    """Stage I steps of `task`: none at task 0 or for methods that replay nothing."""
    if not task.num_old or not self.method.synthesis:
      return 0
    if self.method.synthesis == 'generator':
      return self.config.generator.steps
    return self.config.deepinversion.batches * self.config.deepinversion.iterations

  def generated_batch_size(self, task: Task) -> int:
    """Generated images per stage II step (`config.replay.balance`)."""
    if self.config.replay.balance == 'fixed':
      return self.config.replay.generated_batch_size
    # 'per_class': as many per old class as real images per new class, rounded
    # up to a multiple of the device count.
    wanted = self.config.train.batch_size * task.num_old / task.num_new
    return int(np.ceil(wanted / parallel.device_count()) * parallel.device_count())

  def task_key(self, task: Task, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), task.index),
                              stream)

  def train_indices(self, task: Task) -> np.ndarray:
    """The task's own training images (without an exemplar memory)."""
    first = 0 if self.method.trains_on_all_seen else task.num_old
    return np.flatnonzero((self.train_targets >= first) & (self.train_targets < task.num_seen))

  def exemplar_quotas(self, task: Task) -> np.ndarray:
    """Exemplars per seen class in the memory after `task` (`exemplars.class_quotas`)."""
    sizes = np.bincount(self.train_targets[self.train_targets >= 0], minlength=len(self.order))
    return exemplars.class_quotas(sizes[:task.num_seen], self.config.icarl.memory_size)

  def train_count(self, task: Task) -> int:
    """Training images of `task`: its own, plus the memory of the tasks before it."""
    count = len(self.train_indices(task))
    if self.method.exemplars and task.index:
      count += int(self.exemplar_quotas(self.tasks[task.index - 1]).sum())
    return count

  def steps_per_epoch(self, task: Task) -> int:
    return self.train_count(task) // self.config.train.batch_size

  def total_steps(self, task: Task) -> int:
    return self.config.train.epochs * self.steps_per_epoch(task)

  def fingerprint(self) -> dict:
    """What must match for a checkpoint of this workdir to be resumed."""
    data = self.config.data
    fingerprint = {'dataset': self.dataset.name,
                   'images': {k: data[k] for k in ('max_train_per_class', 'max_test_per_class',
                                                   'image_size')},
                   'class_order': self.order,
                   'tasks': [list(t.classes) for t in self.tasks], 'method': self.method.name,
                   'model': self.config.model.to_dict()}
    for section in (self.method.synthesis, self.method.config_section,
                    'distillation' if self.method.uses_teacher else '',
                    'muc' if self.method.side_classifiers else ''):
      if section:
        fingerprint[section] = self.config[section].to_dict()
    return fingerprint


def build_experiment(config: ml_collections.ConfigDict, workdir: pathlib.Path) -> Experiment:
  method = get_method(config.method)
  try:
    resnet(config.model.depth, 1, config.model.width, config.model.stem,
           dtype=config.model.compute_dtype)
  except ValueError as e:
    raise UserError(f'model: {e}; fix --config.model.*') from None
  _check_positive(config, ('train.batch_size', 'eval_batch_size', 'log_every_steps',
                           'checkpoint_every_steps'))
  if config.on_nonfinite not in ('stop', 'skip'):
    raise UserError(f"on_nonfinite={config.on_nonfinite!r} must be 'stop' or 'skip'")
  parallel.check_divisible(config.train.batch_size, 'train.batch_size')
  parallel.check_divisible(config.eval_batch_size, 'eval_batch_size')
  if method.synthesis:
    _check_synthesis_config(config, method)
  if method.side_classifiers:
    _check_positive(config, ('muc.side_heads', 'muc.side_epochs', 'muc.side_batch_size',
                             'muc.side_learning_rate'))
  if method.importance:
    section = config[method.config_section]
    parallel.check_divisible(section.importance_batch_size,
                             f'{method.config_section}.importance_batch_size')
    try:
      consolidation.check_config(section)
      method.importance.make_score(Task(0, (0,), 0, 1), section)
    except ValueError as e:
      raise UserError(f'{method.config_section}: {e}; fix --config.{method.config_section}.*') from None
  # An explicit class order may name a subset: only those classes are loaded.
  with parallel.main_process_first('prepare data'):
    dataset = load_dataset(config.data, listed_classes(config.scenario.class_order))
  if config.data.max_train_per_class or config.data.max_test_per_class:
    dataset = subsample_per_class(dataset, config.data.max_train_per_class,
                                  config.data.max_test_per_class)
  order = class_order(dataset.num_classes, config.scenario.class_order,
                      config.scenario.class_order_seed)
  tasks = make_tasks(order, config.scenario.base_classes, config.scenario.increment)
  if not 0 <= config.scenario.num_tasks <= len(tasks):
    raise UserError(f'scenario.num_tasks={config.scenario.num_tasks} but the scenario has '
                    f'{len(tasks)} tasks; use 0 (all) or a number up to {len(tasks)}')
  output_of_label = np.full(dataset.num_classes, -1, np.int32)
  output_of_label[order] = np.arange(len(order))
  experiment = Experiment(config, workdir, method, dataset, order, tasks,
                          output_of_label[dataset.train_labels],
                          output_of_label[dataset.test_labels],
                          _load_auxiliary(config, dataset) if method.side_classifiers else None)
  if method.synthesis == 'generator':
    height, width, _ = dataset.image_shape
    if height != width:
      raise UserError(f'the generator makes square images but {dataset.name} has {height}x{width}'
                      ' images; set --config.data.image_size to resize them')
    try:
      generator_features(config.generator.architecture, config.generator.hidden,
                         config.generator.image_size or height)
    except ValueError as e:
      raise UserError(f'generator: {e}; fix --config.generator.image_size or .architecture') from None
  if method.synthesis:
    for task in experiment.tasks_to_run[1:]:
      parallel.check_divisible(experiment.generated_batch_size(task),
                               f'the generated batch of task {task.index}')
  if method.exemplars and config.icarl.memory_size < len(order):
    raise UserError(f'icarl.memory_size={config.icarl.memory_size} leaves some of the '
                    f'{len(order)} classes without exemplars; use at least {len(order)}')
  if method.synthesis == 'deepinversion':
    most_old = max((t.num_old for t in experiment.tasks_to_run), default=0)
    if inversion.pool_size(config.deepinversion) < most_old:
      raise UserError(f'the deepinversion pool ({inversion.pool_size(config.deepinversion)} '
                      f'images) cannot hold one image of each of {most_old} old classes; raise '
                      '--config.deepinversion.batches or .batch_size')
  for task in experiment.tasks_to_run:
    if experiment.steps_per_epoch(task) == 0:
      raise UserError(f'task {task.index} has {experiment.train_count(task)} training '
                      f'images, fewer than train.batch_size={config.train.batch_size}; lower '
                      'the batch size or use more data per class')
  return experiment


def _load_auxiliary(config: ml_collections.ConfigDict, dataset: Dataset) -> Dataset:
  """MUC's unlabelled images: `muc.auxiliary`, read like `data` (synthetic ones in
  the main dataset's shape)."""
  auxiliary = ml_collections.ConfigDict(config.data.to_dict())
  auxiliary.name = config.muc.auxiliary
  auxiliary.synthetic.image_size, _, auxiliary.synthetic.channels = dataset.image_shape
  with parallel.main_process_first('prepare auxiliary data'):
    loaded = load_dataset(auxiliary, None)
  if loaded.image_shape != dataset.image_shape:
    raise UserError(f'muc.auxiliary={auxiliary.name!r} has {loaded.image_shape} images but '
                    f'{dataset.name} has {dataset.image_shape}; choose another dataset or set '
                    '--config.data.image_size')
  return loaded


class BatchSampler:
  """The batches of one task, as a pure function of the step.

  Epoch e visits the task's images in a permutation keyed by (seed, task, e);
  step s takes the (s mod steps_per_epoch)-th full batch of it (the last
  partial batch is dropped, so every step has the same shape). Each image gets
  its own augmentation key from (seed, task, s, position). A process reads only
  its own rows of each global batch (`parallel.local_rows`).
  """

  def __init__(self, experiment: Experiment, task: Task, indices: np.ndarray):
    self._images = experiment.dataset.train_images
    self._targets = experiment.train_targets
    self._indices = indices
    self._batch_size = experiment.config.train.batch_size
    self._steps_per_epoch = experiment.steps_per_epoch(task)
    self._order_key = experiment.task_key(task, _ORDER)
    self._augment_key = experiment.task_key(task, _AUGMENT)
    self._epoch, self._permutation = None, None
    self._rows = parallel.local_rows(self._batch_size)

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    epoch, position = divmod(step, self._steps_per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._permutation = np.asarray(jax.random.permutation(
          jax.random.fold_in(self._order_key, epoch), self._indices))
    chosen = self._permutation[position * self._batch_size:(position + 1) * self._batch_size]
    keys = jax.random.split(jax.random.fold_in(self._augment_key, step), self._batch_size)
    chosen = chosen[self._rows]
    return {'image': self._images[chosen], 'label': self._targets[chosen],
            'aug_key': np.asarray(keys)[self._rows]}


def _variables_like(experiment: Experiment, num_classes: int) -> dict:
  """Host arrays shaped like the model's variables: a target for restoring."""
  return parallel.to_host(experiment.model(num_classes).init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + experiment.dataset.image_shape), train=False))


@dataclasses.dataclass
class _Outputs:
  """Where the stages of a task report and checkpoint."""
  checkpoints: Checkpoints
  writer: metric_writers.MetricWriter
  progress: periodic_actions.ReportProgress
  on_nonfinite: str  # 'stop' or 'skip' (config.on_nonfinite)
  # Updates not applied in the current task because a loss or gradient was not
  # finite, per stage (on_nonfinite='skip'); saved with the progress checkpoints.
  skipped: dict = dataclasses.field(default_factory=dict)


def _report(outputs: _Outputs, stage: str, task: Task, step: int, total_steps: int,
            global_step: int, metrics: dict) -> None:
  scalars = {f'{stage}/{k}': float(v) for k, v in metrics.items() if np.ndim(v) == 0}
  outputs.writer.write_scalars(global_step, scalars)
  line = ', '.join(f'{k.split("/", 1)[1]} {v:.4f}' for k, v in scalars.items())
  if 'class_counts' in metrics:  # histogram of the old model's argmax on generated images
    counts = np.asarray(metrics['class_counts']).astype(int)
    outputs.writer.write_histograms(
        global_step, {f'{stage}/predicted_class': np.repeat(np.arange(len(counts)), counts)},
        num_buckets={f'{stage}/predicted_class': len(counts)})
    line += f', predicted classes {counts.tolist()}'
  logging.info('task %d %s step %d/%d: %s', task.index, stage, step, total_steps, line)


def _run_stage(stage: str, experiment: Experiment, task: Task, outputs: _Outputs,
               step_fn: Callable[[Any, int], tuple[Any, dict]], state: Any, total_steps: int,
               global_offset: int, payload: Callable[[Any], dict], seconds: dict,
               log_every: int) -> tuple[Any, float | None]:
  """Runs `state = step_fn(state, step)` from `state.step` to `total_steps`.

  Logs metrics every `log_every` steps, and saves `payload(state)` as a
  progress checkpoint every `checkpoint_every_steps`, with the stage's name,
  step and the seconds spent so far. Updates `seconds[stage]`; returns the
  state and the steps per second (excluding the first, compiling step).
  Whether a step's update was skipped as non-finite is read at log and
  checkpoint steps (`_check_finite`). On SIGTERM/SIGINT it saves at the
  current step and raises `Interrupted`.
  """
  first_step, seconds_before = int(state.step), seconds.get(stage, 0.0)
  start, timed_from, unchecked = time.time(), None, []
  for step in range(first_step, total_steps):
    state, metrics = step_fn(state, step)
    unchecked.append((step + 1, metrics))
    if timed_from is None:
      jax.block_until_ready(state)
      timed_from = (step + 1, time.time())
    global_step = global_offset + step + 1
    outputs.progress(global_step)
    log = (step + 1) % log_every == 0 or step + 1 == total_steps
    save = (step + 1) % experiment.config.checkpoint_every_steps == 0 and step + 1 < total_steps
    stop = preemption.requested(global_step)
    if log or save or stop:
      _check_finite(outputs, stage, task, unchecked)
      unchecked = []
    if log:
      _report(outputs, stage, task, step + 1, total_steps, global_step, metrics)
    if save or stop:
      seconds[stage] = seconds_before + time.time() - start
      outputs.checkpoints.save_progress(global_step, payload(state), _progress_meta(
          experiment, task, stage, step + 1, seconds, outputs))
    if stop:
      outputs.checkpoints.wait()
      raise Interrupted(f'stopped by {stop} in task {task.index} {stage} at step {step + 1}/'
                        f'{total_steps}; saved a checkpoint there; run the same command to '
                        'continue')
  jax.block_until_ready(state)
  end = time.time()
  seconds[stage] = seconds_before + end - start
  timed_steps = total_steps - timed_from[0] if timed_from else 0
  return state, (timed_steps / (end - timed_from[1]) if timed_steps else None)


def _progress_meta(experiment: Experiment, task: Task, stage: str, step: int, seconds: dict,
                   outputs: _Outputs) -> dict:
  """What a mid-task checkpoint records besides the state (checked and read on resume)."""
  return {'task': task.index, 'stage': stage, 'step': step, 'seconds': seconds,
          'skipped': outputs.skipped, 'fingerprint': experiment.fingerprint()}


def _check_finite(outputs: _Outputs, stage: str, task: Task,
                  steps: list[tuple[int, dict]]) -> None:
  """Stops (NonFiniteLoss) or counts the steps whose update was skipped as non-finite."""
  bad = [(step, metrics) for step, metrics in steps if float(metrics[numerics.SKIPPED])]
  if not bad:
    return
  if outputs.on_nonfinite == 'skip':
    outputs.skipped[stage] = outputs.skipped.get(stage, 0) + len(bad)
    logging.warning('task %d %s: skipped %d non-finite updates (steps %s)', task.index, stage,
                    len(bad), [step for step, _ in bad])
    return
  step, metrics = bad[0]
  terms = [k for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(float(v))]
  what = ', '.join(terms) or 'a gradient or new parameter'
  raise NonFiniteLoss(
      f'task {task.index} {stage} step {step}: {what} not finite; the update was not applied '
      f'and the run stopped; {outputs.checkpoints.latest_description()}; lower the learning '
      'rate or the loss weights, or set --config.on_nonfinite=skip to skip such updates')


def record_knowledge(experiment: Experiment, task: Task, teacher_vars: Any, outputs: _Outputs,
                     resume: dict | None, seconds: dict, global_offset: int) -> tuple[Any, dict]:
  """Stage I: inverts the frozen old model; returns what stage II replays from
  (generator parameters or DeepInversion's pool) and the stage's throughput."""
  record = train_generator if experiment.method.synthesis == 'generator' else synthesise_pixels
  return record(experiment, task, teacher_vars, outputs, resume, seconds, global_offset)


def _run_stage_one(stage: str, experiment: Experiment, task: Task, outputs: _Outputs,
                   resume: dict | None, seconds: dict, global_offset: int, state: Any,
                   step: Callable[[Any], tuple[Any, dict]],
                   log_every: int) -> tuple[Any, float | None]:
  """Runs stage I's `state = step(state)` to the end from `state` or its progress
  checkpoint; returns the final state (on devices) and steps per second."""
  if resume is not None:
    state = outputs.checkpoints.restore_progress({stage: parallel.to_host(state)})[stage]
    logging.info('Resuming task %d %s at step %d', task.index, stage, int(state.step))
  first_step, total_steps = int(state.step), experiment.synthesis_steps(task)
  state, steps_per_second = _run_stage(
      stage, experiment, task, outputs, lambda state, _: step(state), parallel.replicate(state),
      total_steps, global_offset, lambda state: {stage: state}, seconds, log_every)
  if first_step < total_steps:  # a finished stage I survives a kill during stage II
    outputs.checkpoints.save_progress(global_offset + total_steps, {stage: state}, _progress_meta(
        experiment, task, stage, total_steps, seconds, outputs))
  return state, steps_per_second


def train_generator(experiment: Experiment, task: Task, teacher_vars: Any, outputs: _Outputs,
                    resume: dict | None, seconds: dict, global_offset: int) -> tuple[Any, dict]:
  """MFGR's stage I: trains a fresh generator against the frozen old model; returns its params."""
  config = experiment.config.generator
  generator, teacher = experiment.generator(), experiment.model(task.num_old)
  tx = inversion.make_optimizer(config)
  step = inversion.make_generator_step(generator, teacher, tx, config,
                                       experiment.method.generator_terms)
  key = experiment.task_key(task, _GENERATOR_STEPS)
  state, steps_per_second = _run_stage_one(
      'generator', experiment, task, outputs, resume, seconds, global_offset,
      inversion.init_state(generator, experiment.task_key(task, _GENERATOR_INIT), tx),
      lambda state: step(state, teacher_vars, key), config.log_every_steps)
  params = parallel.to_host(state.params)
  count = config.batch_size  # the batch size its BN statistics expect
  samples = inversion.make_sampler(generator, count)(parallel.replicate(params),
                                                     experiment.task_key(task, _SAMPLES))
  _write_samples('generator', experiment, task, samples, outputs,
                 global_offset + experiment.synthesis_steps(task))
  return params, {'generator_images_per_second': (
      steps_per_second * config.batch_size if steps_per_second else None)}


def synthesise_pixels(experiment: Experiment, task: Task, teacher_vars: Any, outputs: _Outputs,
                      resume: dict | None, seconds: dict, global_offset: int) -> tuple[Any, dict]:
  """DeepInversion's stage I: optimises a pool of images against the frozen old model."""
  config = experiment.config.deepinversion
  tx = inversion.make_pixel_optimizer(config)
  step = inversion.make_pixel_step(experiment.model(task.num_old), tx, config, task.num_old)
  key = experiment.task_key(task, _SYNTHESIS)
  state, steps_per_second = _run_stage_one(
      'synthesis', experiment, task, outputs, resume, seconds, global_offset,
      inversion.init_pixel_state(config, experiment.dataset.image_shape, tx),
      lambda state: step(state, teacher_vars, key), config.log_every_steps)
  pool = parallel.to_host(state.pool)
  _write_samples('synthesis', experiment, task, pool, outputs,
                 global_offset + experiment.synthesis_steps(task))
  return pool, {'synthesis_images_per_second': (
      steps_per_second * config.batch_size / config.iterations if steps_per_second else None)}


def _write_samples(stage: str, experiment: Experiment, task: Task, images: np.ndarray,
                   outputs: _Outputs, global_step: int) -> None:
  """A PNG grid of stage I's images in WORKDIR/samples/ and in TensorBoard (`STAGE/samples`)."""
  shown = 128 if images.shape[1] <= 64 else 32  # keeps 224-pixel grids a few MB
  grid = inversion.image_grid(parallel.to_host(images)[:shown], experiment.dataset.mean,
                              experiment.dataset.std)
  if parallel.is_main_process():
    folder = experiment.workdir / 'samples'
    folder.mkdir(exist_ok=True)
    report.write_png(folder / f'task{task.index}.png', grid)
  outputs.writer.write_images(global_step, {f'{stage}/samples': grid[None]})


def learn_task(experiment: Experiment, task: Task, previous: dict | None,
               outputs: _Outputs, global_offset: int,
               method_state: Any = None) -> tuple[dict, dict, dict]:
  """Learns `task` (stage I if the method replays synthesised images, then the classifier).

  `method_state`: what the method carried from the earlier tasks (EWC/MAS's
  anchor and importance, iCaRL's memory, MUC's side classifiers), or None. Returns (model variables on host,
  seconds per stage, throughput).
  """
  config, method = experiment.config, experiment.method
  meta = outputs.checkpoints.progress_meta()
  resume = meta if meta is not None and meta['task'] == task.index else None
  seconds = dict(resume['seconds']) if resume else {}
  outputs.skipped = dict(resume.get('skipped', {})) if resume else {}
  teacher = experiment.model(task.num_old) if method.uses_teacher and task.num_old else None
  teacher_vars = parallel.replicate(previous) if teacher is not None else None
  throughput = {}
  replay_arrays = None  # generator parameters or DeepInversion's pool
  replays = bool(method.synthesis and task.num_old)
  if replays and not (resume and resume['stage'] == 'classifier'):
    replay_arrays, throughput = record_knowledge(experiment, task, teacher_vars, outputs, resume,
                                                 seconds, global_offset)
  global_offset += experiment.synthesis_steps(task)

  model = experiment.model(task.num_seen)
  if previous is None:
    image = jnp.zeros((1,) + experiment.dataset.image_shape, jnp.float32)
    variables = model.init(experiment.task_key(task, _INIT), image, train=False)
    params, batch_stats = variables['params'], variables['batch_stats']
  else:
    params = widen_head(previous['params'], task.num_seen, experiment.task_key(task, _HEAD))
    batch_stats = previous['batch_stats']
  total_steps = experiment.total_steps(task)
  tx = classifier.make_optimizer(config.train, total_steps)
  state = classifier.init_train_state(params, batch_stats, tx)
  if resume and resume['stage'] == 'classifier':
    target = {'classifier': parallel.to_host(state)}
    if replays:
      target['replay'] = _replay_arrays_like(experiment)
    restored = outputs.checkpoints.restore_progress(target)
    state, replay_arrays = restored['classifier'], restored.get('replay')
    logging.info('Resuming task %d at step %d/%d', task.index, int(state.step), total_steps)

  augment_kwargs = dict(padding=config.data.crop_padding, flip=config.data.flip,
                        mean=experiment.dataset.mean, std=experiment.dataset.std)
  loss = method.make_loss(task, config)
  indices = experiment.train_indices(task)
  if method.exemplars and method_state is not None:
    indices = np.concatenate([indices, method_state['exemplars']])
  sampler = BatchSampler(experiment, task, indices)
  if replays:
    replay_step = classifier.make_replay_step(model, tx, loss, augment_kwargs, teacher,
                                              _replay_source(experiment, task),
                                              config.replay.single_pass)
    replay_on_devices = parallel.replicate(replay_arrays)
    replay_key = experiment.task_key(task, _REPLAY)
    step_fn = lambda state, step: replay_step(state, teacher_vars, replay_on_devices,
                                              parallel.shard(sampler(step)), replay_key)
    payload = lambda state: {'classifier': state, 'replay': replay_on_devices}
  else:
    train_step = classifier.make_train_step(model, tx, loss, augment_kwargs, teacher)
    carried = parallel.replicate(method_state) if method_state is not None else None
    step_fn = lambda state, step: train_step(state, teacher_vars, parallel.shard(sampler(step)),
                                             carried)
    payload = lambda state: {'classifier': state}
  state, steps_per_second = _run_stage(
      'classifier', experiment, task, outputs, step_fn, parallel.replicate(state), total_steps,
      global_offset, payload, seconds, config.log_every_steps)
  throughput['train_images_per_second'] = (
      steps_per_second * config.train.batch_size if steps_per_second else None)
  return (parallel.to_host({'params': state.params, 'batch_stats': state.batch_stats}), seconds,
          throughput)


def _replay_source(experiment: Experiment, task: Task) -> classifier.ReplaySource:
  batch_size = experiment.generated_batch_size(task)
  if experiment.method.synthesis == 'generator':
    return classifier.generator_source(experiment.generator(), batch_size)
  return classifier.pool_source(inversion.pool_size(experiment.config.deepinversion), batch_size)


def _replay_arrays_like(experiment: Experiment) -> Any:
  """Host arrays shaped like what stage II replays from: a target for restoring."""
  if experiment.method.synthesis == 'generator':
    return parallel.to_host(experiment.generator().init(
        jax.random.PRNGKey(0), jnp.zeros((2, experiment.config.generator.latent_dim)))['params'])
  return np.zeros((inversion.pool_size(experiment.config.deepinversion),) +
                  experiment.dataset.image_shape, np.float32)


def consolidate(experiment: Experiment, task: Task, variables: dict, previous: dict | None) -> dict:
  """EWC / MAS after `task`: {'anchor': its backbone, 'importance': merged with `previous`'s}.

  Importance is the mean over the task's training images (no augmentation);
  MUC-MAS adds `SIDE_IMPORTANCE` times the mean importance of its side classifiers.
  """
  method = experiment.method
  config = experiment.config[method.config_section]
  importance = _mean_importance(experiment, task, experiment.model(task.num_seen), variables,
                                method.importance.make_score(task, config))
  if method.side_classifiers:
    heads = train_side_classifiers(experiment, task, variables)['side_heads']
    side_model = experiment.model(task.num_new)
    per_head = [_mean_importance(experiment, task, side_model,
                                 _with_head(variables, heads['kernel'][k], heads['bias'][k]),
                                 mas.mean_square)
                for k in range(len(heads['kernel']))]
    importance = jax.tree.map(
        lambda main, *side: main + SIDE_IMPORTANCE * sum(side) / len(side), importance, *per_head)
  return {'anchor': consolidation.backbone(variables['params']),
          'importance': consolidation.merge(None if previous is None else previous['importance'],
                                            importance, config.accumulate)}


# MUC-MAS's weight of the side classifiers' importance.
SIDE_IMPORTANCE = 1.4


def _with_head(variables: dict, kernel: np.ndarray, bias: np.ndarray) -> dict:
  """`variables` with the linear head replaced (MUC-MAS: a side classifier as the head)."""
  head = {'linear': {'dense': {'kernel': kernel, 'bias': bias}}}
  return {**variables, 'params': {**variables['params'], 'head': head}}


def _mean_importance(experiment: Experiment, task: Task, model: Any, variables: dict,
                     score: Callable[[jax.Array], jax.Array]) -> Any:
  """Mean over `task`'s training images of the method's reduce(d score / d backbone)."""
  config = experiment.config[experiment.method.config_section]
  step = consolidation.make_importance_step(model, score, experiment.method.importance.reduce,
                                            experiment.dataset.mean, experiment.dataset.std)
  indices = experiment.train_indices(task)
  batch_size = config.importance_batch_size
  replicated, total, rows = parallel.replicate(variables), None, parallel.local_rows(batch_size)
  for begin in range(0, len(indices), batch_size):
    chunk = indices[begin:begin + batch_size]
    weights = (np.arange(batch_size) < len(chunk)).astype(np.float32)  # zero on the padding
    chunk = np.concatenate([chunk, np.zeros(batch_size - len(chunk), chunk.dtype)])
    summed = step(replicated, parallel.shard(experiment.dataset.train_images[chunk[rows]]),
                  parallel.shard(weights[rows]))
    total = summed if total is None else jax.tree.map(jnp.add, total, summed)
  return jax.tree.map(lambda x: x / len(indices), parallel.to_host(total))


def select_exemplars(experiment: Experiment, task: Task, variables: dict,
                     previous: dict | None) -> dict:
  """iCaRL after `task`: {'exemplars': training-set indices}, the old classes' shrunk to their
  new quota, the new classes' chosen by herding on the model's features."""
  quotas = experiment.exemplar_quotas(task)
  features = _features_step(experiment, task)
  chosen = {}
  for c in range(task.num_old, task.num_seen):
    indices = np.flatnonzero(experiment.train_targets == c)
    class_features = _in_batches(features, variables, experiment.dataset.train_images[indices],
                                 experiment.config.eval_batch_size)
    chosen[c] = indices[exemplars.herding(class_features, int(quotas[c]))]
  memory = previous['exemplars'] if previous is not None else np.zeros(0, np.int32)
  return {'exemplars': exemplars.update_memory(memory, experiment.train_targets[memory], quotas,
                                               range(task.num_old, task.num_seen), chosen)}


def _features_step(experiment: Experiment, task: Task, flip: bool = False,
                   l2_normalise: bool = True) -> Callable:
  return classifier.make_features_step(experiment.model(task.num_seen), experiment.dataset.mean,
                                       experiment.dataset.std, flip, l2_normalise)


def train_side_classifiers(experiment: Experiment, task: Task, variables: dict) -> dict:
  """MUC after `task`: {'side_heads'} trained on its classes' frozen features."""
  features = _features_step(experiment, task, l2_normalise=False)
  batch_size = experiment.config.eval_batch_size
  indices = experiment.train_indices(task)
  if experiment.method.trains_on_all_seen:
    indices = indices[experiment.train_targets[indices] >= task.num_old]
  heads, metrics = side_classifiers.train_side_heads(
      _in_batches(features, variables, experiment.dataset.train_images[indices], batch_size),
      experiment.train_targets[indices] - task.num_old,
      _in_batches(features, variables, experiment.auxiliary.train_images, batch_size),
      experiment.config.muc, experiment.task_key(task, _SIDE_HEADS))
  logging.info('task %d side classifiers: %s', task.index,
               ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
  return {'side_heads': heads}


def _in_batches(step: Callable, variables: dict, images: np.ndarray, batch_size: int) -> np.ndarray:
  """`step(variables, batch)` over `images` in batches padded to `batch_size`, concatenated."""
  replicated, outputs, rows = parallel.replicate(variables), [], parallel.local_rows(batch_size)
  for begin in range(0, len(images), batch_size):
    chunk = images[begin:begin + batch_size]
    valid = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)])
    outputs.append(parallel.to_host(step(replicated, parallel.shard(chunk[rows])))[:valid])
  return np.concatenate(outputs)


def _method_state_like(experiment: Experiment, task: Task) -> dict:
  if experiment.method.importance:
    backbone = consolidation.backbone(_variables_like(experiment, task.num_seen)['params'])
    return {'anchor': backbone, 'importance': backbone}
  if experiment.method.side_classifiers:
    params = _variables_like(experiment, task.num_seen)['params']
    feature_dim = params['head']['linear']['dense']['kernel'].shape[0]
    heads = experiment.config.muc.side_heads
    return {'side_heads': {'kernel': np.zeros((heads, feature_dim, task.num_new), np.float32),
                           'bias': np.zeros((heads, task.num_new), np.float32)}}
  return {'exemplars': np.zeros(int(experiment.exemplar_quotas(task).sum()), np.int32)}


def update_method_state(experiment: Experiment, task: Task, variables: dict,
                        previous: dict | None) -> tuple[dict | None, dict]:
  """What the method carries to the next task (EWC/MAS importance, iCaRL's memory),
  and the seconds it took."""
  start = time.time()
  if experiment.method.importance:
    return consolidate(experiment, task, variables, previous), {'importance': time.time() - start}
  if experiment.method.exemplars:
    return select_exemplars(experiment, task, variables, previous), {
        'exemplars': time.time() - start}
  if experiment.method.side_classifiers:
    return train_side_classifiers(experiment, task, variables), {
        'side_classifiers': time.time() - start}
  return None, {}


def nearest_mean_predict(experiment: Experiment, task: Task, variables: dict,
                         method_state: dict, images: np.ndarray) -> np.ndarray:
  """iCaRL's classifier: the nearest class mean of the exemplars' normalised features
  (each mean over the exemplars and their flipped copies)."""
  memory = method_state['exemplars']
  batch_size = experiment.config.eval_batch_size
  stored = experiment.dataset.train_images[memory]
  plain, flipped = _features_step(experiment, task), _features_step(experiment, task, flip=True)
  means = exemplars.flip_averaged_means(_in_batches(plain, variables, stored, batch_size),
                                        _in_batches(flipped, variables, stored, batch_size),
                                        experiment.train_targets[memory], task.num_seen)
  return exemplars.nearest_mean(_in_batches(plain, variables, images, batch_size), means)


def evaluate(experiment: Experiment, task: Task, variables: dict,
             method_state: dict | None = None) -> dict:
  """Predicts every test image of the seen classes; returns the task's metrics.

  Exemplar methods classify by the nearest mean of exemplars, the others by
  the argmax of the seen logits.
  """
  seen = np.flatnonzero((experiment.test_targets >= 0) & (experiment.test_targets < task.num_seen))
  labels = experiment.test_targets[seen]
  images = experiment.dataset.test_images[seen]
  if experiment.method.exemplars:
    predictions = nearest_mean_predict(experiment, task, variables, method_state, images)
  else:
    predict = classifier.make_predict_step(experiment.model(task.num_seen),
                                           experiment.dataset.mean, experiment.dataset.std)
    predictions = _in_batches(predict, variables, images, experiment.config.eval_batch_size)
  bounds = [(t.num_old, t.num_seen) for t in experiment.tasks[:task.index + 1]]
  old = labels < task.num_old
  return {
      'accuracy': evaluation.accuracy(predictions, labels),
      'task_accuracies': evaluation.task_accuracies(predictions, labels, bounds),
      'old_accuracy': evaluation.accuracy(predictions[old], labels[old]) if task.num_old else None,
      'new_accuracy': evaluation.accuracy(predictions[~old], labels[~old]),
      'per_class_accuracy': evaluation.per_class_accuracy(predictions, labels, task.num_seen),
      'confusion_matrix': evaluation.confusion_matrix(predictions, labels, task.num_seen).tolist(),
  }


def new_results(experiment: Experiment) -> dict:
  return {
      'method': experiment.method.name, 'dataset': experiment.dataset.name,
      'seed': experiment.config.seed, 'class_order': experiment.order,
      'class_names': experiment.dataset.class_names,
      'tasks': [list(t.classes) for t in experiment.tasks],
      'accuracy': [], 'accuracy_matrix': [], 'old_accuracy': [], 'new_accuracy': [],
      'per_class_accuracy': [], 'confusion_matrix': [], 'seconds': [], 'throughput': [],
      'skipped_steps': [],
      'task0_from': None,
      'average_incremental_accuracy': None, 'last_accuracy': None, 'forgetting': None,
      'metric_definitions': evaluation.__doc__.split('\n\n', 1)[1].strip(),
  }


def record_task(results: dict, experiment: Experiment, metrics: dict, seconds: dict,
                throughput: dict, skipped: dict) -> None:
  """Appends one task's evaluation to `results` and refreshes the summaries."""
  results['accuracy'].append(metrics['accuracy'])
  results['accuracy_matrix'].append(metrics['task_accuracies'])
  results['old_accuracy'].append(metrics['old_accuracy'])
  results['new_accuracy'].append(metrics['new_accuracy'])
  results['per_class_accuracy'].append(
      {str(experiment.order[c]): a for c, a in enumerate(metrics['per_class_accuracy'])})
  results['confusion_matrix'].append(metrics['confusion_matrix'])
  results['seconds'].append(seconds)
  results['throughput'].append(throughput)
  results['skipped_steps'].append(dict(skipped))
  results['average_incremental_accuracy'] = evaluation.average_incremental_accuracy(
      results['accuracy'])
  results['last_accuracy'] = results['accuracy'][-1]
  results['forgetting'] = evaluation.forgetting(results['accuracy_matrix'])


def _check_positive(config: ml_collections.ConfigDict, fields: tuple[str, ...]) -> None:
  for field in fields:
    value = config
    for name in field.split('.'):
      value = value[name]
    if not value > 0:
      raise UserError(f'{field}={value} must be positive; fix --config.{field}')


def _check_synthesis_config(config: ml_collections.ConfigDict, method: Method) -> None:
  name = method.synthesis
  positive = ('batch_size', 'learning_rate', 'log_every_steps') + (
      ('steps',) if name == 'generator' else ('batches', 'iterations'))
  _check_positive(config, tuple(f'{name}.{field}' for field in positive))
  parallel.check_divisible(config[name].batch_size, f'{name}.batch_size')
  if name == 'deepinversion' and config.deepinversion.jitter < 0:
    raise UserError(f'deepinversion.jitter={config.deepinversion.jitter} must be >= 0')
  if config.replay.balance not in ('fixed', 'per_class'):
    raise UserError(f"replay.balance={config.replay.balance!r} must be 'fixed' or 'per_class'")
  if 'diversity' in method.generator_terms and (
      2 * config.generator.diversity_pairs > config.generator.batch_size):
    raise UserError(f'generator.diversity_pairs={config.generator.diversity_pairs} needs '
                    f'generator.batch_size >= {2 * config.generator.diversity_pairs} (pairs join '
                    'the two halves of the batch); lower the pairs or raise the batch')


def _check_fingerprint(saved: dict, expected: dict, where: str) -> None:
  differences = [k for k in expected if saved.get(k) != expected[k]]
  if differences:
    raise UserError(
        f'{where} was made with a different {", ".join(differences)} than this config '
        f'(saved {saved.get(differences[0])!r}, now {expected[differences[0]]!r}); use a new '
        '--workdir, or delete that one to start over')


_TASK0_FINGERPRINT = ('dataset', 'images', 'class_order', 'tasks', 'model')


def _load_task0(experiment: Experiment, task: Task) -> tuple[dict, str]:
  """The task-0 model of another run's workdir (`config.init_from`)."""
  source = pathlib.Path(experiment.config.init_from).expanduser().absolute()
  if not (source / 'checkpoints' / 'tasks' / '0').exists():
    raise UserError(f'init_from={source} has no task-0 checkpoint (checkpoints/tasks/0); point '
                    'it at the workdir of a run that finished task 0')
  other = Checkpoints(source / 'checkpoints')
  saved = other.task_meta(0)['fingerprint']
  # Task 0 trains the same way for every method (plain CE, no generator).
  expected = {k: v for k, v in experiment.fingerprint().items() if k in _TASK0_FINGERPRINT}
  expected['tasks'] = expected['tasks'][:1]
  saved = {**saved, 'tasks': saved['tasks'][:1]}
  _check_fingerprint(saved, expected, f'the task-0 model in {source}')
  variables, _ = other.restore_task(0, _variables_like(experiment, task.num_seen))
  other.close()
  return variables, str(source)


def lock_workdir(workdir: pathlib.Path) -> IO[str]:
  """An exclusive lock on WORKDIR/lock, held while the returned file is open (the OS
  drops it when the process ends, also after kill -9); refuses a workdir another
  run holds, so that two runs never write the same checkpoints."""
  handle = open(workdir / 'lock', 'a+')  # pylint: disable=consider-using-with
  try:
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    handle.seek(0)
    holder = handle.read().strip() or 'another process'
    handle.close()
    raise UserError(f'workdir {workdir} is in use by another run ({holder}); wait for it to '
                    'end, or choose another --workdir') from None
  handle.seek(0)
  handle.truncate()
  handle.write(f'pid {os.getpid()} on {socket.gethostname()}\n')
  handle.flush()
  return handle


def _resume(experiment: Experiment, checkpoints: Checkpoints) -> tuple[dict, Any, Any, int]:
  """(results, model variables, method state, first task to run) from the workdir's
  checkpoints, after checking they were made with this config."""
  where = f'workdir {experiment.workdir}'
  results, previous, method_state, start = new_results(experiment), None, None, 0
  last = checkpoints.last_task()
  if last is not None:
    meta = checkpoints.task_meta(last)
    _check_fingerprint(meta['fingerprint'], experiment.fingerprint(), where)
    previous, meta = checkpoints.restore_task(
        last, _variables_like(experiment, experiment.tasks[last].num_seen))
    if experiment.method.importance or experiment.method.exemplars or (
        experiment.method.side_classifiers):
      method_state = checkpoints.restore_method_state(
          last, _method_state_like(experiment, experiment.tasks[last]))
    results, start = meta['results'], last + 1
    logging.info('Resuming after task %d from %s', last, experiment.workdir)
  mid_task = checkpoints.progress_meta()
  if mid_task is not None and 'fingerprint' in mid_task:  # absent in workdirs of before 2026-11
    _check_fingerprint(mid_task['fingerprint'], experiment.fingerprint(), where)
  return results, previous, method_state, start


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the whole class-incremental sequence; returns results."""
  workdir = pathlib.Path(workdir)
  experiment = build_experiment(config, workdir)
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    lock = lock_workdir(workdir) if parallel.is_main_process() else None
  except OSError as e:
    raise UserError(f'cannot write to workdir {workdir} ({e.strerror}); choose a writable '
                    '--workdir') from None
  main_process = parallel.is_main_process()
  # TensorBoard only: the step log lines below already go to the console.
  writer = (metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))
            if main_process else metric_writers.MultiWriter([]))
  checkpoints = Checkpoints(workdir / 'checkpoints')
  try:
    results, previous, method_state, start = _resume(experiment, checkpoints)
    if main_process:  # after the checks, so that a refused config leaves config.json alone
      report.write_json(workdir / 'config.json', config.to_dict())

    offsets = np.cumsum([0] + [experiment.synthesis_steps(t) + experiment.total_steps(t)
                               for t in experiment.tasks_to_run])
    progress = periodic_actions.ReportProgress(num_train_steps=int(offsets[-1]), writer=writer,
                                               every_secs=30)
    outputs = _Outputs(checkpoints, writer, progress, config.on_nonfinite)
    preemption.install()
    for task in experiment.tasks_to_run[start:]:
      logging.info('Task %d/%d: %d classes (%d old), %d training images', task.index,
                   len(experiment.tasks) - 1, task.num_new, task.num_old,
                   experiment.train_count(task))
      if task.index == 0 and config.init_from:
        previous, results['task0_from'] = _load_task0(experiment, task)
        seconds, throughput, outputs.skipped = {'classifier': 0.0}, {}, {}
      else:
        previous, seconds, throughput = learn_task(experiment, task, previous, outputs,
                                                   int(offsets[task.index]), method_state)
      # Before evaluation: iCaRL classifies with the memory that includes the new classes.
      method_state, method_seconds = update_method_state(experiment, task, previous, method_state)
      seconds.update(method_seconds)
      eval_start = time.time()
      metrics = evaluate(experiment, task, previous, method_state)
      seconds['eval'] = time.time() - eval_start
      record_task(results, experiment, metrics, seconds, throughput, outputs.skipped)
      writer.write_scalars(int(offsets[task.index + 1]), {
          'eval/accuracy': metrics['accuracy'], 'eval/new_accuracy': metrics['new_accuracy'],
          **({'eval/old_accuracy': metrics['old_accuracy']} if task.num_old else {})})
      writer.flush()
      checkpoints.save_task(task.index, previous,
                            {'results': results, 'fingerprint': experiment.fingerprint()},
                            method_state)
      if main_process:
        report.write_json(workdir / 'results.json', results)
        report.write_atomic(workdir / 'report.md', report.results_markdown(results))
      logging.info('After task %d: accuracy %.2f%% (old %s, new %.2f%%) per task %s', task.index,
                   metrics['accuracy'], metrics['old_accuracy'], metrics['new_accuracy'],
                   json.dumps([round(a, 2) for a in metrics['task_accuracies']]))
      stop = preemption.requested(int(offsets[task.index + 1]))
      if stop and task is not experiment.tasks_to_run[-1]:
        raise Interrupted(f'stopped by {stop} after task {task.index} (saved); run the same '
                          'command to continue')
  finally:
    preemption.uninstall()
    checkpoints.wait()
    checkpoints.close()
    writer.close()
    if lock is not None:
      lock.close()
  return results
