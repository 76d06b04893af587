"""The per-task outer loop: for each task, learn (`learn.learn_task`), after-task,
evaluate, save.

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

from mfgr_jax import cpu_flags
from mfgr_jax import evaluation
from mfgr_jax import learn
from mfgr_jax import parallel
from mfgr_jax import preemption
from mfgr_jax import files
from mfgr_jax import workdir as workdirs
from mfgr_jax.workdir import Carried
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.console import rounded
from mfgr_jax.errors import Interrupted
from mfgr_jax.experiment import Experiment, build_experiment, check_config
from mfgr_jax.methods import Method
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
    variables, throughput, stage_one_state = learn.learn_task(experiment, task, carried, runner,
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
