"""workdir.py: the lock that keeps two runs off one workdir, and the fingerprint
check that refuses to resume a workdir made with another config."""

import os
import socket

import pytest

from mfgr_jax import experiment, train, workdir
from mfgr_jax.errors import UserError

FINGERPRINT = {'dataset': 'synthetic', 'class_order': [0, 1, 2, 3],
               'model': {'depth': 18, 'width': 4}, 'method': 'lwf',
               'distillation': {'temperature': 2.0}}


def test_a_second_holder_of_the_lock_is_refused_in_one_line(tmp_path):
  first = workdir.lock(tmp_path)
  try:
    with pytest.raises(UserError) as error:
      workdir.lock(tmp_path)  # another open file, as another process's: flock refuses it
    message = str(error.value)
    assert '\n' not in message
    assert (f'workdir {tmp_path} is in use by another run (pid {os.getpid()} on '
            f'{socket.gethostname()})') in message
    assert 'choose another --workdir' in message
  finally:
    first.close()
  workdir.lock(tmp_path).close()  # released with its file: the next run takes it


def test_deleting_the_lock_file_does_not_free_the_workdir(tmp_path):
  first = workdir.lock(tmp_path)
  try:
    (tmp_path / 'lock').unlink()
    with pytest.raises(UserError, match='is in use by another run'):
      workdir.lock(tmp_path)
  finally:
    first.close()
  workdir.lock(tmp_path).close()


def test_a_run_holds_the_lock_before_it_loads_data(smoke_config, tmp_path, monkeypatch):
  """A second run on the workdir is refused before it loads anything."""
  seen = []

  def load_while_checking_the_lock(*args, **kwargs):
    with pytest.raises(UserError, match='is in use by another run'):
      workdir.lock(tmp_path)
    seen.append('checked')
    raise UserError('stop here')

  monkeypatch.setattr(experiment, 'load_dataset', load_while_checking_the_lock)
  with pytest.raises(UserError, match='stop here'):
    train.run(smoke_config, str(tmp_path))
  assert seen == ['checked']
  workdir.lock(tmp_path).close()  # and released when the run fails


def test_the_same_fingerprint_passes():
  workdir.check_fingerprint(dict(FINGERPRINT), FINGERPRINT, 'workdir w')


def test_a_different_field_is_named_with_both_values_in_one_line():
  saved = {**FINGERPRINT, 'model': {'depth': 18, 'width': 8}}
  with pytest.raises(UserError) as error:
    workdir.check_fingerprint(saved, FINGERPRINT, 'workdir w')
  message = str(error.value)
  assert '\n' not in message
  assert message.startswith('workdir w was made with a different model than this config (saved '
                            "{'depth': 18, 'width': 8}, now {'depth': 18, 'width': 4})")
  assert 'use a new --workdir' in message


def test_every_different_field_is_named():
  saved = {**FINGERPRINT, 'class_order': [3, 2, 1, 0], 'method': 'finetune'}
  del saved['distillation']  # a section the saving run's method did not read
  with pytest.raises(UserError, match='different class_order, method, distillation than'):
    workdir.check_fingerprint(saved, FINGERPRINT, 'workdir w')


def test_a_field_only_the_saved_run_has_is_a_difference():
  """E.g. a task-0 model made with its own budget (task0_budget), reused without one."""
  saved = {**FINGERPRINT, 'task0_budget': {'epochs': 5, 'learning_rate': 0.05}}
  with pytest.raises(UserError, match=r"different task0_budget than this config \(saved "
                                      r"\{'epochs': 5, 'learning_rate': 0.05\}, now None\)"):
    workdir.check_fingerprint(saved, FINGERPRINT, 'workdir w')
