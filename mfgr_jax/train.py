"""The per-task outer loop: for each task, learn, after-task, evaluate, save.

A method supplies every step of it that differs between methods
(`methods.Method`: loss, stage I, teacher, training images, after-task state,
prediction); this loop calls those hooks and never asks which method runs.
Resuming is implicit: `run` continues from the last finished task, or from the
latest mid-task checkpoint, of `workdir`. Every random number comes from keys
derived from `config.seed`, the task index and the step (`keys.py`), so a
resumed run replays exactly the stream of an uninterrupted one.
"""

import pathlib
import time
from typing import Any

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import ml_collections
import numpy as np

from mfgr_jax import classifier
from mfgr_jax import cpu_flags
from mfgr_jax import evaluation
from mfgr_jax import keys
from mfgr_jax import parallel
from mfgr_jax import preemption
from mfgr_jax import files
from mfgr_jax import workdir as workdirs
from mfgr_jax.workdir import Carried
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.console import rounded
from mfgr_jax.data.sampler import BatchSampler
from mfgr_jax.errors import Interrupted
from mfgr_jax.experiment import Experiment, build_experiment, check_config
from mfgr_jax.methods import Method
from mfgr_jax.models.resnet import LOSS_PARAMS, widen_head
from mfgr_jax.results import record_task, write_outputs
from mfgr_jax.scenario import Task
from mfgr_jax.stage_runner import StageRunner

# ----------------------------------------------------------------------------
# The run: every task of the scenario, resumable.
# ----------------------------------------------------------------------------


def run(config: ml_collections.ConfigDict, workdir: str, method: Method | None = None) -> dict:
  """Runs (or resumes) the whole class-incremental sequence; returns results.
  The config is checked (`experiment.check_config`, unless the caller did and
  passes its `method`) before the workdir is locked, the lock taken before the
  data is loaded."""
  workdir = pathlib.Path(workdir)
  method = method or check_config(config)
  with workdirs.locked(workdir):
    return run_tasks(build_experiment(config, workdir, method))


def run_tasks(experiment: Experiment) -> dict:
  """Every task of the experiment not yet in its workdir's checkpoints."""
  config, workdir = experiment.config, experiment.workdir
  # TensorBoard only: the step log lines already go to the console.
  writer = (metric_writers.AsyncWriter(metric_writers.SummaryWriter(str(workdir)))
            if parallel.is_main_process() else metric_writers.MultiWriter([]))
  checkpoints = Checkpoints(workdir / 'checkpoints')
  try:
    results, carried, start = workdirs.resume(experiment, checkpoints)
    if parallel.is_main_process():  # after the checks: a refused config leaves config.json alone
      files.write_json(workdir / 'config.json', config.to_dict())
      if start >= len(experiment.tasks_to_run):  # finished before: its outputs must be whole
        workdirs.restore_outputs(workdir, results)
    offsets = np.cumsum([0] + [experiment.task_steps(t) for t in experiment.tasks_to_run])
    progress = periodic_actions.ReportProgress(num_train_steps=int(offsets[-1]), writer=writer,
                                               every_secs=30)
    runner = StageRunner(checkpoints, writer, progress, config.on_nonfinite,
                         config.checkpoint_every_steps, experiment.fingerprint(),
                         workdir / 'samples')
    preemption.install()
    for task in experiment.tasks_to_run[start:]:
      carried = run_task(experiment, task, carried, results, runner, int(offsets[task.index]))
      stop = preemption.requested(int(offsets[task.index + 1]))
      if stop and task is not experiment.tasks_to_run[-1]:
        raise Interrupted(f'stopped by {stop} after task {task.index} (saved); run the same '
                          'command to continue')
  finally:
    preemption.uninstall()
    checkpoints.wait()
    checkpoints.close()
    writer.close()
  return results


def run_task(experiment: Experiment, task: Task, carried: Carried, results: dict,
             runner: StageRunner, global_offset: int) -> Carried:
  """Learns `task`, runs the method's after-task work, evaluates, saves; returns what
  it hands to the next task."""
  logging.info('Task %d/%d: %d classes (%d old), %d training images', task.index,
               len(experiment.tasks) - 1, task.num_new, task.num_old, experiment.train_count(task))
  resume = runner.start_task(task)
  stage_one_state = carried.stage_one_state
  if task.index == 0 and experiment.config.init_from:
    variables, results['task0_from'] = workdirs.load_task0(experiment, task)
    seconds, throughput = {'classifier': 0.0}, {}
  else:
    variables, throughput, stage_one_state = learn_task(experiment, task, carried, runner,
                                                        resume, global_offset)
    seconds = runner.seconds
  # Before evaluation: a method may predict with its new state (iCaRL's memory).
  method_state, seconds_after = after_task(experiment, task, variables, carried.method_state)
  eval_start = time.time()
  metrics = evaluate(experiment, task, variables, method_state)
  seconds = {**seconds, **seconds_after, 'eval': time.time() - eval_start}
  record_task(results, experiment.order, metrics, seconds, throughput, runner.skipped,
              cpu_flags.machine())
  after = Carried(variables, method_state, stage_one_state)
  save_task(experiment, task, after, results, metrics, runner,
            global_offset + experiment.task_steps(task))
  return after


# ----------------------------------------------------------------------------
# Learn: stage I (if the method has one), the classifier, the head phase (if any).
# ----------------------------------------------------------------------------


def learn_task(experiment: Experiment, task: Task, carried: Carried, runner: StageRunner,
               resume: dict | None, global_offset: int) -> tuple[dict, dict, Any]:
  """Returns (model variables on host, throughput, stage I's state to carry);
  `resume`: the progress checkpoint inside `task` to continue from
  (`StageRunner.start_task`), or None.

  What stage I made travels as `recorded`: {'replay': what stage II replays from}
  and, for a kind that carries state to the next task, {'carried': that state};
  it is saved with every progress checkpoint of the stages after it."""
  resumed_stage = resume['stage'] if resume else None
  previous, method_state = carried.variables, carried.method_state
  old_vars = parallel.replicate(previous) if task.num_old else None
  recorded, throughput, steps_per_second = None, {}, None
  stage_one_steps = experiment.stage_one_steps(task)
  if stage_one_steps and resumed_stage not in ('classifier', 'head'):
    replay_arrays, throughput, stage_one_state = experiment.method.stage_one.record(
        experiment, task, old_vars, runner.stage_one(task, resume, global_offset, stage_one_steps),
        carried.stage_one_state)
    recorded = {'replay': replay_arrays,
                **({'carried': stage_one_state} if stage_one_state is not None else {})}
  offset = global_offset + stage_one_steps
  if resumed_stage != 'head':
    variables, recorded, steps_per_second = train_classifier(
        experiment, task, previous, method_state, old_vars, recorded, runner, resume, offset)
  else:
    variables = None  # restored with the head phase's state
  if experiment.head_steps(task):
    variables, recorded = train_head(experiment, task, variables, method_state, old_vars,
                                     recorded, runner, resume,
                                     offset + experiment.total_steps(task))
  throughput['train_images_per_second'] = (
      steps_per_second * experiment.config.train.batch_size if steps_per_second else None)
  return variables, throughput, (recorded or {}).get('carried', carried.stage_one_state)


def initial_variables(experiment: Experiment, task: Task, previous: dict | None) -> tuple[Any, Any]:
  """(params, batch_stats) the task starts from: a new model at task 0 (with the
  pretrained backbone of `model.init_weights`, if set), else the
  previous one with its head widened to the seen classes; with the parameters
  the method's loss owns, if any, under `LOSS_PARAMS`."""
  if previous is None:
    params, batch_stats = experiment.new_model(task.num_seen, experiment.task_key(task, keys.INIT))
  else:
    params = widen_head(previous['params'], task.num_seen, experiment.task_key(task, keys.HEAD))
    batch_stats = previous['batch_stats']
  loss_params = experiment.method.loss_params(experiment, task,
                                              experiment.task_key(task, keys.LOSS_PARAMS_INIT))
  if loss_params is not None:
    params = {**params, LOSS_PARAMS: loss_params}
  return params, batch_stats


def train_classifier(experiment: Experiment, task: Task, previous: dict | None, method_state: Any,
                     old_vars: Any, recorded: dict | None, runner: StageRunner,
                     resume: dict | None, global_offset: int) -> tuple[dict, Any, float | None]:
  """The classifier on the task's images, with replayed ones when stage I ran;
  returns its variables (host; without the loss's own parameters), what stage I
  recorded (restored, when resuming here) and steps per second."""
  config, method = experiment.config, experiment.method
  replays = experiment.stage_one_steps(task) > 0
  total_steps = experiment.total_steps(task)
  tx = classifier.make_optimizer(experiment.train_settings(task), total_steps)
  state = classifier.init_train_state(*initial_variables(experiment, task, previous), tx)
  if resume and resume['stage'] == 'classifier':
    state, recorded = _restore_stage('classifier', experiment, runner, state, replays)
    logging.info('Resuming task %d at step %d/%d', task.index, int(state.step), total_steps)

  model, teacher = experiment.model(task.num_seen), method.teacher(experiment, task)
  teacher_vars = old_vars if teacher is not None else None
  loss = method.task_loss(task, config)
  sampler = _batch_sampler(experiment, task, method_state, keys.ORDER, keys.AUGMENT)
  if replays:
    step = classifier.make_replay_step(model, tx, loss, _augment_kwargs(experiment), teacher,
                                       method.stage_one.source(experiment, task),
                                       config.replay.single_pass)
    saved_with_state = parallel.replicate(recorded)
    arguments = (teacher_vars, saved_with_state['replay'], experiment.task_key(task, keys.REPLAY))
  else:
    step = classifier.make_train_step(model, tx, loss, _augment_kwargs(experiment), teacher)
    method_state_on_devices = (parallel.replicate(method_state) if method_state is not None
                               else None)
    arguments, saved_with_state = (teacher_vars, method_state_on_devices), {}
  state, steps_per_second = runner.run(
      'classifier', task, step, parallel.replicate(state), total_steps, global_offset,
      config.log_every_steps, arguments, sampler, saved_with_state)
  params = {k: v for k, v in state.params.items() if k != LOSS_PARAMS}
  variables = parallel.to_host({'params': params, 'batch_stats': state.batch_stats})
  return variables, recorded, steps_per_second


def train_head(experiment: Experiment, task: Task, variables: dict | None, method_state: Any,
               old_vars: Any, recorded: dict | None, runner: StageRunner,
               resume: dict | None, global_offset: int) -> tuple[dict, dict]:
  """The method's head phase (`HeadPhase`) from the classifier's `variables`
  (None when resuming inside the phase); returns the variables after it (host)
  and what stage I recorded (restored, when resuming here)."""
  config, method = experiment.config, experiment.method
  phase, total_steps = method.head_phase, experiment.head_steps(task)
  tx = phase.optimizer(config, total_steps)
  if resume and resume['stage'] == 'head':
    like = experiment.variables_like(task.num_seen)
    state = classifier.init_train_state(like['params'], like['batch_stats'], tx, 'head')
    state, recorded = _restore_stage('head', experiment, runner, state, True)
    logging.info('Resuming task %d head phase at step %d/%d', task.index, int(state.step),
                 total_steps)
  else:
    state = classifier.init_train_state(variables['params'], variables['batch_stats'], tx, 'head')
  step = classifier.make_replay_step(
      experiment.model(task.num_seen), tx,
      phase.make_loss(experiment, task, recorded['replay'], old_vars),
      _augment_kwargs(experiment), method.teacher(experiment, task),
      method.stage_one.source(experiment, task), config.replay.single_pass, head_only=True)
  recorded_on_devices = parallel.replicate(recorded)
  state, _ = runner.run(
      'head', task, step, parallel.replicate(state), total_steps, global_offset,
      config.log_every_steps,
      (old_vars, recorded_on_devices['replay'],
       experiment.task_key(task, keys.HEAD_PHASE_REPLAY)),
      _batch_sampler(experiment, task, method_state, keys.HEAD_PHASE_ORDER, keys.HEAD_PHASE_AUGMENT),
      recorded_on_devices)
  return parallel.to_host({'params': state.params, 'batch_stats': state.batch_stats}), recorded


def _restore_stage(stage: str, experiment: Experiment, runner: StageRunner,
                   state: classifier.TrainState, replays: bool) -> tuple[Any, dict | None]:
  """The state of `stage` and what stage I recorded, saved with it (None if it
  replays nothing), from the latest progress checkpoint; `state` gives the shapes."""
  kind = experiment.method.stage_one
  target = {stage: parallel.to_host(state)}
  if replays:
    target['replay'] = kind.arrays_like(experiment)
    if (carried_like := kind.carried_like(experiment)) is not None:
      target['carried'] = carried_like
  restored = runner.checkpoints.restore_progress(target)
  return restored.pop(stage), (restored if replays else None)


def _augment_kwargs(experiment: Experiment) -> dict:
  data = experiment.config.data
  return dict(padding=data.crop_padding, flip=data.flip, mean=experiment.dataset.mean,
              std=experiment.dataset.std)


def _batch_sampler(experiment: Experiment, task: Task, method_state: Any, order_stream: int,
                   augment_stream: int) -> BatchSampler:
  """Batches of the task's training images (`Method.train_images`), in an order
  and with augmentation keys from the two key streams."""
  return BatchSampler(experiment.dataset.train_images, experiment.train_targets,
                      experiment.method.train_images(experiment, task, method_state),
                      experiment.config.train.batch_size, experiment.task_key(task, order_stream),
                      experiment.task_key(task, augment_stream))


# ----------------------------------------------------------------------------
# After the task: the method's state, evaluation, checkpoint and results.
# ----------------------------------------------------------------------------


def after_task(experiment: Experiment, task: Task, variables: dict,
               method_state: Any) -> tuple[Any, dict]:
  """The method's state after `task` (`Method.after_task`) and its seconds, by
  `Method.after_task_name` (none if it has no name). It is saved with the task,
  so a signal stops it at once (`preemption.unsaved`)."""
  name = experiment.method.after_task_name
  if name:  # it may take minutes without a step to log
    logging.info('task %d %s: starts (saved with the task when it ends)', task.index, name)
  start = time.time()
  with preemption.unsaved(f'task {task.index} {name or "after-task work"}'):
    method_state = experiment.method.after_task(experiment, task, variables, method_state)
  return method_state, ({name: time.time() - start} if name else {})


def evaluate(experiment: Experiment, task: Task, variables: dict,
             method_state: Any = None) -> dict:
  """Predicts every test image of the seen classes the method's way; the task's metrics."""
  targets = experiment.test_targets
  seen = np.flatnonzero((targets >= 0) & (targets < task.num_seen))
  predictions = experiment.method.predict(experiment, task, variables, method_state,
                                          experiment.dataset.test_images[seen])
  bounds = [(t.num_old, t.num_seen) for t in experiment.tasks[:task.index + 1]]
  return evaluation.task_metrics(predictions, targets[seen], task.num_old, task.num_seen, bounds)


def save_task(experiment: Experiment, task: Task, carried: Carried, results: dict,
              metrics: dict, runner: StageRunner, global_step: int) -> None:
  """The task's checkpoint (with what it hands to the next task), TensorBoard
  scalars, results.json and report.md."""
  runner.writer.write_scalars(global_step, {
      'eval/accuracy': metrics['accuracy'], 'eval/new_accuracy': metrics['new_accuracy'],
      **({'eval/old_accuracy': metrics['old_accuracy']} if task.num_old else {})})
  runner.writer.flush()
  runner.checkpoints.save_task(task.index, carried.variables,
                               {'results': results, 'fingerprint': experiment.fingerprint()},
                               carried.method_state, carried.stage_one_state)
  if parallel.is_main_process():
    write_outputs(experiment.workdir, results)
  logging.info('After task %d: accuracy %s%% (old %s, new %s); per task %s', task.index,
               rounded(metrics['accuracy']), rounded(metrics['old_accuracy']),
               rounded(metrics['new_accuracy']),
               ' '.join(rounded(a) for a in metrics['task_accuracies']))
