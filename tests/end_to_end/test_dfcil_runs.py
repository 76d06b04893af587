"""ABD and R-DFCIL through the command line on the synthetic smoke config (its
first two tasks): what they write, and resuming after kill -9 inside stage I and
(R-DFCIL) inside its head phase, to the uninterrupted run's results.

Schedule (global steps), checkpoints every 10 steps of a stage: task 0
classifier 1-18; task 1 generator 19-58, classifier 59-76, then R-DFCIL's head
phase 77-166 (5 x the classifier's 18 steps, long enough to be killed in).
"""

import pytest

from conftest import (SMOKE, comparable, finished_run, load_results, run_main, scalars,
                      signal_after_checkpoint, tensorboard_tags)

COMMON = (f'--config={SMOKE}', '--config.scenario.num_tasks=2', '--config.generator.steps=40',
          '--config.checkpoint_every_steps=10')
ABD = COMMON + ('--config.method=abd', '--config.replay.single_pass=True')
RDFCIL = COMMON + ('--config.method=rdfcil', '--config.rdfcil.head_phase_fraction=5')


@pytest.fixture(scope='module')
def abd_run(tmp_path_factory):
  return finished_run(tmp_path_factory, 'abd', *ABD)


@pytest.fixture(scope='module')
def rdfcil_run(tmp_path_factory):
  return finished_run(tmp_path_factory, 'rdfcil', *RDFCIL)


def test_abd_learns_the_new_task_and_logs_its_terms(abd_run):
  results = load_results(abd_run)
  assert results['method'] == 'abd' and len(results['accuracy']) == 2
  assert sorted(results['seconds'][1]) == ['classifier', 'eval', 'generator']
  assert results['accuracy'][-1] > 100 / 4  # above chance on 4 classes
  tags = tensorboard_tags(abd_run)
  assert {'generator/content', 'generator/bn_kl', 'generator/normalised_balance',
          'generator/smoothness', 'classifier/local_ce', 'classifier/head_ce',
          'classifier/feature_kd'} <= tags


def test_rdfcil_runs_its_head_phase_and_logs_its_terms(rdfcil_run):
  results = load_results(rdfcil_run)
  assert results['method'] == 'rdfcil' and len(results['accuracy']) == 2
  assert sorted(results['seconds'][1]) == ['classifier', 'eval', 'generator', 'head']
  assert results['accuracy'][-1] > 100 / 4
  tags = tensorboard_tags(rdfcil_run)
  assert {'classifier/local_ce', 'classifier/hkd', 'classifier/rkd', 'head/balanced_ce',
          'head/hkd'} <= tags
  assert len(scalars(rdfcil_run, 'head/balanced_ce')) == 90 // 4 + 1  # every 4 steps and the last
  assert all(value > 0 for value in scalars(rdfcil_run, 'classifier/rkd'))


def test_abd_killed_in_stage_one_resumes_identically(tmp_path, abd_run):
  signal_after_checkpoint(tmp_path, 28, 38, *ABD)
  rerun = run_main(f'--workdir={tmp_path}', *ABD)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resuming task 1 generator at step' in rerun.stderr
  assert comparable(load_results(tmp_path)) == comparable(load_results(abd_run))


def test_rdfcil_killed_in_stage_one_then_in_its_head_phase_resumes_identically(tmp_path,
                                                                               rdfcil_run):
  signal_after_checkpoint(tmp_path, 28, 38, *RDFCIL)
  _, stderr = signal_after_checkpoint(tmp_path, 86, 116, *RDFCIL)
  assert 'Resuming task 1 generator at step' in stderr
  rerun = run_main(f'--workdir={tmp_path}', *RDFCIL)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resuming task 1 head phase at step' in rerun.stderr
  assert comparable(load_results(tmp_path)) == comparable(load_results(rdfcil_run))
