"""A run's workdir: its lock, the fingerprint its checkpoints must match, resuming
from them, and another run's task-0 model (`config.init_from`)."""

import contextlib
import dataclasses
import fcntl
import os
import pathlib
import socket
from typing import Any, Iterator

from absl import logging

from mfgr_jax import parallel
from mfgr_jax import files
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.errors import UserError
from mfgr_jax.experiment import Experiment
from mfgr_jax.results import new_results, outputs
from mfgr_jax.scenario import Task

# What a shared task-0 model must agree on: task 0 trains the same way for
# every method (plain CE, no stage I).
_TASK0_FINGERPRINT = ('dataset', 'images', 'class_order', 'tasks', 'model', 'task0_budget')


@dataclasses.dataclass
class Lock:
  """A held workdir lock (`lock`); `close` releases it."""
  descriptor: int

  def close(self) -> None:
    os.close(self.descriptor)


def lock(workdir: pathlib.Path) -> Lock:
  """An exclusive lock on the workdir itself, held until `Lock.close` (the OS drops
  it when the process ends, also after kill -9); refuses a workdir
  another run holds, so that two runs never write the same checkpoints. The
  lock is on the directory, so deleting WORKDIR/lock (which names the holder)
  does not free it."""
  directory = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY)
  try:
    fcntl.flock(directory, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(directory)
    holder = (workdir / 'lock').read_text().strip() if (workdir / 'lock').exists() else ''
    raise UserError(f'workdir {workdir} is in use by another run ({holder or "another process"});'
                    ' wait for it to end, or choose another --workdir') from None
  (workdir / 'lock').write_text(f'pid {os.getpid()} on {socket.gethostname()}\n')
  return Lock(directory)


@contextlib.contextmanager
def locked(workdir: pathlib.Path) -> Iterator[None]:
  """Creates `workdir` and holds its `lock` (on the main process) for the block."""
  try:
    workdir.mkdir(parents=True, exist_ok=True)
    held = lock(workdir) if parallel.is_main_process() else None
  except OSError as e:
    raise UserError(f'cannot write to workdir {workdir} ({e.strerror}); choose a writable '
                    '--workdir') from None
  try:
    yield
  finally:
    if held is not None:
      held.close()


def check_fingerprint(saved: dict, expected: dict, where: str,
                      fix: str = 'use a new --workdir, or delete that one to start over') -> None:
  # Both ways: a key only one side has (task0_budget) is a difference too.
  differences = [k for k in {**expected, **saved} if saved.get(k) != expected.get(k)]
  if differences:
    raise UserError(
        f'{where} was made with a different {", ".join(differences)} than this config '
        f'(saved {saved.get(differences[0])!r}, now {expected.get(differences[0])!r}); {fix}')


def load_task0(experiment: Experiment, task: Task) -> tuple[dict, str]:
  """The task-0 model of another run's workdir (`config.init_from`), and its path."""
  source = pathlib.Path(experiment.config.init_from).expanduser().absolute()
  other = Checkpoints(source / 'checkpoints')
  saved = other.task_meta(0)['fingerprint']
  expected = {k: v for k, v in experiment.fingerprint().items() if k in _TASK0_FINGERPRINT}
  expected['tasks'] = expected['tasks'][:1]
  saved = {k: v for k, v in saved.items() if k in _TASK0_FINGERPRINT}
  saved['tasks'] = saved['tasks'][:1]
  check_fingerprint(saved, expected, f'the task-0 model in {source}',
                    'point init_from at a run of this dataset, class order, first task, model and '
                    "task-0 budget (train.init_*), or set it to '' to train task 0 here")
  variables, _ = other.restore_task(0, experiment.variables_like(task.num_seen))
  other.close()
  return variables, str(source)


@dataclasses.dataclass(frozen=True)
class Carried:
  """What a task hands to the next, all on the host and None before task 0: the
  model's variables, the method's state (`Method.after_task`) and stage I's
  (`StageOne.carried_like`)."""
  variables: dict | None = None
  method_state: Any = None
  stage_one_state: Any = None


def resume(experiment: Experiment, checkpoints: Checkpoints) -> tuple[dict, Carried, int]:
  """(results, what the last finished task handed on, first task to run) from the
  workdir's checkpoints, after checking they were made with this config."""
  where = f'workdir {experiment.workdir}'
  results, carried, start = new_results(experiment), Carried(), 0
  last = checkpoints.last_task()
  if last is not None:
    meta = checkpoints.task_meta(last)
    check_fingerprint(meta['fingerprint'], experiment.fingerprint(), where)
    task = experiment.tasks[last]
    previous, meta = checkpoints.restore_task(last, experiment.variables_like(task.num_seen))
    state_like = experiment.method.state_like(experiment, task)
    method_state = (checkpoints.restore_method_state(last, state_like)
                    if state_like is not None else None)
    stage_one_like = experiment.method.stage_one.carried_like(experiment)
    stage_one_state = (checkpoints.restore_stage_one_state(last, stage_one_like)
                       if stage_one_like is not None and experiment.stage_one_steps(task) else None)
    carried = Carried(previous, method_state, stage_one_state)
    results, start = meta['results'], last + 1
    logging.info('Resuming after task %d from %s', last, experiment.workdir)
  mid_task = checkpoints.progress_meta()
  if mid_task is not None and 'fingerprint' in mid_task:  # absent in workdirs of before 2026-11
    check_fingerprint(mid_task['fingerprint'], experiment.fingerprint(), where)
  return results, carried, start


def restore_outputs(workdir: pathlib.Path, results: dict) -> None:
  """Rewrites results.json and report.md from `results` (the checkpoints') where
  they are missing, unreadable or different, and says so."""
  for name, text in outputs(results).items():
    path = workdir / name
    try:
      if path.read_text() == text:
        continue
    except (OSError, UnicodeDecodeError):
      pass
    files.write_atomic(path, text)
    logging.warning('%s was missing or damaged: rewrote it from the checkpoints', path)
