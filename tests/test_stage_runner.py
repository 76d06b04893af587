"""The stage runner (stage_runner.py) with a counting step and real Orbax
checkpoints: it steps to the stage's end, saves progress checkpoints with the
task's account (seconds per stage, skipped updates), restores that account when
a task resumes and empties it for a new one, counts or stops at non-finite
updates, stops at a signal with a checkpoint, and runs a stage I to its end from
its checkpoint (`StageOneRun`)."""

import signal

from clu import metric_writers
from clu import periodic_actions
import flax
import jax.numpy as jnp
import numpy as np
import pytest

from mfgr_jax import numerics
from mfgr_jax import parallel
from mfgr_jax import preemption
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.errors import Interrupted, NonFiniteLoss
from mfgr_jax.scenario import Task
from mfgr_jax.stage_runner import StageRunner

TASK = Task(1, (2, 3), 2, 4)


@flax.struct.dataclass
class Counter:
  step: jnp.ndarray
  total: jnp.ndarray


def counter() -> Counter:
  return Counter(step=jnp.zeros((), jnp.int32), total=jnp.zeros((), jnp.float32))


def add(state: Counter, amount: float = 1.0, bad_steps: tuple[int, ...] = ()) -> tuple[Counter, dict]:
  """Adds `amount` to `total`; at `bad_steps` (1-based) the update is not finite and kept out."""
  bad = jnp.isin(state.step + 1, jnp.asarray(bad_steps or (-1,)))
  new = Counter(step=state.step + 1, total=jnp.where(bad, jnp.nan, state.total + amount))
  return numerics.guard(~bad, new, state, {'total': new.total})


def make_runner(tmp_path, on_nonfinite='stop', every=3) -> StageRunner:
  checkpoints = Checkpoints(tmp_path / 'checkpoints')
  writer = metric_writers.MultiWriter([])
  return StageRunner(checkpoints, writer, periodic_actions.ReportProgress(num_train_steps=100),
                     on_nonfinite, every, {'fingerprint': 'of this run'}, tmp_path / 'samples')


def test_runs_to_the_end_and_saves_progress_with_the_task_s_account(tmp_path):
  runner = make_runner(tmp_path)
  assert runner.start_task(TASK) is None and runner.seconds == {} and runner.skipped == {}
  state, steps_per_second = runner.run('classifier', TASK, add, counter(), 7, 100, 2)
  assert int(state.step) == 7 and float(state.total) == 7.0 and steps_per_second > 0
  assert set(runner.seconds) == {'classifier'} and runner.seconds['classifier'] > 0
  runner.checkpoints.wait()
  meta = runner.checkpoints.progress_meta()  # the last save: step 6 of 7
  assert {k: meta[k] for k in ('task', 'stage', 'step')} == {'task': 1, 'stage': 'classifier',
                                                             'step': 6}
  assert meta['fingerprint'] == {'fingerprint': 'of this run'} and meta['skipped'] == {}
  assert 0 < meta['seconds']['classifier'] <= runner.seconds['classifier']
  restored = runner.checkpoints.restore_progress({'classifier': counter()})['classifier']
  assert int(restored.step) == 6 and float(restored.total) == 6.0
  runner.checkpoints.close()


def test_a_resumed_task_restores_its_account_and_a_new_task_starts_empty(tmp_path):
  runner = make_runner(tmp_path, on_nonfinite='skip')
  runner.start_task(TASK)
  runner.run('generator', TASK, lambda s: add(s, bad_steps=(2,)), counter(), 4, 0, 4)
  runner.checkpoints.wait()
  account = runner.seconds, runner.skipped
  assert account[1] == {'generator': 1}

  again = make_runner(tmp_path)  # a new process on the same workdir
  resume = again.start_task(TASK)
  assert resume['stage'] == 'generator' and resume['step'] == 3
  # The account as saved at step 3, where the seconds of steps 1-3 had been counted.
  assert again.skipped == {'generator': 1}
  assert 0 < again.seconds['generator'] <= account[0]['generator']
  # Its copies are the caller's: changing them does not change the runner's account.
  again.seconds['generator'] = -1.0
  assert again.seconds['generator'] > 0
  assert again.start_task(Task(2, (4, 5), 4, 6)) is None
  assert again.seconds == {} and again.skipped == {}
  runner.checkpoints.close()
  again.checkpoints.close()


def test_a_non_finite_update_is_skipped_and_counted_or_stops_the_run(tmp_path):
  runner = make_runner(tmp_path / 'skip', on_nonfinite='skip', every=100)
  runner.start_task(TASK)
  state, _ = runner.run('classifier', TASK, lambda s: add(s, bad_steps=(2, 5)), counter(), 6, 0, 3)
  assert float(state.total) == 4.0 and runner.skipped == {'classifier': 2}
  runner.checkpoints.close()

  runner = make_runner(tmp_path / 'stop', every=100)
  runner.start_task(TASK)
  with pytest.raises(NonFiniteLoss, match=r'task 1 classifier step 5: total not finite.*'
                     r'no checkpoint was saved yet.*on_nonfinite=skip'):
    runner.run('classifier', TASK, lambda s: add(s, bad_steps=(5,)), counter(), 6, 0, 3)
  runner.checkpoints.close()


def test_a_signal_stops_at_the_next_step_with_a_checkpoint_there(tmp_path):
  runner = make_runner(tmp_path, every=100)
  runner.start_task(TASK)

  def add_then_signal(state):
    if int(state.step) == 2:  # the handler notes it; the runner stops after this step
      signal.raise_signal(signal.SIGTERM)
    return add(state)

  preemption.install()
  try:
    with pytest.raises(Interrupted, match='stopped by SIGTERM in task 1 classifier at step 3/9'):
      runner.run('classifier', TASK, add_then_signal, counter(), 9, 0, 100)
  finally:
    preemption.uninstall()
  assert runner.checkpoints.progress_meta()['step'] == 3
  runner.checkpoints.close()


def test_stage_one_runs_to_its_end_from_its_checkpoint_and_saves_the_end(tmp_path):
  runner = make_runner(tmp_path, every=2)
  runner.start_task(TASK)
  stage = runner.stage_one(TASK, None, 10, 5)
  state, _ = stage.run_to_end('generator', counter(), lambda s, amount: add(s, amount), (2.0,), 5)
  assert float(parallel.to_host(state).total) == 10.0
  runner.checkpoints.wait()
  assert runner.checkpoints.progress_meta()['step'] == 5  # the finished stage is saved

  resumed = make_runner(tmp_path, every=2)
  resume = resumed.start_task(TASK)
  calls = []

  def counted(state, amount):
    calls.append(1)
    return add(state, amount)

  state, _ = resumed.stage_one(TASK, resume, 10, 5).run_to_end('generator', counter(), counted,
                                                                (2.0,), 5)
  assert float(parallel.to_host(state).total) == 10.0 and not calls  # restored, not rerun
  stage.write_images('generator', np.zeros((4, 6, 3), np.uint8))
  assert (tmp_path / 'samples' / 'task1.png').is_file()
  runner.checkpoints.close()
  resumed.checkpoints.close()
