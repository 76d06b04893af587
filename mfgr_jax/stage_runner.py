"""The generic stage runner: steps a state to the end of a stage, with logging,
TensorBoard metrics, progress checkpoints, preemption and non-finite checks.

Every stage of a task (stage I's generator or pixel pool, the classifier) is
`state, metrics = step(state, [batch,] *arguments)` repeated from `state.step`
to the stage's last step; the runner knows nothing of what the step does.
"""

import dataclasses
import pathlib
import time
from typing import Any, Callable

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import numpy as np

from mfgr_jax import console
from mfgr_jax import numerics
from mfgr_jax import parallel
from mfgr_jax import preemption
from mfgr_jax import files
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.errors import Interrupted, NonFiniteLoss
from mfgr_jax.scenario import Task


class StageRunner:
  """Runs the stages of a run's tasks; holds where they report and checkpoint, and
  the current task's account: the seconds spent in each of its stages and the
  updates skipped as non-finite (on_nonfinite='skip'), both saved with the
  progress checkpoints and restored with them (`start_task`).
  """

  def __init__(self, checkpoints: Checkpoints, writer: metric_writers.MetricWriter,
               progress: periodic_actions.ReportProgress, on_nonfinite: str,
               checkpoint_every_steps: int, fingerprint: dict, samples_folder: pathlib.Path):
    self.checkpoints = checkpoints
    self.writer = writer
    self._progress = progress
    self._on_nonfinite = on_nonfinite
    self._checkpoint_every_steps = checkpoint_every_steps
    self._fingerprint = fingerprint
    self._samples_folder = samples_folder
    self._seconds: dict[str, float] = {}
    self._skipped: dict[str, int] = {}

  def start_task(self, task: Task) -> dict | None:
    """Starts `task`'s account: returns the metadata of the latest progress
    checkpoint if it is inside `task` (its seconds and skipped counts are
    restored from it), else None (the account starts empty)."""
    meta = self.checkpoints.progress_meta()
    resume = meta if meta is not None and meta['task'] == task.index else None
    self._seconds = dict(resume['seconds']) if resume else {}
    self._skipped = dict(resume.get('skipped', {})) if resume else {}
    return resume

  @property
  def seconds(self) -> dict[str, float]:
    """Seconds spent in each stage of the current task so far (a copy)."""
    return dict(self._seconds)

  @property
  def skipped(self) -> dict[str, int]:
    """Updates skipped as non-finite in each stage of the current task (a copy)."""
    return dict(self._skipped)

  def stage_one(self, task: Task, resume: dict | None, global_offset: int,
                total_steps: int) -> 'StageOneRun':
    """What a stage I kind needs to run its stage of `task` (`stage_one.StageIRunner`)."""
    return StageOneRun(self, task, resume, global_offset, total_steps)

  def run(self, stage: str, task: Task, step: Callable[..., tuple[Any, dict]], state: Any,
          total_steps: int, global_offset: int, log_every: int,
          arguments: tuple = (), batches: Callable[[int], dict] | None = None,
          saved_with_state: dict | None = None) -> tuple[Any, float | None]:
    """Runs `state, metrics = step(state, [batches(i),] *arguments)` for i from
    `state.step` to `total_steps`.

    Logs metrics every `log_every` steps, and saves {stage: state,
    **saved_with_state} as a progress checkpoint every `checkpoint_every_steps`,
    with the stage's name, step and the task's account. Adds the stage's time
    to the account; returns the state and the steps per second (excluding
    the first, compiling step). Whether a step's update was skipped as
    non-finite is read at log and checkpoint steps. On SIGTERM/SIGINT it saves
    at the current step and raises `Interrupted`.
    """
    first_step, seconds_before = int(state.step), self._seconds.get(stage, 0.0)
    if first_step < total_steps:
      logging.info('task %d %s: steps %d to %d (the first compiles the step)', task.index, stage,
                   first_step + 1, total_steps)
    start, timed_from, unchecked = time.time(), None, []
    for i in range(first_step, total_steps):
      inputs = (batches(i),) + arguments if batches is not None else arguments
      state, metrics = step(state, *inputs)
      unchecked.append((i + 1, metrics))
      if timed_from is None:
        jax.block_until_ready(state)
        timed_from = (i + 1, time.time())
      global_step = global_offset + i + 1
      self._progress(global_step)
      log = (i + 1) % log_every == 0 or i + 1 == total_steps
      save = (i + 1) % self._checkpoint_every_steps == 0 and i + 1 < total_steps
      stop = preemption.requested(global_step)
      if log or save or stop:
        self._check_finite(stage, task, unchecked)
        unchecked = []
      if log:
        self._report(stage, task, i + 1, total_steps, global_step, metrics,
                     console.pace(i + 1, total_steps, timed_from))
      if save or stop:
        self._seconds[stage] = seconds_before + time.time() - start
        self.save(stage, task, i + 1, global_step, {stage: state, **(saved_with_state or {})})
      if stop:
        self.checkpoints.wait()
        raise Interrupted(f'stopped by {stop} in task {task.index} {stage} at step {i + 1}/'
                          f'{total_steps}; saved a checkpoint there; run the same command to '
                          'continue')
    jax.block_until_ready(state)
    end = time.time()
    self._seconds[stage] = seconds_before + end - start
    timed_steps = total_steps - timed_from[0] if timed_from else 0
    return state, (timed_steps / (end - timed_from[1]) if timed_steps else None)

  def save(self, stage: str, task: Task, step: int, global_step: int, payload: dict) -> None:
    """A progress checkpoint of `payload` at `stage`'s `step`, with the task's
    account (read back on resume)."""
    self.checkpoints.save_progress(global_step, payload, {
        'task': task.index, 'stage': stage, 'step': step, 'seconds': self._seconds,
        'skipped': self._skipped, 'fingerprint': self._fingerprint})

  def write_images(self, stage: str, task: Task, grid: np.ndarray, global_step: int) -> None:
    """A PNG grid in WORKDIR/samples/task<t>.png (process 0) and in TensorBoard
    (`STAGE/samples`)."""
    if parallel.is_main_process():
      self._samples_folder.mkdir(exist_ok=True)
      files.write_png(self._samples_folder / f'task{task.index}.png', grid)
    self.writer.write_images(global_step, {f'{stage}/samples': grid[None]})

  def _report(self, stage: str, task: Task, step: int, total_steps: int, global_step: int,
              metrics: dict, pace: str) -> None:
    scalars = {f'{stage}/{k}': float(v) for k, v in metrics.items() if np.ndim(v) == 0}
    self.writer.write_scalars(global_step, scalars)
    # The console: the loss terms (the skipped-update flag only when set).
    line = ', '.join(f'{k.split("/", 1)[1]} {v:.4g}' for k, v in scalars.items()
                     if k != f'{stage}/{numerics.SKIPPED}' or v)
    if 'class_counts' in metrics:  # histogram of the old model's argmax on generated images
      counts = np.asarray(metrics['class_counts']).astype(int)
      self.writer.write_histograms(
          global_step, {f'{stage}/predicted_class': np.repeat(np.arange(len(counts)), counts)},
          num_buckets={f'{stage}/predicted_class': len(counts)})
      line += f', predicted classes {counts.tolist()}'
    logging.info('task %d %s step %d/%d (%s): %s', task.index, stage, step, total_steps, pace,
                 line)

  def _check_finite(self, stage: str, task: Task, steps: list[tuple[int, dict]]) -> None:
    """Stops (NonFiniteLoss) or counts the steps whose update was skipped as non-finite."""
    bad = [(step, metrics) for step, metrics in steps if float(metrics[numerics.SKIPPED])]
    if not bad:
      return
    if self._on_nonfinite == 'skip':
      self._skipped[stage] = self._skipped.get(stage, 0) + len(bad)
      logging.warning('task %d %s: skipped %d non-finite updates (steps %s)', task.index, stage,
                      len(bad), [step for step, _ in bad])
      return
    step, metrics = bad[0]
    terms = [k for k, v in metrics.items() if np.ndim(v) == 0 and not np.isfinite(float(v))]
    what = ', '.join(terms) or 'a gradient or new parameter'
    raise NonFiniteLoss(
        f'task {task.index} {stage} step {step}: {what} not finite; the update was not applied '
        f'and the run stopped; {self.checkpoints.latest_description()}; lower the learning '
        'rate or the loss weights, or set --config.on_nonfinite=skip to skip such updates')



@dataclasses.dataclass(frozen=True)
class StageOneRun:
  """A task's stage I as its kind sees it (`stage_one.StageIRunner`): run a step
  to the stage's end, resuming from its progress checkpoint, and show images."""
  runner: StageRunner
  task: Task
  resume: dict | None  # the task's progress checkpoint metadata, or None
  global_offset: int  # the global step before the stage's first
  total_steps: int

  def run_to_end(self, stage: str, state: Any, step: Callable[..., tuple[Any, dict]],
                 arguments: tuple, log_every: int) -> tuple[Any, float | None]:
    """Runs `state, metrics = step(state, *arguments)` to the stage's last step from
    `state` (host), or from its progress checkpoint when resuming; returns the
    final state (on devices) and steps per second. The finished stage is saved,
    so that a kill during stage II does not run it again."""
    if self.resume is not None:
      state = self.runner.checkpoints.restore_progress({stage: parallel.to_host(state)})[stage]
      logging.info('Resuming task %d %s at step %d', self.task.index, stage, int(state.step))
    first_step = int(state.step)
    state, steps_per_second = self.runner.run(
        stage, self.task, step, parallel.replicate(state), self.total_steps, self.global_offset,
        log_every, arguments)
    if first_step < self.total_steps:
      self.runner.save(stage, self.task, self.total_steps, self.global_offset + self.total_steps,
                       {stage: state})
    return state, steps_per_second

  def write_images(self, stage: str, grid: np.ndarray) -> None:
    """A PNG grid of the stage's images, at its last step (`StageRunner.write_images`)."""
    self.runner.write_images(stage, self.task, grid, self.global_offset + self.total_steps)
