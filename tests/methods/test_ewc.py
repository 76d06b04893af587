"""ewc: the Fisher at the model's own prediction against its closed form, the
penalised loss, and what ewc.py shares with every quadratic-penalty method:
runs that carry {anchor, importance} across tasks and resume with it (MAS; EWC:
end_to_end/test_every_method.py)."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import train
from mfgr_jax.methods import ewc

from conftest import comparable
import logistic_model
import loss_references as ref


def test_ewc_fisher_is_the_mean_of_squared_per_example_gradients():
  x, z = logistic_model.inputs_and_logits()
  p = 1 / (1 + np.exp(-z))
  # d log p(y^ | x) / dw: (1 - p) x if y^ = 1 (z > 0), else -p x.
  grads = np.where((z > 0)[:, None], (1 - p)[:, None] * x, -p[:, None] * x)
  fisher = logistic_model.mean_importance(ewc.log_likelihood_of_prediction, jnp.square)
  np.testing.assert_allclose(fisher, np.mean(grads**2, 0), rtol=1e-5)
  # Not the square of the batch-mean gradient (a common EWC bug).
  assert not np.allclose(fisher, np.mean(grads, 0)**2, rtol=1e-2)


def test_loss_is_cut_ce_plus_the_penalty_on_the_backbone_once_a_task_is_consolidated():
  config = ml_collections.ConfigDict(dict(ewc=dict(weight=4.0)))
  make_loss = ewc.make_penalised_loss('ewc')
  params = {'conv': {'w': jnp.asarray([1.0, 2.0])}, 'head': {'w': jnp.asarray([7.0])}}
  method_state = {'anchor': {'conv': {'w': jnp.asarray([0.0, 1.0])}},
                  'importance': {'conv': {'w': jnp.asarray([0.5, 3.0])}}}
  out = ref.forward(ref.LOGITS, params)
  value, metrics = make_loss(ref.TASK, config)(out, ref.LABELS, None, method_state)
  ce = ref.cut_cross_entropy(ref.LOGITS, ref.LABELS, 2)
  penalty = 0.5 * 4.0 * (0.5 * 1.0**2 + 3.0 * 1.0**2)  # the head is not penalised
  assert float(value) == pytest.approx(ce + penalty, rel=1e-5)
  assert float(metrics['penalty']) == pytest.approx(penalty, rel=1e-6)


# EWC's state survives kill -9 inside a task: end_to_end/test_every_method.py.
@pytest.mark.parametrize('method', ['mas'])
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
