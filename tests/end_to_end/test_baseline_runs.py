"""DeepInversion, iCaRL and EWC through the command line: what their smoke runs
write, and resuming after kill -9 inside stage I or a task, with the state each
carries (pool, exemplar memory, importance)."""

import numpy as np
import pytest

from mfgr_jax import train

from conftest import (SMOKE, comparable, finished_run, kill_9_then_rerun, load_results, scalars,
                      tensorboard_tags)


DEEPINVERSION_ARGS = ('--config.method=deepinversion', '--config.deepinversion.batches=2',
                      '--config.deepinversion.iterations=8', '--config.deepinversion.batch_size=32',
                      '--config.checkpoint_every_steps=4')


@pytest.fixture(scope='module')
def deepinversion_run(tmp_path_factory):
  return finished_run(tmp_path_factory, 'deepinversion', f'--config={SMOKE}', *DEEPINVERSION_ARGS)


def test_deepinversion_runs_writes_samples_and_times_its_synthesis(deepinversion_run):
  results = load_results(deepinversion_run)
  assert results['method'] == 'deepinversion' and len(results['accuracy']) == 3
  assert results['seconds'][1]['synthesis'] > 0 and 'generator' not in results['seconds'][1]
  assert results['throughput'][1]['synthesis_images_per_second'] > 0
  assert (deepinversion_run / 'samples' / 'task1.png').exists()
  assert scalars(deepinversion_run, 'synthesis/bn_statistics')
  assert 'synthesis/samples' in tensorboard_tags(deepinversion_run)


def test_deepinversion_killed_mid_synthesis_resumes_identically(tmp_path, deepinversion_run):
  # Smoke tasks have 18 classifier steps; task 1 starts with 2 x 8 synthesis steps
  # (global steps 19-34), checkpointed every 4.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 23, 31, f'--config={SMOKE}', *DEEPINVERSION_ARGS)
  assert 'Resuming task 1 synthesis at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(load_results(deepinversion_run))


ICARL_ARGS = ('--config.method=icarl', '--config.icarl.memory_size=41')


@pytest.fixture(scope='module')
def icarl_run(tmp_path_factory):
  return finished_run(tmp_path_factory, 'icarl', f'--config={SMOKE}', *ICARL_ARGS)


def _memory(workdir, task):
  from mfgr_jax.checkpoints import Checkpoints
  checkpoints = Checkpoints(workdir / 'checkpoints')
  memory = checkpoints.restore_method_state(task, None)['exemplars']
  checkpoints.close()
  return np.asarray(memory)


def test_icarl_memory_has_the_configured_size_balanced_over_seen_classes(icarl_run):
  from configs import smoke
  from mfgr_jax.data.synthetic import make_synthetic
  results = load_results(icarl_run)
  assert results['method'] == 'icarl' and len(results['accuracy']) == 3
  labels = make_synthetic(**smoke.get_config().data.synthetic)['train'][1]  # identity order
  for task, seen in ((0, 2), (1, 4), (2, 6)):
    memory = _memory(icarl_run, task)
    assert len(memory) == 41 and len(set(memory.tolist())) == 41
    counts = np.bincount(labels[memory], minlength=6)[:seen]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 41
  # Each old class keeps a prefix of its earlier exemplars (herding order).
  before, after = _memory(icarl_run, 0), _memory(icarl_run, 1)
  for c in (0, 1):
    kept = after[labels[after] == c]
    np.testing.assert_array_equal(kept, before[labels[before] == c][:len(kept)])


def test_icarl_killed_mid_task_resumes_with_its_memory(tmp_path, icarl_run):
  # Task 2 trains on 192 new images + 41 exemplars: 7 steps an epoch, 21 steps;
  # tasks 0 and 1 take 18 and 21 steps, so task 2 runs at global steps 40-60.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 41, 56, f'--config={SMOKE}', *ICARL_ARGS)
  assert 'Resuming task 2 at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(load_results(icarl_run))
  np.testing.assert_array_equal(_memory(workdir, 2), _memory(icarl_run, 2))


# The smoke model is tiny, so its importance is large: FACIL's 5000 would diverge at lr 0.1.
EWC_ARGS = ('--config.method=ewc', '--config.ewc.weight=10', '--config.ewc.importance_batch_size=32')


def test_kill_9_mid_task_then_rerun_keeps_the_penalty_state(tmp_path, smoke_config):
  smoke_config.method = 'ewc'
  smoke_config.ewc.weight = 10.0
  smoke_config.ewc.importance_batch_size = 32
  uninterrupted = train.run(smoke_config, str(tmp_path / 'whole'))
  # Tasks have 18 steps; kill at a periodic checkpoint inside task 2, which trains with
  # the importance of tasks 0 and 1 restored from the checkpoint of task 1.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 37, 53, f'--config={SMOKE}', *EWC_ARGS)
  assert 'Resuming task 2 at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(uninterrupted)
