"""experiment.py: build_experiment checks the config before loading data (one-line
errors), maps labels to output indices and plans each task; the command-line
errors of bad input are in end_to_end/test_main.py."""

import numpy as np
import pytest

from mfgr_jax import stage_one
from mfgr_jax.errors import UserError
from mfgr_jax.experiment import build_experiment


def test_an_explicit_class_order_maps_labels_to_outputs_and_leaves_out_the_rest(smoke_config,
                                                                                tmp_path):
  smoke_config.scenario.class_order = '5,3,1,0'
  smoke_config.scenario.num_tasks = 1
  experiment = build_experiment(smoke_config, tmp_path)
  assert experiment.order == [5, 3, 1, 0]
  assert [t.classes for t in experiment.tasks] == [(5, 3), (1, 0)]
  assert experiment.tasks_to_run == experiment.tasks[:1]
  # Only the listed classes are loaded; output c is label order[c].
  labels = np.asarray(experiment.order)[experiment.train_targets]
  assert set(experiment.train_targets.tolist()) == {0, 1, 2, 3}
  np.testing.assert_array_equal(labels, experiment.dataset.train_labels)
  np.testing.assert_array_equal(experiment.class_images(0, 2),
                                np.flatnonzero(np.isin(experiment.dataset.train_labels, [5, 3])))
  # 3 epochs of 192 images in batches of 32.
  assert experiment.total_steps(experiment.tasks[0]) == 18


def test_task_0_may_have_its_own_epochs_and_learning_rate(smoke_config, tmp_path):
  smoke_config.train.init_epochs = 5
  smoke_config.train.init_learning_rate = 0.05
  experiment = build_experiment(smoke_config, tmp_path)
  first, second = experiment.tasks[:2]
  assert experiment.total_steps(first) == 5 * 6 and experiment.total_steps(second) == 3 * 6
  assert experiment.train_settings(first).learning_rate == 0.05
  assert experiment.train_settings(second).learning_rate == smoke_config.train.learning_rate
  assert experiment.fingerprint()['task0_budget'] == {'epochs': 5, 'learning_rate': 0.05}
  smoke_config.train.init_epochs, smoke_config.train.init_learning_rate = 0, 0.0
  unset = build_experiment(smoke_config, tmp_path)
  assert unset.total_steps(first) == 3 * 6 and 'task0_budget' not in unset.fingerprint()


def test_generated_batch_per_class_balance(smoke_config, tmp_path):
  smoke_config.method = 'mfgr'
  smoke_config.scenario.base_classes = 4
  smoke_config.replay.balance = 'per_class'
  experiment = build_experiment(smoke_config, tmp_path)
  # 4 old classes, 2 new, 32 real images: 16 real per new class -> 64 generated.
  assert stage_one.generated_batch_size(experiment.config, experiment.tasks[1]) == 64
  assert experiment.stage_one_steps(experiment.tasks[0]) == 0
  assert experiment.stage_one_steps(experiment.tasks[1]) == 12


def test_bad_generator_config_is_refused(smoke_config, tmp_path):
  smoke_config.method = 'mfgr'
  smoke_config.generator.diversity_pairs = 20
  with pytest.raises(UserError, match='diversity_pairs=20 needs generator.batch_size >= 40'):
    build_experiment(smoke_config, tmp_path)
