"""plan.py: the steps a run would compile, compiled ahead of time on a stand-in of
its data, with the step counts of the real run; the report's arithmetic; the
command line's refusal of a step that does not fit."""

import math
import subprocess
import sys

import numpy as np
import pytest

from mfgr_jax import experiment, plan, sizes
from mfgr_jax.data.loading import load_dataset
from mfgr_jax.errors import UserError
from mfgr_jax.methods import get_method

from conftest import REPO


def test_the_stand_in_dataset_has_the_data_s_shape_and_counts_and_takes_no_memory(smoke_config):
  stand_in = plan.stand_in_dataset(smoke_config.data)
  real = load_dataset(smoke_config.data)
  assert stand_in.train_images.shape == real.train_images.shape
  assert stand_in.test_images.shape == real.test_images.shape
  assert np.array_equal(np.bincount(stand_in.train_labels), np.bincount(real.train_labels))
  assert stand_in.train_images.strides[0] == 0  # one image, broadcast


def test_the_plan_compiles_each_step_kind_with_the_run_s_step_counts(smoke_config):
  smoke_config.method = 'mfgr'
  smoke_config.scenario.num_tasks = 2
  built, plans = plan.plan_run(smoke_config, run_steps=1)
  assert [(p.task, p.stage) for p in plans] == [
      (0, 'classifier'), (0, 'evaluation'), (1, 'generator'), (1, 'classifier'),
      (1, 'evaluation')]
  # The counts a run on the real data has.
  real = experiment.build_experiment(smoke_config, REPO / 'unused', get_method('mfgr'))
  for p in plans:
    task = real.tasks[p.task]
    seen = np.sum((real.test_targets >= 0) & (real.test_targets < task.num_seen))
    want = {'classifier': real.total_steps(task), 'generator': real.stage_one_steps(task),
            'evaluation': math.ceil(seen / smoke_config.eval_batch_size)}[p.stage]
    assert p.steps == want, p
  assert all(p.memory_bytes > p.temp_bytes > 0 and p.flops > 0 for p in plans)
  assert all(p.seconds_per_step > 0 and p.peak_rss_bytes > 0 for p in plans)
  # The refusals of sizes.py count a lower bound of what XLA compiled.
  height = smoke_config.data.synthetic.image_size
  counted = smoke_config.train.batch_size * 4 * sizes.activation_elements(
      smoke_config.model.depth, smoke_config.model.width, smoke_config.model.stem, height)
  assert counted <= plans[0].temp_bytes
  assert built.tasks_to_run == real.tasks_to_run


def test_the_report_adds_up_the_steps_and_estimates_the_time(smoke_config):
  plans = [plan.StepPlan(0, 'classifier', 100, 2**30, 2**29, 1e15),
           plan.StepPlan(1, 'generator', 50, 3 * 2**30, 2**30, 2e15),
           plan.StepPlan(1, 'evaluation', 2, 2**20, 2**19, 1e12)]
  text = plan.report('configs/x.py', smoke_config, plans, 2, ['a100-40gb'], 0.5)
  assert 'Training steps: 150; total work: 400 PFLOP' in text  # (100 + 100) PFLOP x 2 devices
  # 200.002 PFLOP per device at half of 156 TFLOP/s: 2564 s
  assert 'at 50% of peak: about 43 minutes (an estimate' in text
  assert 'largest step: generator of task 1, 3 GB per device' in text
  with pytest.raises(UserError, match='the generator step of task 1 needs 3 GB per device '
                     'and tpu-v5e has 2 GB'):
    plan.check_fits(plans, 2, 'tpu-v5e')


def test_a_step_that_does_not_fit_is_refused_in_one_line(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'mfgr_jax.plan', '--config=configs/cifar100_5phase.py:debug',
       '--config.scenario.num_tasks=1', '--memory_gb=0.0001'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('mfgr_jax.plan: error:')]
  assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  assert 'per device and --memory_gb=0.0001 has 0.0001 GB' in errors[0]
  assert '| 0 | classifier |' in proc.stdout  # the plan is printed before the refusal
