"""The per-task outer loop: scenario -> for each task: learn, evaluate, checkpoint, report.

Resuming is implicit: `run` continues from the last finished task, or from the
latest mid-task checkpoint, of `workdir`. Every random number comes from keys
derived from `config.seed`, the task index and the step, so a resumed run
replays exactly the stream of an uninterrupted one.
"""

import dataclasses
import json
import pathlib
import time
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import classifier
from mfgr_jax import evaluation
from mfgr_jax import parallel
from mfgr_jax import report
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.data.loading import Dataset, load_dataset
from mfgr_jax.errors import UserError
from mfgr_jax.methods import Method, get_method
from mfgr_jax.models.resnet import resnet, widen_head
from mfgr_jax.scenario import Task, class_order, make_tasks

# Sub-streams of a task's key (jax.random.fold_in), one per use.
_INIT, _HEAD, _ORDER, _AUGMENT = range(4)


@dataclasses.dataclass
class Experiment:
  """Everything fixed for a run: data in output-index space, tasks, method."""
  config: ml_collections.ConfigDict
  method: Method
  dataset: Dataset
  order: list[int]
  tasks: list[Task]  # the whole scenario, also when `config.scenario.num_tasks` stops early
  train_targets: np.ndarray  # output index of each training image
  test_targets: np.ndarray

  @property
  def tasks_to_run(self) -> list[Task]:
    return self.tasks[:self.config.scenario.num_tasks or len(self.tasks)]

  def model(self, num_classes: int):
    return resnet(self.config.model.depth, num_classes, self.config.model.width,
                  bn_axis_name=parallel.AXIS)

  def task_key(self, task: Task, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(self.config.seed), task.index),
                              stream)

  def train_indices(self, task: Task) -> np.ndarray:
    first = 0 if self.method.trains_on_all_seen else task.num_old
    return np.flatnonzero((self.train_targets >= first) & (self.train_targets < task.num_seen))

  def steps_per_epoch(self, task: Task) -> int:
    return len(self.train_indices(task)) // self.config.train.batch_size

  def total_steps(self, task: Task) -> int:
    return self.config.train.epochs * self.steps_per_epoch(task)

  def fingerprint(self) -> dict:
    """What must match for a checkpoint of this workdir to be resumed."""
    return {'dataset': self.dataset.name, 'class_order': self.order,
            'tasks': [list(t.classes) for t in self.tasks], 'method': self.method.name,
            'model': self.config.model.to_dict()}


def build_experiment(config: ml_collections.ConfigDict) -> Experiment:
  method = get_method(config.method)
  parallel.check_divisible(config.train.batch_size, 'train.batch_size')
  parallel.check_divisible(config.eval_batch_size, 'eval_batch_size')
  dataset = load_dataset(config.data)
  order = class_order(dataset.num_classes, config.scenario.class_order,
                      config.scenario.class_order_seed)
  tasks = make_tasks(order, config.scenario.base_classes, config.scenario.increment)
  if not 0 <= config.scenario.num_tasks <= len(tasks):
    raise UserError(f'scenario.num_tasks={config.scenario.num_tasks} but the scenario has '
                    f'{len(tasks)} tasks; use 0 (all) or a number up to {len(tasks)}')
  output_of_label = np.empty(dataset.num_classes, np.int32)
  output_of_label[order] = np.arange(dataset.num_classes)
  experiment = Experiment(config, method, dataset, order, tasks,
                          output_of_label[dataset.train_labels],
                          output_of_label[dataset.test_labels])
  for task in experiment.tasks_to_run:
    if experiment.steps_per_epoch(task) == 0:
      raise UserError(f'task {task.index} has {len(experiment.train_indices(task))} training '
                      f'images, fewer than train.batch_size={config.train.batch_size}; lower '
                      'the batch size or use more data per class')
  return experiment


class BatchSampler:
  """The batches of one task, as a pure function of the step.

  Epoch e visits the task's images in a permutation keyed by (seed, task, e);
  step s takes the (s mod steps_per_epoch)-th full batch of it (the last
  partial batch is dropped, so every step has the same shape). Each image gets
  its own augmentation key from (seed, task, s, position).
  """

  def __init__(self, experiment: Experiment, task: Task):
    self._images = experiment.dataset.train_images
    self._targets = experiment.train_targets
    self._indices = experiment.train_indices(task)
    self._batch_size = experiment.config.train.batch_size
    self._steps_per_epoch = experiment.steps_per_epoch(task)
    self._order_key = experiment.task_key(task, _ORDER)
    self._augment_key = experiment.task_key(task, _AUGMENT)
    self._epoch, self._permutation = None, None

  def __call__(self, step: int) -> dict[str, np.ndarray]:
    epoch, position = divmod(step, self._steps_per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._permutation = np.asarray(jax.random.permutation(
          jax.random.fold_in(self._order_key, epoch), self._indices))
    chosen = self._permutation[position * self._batch_size:(position + 1) * self._batch_size]
    keys = jax.random.split(jax.random.fold_in(self._augment_key, step), self._batch_size)
    return {'image': self._images[chosen], 'label': self._targets[chosen],
            'aug_key': np.asarray(keys)}


def _variables_like(experiment: Experiment, num_classes: int) -> dict:
  """Host arrays shaped like the model's variables: a target for restoring."""
  return parallel.to_host(experiment.model(num_classes).init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + experiment.dataset.image_shape), train=False))


def learn_task(experiment: Experiment, task: Task, previous: dict | None,
               checkpoints: Checkpoints, writer: metric_writers.MetricWriter,
               progress: periodic_actions.ReportProgress, global_offset: int) -> tuple[dict, dict]:
  """Trains the classifier on `task`; returns (model variables on host, stats)."""
  config = experiment.config
  model = experiment.model(task.num_seen)
  if previous is None:
    image = jnp.zeros((1,) + experiment.dataset.image_shape, jnp.float32)
    variables = model.init(experiment.task_key(task, _INIT), image, train=False)
    params, batch_stats = variables['params'], variables['batch_stats']
  else:
    params = widen_head(previous['params'], task.num_seen, experiment.task_key(task, _HEAD))
    batch_stats = previous['batch_stats']
  teacher = None
  if experiment.method.uses_teacher and task.num_old:
    teacher = experiment.model(task.num_old)
  total_steps = experiment.total_steps(task)
  tx = classifier.make_optimizer(config.train, total_steps)
  state = classifier.init_train_state(params, batch_stats, tx)
  seconds_before = 0.0
  meta = checkpoints.progress_meta()
  if meta is not None and meta['task'] == task.index:
    state = checkpoints.restore_progress(parallel.to_host(state))
    seconds_before = meta['train_seconds']
    logging.info('Resuming task %d at step %d/%d', task.index, int(state.step), total_steps)
  first_step = int(state.step)

  augment_kwargs = dict(padding=config.data.crop_padding, flip=config.data.flip,
                        mean=experiment.dataset.mean, std=experiment.dataset.std)
  method_config = config.get(experiment.method.name, ml_collections.ConfigDict())
  train_step = classifier.make_train_step(
      model, tx, experiment.method.make_loss(task, method_config), augment_kwargs, teacher)
  sampler = BatchSampler(experiment, task)
  state = parallel.replicate(state)
  teacher_vars = parallel.replicate(previous) if teacher is not None else None

  start = time.time()
  timed_from = None  # throughput excludes the first step, which compiles
  for step in range(first_step, total_steps):
    state, metrics = train_step(state, teacher_vars, parallel.shard(sampler(step)))
    if timed_from is None:
      jax.block_until_ready(state)
      timed_from = (step + 1, time.time())
    global_step = global_offset + step + 1
    progress(global_step)
    if (step + 1) % config.log_every_steps == 0 or step + 1 == total_steps:
      metrics = {f'train/{k}': float(v) for k, v in metrics.items()}
      writer.write_scalars(global_step, metrics)
      logging.info('task %d step %d/%d: %s', task.index, step + 1, total_steps,
                   ', '.join(f'{k[6:]} {v:.4f}' for k, v in metrics.items()))
    if (step + 1) % config.checkpoint_every_steps == 0 and step + 1 < total_steps:
      checkpoints.save_progress(global_step, state, {
          'task': task.index, 'step': step + 1,
          'train_seconds': seconds_before + time.time() - start})
  jax.block_until_ready(state)
  end = time.time()
  timed_steps = total_steps - timed_from[0] if timed_from else 0
  stats = {'train_seconds': seconds_before + end - start,
           'images_per_second': (timed_steps * config.train.batch_size / (end - timed_from[1])
                                 if timed_steps else None)}
  return parallel.to_host({'params': state.params, 'batch_stats': state.batch_stats}), stats


def evaluate(experiment: Experiment, task: Task, variables: dict) -> dict:
  """Predicts every test image of the seen classes; returns the task's metrics."""
  seen = np.flatnonzero(experiment.test_targets < task.num_seen)
  labels = experiment.test_targets[seen]
  batch_size = experiment.config.eval_batch_size
  predict = classifier.make_predict_step(experiment.model(task.num_seen),
                                         experiment.dataset.mean, experiment.dataset.std)
  replicated = parallel.replicate(variables)
  predictions = []
  for begin in range(0, len(seen), batch_size):
    chunk = experiment.dataset.test_images[seen[begin:begin + batch_size]]
    valid = len(chunk)
    chunk = np.concatenate([chunk, np.zeros((batch_size - valid,) + chunk.shape[1:], chunk.dtype)])
    predictions.append(np.asarray(predict(replicated, parallel.shard(chunk)))[:valid])
  predictions = np.concatenate(predictions)
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
      'per_class_accuracy': [], 'confusion_matrix': [], 'seconds': [],
      'train_images_per_second': [], 'task0_from': None,
      'average_incremental_accuracy': None, 'last_accuracy': None, 'forgetting': None,
      'metric_definitions': evaluation.__doc__.split('\n\n', 1)[1].strip(),
  }


def record_task(results: dict, experiment: Experiment, task: Task, metrics: dict,
                seconds: dict, images_per_second: float | None) -> None:
  """Appends one task's evaluation to `results` and refreshes the summaries."""
  results['accuracy'].append(metrics['accuracy'])
  results['accuracy_matrix'].append(metrics['task_accuracies'])
  results['old_accuracy'].append(metrics['old_accuracy'])
  results['new_accuracy'].append(metrics['new_accuracy'])
  results['per_class_accuracy'].append(
      {str(experiment.order[c]): a for c, a in enumerate(metrics['per_class_accuracy'])})
  results['confusion_matrix'].append(metrics['confusion_matrix'])
  results['seconds'].append(seconds)
  results['train_images_per_second'].append(images_per_second)
  results['average_incremental_accuracy'] = evaluation.average_incremental_accuracy(
      results['accuracy'])
  results['last_accuracy'] = results['accuracy'][-1]
  results['forgetting'] = evaluation.forgetting(results['accuracy_matrix'])


def _check_fingerprint(saved: dict, expected: dict, where: str) -> None:
  differences = [k for k in expected if saved.get(k) != expected[k]]
  if differences:
    raise UserError(
        f'{where} was made with a different {", ".join(differences)} than this config '
        f'(saved {saved.get(differences[0])!r}, now {expected[differences[0]]!r}); use a new '
        '--workdir, or delete that one to start over')


def _load_task0(experiment: Experiment, task: Task) -> tuple[dict, str]:
  """The task-0 model of another run's workdir (`config.init_from`)."""
  source = pathlib.Path(experiment.config.init_from).expanduser().absolute()
  if not (source / 'checkpoints' / 'tasks' / '0').exists():
    raise UserError(f'init_from={source} has no task-0 checkpoint (checkpoints/tasks/0); point '
                    'it at the workdir of a run that finished task 0')
  other = Checkpoints(source / 'checkpoints')
  saved = other.task_meta(0)['fingerprint']
  expected = {k: v for k, v in experiment.fingerprint().items() if k != 'method'}
  expected['tasks'] = expected['tasks'][:1]
  saved = {**saved, 'tasks': saved['tasks'][:1]}
  _check_fingerprint(saved, expected, f'the task-0 model in {source}')
  variables, _ = other.restore_task(0, _variables_like(experiment, task.num_seen))
  other.close()
  return variables, str(source)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Runs (or resumes) the whole class-incremental sequence; returns results."""
  workdir = pathlib.Path(workdir)
  experiment = build_experiment(config)
  workdir.mkdir(parents=True, exist_ok=True)
  report.write_json(workdir / 'config.json', config.to_dict())
  # TensorBoard only: the step log lines below already go to the console.
  writer = (metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))
            if jax.process_index() == 0 else metric_writers.MultiWriter([]))
  checkpoints = Checkpoints(workdir / 'checkpoints')

  results, previous, start = new_results(experiment), None, 0
  last = checkpoints.last_task()
  if last is not None:
    meta = checkpoints.task_meta(last)
    _check_fingerprint(meta['fingerprint'], experiment.fingerprint(), f'workdir {workdir}')
    previous, meta = checkpoints.restore_task(
        last, _variables_like(experiment, experiment.tasks[last].num_seen))
    results, start = meta['results'], last + 1
    logging.info('Resuming after task %d from %s', last, workdir)

  offsets = np.cumsum([0] + [experiment.total_steps(t) for t in experiment.tasks_to_run])
  progress = periodic_actions.ReportProgress(num_train_steps=int(offsets[-1]), writer=writer,
                                             every_secs=30)
  for task in experiment.tasks_to_run[start:]:
    logging.info('Task %d/%d: %d classes (%d old), %d training images', task.index,
                 len(experiment.tasks) - 1, task.num_new, task.num_old,
                 len(experiment.train_indices(task)))
    if task.index == 0 and config.init_from:
      previous, results['task0_from'] = _load_task0(experiment, task)
      train_stats = {'train_seconds': 0.0, 'images_per_second': None}
    else:
      previous, train_stats = learn_task(experiment, task, previous, checkpoints, writer,
                                         progress, int(offsets[task.index]))
    eval_start = time.time()
    metrics = evaluate(experiment, task, previous)
    seconds = {'train': train_stats['train_seconds'], 'eval': time.time() - eval_start}
    record_task(results, experiment, task, metrics, seconds, train_stats['images_per_second'])
    writer.write_scalars(int(offsets[task.index + 1]), {
        'eval/accuracy': metrics['accuracy'], 'eval/new_accuracy': metrics['new_accuracy'],
        **({'eval/old_accuracy': metrics['old_accuracy']} if task.num_old else {})})
    writer.flush()
    checkpoints.save_task(task.index, previous,
                          {'results': results, 'fingerprint': experiment.fingerprint()})
    report.write_json(workdir / 'results.json', results)
    report.write_atomic(workdir / 'report.md', report.results_markdown(results))
    logging.info('After task %d: accuracy %.2f%% (old %s, new %.2f%%) per task %s', task.index,
                 metrics['accuracy'], metrics['old_accuracy'], metrics['new_accuracy'],
                 json.dumps([round(a, 2) for a in metrics['task_accuracies']]))
  checkpoints.wait()
  checkpoints.close()
  writer.close()
  return results
