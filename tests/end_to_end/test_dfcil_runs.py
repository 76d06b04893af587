"""ABD and R-DFCIL through the command line on the synthetic smoke config (its
first two tasks): what they write, and resuming after kill -9 inside stage I and
(R-DFCIL) inside its head phase, to the uninterrupted run's results.

Schedule (global steps), checkpoints every 10 steps of a stage: task 0
classifier 1-18; task 1 generator 19-58, classifier 59-76, then R-DFCIL's head
phase 77-166 (5 x the classifier's 18 steps, long enough to be killed in); ABD
with a warm-started generator also runs task 2: generator 77-116, classifier 117-134.
"""

import pytest

from conftest import (SMOKE, comparable, finished_run, load_results, run_main, scalars,
                      signal_after_checkpoint, tensorboard_tags)

COMMON = (f'--config={SMOKE}', '--config.scenario.num_tasks=2', '--config.generator.steps=40',
          '--config.checkpoint_every_steps=10')
ABD = COMMON + ('--config.method=abd', '--config.replay.single_pass=True')
RDFCIL = COMMON + ('--config.method=rdfcil', '--config.rdfcil.head_phase_fraction=5')
# ABD sampling its generator as its code does: BatchNorm with running statistics.
ABD_RUNNING = ABD + ('--config.generator.sample_statistics=running',)
# And with its code's one generator for the whole run, over three tasks: task 2's
# stage I (global steps 77-116) goes on from task 1's.
ABD_WARM = ABD_RUNNING + ('--config.generator.warm_start=True', '--config.scenario.num_tasks=3')


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


def resumed_after_kills(workdir, args: tuple[str, ...], *windows: tuple[int, int]
                        ) -> tuple[str, str]:
  """kill -9s `main --workdir WORKDIR ARGS` at a checkpoint in each (first, last)
  window of global steps in turn, then runs it again to the end; returns the last
  killed run's stderr and the finished rerun's."""
  killed = [signal_after_checkpoint(workdir, first, last, *args)[1] for first, last in windows]
  rerun = run_main(f'--workdir={workdir}', *args)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  return killed[-1], rerun.stderr


def test_abd_killed_in_stage_one_resumes_identically(tmp_path, abd_run):
  _, resumed = resumed_after_kills(tmp_path, ABD, (28, 38))
  assert 'Resuming task 1 generator at step' in resumed
  assert comparable(load_results(tmp_path)) == comparable(load_results(abd_run))


def test_rdfcil_killed_in_stage_one_then_in_its_head_phase_resumes_identically(tmp_path,
                                                                               rdfcil_run):
  killed, resumed = resumed_after_kills(tmp_path, RDFCIL, (28, 38), (86, 116))
  assert 'Resuming task 1 generator at step' in killed
  assert 'Resuming task 1 head phase at step' in resumed
  assert comparable(load_results(tmp_path)) == comparable(load_results(rdfcil_run))


def test_abd_sampling_with_running_statistics_resumes_identically_in_both_stages(
    tmp_path, tmp_path_factory, abd_run):
  uninterrupted = finished_run(tmp_path_factory, 'abd_running', *ABD_RUNNING)
  # Stage II replays through the running statistics: other losses than batch statistics.
  assert scalars(uninterrupted, 'classifier/head_ce') != scalars(abd_run, 'classifier/head_ce')
  killed, resumed = resumed_after_kills(tmp_path, ABD_RUNNING, (28, 38), (60, 70))  # I, II
  assert 'Resuming task 1 generator at step' in killed
  assert 'Resuming task 1 at step' in resumed
  assert comparable(load_results(tmp_path)) == comparable(load_results(uninterrupted))


def test_a_warm_started_generator_resumes_identically_after_kills(tmp_path, tmp_path_factory):
  uninterrupted = finished_run(tmp_path_factory, 'abd_warm', *ABD_WARM)
  assert len(load_results(uninterrupted)['accuracy']) == 3
  # Killed in task 1's stage II (the generator's state is in that checkpoint), then in
  # task 2's stage I (its start came from task 1's checkpoint).
  killed, resumed = resumed_after_kills(tmp_path, ABD_WARM, (60, 70), (80, 100))
  assert 'Resuming task 1 at step' in killed
  assert 'Resuming task 2 generator at step' in resumed
  assert comparable(load_results(tmp_path)) == comparable(load_results(uninterrupted))
