"""Learning one task (learn.py) on the smoke experiment: the variables a task starts
from. The stages themselves run in every whole run (tests/end_to_end/), their
resuming in the kill tests there."""

import jax
import numpy as np

from mfgr_jax import keys
from mfgr_jax import learn
from mfgr_jax.experiment import build_experiment
from mfgr_jax.models.resnet import LOSS_PARAMS


def head_kernel(params):
  return np.asarray(params['head']['linear']['dense']['kernel'])


def test_a_task_starts_from_a_new_model_then_from_the_previous_widened(smoke_config, tmp_path):
  experiment = build_experiment(smoke_config, tmp_path)
  first, second = experiment.tasks[:2]
  params, batch_stats = learn.initial_variables(experiment, first, None)
  assert head_kernel(params).shape[1] == first.num_seen and LOSS_PARAMS not in params
  again, _ = learn.initial_variables(experiment, first, None)  # from the seed's key
  np.testing.assert_array_equal(head_kernel(params), head_kernel(again))
  widened, _ = learn.initial_variables(
      experiment, second, {'params': params, 'batch_stats': batch_stats})
  assert head_kernel(widened).shape[1] == second.num_seen
  np.testing.assert_array_equal(head_kernel(widened)[:, :first.num_seen], head_kernel(params))


def test_the_parameters_a_method_s_loss_owns_join_the_model_s(smoke_config, tmp_path):
  smoke_config.method = 'rdfcil'
  experiment = build_experiment(smoke_config, tmp_path)
  previous = dict(zip(('params', 'batch_stats'),
                      learn.initial_variables(experiment, experiment.tasks[0], None)))
  params, _ = learn.initial_variables(experiment, experiment.tasks[1], previous)
  expected = experiment.method.loss_params(
      experiment, experiment.tasks[1], experiment.task_key(experiment.tasks[1],
                                                           keys.LOSS_PARAMS_INIT))
  assert jax.tree.all(jax.tree.map(np.array_equal, params[LOSS_PARAMS], expected))
