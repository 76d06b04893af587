"""The per-task loop's pieces (train.py) on the smoke experiment: the method's
after-task work and its seconds, evaluation by the method's prediction, and the
config checked once per run. Whole runs, resuming and every method:
tests/end_to_end/."""

import dataclasses

import numpy as np
import pytest

from mfgr_jax import experiment as experiments
from mfgr_jax import train
from mfgr_jax.experiment import build_experiment
from mfgr_jax.methods import get_method


@pytest.mark.parametrize('name, seconds_keys', [('tally', {'tally'}), ('', set())])
def test_after_task_returns_the_method_s_state_and_its_seconds(smoke_config, tmp_path, name,
                                                               seconds_keys):
  experiment = build_experiment(smoke_config, tmp_path)
  experiment.method = dataclasses.replace(
      experiment.method, after_task_name=name,
      after_task=lambda experiment, task, variables, state: (state or 0) + task.index + 1)
  state, seconds = train.after_task(experiment, experiment.tasks[1], {}, 3)
  assert state == 5 and set(seconds) == seconds_keys


def test_evaluation_scores_the_method_s_predictions_on_the_seen_classes(smoke_config, tmp_path):
  experiment = build_experiment(smoke_config, tmp_path)
  task = experiment.tasks[1]
  seen = experiment.test_targets[(experiment.test_targets >= 0) &
                                 (experiment.test_targets < task.num_seen)]
  # A method that predicts every image right except those of class 0, called class 1.
  experiment.method = dataclasses.replace(
      experiment.method, predict=lambda experiment, task, variables, state, images: np.where(
          seen == 0, 1, seen))
  metrics = train.evaluate(experiment, task, {}, None)
  assert metrics['accuracy'] == pytest.approx(100.0 * np.mean(seen != 0))
  assert metrics['new_accuracy'] == 100.0 and metrics['old_accuracy'] == pytest.approx(50.0)


def test_the_config_is_checked_once_per_run(smoke_config, tmp_path, monkeypatch):
  smoke_config.scenario.num_tasks = 1
  smoke_config.train.epochs = 1
  checks, check_config = [], experiments.check_config

  def counted(config, source='the config'):
    checks.append(source)
    return check_config(config, source)

  monkeypatch.setattr(train, 'check_config', counted)
  monkeypatch.setattr(experiments, 'check_config', counted)
  train.run(smoke_config, str(tmp_path / 'unchecked'))
  assert len(checks) == 1
  # The command line checks it first (naming the config file) and passes the method on.
  checks.clear()
  train.run(smoke_config, str(tmp_path / 'checked'), get_method(smoke_config.method))
  assert not checks
