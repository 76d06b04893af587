"""Orbax checkpoints of a run (checkpoints.py): task checkpoints (model, metadata,
the method's state) all kept, progress checkpoints (the latest only), where a rerun
resumes from, and a damaged checkpoint as one line naming its folder. Resuming
whole runs from them: tests/end_to_end/."""

import numpy as np
import pytest

from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.errors import UserError

MODEL = {'params': {'w': np.arange(6, dtype=np.float32).reshape(2, 3)},
         'batch_stats': {'mean': np.ones(3, np.float32)}}


def zeros_like(tree):
  return {k: zeros_like(v) if isinstance(v, dict) else np.zeros_like(v) for k, v in tree.items()}


def test_task_checkpoints_keep_the_model_metadata_and_method_state(tmp_path):
  checkpoints = Checkpoints(tmp_path)
  assert checkpoints.last_task() is None
  assert checkpoints.latest_description() == 'no checkpoint was saved yet'
  checkpoints.save_task(0, MODEL, {'results': {'accuracy': [90.0]}})
  memory = {'exemplars': np.array([4, 8, 15], np.int32)}
  checkpoints.save_task(1, MODEL, {'results': {'accuracy': [90.0, 70.0]}}, memory)
  checkpoints.wait()
  assert checkpoints.last_task() == 1
  model, meta = checkpoints.restore_task(0, zeros_like(MODEL))  # every task is kept
  np.testing.assert_array_equal(model['params']['w'], MODEL['params']['w'])
  assert meta == {'results': {'accuracy': [90.0]}} and checkpoints.task_meta(1)['results'][
      'accuracy'] == [90.0, 70.0]
  np.testing.assert_array_equal(
      checkpoints.restore_method_state(1, {'exemplars': np.zeros(3, np.int32)})['exemplars'],
      memory['exemplars'])
  assert checkpoints.latest_description().endswith('tasks/1 (after task 1)')
  checkpoints.close()


def test_only_the_latest_progress_checkpoint_is_kept_and_named_while_inside_a_task(tmp_path):
  checkpoints = Checkpoints(tmp_path)
  assert checkpoints.progress_meta() is None
  checkpoints.save_task(0, MODEL, {})
  for step in (4, 8):
    checkpoints.save_progress(step, {'classifier': {'w': np.full(2, step, np.float32)}},
                              {'task': 1, 'stage': 'classifier', 'step': step})
  checkpoints.wait()
  assert checkpoints.progress_meta()['step'] == 8
  assert sorted(p.name for p in (tmp_path / 'progress').iterdir() if p.name.isdigit()) == ['8']
  restored = checkpoints.restore_progress({'classifier': {'w': np.zeros(2, np.float32)}})
  np.testing.assert_array_equal(restored['classifier']['w'], [8.0, 8.0])
  assert checkpoints.latest_description().endswith('progress/8')  # task 1 is under way
  checkpoints.close()


def test_a_damaged_checkpoint_is_one_line_naming_its_folder(tmp_path):
  checkpoints = Checkpoints(tmp_path)
  checkpoints.save_task(0, MODEL, {'results': {}})
  checkpoints.wait()
  for meta in (tmp_path / 'tasks' / '0').rglob('*'):
    if meta.is_file() and meta.parent.name == 'meta':
      meta.write_text('{not json')
  with pytest.raises(UserError, match=r'checkpoint .*tasks/0 cannot be read .*delete that folder'):
    checkpoints.task_meta(0)
  checkpoints.close()
