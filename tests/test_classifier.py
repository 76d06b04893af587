import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import classifier
from mfgr_jax.methods import get_method
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task


def test_optimizer_matches_pytorch_sgd_with_coupled_decay_and_cosine():
  config = ml_collections.ConfigDict(dict(learning_rate=0.1, momentum=0.9, weight_decay=5e-4))
  total = 4
  tx = classifier.make_optimizer(config, total)
  params = {'w': jnp.array([1.0, -2.0])}
  state = tx.init(params)
  grad_fn = jax.grad(lambda p: jnp.sum(p['w'] ** 2 * jnp.array([1.0, 3.0])))
  # torch.optim.SGD(lr, momentum, weight_decay) + CosineAnnealingLR(T_max=total) stepped per batch.
  p, buf = np.array([1.0, -2.0]), None
  for t in range(3):
    g = np.array([2.0, 6.0]) * p + 5e-4 * p
    buf = g if buf is None else 0.9 * buf + g
    p = p - 0.1 * 0.5 * (1 + np.cos(np.pi * t / total)) * buf
    updates, state = tx.update(grad_fn(params), state, params)
    params = optax.apply_updates(params, updates)
    np.testing.assert_allclose(params['w'], p, rtol=1e-6)


def _task_step(method, task, num_classes):
  model = resnet(18, num_classes, width=4, bn_axis_name='batch')
  tx = classifier.make_optimizer(ml_collections.ConfigDict(
      dict(learning_rate=0.05, momentum=0.9, weight_decay=5e-4)), 20)
  config = ml_collections.ConfigDict(dict(
      distillation=dict(temperature=2.0, scale_by_t_squared=False), lwm=dict(attention_weight=1.0)))
  step = classifier.make_train_step(model, tx, get_method(method).make_loss(task, config),
                                    dict(padding=2, flip=True, mean=(0.5,), std=(0.25,)))
  return model, tx, step


def test_train_step_learns_and_updates_batch_stats():
  task = Task(0, (0, 1, 2), 0, 3)
  model, tx, step = _task_step('finetune', task, 3)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), train=False)
  state = classifier.init_train_state(variables['params'], variables['batch_stats'], tx)
  rng = np.random.default_rng(0)
  labels = np.arange(24, dtype=np.int32) % 3
  images = (labels[:, None, None, None] * 100 + rng.integers(0, 30, (24, 16, 16, 1))).astype(np.uint8)
  batch = {'image': images, 'label': labels,
           'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(1), 24))}
  losses = []
  for _ in range(10):
    state, metrics = step(state, None, batch, None)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 10
  assert not np.allclose(state.batch_stats['stem_bn']['bn']['mean'], 0.0)
