"""Every registered method runs the whole smoke scenario (configs/smoke.py, three
tasks) with nothing but its own defaults, from one shared task-0 model: it
finishes, skips no update as non-finite, and writes what its stages log. A
default that diverges on a shipped config (FACIL's EWC weight 5000 did, at task 1
step 16) fails here. `benchmarks/every_method_smoke.py` prints the same runs as a
table. The methods that carry state from a stage or task to the next (EWC's
anchor and importance, DeepInversion's pool) are also killed mid-run through
the command line, and must then finish with these runs' results.

Smoke schedule (global steps, task 0 counted though it is loaded): task 0
classifier 1-18; task 1 [stage I] then classifier 18 steps; task 2 likewise.
DeepInversion's stage I: 2 batches x 12 iterations (global 19-42). Checkpoints
every 4 steps of a stage. These runs go through `train.run`; the command line
itself is tested on LwF's smoke run in test_main.py.
"""

import math

import PIL.Image
import pytest

from configs import smoke
from mfgr_jax import train
from mfgr_jax.methods import all_methods

from conftest import SMOKE, comparable, kill_9_then_rerun, load_results, scalars, tensorboard_tags


@pytest.fixture(scope='module')
def smoke_run(tmp_path_factory):
  """`smoke_run(method)`: the workdir of METHOD's run of the smoke scenario with its
  defaults, from a task-0 model shared by every method; each is run once."""
  task0 = smoke.get_config()
  task0.scenario.num_tasks = 1
  task0_dir = tmp_path_factory.mktemp('task0')
  train.run(task0, str(task0_dir))
  workdirs = {}

  def run(method: str):
    if method not in workdirs:
      config = smoke.get_config()
      config.method, config.init_from = method, str(task0_dir)
      workdirs[method] = tmp_path_factory.mktemp(method)
      train.run(config, str(workdirs[method]))
    return workdirs[method]

  run.task0_dir = task0_dir
  run.task0 = load_results(task0_dir)
  return run


@pytest.mark.parametrize('method', sorted(all_methods()))
def test_every_method_finishes_smoke_with_its_defaults(smoke_run, method):
  results = load_results(smoke_run(method))
  assert results['method'] == method and results['tasks'] == [[0, 1], [2, 3], [4, 5]]
  # Task 0 is the shared model, loaded, not trained again.
  assert results['task0_from'] == str(smoke_run.task0_dir)
  assert results['accuracy_matrix'][0] == smoke_run.task0['accuracy_matrix'][0]
  assert results['seconds'][0].get('classifier', 0.0) == 0.0
  assert len(results['accuracy']) == 3
  assert all(math.isfinite(a) and 0 <= a <= 100 for a in results['accuracy'])
  assert all(count == 0 for task in results['skipped_steps'] for count in task.values())


def test_mfgr_writes_samples_and_its_diagnostics(smoke_run):
  workdir = smoke_run('mfgr')
  results = load_results(workdir)
  assert [sorted(s) for s in results['seconds']] == [
      ['classifier', 'eval'], ['classifier', 'eval', 'generator'],
      ['classifier', 'eval', 'generator']]
  assert results['throughput'][1]['generator_images_per_second'] > 0
  for task in (1, 2):
    grid = PIL.Image.open(workdir / 'samples' / f'task{task}.png')
    assert grid.size == (16 * 18, 2 * 18)  # 32 samples of 16x16, 16 per row, 1-px frames
  assert not (workdir / 'samples' / 'task0.png').exists()
  tags = tensorboard_tags(workdir)
  for term in ('one_hot', 'class_balance', 'activation', 'signed_difference', 'bn_statistics',
               'diversity', 'mean_prediction_entropy', 'predicted_class', 'samples'):
    assert f'generator/{term}' in tags, term
  assert {'classifier/kd_generated', 'classifier/kd_real', 'classifier/ce'} <= tags


@pytest.mark.parametrize('method,absent', [
    ('lwf_g_base', {'generator/bn_statistics', 'generator/diversity'}),
    ('g_bn', {'generator/diversity', 'classifier/kd_real'}),
    ('lwf_g_bn', {'generator/diversity'}),
])
def test_ablations_log_their_own_terms(smoke_run, method, absent):
  workdir = smoke_run(method)
  assert (workdir / 'samples' / 'task1.png').exists()
  tags = tensorboard_tags(workdir)
  assert not absent & tags
  assert {'generator/one_hot', 'classifier/kd_generated'} <= tags


def test_deepinversion_writes_its_pool_samples_and_times_its_synthesis(smoke_run):
  workdir = smoke_run('deepinversion')
  results = load_results(workdir)
  assert results['seconds'][1]['synthesis'] > 0 and 'generator' not in results['seconds'][1]
  assert results['throughput'][1]['synthesis_images_per_second'] > 0
  assert (workdir / 'samples' / 'task1.png').exists()
  assert scalars(workdir, 'synthesis/bn_statistics')
  assert 'synthesis/samples' in tensorboard_tags(workdir)


@pytest.mark.parametrize('method,first,last,resumed', [
    ('deepinversion', 23, 35, 'Resuming task 1 synthesis at step'),
    # Inside task 2, which trains with the importance of tasks 0 and 1 restored.
    ('ewc', 37, 53, 'Resuming task 2 at step'),
])
def test_killed_mid_run_then_rerun_gives_the_uninterrupted_results(smoke_run, tmp_path, method,
                                                                   first, last, resumed):
  rerun = kill_9_then_rerun(tmp_path, first, last, f'--config={SMOKE}', f'--config.method={method}',
                            f'--config.init_from={smoke_run.task0_dir}')
  assert resumed in rerun.stderr
  assert comparable(load_results(tmp_path)) == comparable(load_results(smoke_run(method)))
