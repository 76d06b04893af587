"""oracle: finetune's loss on the images of every seen class (the upper bound)."""

import numpy as np

from mfgr_jax import train
from mfgr_jax.experiment import build_experiment


def test_trains_on_every_seen_class_and_counts_them_before_the_task(smoke_config, tmp_path):
  smoke_config.method = 'oracle'
  experiment = build_experiment(smoke_config, tmp_path)
  targets = experiment.train_targets
  for task in experiment.tasks:
    images = experiment.method.train_images(experiment, task, None)
    # Every training image of the classes seen so far, each once, and nothing else.
    np.testing.assert_array_equal(np.sort(images),
                                  np.flatnonzero((targets >= 0) & (targets < task.num_seen)))
    assert set(targets[images]) == set(range(task.num_seen))
    # The count the loop plans the task's steps with (before it runs) is those images'.
    assert experiment.train_count(task) == len(images) == 96 * task.num_seen


def test_oracle_runs(smoke_config, tmp_path):
  smoke_config.method = 'oracle'
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'oracle' and len(results['accuracy']) == 2
  # Oracle trains on the old classes too, so it must keep them better than finetune forgets them.
  assert results['accuracy_matrix'][1][0] > 60
