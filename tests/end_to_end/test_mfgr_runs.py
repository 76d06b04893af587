"""Whole runs of MFGR and its ablations on the synthetic smoke config, through the
command line: what they write, and resuming after kill -9, SIGTERM or SIGINT.

Smoke schedule (global steps): task 0 classifier 1-18; task 1 generator 19-30,
classifier 31-48; task 2 generator 49-60, classifier 61-78. Checkpoints every
4 steps of a stage, and at the end of each stage I.

The kill and signal tests interrupt a run at a checkpoint and need the stage to
still be running when the signal lands, so they use a longer schedule
(`INTERRUPTED`): task 0 classifier 1-90; task 1 generator 91-190, classifier
191-280; task 2 generator 281-380, classifier 381-470; checkpoints every 10
steps. The first checkpoint of a stage leaves 80-90 steps (seconds) to signal.
"""

import json
import re
import signal

import PIL.Image
import pytest

from mfgr_jax import train

from conftest import (SMOKE, comparable, kill_9_then_rerun, load_results, run_main,
                      signal_after_checkpoint, tensorboard_tags)


@pytest.fixture(scope='module')
def mfgr_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp('mfgr')
  proc = run_main(f'--config={SMOKE}', f'--workdir={workdir}', '--config.method=mfgr')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def test_mfgr_smoke_run_writes_results_samples_and_diagnostics(mfgr_run):
  results = load_results(mfgr_run)
  assert results['method'] == 'mfgr' and len(results['accuracy']) == 3
  assert [sorted(s) for s in results['seconds']] == [
      ['classifier', 'eval'], ['classifier', 'eval', 'generator'],
      ['classifier', 'eval', 'generator']]
  assert results['throughput'][1]['generator_images_per_second'] > 0
  for task in (1, 2):
    grid = PIL.Image.open(mfgr_run / 'samples' / f'task{task}.png')
    assert grid.size == (16 * 18, 2 * 18)  # 32 samples of 16x16, 16 per row, 1-px frames
  assert not (mfgr_run / 'samples' / 'task0.png').exists()
  tags = tensorboard_tags(mfgr_run)
  for term in ('one_hot', 'class_balance', 'activation', 'signed_difference', 'bn_statistics',
               'diversity', 'mean_prediction_entropy', 'predicted_class', 'samples'):
    assert f'generator/{term}' in tags, term
  assert {'classifier/kd_generated', 'classifier/kd_real', 'classifier/ce'} <= tags


@pytest.mark.parametrize('method,absent', [
    ('lwf_g_base', {'generator/bn_statistics', 'generator/diversity'}),
    ('g_bn', {'generator/diversity', 'classifier/kd_real'}),
    ('lwf_g_bn', {'generator/diversity'}),
])
def test_ablations_run_with_their_own_terms(smoke_config, tmp_path, mfgr_run, method, absent):
  smoke_config.method = method
  smoke_config.scenario.num_tasks = 2
  smoke_config.init_from = str(mfgr_run)  # the shared task-0 model of another method's run
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == method and len(results['accuracy']) == 2
  assert results['task0_from'] == str(mfgr_run)
  assert results['accuracy'][0] == load_results(mfgr_run)['accuracy'][0]
  assert (tmp_path / 'samples' / 'task1.png').exists()
  tags = tensorboard_tags(tmp_path)
  assert not absent & tags
  assert {'generator/one_hot', 'classifier/kd_generated'} <= tags


INTERRUPTED = (f'--config={SMOKE}', '--config.method=mfgr', '--config.train.epochs=15',
               '--config.generator.steps=100', '--config.checkpoint_every_steps=10')


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
    (signal.SIGINT, 91, 100, 'task 1 generator'),
    (signal.SIGTERM, 381, 390, 'task 2 classifier')])
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
