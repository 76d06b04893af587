"""Orbax checkpoints of a run: one per finished task, and periodic ones mid-task.

`WORKDIR/checkpoints/tasks/<t>`: the model (params, batch_stats) after task t,
the run's metadata (results so far, the config fingerprint) and, for methods
that carry one, the method's state (e.g. EWC's Fisher and anchor). All kept: a
later run may reuse another run's task-0 model (`config.init_from`).
`WORKDIR/checkpoints/progress/<global step>`: the full train state inside a
task, for resuming after a kill; only the latest is kept.
Orbax writes each checkpoint to a temporary folder and renames it when
complete, so a checkpoint cut short by a kill is never restored.
"""

import pathlib
from typing import Any

import orbax.checkpoint as ocp

MODEL, STATE, META, METHOD_STATE = 'model', 'state', 'meta', 'method_state'


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

  def save_task(self, task: int, model_vars: Any, meta: dict, method_state: Any = None) -> None:
    """`method_state`: what a method carries from task to task (e.g. EWC's Fisher), if any."""
    items = {MODEL: ocp.args.StandardSave(model_vars), META: ocp.args.JsonSave(meta)}
    if method_state is not None:
      items[METHOD_STATE] = ocp.args.StandardSave(method_state)
    self._tasks.save(task, args=ocp.args.Composite(**items))

  def restore_method_state(self, task: int, target: Any) -> Any:
    """The method state saved with `task`, shaped like `target` (None: as saved)."""
    return self._tasks.restore(task, args=ocp.args.Composite(
        **{METHOD_STATE: ocp.args.StandardRestore(target)}))[METHOD_STATE]

  def restore_task(self, task: int, target: Any) -> tuple[Any, dict]:
    """Returns (model variables shaped like `target`, metadata) after `task`."""
    restored = self._tasks.restore(task, args=ocp.args.Composite(
        **{MODEL: ocp.args.StandardRestore(target), META: ocp.args.JsonRestore()}))
    return restored[MODEL], restored[META]

  def task_meta(self, task: int) -> dict:
    return self._tasks.restore(task, args=ocp.args.Composite(
        **{META: ocp.args.JsonRestore()}))[META]

  def save_progress(self, global_step: int, state: Any, meta: dict) -> None:
    self._progress.save(global_step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}))

  def progress_meta(self) -> dict | None:
    """Metadata of the latest mid-task checkpoint, or None."""
    step = self._progress.latest_step()
    if step is None:
      return None
    return self._progress.restore(step, args=ocp.args.Composite(
        **{META: ocp.args.JsonRestore()}))[META]

  def restore_progress(self, target: Any) -> Any:
    step = self._progress.latest_step()
    return self._progress.restore(step, args=ocp.args.Composite(
        **{STATE: ocp.args.StandardRestore(target)}))[STATE]

  def wait(self) -> None:
    """Blocks until asynchronous saves are on disk."""
    self._tasks.wait_until_finished()
    self._progress.wait_until_finished()

  def close(self) -> None:
    self._tasks.close()
    self._progress.close()
