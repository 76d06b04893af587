"""A run's workdir: its lock, the fingerprint its checkpoints must match, resuming
from them, and another run's task-0 model (`config.init_from`)."""

import fcntl
import os
import pathlib
import socket
from typing import IO, Any

from absl import logging

from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.errors import UserError
from mfgr_jax.experiment import Experiment
from mfgr_jax.results import new_results
from mfgr_jax.scenario import Task

# What a shared task-0 model must agree on: task 0 trains the same way for
# every method (plain CE, no stage I).
_TASK0_FINGERPRINT = ('dataset', 'images', 'class_order', 'tasks', 'model')


def lock(workdir: pathlib.Path) -> IO[str]:
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


def check_fingerprint(saved: dict, expected: dict, where: str) -> None:
  differences = [k for k in expected if saved.get(k) != expected[k]]
  if differences:
    raise UserError(
        f'{where} was made with a different {", ".join(differences)} than this config '
        f'(saved {saved.get(differences[0])!r}, now {expected[differences[0]]!r}); use a new '
        '--workdir, or delete that one to start over')


def load_task0(experiment: Experiment, task: Task) -> tuple[dict, str]:
  """The task-0 model of another run's workdir (`config.init_from`), and its path."""
  source = pathlib.Path(experiment.config.init_from).expanduser().absolute()
  if not (source / 'checkpoints' / 'tasks' / '0').exists():
    raise UserError(f'init_from={source} has no task-0 checkpoint (checkpoints/tasks/0); point '
                    'it at the workdir of a run that finished task 0')
  other = Checkpoints(source / 'checkpoints')
  saved = other.task_meta(0)['fingerprint']
  expected = {k: v for k, v in experiment.fingerprint().items() if k in _TASK0_FINGERPRINT}
  expected['tasks'] = expected['tasks'][:1]
  saved = {**saved, 'tasks': saved['tasks'][:1]}
  check_fingerprint(saved, expected, f'the task-0 model in {source}')
  variables, _ = other.restore_task(0, experiment.variables_like(task.num_seen))
  other.close()
  return variables, str(source)


def resume(experiment: Experiment, checkpoints: Checkpoints) -> tuple[dict, Any, Any, int]:
  """(results, model variables, method state, first task to run) from the workdir's
  checkpoints, after checking they were made with this config."""
  where = f'workdir {experiment.workdir}'
  results, previous, method_state, start = new_results(experiment), None, None, 0
  last = checkpoints.last_task()
  if last is not None:
    meta = checkpoints.task_meta(last)
    check_fingerprint(meta['fingerprint'], experiment.fingerprint(), where)
    task = experiment.tasks[last]
    previous, meta = checkpoints.restore_task(last, experiment.variables_like(task.num_seen))
    state_like = experiment.method.state_like(experiment, task)
    if state_like is not None:
      method_state = checkpoints.restore_method_state(last, state_like)
    results, start = meta['results'], last + 1
    logging.info('Resuming after task %d from %s', last, experiment.workdir)
  mid_task = checkpoints.progress_meta()
  if mid_task is not None and 'fingerprint' in mid_task:  # absent in workdirs of before 2026-11
    check_fingerprint(mid_task['fingerprint'], experiment.fingerprint(), where)
  return results, previous, method_state, start
