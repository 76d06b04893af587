"""Faults through the command line: non-finite losses, damaged checkpoints, a full disk,
a signal during a method's after-task work (see docs/reliability.md). The guard that
skips a non-finite update is in test_numerics.py; signals mid-stage: test_mfgr_runs.py."""

import shutil
import signal
import subprocess
import sys

import pytest

from conftest import (REPO, SMOKE, comparable, env, finished_run, load_results, run_main,
                      signal_when)


def _error_line(stderr: str) -> str:
  assert 'Traceback' not in stderr, stderr[-3000:]
  lines = [l for l in stderr.splitlines() if l.startswith('mfgr_jax: error:')]
  assert len(lines) == 1, stderr[-3000:]
  return lines[0]


def test_nan_in_a_loss_stops_naming_step_term_and_checkpoint(tmp_path):
  # A weight near float32's largest (allowed: NaN is refused with the config)
  # overflows stage I's total loss to infinity from its first step.
  proc = run_main(f'--config={SMOKE}', f'--workdir={tmp_path}', '--config.method=mfgr',
                  '--config.generator.weights.bn_statistics=3e38')
  assert proc.returncode == 4
  line = _error_line(proc.stderr)
  assert 'task 1 generator step 1: loss not finite; the update was not applied' in line
  assert f'the last checkpoint is {tmp_path.absolute()}/checkpoints/tasks/0 (after task 0)' in line
  assert '--config.on_nonfinite=skip' in line


def test_infinite_parameters_are_caught_and_skipped_on_request(tmp_path):
  # lr and weight decay 3e38 (finite, allowed; inf is refused with the config): every
  # update would make the parameters infinite, so none is ever applied.
  args = (f'--config={SMOKE}', '--config.train.learning_rate=3e38',
          '--config.train.weight_decay=3e38', '--config.scenario.num_tasks=1')
  stopped = run_main(f'--workdir={tmp_path / "stop"}', *args)
  assert stopped.returncode == 4
  assert ('task 0 classifier step 1: a gradient or new parameter not finite'
          in _error_line(stopped.stderr))
  skipped = run_main(f'--workdir={tmp_path / "skip"}', *args, '--config.on_nonfinite=skip')
  assert skipped.returncode == 0, skipped.stderr[-3000:]
  results = load_results(tmp_path / 'skip')
  assert results['skipped_steps'] == [{'classifier': 18}]
  assert 'skipped 4 non-finite updates' in skipped.stderr


@pytest.fixture(scope='module')
def one_task(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('one_task')
  proc = run_main(f'--config={SMOKE}', f'--workdir={workdir}', '--config.scenario.num_tasks=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_a_damaged_checkpoint_is_named_and_deleting_it_recovers(tmp_path, one_task):
  workdir = tmp_path / 'run'
  shutil.copytree(one_task, workdir)
  for data in (workdir / 'checkpoints' / 'tasks' / '0' / 'model').rglob('*'):
    if data.is_file() and data.parent.name == 'd':
      data.write_bytes(b'not a checkpoint')
  proc = run_main(f'--config={SMOKE}', f'--workdir={workdir}')
  assert proc.returncode == 2
  line = _error_line(proc.stderr)
  assert f'checkpoint {workdir.absolute()}/checkpoints/tasks/0 cannot be read' in line
  assert 'delete that folder' in line
  shutil.rmtree(workdir / 'checkpoints' / 'tasks' / '0')
  rerun = run_main(f'--config={SMOKE}', f'--workdir={workdir}')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert len(load_results(workdir)['accuracy']) == 3


def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path):
  workdir = tmp_path / 'run'
  # One task: the first write already fails, so tasks 1 and 2 (compiled afresh at
  # this width) would only add training to the rerun.
  overrides = ('--config.model.width=16', '--config.scenario.num_tasks=1')
  args = [sys.executable, '-m', 'mfgr_jax.main', f'--config={SMOKE}', f'--workdir={workdir}',
          *overrides]
  # Files cannot grow past 64 KB: writes fail as on a full disk (EFBIG, not ENOSPC).
  proc = subprocess.run(['bash', '-c', 'ulimit -f 64 && exec "$@"', 'bash', *args], cwd=REPO,
                        env=env(1), capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  line = _error_line(proc.stderr)
  assert 'File too large' in line and 'run the same command again' in line
  rerun = run_main(f'--config={SMOKE}', f'--workdir={workdir}', *overrides)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert len(load_results(workdir)['accuracy']) == 1


# MUC-MAS's after-task work (importance, side classifiers) has no steps to save
# between; 1000 side epochs make it last seconds after its log line.
AFTER_TASK = (f'--config={SMOKE}', '--config.method=muc_mas', '--config.muc.side_epochs=1000',
              '--config.scenario.num_tasks=1')


def test_sigterm_during_after_task_work_stops_at_once_and_the_rerun_redoes_it(
    tmp_path, tmp_path_factory):
  status, stderr = signal_when(lambda written: 'task 0 importance: starts' in written, tmp_path,
                               *AFTER_TASK, signum=signal.SIGTERM,
                               what="the after-task work's start")
  # Not after the work: with one task, that would end the run (exit 0).
  assert status == 3, stderr[-3000:]
  assert 'side classifiers: ce' not in stderr
  line = _error_line(stderr)
  assert ('stopped by SIGTERM during task 0 importance, which saves nothing until it ends; run '
          'the same command to continue from the last checkpoint') in line
  rerun = run_main(f'--workdir={tmp_path}', *AFTER_TASK)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  uninterrupted = finished_run(tmp_path_factory, 'after_task_uninterrupted', *AFTER_TASK)
  assert comparable(load_results(tmp_path)) == comparable(load_results(uninterrupted))
