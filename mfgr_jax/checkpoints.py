"""Orbax checkpoints of a run: one per finished task, and periodic ones mid-task.

`WORKDIR/checkpoints/tasks/<t>`: the model (params, batch_stats) after task t,
the run's metadata (results so far, the config fingerprint) and, for methods
that carry one, the method's state (e.g. EWC's Fisher and anchor). All kept: a
later run may reuse another run's task-0 model (`config.init_from`).
`WORKDIR/checkpoints/progress/<global step>`: the full train state inside a
task, for resuming after a kill; only the latest is kept.
Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a checkpoint cut short by a kill is never restored. A complete
checkpoint that cannot be read (damaged on disk) raises a `UserError` naming
its folder.
"""

import pathlib
import re
from typing import Any, Callable

import orbax.checkpoint as ocp

from mfgr_jax.errors import UserError, first_line

MODEL, STATE, META, METHOD_STATE, STAGE_ONE_STATE = (
    'model', 'state', 'meta', 'method_state', 'stage_one_state')


class Checkpoints:

  def __init__(self, directory: pathlib.Path):
    directory = pathlib.Path(directory).absolute()
    self._tasks = ocp.CheckpointManager(
        directory / 'tasks', options=ocp.CheckpointManagerOptions(create=True))
    self._progress = ocp.CheckpointManager(
        directory / 'progress', options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def last_task(self) -> int | None:
    """Index of the last finished task with a checkpoint, or None."""
    return self._tasks.latest_step()

  def _read(self, manager: ocp.CheckpointManager, step: int, **items: Any) -> dict:
    """`manager.restore` of `items` at `step`, with a one-line error if it is unreadable."""
    try:
      return manager.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # pylint: disable=broad-except
      # Orbax and TensorStore raise many types for a damaged file; all mean the same here.
      folder = manager.directory / str(step)
      raise UserError(f'checkpoint {folder} cannot be read ({_first_line(e)}); '
                      'delete that folder to resume from the checkpoint before it, or use a new '
                      '--workdir to start over') from None

  def _write(self, action: Callable[[], Any]) -> None:
    """Runs a save (or waits for the asynchronous ones); a failed write, e.g. on a
    full disk, becomes a one-line `UserError`. Orbax reports a failure of its
    background writer at the next save or wait."""
    try:
      action()
    except Exception as e:  # pylint: disable=broad-except
      cause = _first_line(e)
      raise UserError(f'cannot write a checkpoint in {self._tasks.directory.parent} ({cause}); free '
                      'space on that disk (or fix its permissions) and run the same command '
                      'again: it resumes from the last complete checkpoint') from None

  def latest_description(self) -> str:
    """Where a rerun would resume from, for messages."""
    step, task = self._progress.latest_step(), self._tasks.latest_step()
    mid_task = self.progress_meta()
    if step is not None and (task is None or mid_task['task'] > task):
      return f'the last checkpoint is {self._progress.directory / str(step)}'
    if task is not None:
      return f'the last checkpoint is {self._tasks.directory / str(task)} (after task {task})'
    return 'no checkpoint was saved yet'

  def save_task(self, task: int, model_vars: Any, meta: dict, method_state: Any = None,
                stage_one_state: Any = None) -> None:
    """`method_state`: what a method carries from task to task (e.g. EWC's Fisher), if
    any; `stage_one_state`: what its stage I carries (a warm-started generator), if any."""
    items = {MODEL: ocp.args.StandardSave(model_vars), META: ocp.args.JsonSave(meta)}
    if method_state is not None:
      items[METHOD_STATE] = ocp.args.StandardSave(method_state)
    if stage_one_state is not None:
      items[STAGE_ONE_STATE] = ocp.args.StandardSave(stage_one_state)
    self._write(lambda: self._tasks.save(task, args=ocp.args.Composite(**items)))

  def restore_method_state(self, task: int, target: Any) -> Any:
    """The method state saved with `task`, shaped like `target` (None: as saved)."""
    return self._read(self._tasks, task,
                      **{METHOD_STATE: ocp.args.StandardRestore(target)})[METHOD_STATE]

  def restore_stage_one_state(self, task: int, target: Any) -> Any:
    """Stage I's state saved with `task`, shaped like `target`."""
    return self._read(self._tasks, task,
                      **{STAGE_ONE_STATE: ocp.args.StandardRestore(target)})[STAGE_ONE_STATE]

  def restore_task(self, task: int, target: Any) -> tuple[Any, dict]:
    """Returns (model variables shaped like `target`, metadata) after `task`."""
    restored = self._read(self._tasks, task, **{MODEL: ocp.args.StandardRestore(target),
                                                META: ocp.args.JsonRestore()})
    return restored[MODEL], restored[META]

  def task_meta(self, task: int) -> dict:
    return self._read(self._tasks, task, **{META: ocp.args.JsonRestore()})[META]

  def save_progress(self, global_step: int, state: Any, meta: dict) -> None:
    self._write(lambda: self._progress.save(global_step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)})))

  def progress_meta(self) -> dict | None:
    """Metadata of the latest mid-task checkpoint, or None."""
    step = self._progress.latest_step()
    if step is None:
      return None
    return self._read(self._progress, step, **{META: ocp.args.JsonRestore()})[META]

  def restore_progress(self, target: Any) -> Any:
    return self._read(self._progress, self._progress.latest_step(),
                      **{STATE: ocp.args.StandardRestore(target)})[STATE]

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._write(self._tasks.wait_until_finished)
    self._write(self._progress.wait_until_finished)

  def close(self) -> None:
    self._tasks.close()
    self._progress.close()


def _first_line(error: Exception) -> str:
  """An Orbax/TensorStore error in one line: its OS cause when it names one."""
  os_cause = re.search(r'Failed to write [^:]*: ([^:\[]+?) \[', str(error))
  return os_cause.group(1) if os_cause else first_line(error)

