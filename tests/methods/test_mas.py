"""mas and muc_mas: the importance of each output norm against its closed form, a
penalty that keeps the backbone near the old model, and MUC-MAS's side heads'
importance added to MAS's. (Runs and resumes: test_ewc.py, with EWC.)"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import train
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.methods import mas
from mfgr_jax.scenario import Task

import logistic_model


@pytest.mark.parametrize('norm', ['l2', 'squared_l2'])
def test_mas_importance_is_the_mean_absolute_gradient_of_the_output_norm(norm):
  x, z = logistic_model.inputs_and_logits()
  # ||(0, z)|| = |z|: gradient sign(z) x; squared: 2 z x.
  grads = np.sign(z)[:, None] * x if norm == 'l2' else 2 * z[:, None] * x
  score = mas.make_output_norm(Task(0, (0, 1), 0, 2),
                               ml_collections.ConfigDict(dict(output_norm=norm)))
  omega = logistic_model.mean_importance(score, jnp.abs)
  np.testing.assert_allclose(omega, np.mean(np.abs(grads), 0), rtol=1e-5)


def test_mas_muc_score_uses_only_the_current_task_logits():
  # With Task(num_old=1) the score is mean((z)^2) over the one new logit: gradient 2 z x.
  x, z = logistic_model.inputs_and_logits()
  score = mas.make_output_norm(Task(1, (1,), 1, 2),
                               ml_collections.ConfigDict(dict(output_norm='muc')))
  omega = logistic_model.mean_importance(score, jnp.abs)
  np.testing.assert_allclose(omega, np.mean(np.abs(2 * z[:, None] * x), 0), rtol=1e-5)


def test_penalty_keeps_the_backbone_closer_to_the_old_model(smoke_config, tmp_path):
  # With a penalty the backbone moves less from task 0's; with weight 0 it moves freely.
  distances = {}
  for weight in (0.0, 20.0):
    smoke_config.method = 'mas'
    smoke_config.mas.weight = weight
    smoke_config.mas.importance_batch_size = 32
    smoke_config.scenario.num_tasks = 2
    workdir = tmp_path / str(weight)
    train.run(smoke_config, str(workdir))
    checkpoints = Checkpoints(workdir / 'checkpoints')
    state = checkpoints.restore_method_state(1, None)
    first = checkpoints.restore_method_state(0, None)
    checkpoints.close()
    distances[weight] = sum(float(jnp.sum((a - b)**2)) for a, b in zip(
        jax.tree.leaves(state['anchor']), jax.tree.leaves(first['anchor'])))
  assert distances[20.0] < 0.5 * distances[0.0]  # measured: 1.49 vs 5.45


def test_muc_mas_adds_the_side_classifiers_importance(smoke_config, tmp_path):
  # From the same task-0 model, MUC-MAS's importance is MAS's plus 1.4 x the side
  # heads' mean importance: never smaller, and larger somewhere.
  smoke_config.scenario.num_tasks = 1
  smoke_config.mas.output_norm = 'muc'
  smoke_config.mas.importance_batch_size = 32
  smoke_config.muc.side_epochs = 5
  importance = {}
  for method in ('mas', 'muc_mas'):
    smoke_config.method = method
    results = train.run(smoke_config, str(tmp_path / method))
    if method == 'muc_mas':
      assert results['seconds'][0]['importance'] > 0
    checkpoints = Checkpoints(tmp_path / method / 'checkpoints')
    importance[method] = jax.tree.leaves(checkpoints.restore_method_state(0, None)['importance'])
    checkpoints.close()
  differences = [np.asarray(b) - np.asarray(a) for a, b in zip(importance['mas'],
                                                                importance['muc_mas'])]
  assert min(float(d.min()) for d in differences) >= 0
  assert max(float(d.max()) for d in differences) > 0
