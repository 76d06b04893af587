"""Learning one task: stage I (if the method has one), the classifier, then the head
phase (if the method has one), each resumable from its progress checkpoints.

`learn_task` is what `train.run_task` calls for every task it trains; what differs
between methods comes from the method's hooks (`methods.Method`: stage I's kind,
loss, teacher, training images, head phase), never from its name.
"""

from typing import Any

from absl import logging

from mfgr_jax import classifier
from mfgr_jax import keys
from mfgr_jax import parallel
from mfgr_jax.data.sampler import BatchSampler
from mfgr_jax.experiment import Experiment
from mfgr_jax.models.resnet import LOSS_PARAMS, widen_head
from mfgr_jax.scenario import Task
from mfgr_jax.stage_runner import StageRunner
from mfgr_jax.workdir import Carried


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
