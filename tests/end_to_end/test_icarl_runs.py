"""iCaRL through the command line: its exemplar memory (size, class balance,
herding order) and resuming after kill -9 inside a task with that memory. (The
resumes of EWC's penalty state and DeepInversion's pool: test_every_method.py.)"""

import numpy as np
import pytest

from conftest import SMOKE, comparable, finished_run, kill_9_then_rerun, load_results


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
