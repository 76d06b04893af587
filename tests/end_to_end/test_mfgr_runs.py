"""MFGR through the command line, interrupted: resuming after kill -9, SIGTERM or
SIGINT gives the uninterrupted run's results. (What its smoke run and its
ablations write: test_every_method.py.)

The signals must land while a stage is still running, so these runs use a longer
schedule than smoke (`INTERRUPTED`), on its first two tasks: task 0 classifier
1-90; task 1 generator 91-190, classifier 191-280; checkpoints every 10 steps.
The first checkpoint of a stage leaves 80-90 steps (seconds) to signal.
"""

import json
import re
import signal

import pytest

from conftest import (SMOKE, comparable, kill_9_then_rerun, load_results, run_main,
                      signal_after_checkpoint)


INTERRUPTED = (f'--config={SMOKE}', '--config.method=mfgr', '--config.train.epochs=15',
               '--config.generator.steps=100', '--config.checkpoint_every_steps=10',
               '--config.scenario.num_tasks=2')


@pytest.fixture(scope='module')
def uninterrupted_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  proc = run_main(f'--workdir={workdir}', *INTERRUPTED)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.mark.parametrize('stage,first,last', [('generator', 91, 100), ('classifier', 191, 200)])
def test_kill_9_mid_stage_then_rerun_gives_identical_results(tmp_path, uninterrupted_run, stage,
                                                             first, last):
  rerun = kill_9_then_rerun(tmp_path, first, last, *INTERRUPTED)
  expected = 'Resuming task 1 generator at step' if stage == 'generator' else 'Resuming task 1 at step'
  assert expected in rerun.stderr
  assert comparable(load_results(tmp_path)) == comparable(load_results(uninterrupted_run))


@pytest.mark.parametrize('signum,first,last,where', [
    (signal.SIGTERM, 1, 10, 'task 0 classifier'),
    (signal.SIGINT, 91, 100, 'task 1 generator')])
def test_sigterm_or_sigint_saves_and_exits_3_then_rerun_continues(tmp_path, uninterrupted_run,
                                                                  signum, first, last, where):
  status, stderr = signal_after_checkpoint(tmp_path, first, last, *INTERRUPTED, signum=signum)
  assert status == 3, stderr[-3000:]
  assert 'Traceback' not in stderr
  line, = [l for l in stderr.splitlines() if l.startswith('mfgr_jax: error:')]
  match = re.search(rf'stopped by {signal.Signals(signum).name} in {where} at step (\d+)/\d+; '
                    'saved a checkpoint there; run the same command to continue', line)
  assert match, line
  # The checkpoint is at the step the signal interrupted, not the periodic one before it.
  meta = json.loads(next((tmp_path / 'checkpoints' / 'progress').glob('*/meta/metadata')).read_text())
  assert meta['step'] == int(match.group(1))
  rerun = run_main(f'--workdir={tmp_path}', *INTERRUPTED)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert comparable(load_results(tmp_path)) == comparable(load_results(uninterrupted_run))
