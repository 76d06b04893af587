"""icarl and icarl_mfgr: the count of training images planned before a task is the
new images plus the memory, and a run with generated images. (Memory contents and
resuming after kill -9: end_to_end/test_icarl_runs.py; herding and NME:
test_exemplars.py; the sigmoid loss: test_losses.py.)"""

from mfgr_jax import train
from mfgr_jax.experiment import build_experiment

from conftest import scalars


def test_the_planned_count_is_the_new_images_plus_the_memory(smoke_config, tmp_path):
  smoke_config.method = 'icarl'
  smoke_config.icarl.memory_size = 41
  experiment = build_experiment(smoke_config, tmp_path)
  method, state = experiment.method, None
  for task in experiment.tasks:
    images = method.train_images(experiment, task, state)
    # 96 images per new class, and the memory of the task before (41 after task 0).
    assert len(images) == experiment.train_count(task) == 192 + (41 if task.index else 0)
    assert set(experiment.train_targets[images[:192]]) == {task.num_old, task.num_old + 1}
    state = method.state_like(experiment, task)  # a memory as large as after `task`


def test_icarl_with_generated_images_runs(smoke_config, tmp_path):
  smoke_config.method = 'icarl_mfgr'
  smoke_config.icarl.memory_size = 41
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'icarl_mfgr' and results['seconds'][1]['generator'] > 0
  assert scalars(tmp_path, 'classifier/bce_generated')
