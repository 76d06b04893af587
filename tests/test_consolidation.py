"""EWC and MAS: importance against closed forms on a 2-parameter logistic model, the
penalty, merging, and end-to-end runs that carry their state across tasks and resumes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import consolidation, losses, parallel, train
from mfgr_jax.methods import get_method
from mfgr_jax.scenario import Task

from conftest import SMOKE, comparable, kill_9_then_rerun, load_results

# The smoke model is tiny, so its importance is large: FACIL's 5000 would diverge at lr 0.1.
EWC_ARGS = ('--config.method=ewc', '--config.ewc.weight=10', '--config.ewc.importance_batch_size=32')


class Logistic(nn.Module):
  """Two classes with logits (0, x . w): p(y=1 | x) = sigmoid(x . w). No head, no BN."""

  @nn.compact
  def __call__(self, x, train):
    del train
    w = self.param('w', lambda key: jnp.asarray([0.7, -1.3]))
    z = x.reshape(x.shape[0], -1) @ w
    return jnp.stack([jnp.zeros_like(z), z], -1), z


def _images():
  # uint8 "images" of two pixels; normalised with mean 0, std 1/255 they are the values back.
  return np.asarray([[3, 1], [0, 2], [5, 4], [1, 7], [2, 2]], np.uint8).reshape(5, 1, 2, 1)


def _importance(method, score_config=None):
  importance = get_method(method).importance
  step = consolidation.make_importance_step(
      Logistic(), importance.make_score(Task(0, (0, 1), 0, 2), score_config), importance.reduce,
      (0.0,), (1 / 255,))
  variables = {'params': {'w': jnp.asarray([0.7, -1.3])}, 'batch_stats': {}}
  images = _images()
  return np.asarray(step(variables, parallel.shard(images),
                         parallel.shard(np.ones(5, np.float32)))['w']) / 5


def test_ewc_fisher_is_the_mean_of_squared_per_example_gradients():
  x = _images().reshape(5, 2).astype(np.float64)
  z = x @ np.asarray([0.7, -1.3])
  p = 1 / (1 + np.exp(-z))
  # d log p(y^ | x) / dw: (1 - p) x if y^ = 1 (z > 0), else -p x.
  grads = np.where((z > 0)[:, None], (1 - p)[:, None] * x, -p[:, None] * x)
  fisher = _importance('ewc')
  np.testing.assert_allclose(fisher, np.mean(grads**2, 0), rtol=1e-5)
  # Not the square of the batch-mean gradient (a common EWC bug).
  assert not np.allclose(fisher, np.mean(grads, 0)**2, rtol=1e-2)


@pytest.mark.parametrize('norm', ['l2', 'squared_l2'])
def test_mas_importance_is_the_mean_absolute_gradient_of_the_output_norm(norm):
  x = _images().reshape(5, 2).astype(np.float64)
  z = x @ np.asarray([0.7, -1.3])
  # ||(0, z)|| = |z|: gradient sign(z) x; squared: 2 z x.
  grads = np.sign(z)[:, None] * x if norm == 'l2' else 2 * z[:, None] * x
  omega = _importance('mas', ml_collections.ConfigDict(dict(output_norm=norm)))
  np.testing.assert_allclose(omega, np.mean(np.abs(grads), 0), rtol=1e-5)


def test_mas_muc_score_uses_only_the_current_task_logits():
  # With Task(num_old=1) the score is mean((z)^2) over the one new logit: gradient 2 z x.
  x = _images().reshape(5, 2).astype(np.float64)
  z = x @ np.asarray([0.7, -1.3])
  importance = get_method('mas').importance
  step = consolidation.make_importance_step(
      Logistic(), importance.make_score(Task(1, (1,), 1, 2),
                                        ml_collections.ConfigDict(dict(output_norm='muc'))),
      importance.reduce, (0.0,), (1 / 255,))
  variables = {'params': {'w': jnp.asarray([0.7, -1.3])}, 'batch_stats': {}}
  omega = np.asarray(step(variables, parallel.shard(_images()),
                          parallel.shard(np.ones(5, np.float32)))['w']) / 5
  np.testing.assert_allclose(omega, np.mean(np.abs(2 * z[:, None] * x), 0), rtol=1e-5)


def test_padding_with_zero_weight_changes_nothing():
  importance = get_method('ewc').importance
  step = consolidation.make_importance_step(
      Logistic(), importance.make_score(None, None), importance.reduce, (0.0,), (1 / 255,))
  variables = {'params': {'w': jnp.asarray([0.7, -1.3])}, 'batch_stats': {}}
  images = _images()
  padded = np.concatenate([images, np.full((3, 1, 2, 1), 9, np.uint8)])
  a = step(variables, images, np.ones(5, np.float32))['w']
  b = step(variables, padded, np.asarray([1] * 5 + [0] * 3, np.float32))['w']
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_quadratic_penalty_and_merge():
  params, anchor = {'a': jnp.asarray([1.0, 2.0]), 'b': jnp.asarray(3.0)}, {'a': jnp.zeros(2),
                                                                          'b': jnp.asarray(1.0)}
  importance = {'a': jnp.asarray([0.5, 0.25]), 'b': jnp.asarray(2.0)}
  # 0.5*1 + 0.25*4 + 2*4 = 9.5
  assert float(losses.quadratic_penalty(params, anchor, importance)) == pytest.approx(9.5)
  penalty = consolidation.make_penalty(ml_collections.ConfigDict(dict(weight=4.0)))
  head = {'head': {'w': jnp.ones(3)}}  # excluded from the penalty
  assert float(penalty({**params, **head}, {'anchor': anchor, 'importance': importance})) == \
      pytest.approx(0.5 * 4.0 * 9.5)
  new = {'a': jnp.asarray([1.5, 0.75]), 'b': jnp.asarray(0.0)}
  np.testing.assert_allclose(consolidation.merge(importance, new, 'average')['a'], [1.0, 0.5])
  np.testing.assert_allclose(consolidation.merge(importance, new, 'sum')['a'], [2.0, 1.0])
  assert consolidation.merge(None, new, 'sum') is new


@pytest.mark.parametrize('method', ['ewc', 'mas'])
def test_penalty_methods_run_and_resume_with_their_state(smoke_config, tmp_path, method):
  smoke_config.method = method
  # The smoke model is tiny, so its importance is large: FACIL's 5000 would diverge at lr 0.1.
  smoke_config[method].weight = 10.0
  smoke_config[method].importance_batch_size = 32
  results = train.run(smoke_config, str(tmp_path / 'whole'))
  assert len(results['accuracy']) == 3 and 'importance' in results['seconds'][0]
  assert all(np.isfinite(results['accuracy']))
  # Stopping after task 1 and continuing restores the importance and anchor from the checkpoint.
  smoke_config.scenario.num_tasks = 2
  train.run(smoke_config, str(tmp_path / 'split'))
  smoke_config.scenario.num_tasks = 0
  assert comparable(train.run(smoke_config, str(tmp_path / 'split'))) == comparable(results)


def test_penalty_keeps_the_backbone_closer_to_the_old_model(smoke_config, tmp_path):
  # With a penalty the backbone moves less from task 0's; with weight 0 it moves freely.
  from mfgr_jax.checkpoints import Checkpoints
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


def test_kill_9_mid_task_then_rerun_keeps_the_penalty_state(tmp_path, smoke_config):
  smoke_config.method = 'ewc'
  smoke_config.ewc.weight = 10.0
  smoke_config.ewc.importance_batch_size = 32
  uninterrupted = train.run(smoke_config, str(tmp_path / 'whole'))
  # Tasks have 18 steps; kill at a periodic checkpoint inside task 2, which trains with
  # the importance of tasks 0 and 1 restored from the checkpoint of task 1.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 37, 53, f'--config={SMOKE}', *EWC_ARGS)
  assert 'Resuming task 2 at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(uninterrupted)
