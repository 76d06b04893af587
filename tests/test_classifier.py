"""classifier.py: the optimiser against PyTorch's, the train step, and stage II's
replay step."""

import bisect

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mfgr_jax import classifier, parallel
from mfgr_jax.methods import get_method
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task


def test_optimizer_matches_pytorch_sgd_with_coupled_decay_and_cosine():
  config = ml_collections.ConfigDict(dict(learning_rate=0.1, momentum=0.9, weight_decay=5e-4,
                                          schedule='cosine'))
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


@pytest.mark.parametrize('milestones', ['4,8', '0.4,0.8'])
def test_multistep_gives_pytorch_s_rates_from_each_milestone_epoch_on(milestones):
  # torch.optim.lr_scheduler.MultiStepLR(milestones=[4, 8], gamma=0.1), stepped once per
  # epoch: epoch e runs at lr * 0.1 ** (number of milestones <= e).
  epochs, steps_per_epoch = 10, 3
  config = ml_collections.ConfigDict(dict(learning_rate=0.2, schedule='multistep',
                                          milestones=milestones, lr_decay=0.1, epochs=epochs))
  schedule = classifier.learning_rate_schedule(config, epochs * steps_per_epoch)
  for step in range(epochs * steps_per_epoch):
    epoch = step // steps_per_epoch
    expected = 0.2 * 0.1 ** bisect.bisect_right([4, 8], epoch)
    assert float(schedule(step)) == pytest.approx(expected, rel=1e-6), step


@pytest.mark.parametrize('milestones', ['', '80,120', '0.5,0.75', '100'])
def test_milestones_that_parse(milestones):
  assert len(classifier.parse_milestones(milestones)) == len(milestones.split(',')) - (
      not milestones)


@pytest.mark.parametrize('milestones', ['120,80', '0.5,100', '1.5', '0,4', 'x'])
def test_milestones_that_do_not(milestones):
  with pytest.raises(ValueError):
    classifier.parse_milestones(milestones)


def _task_step(method, task, num_classes):
  model = resnet(18, num_classes, width=4, bn_axis_name='batch')
  tx = classifier.make_optimizer(ml_collections.ConfigDict(
      dict(learning_rate=0.05, momentum=0.9, weight_decay=5e-4, schedule='cosine')), 20)
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
    state, metrics = step(state, batch, None, None)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 10
  assert not np.allclose(state.batch_stats['stem_bn']['bn']['mean'], 0.0)


def test_replay_step_threads_bn_statistics_and_leaves_old_model_and_generator_alone():
  teacher = resnet(18, 3, width=4, bn_axis_name=parallel.AXIS)
  teacher_vars = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)), train=False)
  generator = Generator(16, 1, latent_dim=8, hidden=8, axis_name=parallel.AXIS)
  model = resnet(18, 5, width=4, bn_axis_name=parallel.AXIS)
  variables = parallel.to_host(model.init(jax.random.PRNGKey(4), jnp.zeros((1, 16, 16, 1)),
                                          train=False))
  generator_params = parallel.to_host(
      generator.init(jax.random.PRNGKey(5), jnp.zeros((2, 8)))['params'])
  teacher_copy, generator_copy = parallel.to_host(teacher_vars), parallel.to_host(generator_params)
  task = Task(1, (3, 4), 3, 5)
  tx = optax.sgd(0.1)
  config = ml_collections.ConfigDict(dict(
      distillation=dict(temperature=2.0, scale_by_t_squared=False)))
  augment = dict(padding=0, flip=False, mean=(0.5,), std=(0.25,))
  step = classifier.make_replay_step(model, tx, get_method('mfgr').make_loss(task, config),
                                     augment, teacher, classifier.generator_source(generator, 12))
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8),
           'label': np.array([3, 4] * 4, np.int32),
           'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(6), 8))}
  key = jax.random.PRNGKey(7)
  state = classifier.init_train_state(variables['params'], variables['batch_stats'], tx)
  new_state, metrics = step(parallel.replicate(state), parallel.shard(batch),
                            parallel.replicate(teacher_vars), parallel.replicate(generator_params),
                            key)
  # The code's BN statistics: a train-mode pass on the generated batch, then one on the real.
  plain = resnet(18, 5, width=4)
  generated = Generator(16, 1, latent_dim=8, hidden=8).apply(
      {'params': generator_params}, jax.random.normal(jax.random.fold_in(key, 0), (12, 8)))
  _, stats = plain.apply(variables, generated, train=True, mutable=['batch_stats'])
  real = (batch['image'].astype(np.float32) / 255 - 0.5) / 0.25
  _, stats = plain.apply({'params': variables['params'], **stats}, real, train=True,
                         mutable=['batch_stats'])
  for got, want in zip(jax.tree_util.tree_leaves(new_state.batch_stats),
                       jax.tree_util.tree_leaves(stats['batch_stats'])):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  assert {'ce', 'kd_generated', 'kd_real', 'loss'} <= set(metrics)
  for now, before in [(teacher_vars, teacher_copy), (generator_params, generator_copy)]:
    for a, b in zip(jax.tree_util.tree_leaves(now), jax.tree_util.tree_leaves(before)):
      np.testing.assert_array_equal(a, b)


def test_head_only_replay_step_moves_the_head_alone_and_keeps_batch_statistics():
  """A method's head phase: the backbone frozen in eval mode, only params['head'] learns."""
  teacher = resnet(18, 3, width=4, bn_axis_name=parallel.AXIS)
  teacher_vars = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)), train=False)
  generator = Generator(16, 1, latent_dim=8, hidden=8, axis_name=parallel.AXIS)
  generator_params = generator.init(jax.random.PRNGKey(5), jnp.zeros((2, 8)))['params']
  model = resnet(18, 5, width=4, bn_axis_name=parallel.AXIS)
  variables = parallel.to_host(model.init(jax.random.PRNGKey(4), jnp.zeros((1, 16, 16, 1)),
                                          train=False))
  task = Task(1, (3, 4), 3, 5)
  tx = optax.sgd(0.1, momentum=0.9)
  config = ml_collections.ConfigDict(dict(
      distillation=dict(temperature=2.0, scale_by_t_squared=False)))
  step = classifier.make_replay_step(
      model, tx, get_method('mfgr').make_loss(task, config), dict(padding=0, flip=False,
                                                                   mean=(0.5,), std=(0.25,)),
      teacher, classifier.generator_source(generator, 8), head_only=True)
  rng = np.random.default_rng(0)
  batch = {'image': rng.integers(0, 256, (8, 16, 16, 1), dtype=np.uint8),
           'label': np.array([3, 4] * 4, np.int32),
           'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(6), 8))}
  state = classifier.init_train_state(variables['params'], variables['batch_stats'], tx, 'head')
  assert (jax.tree_util.tree_structure(state.opt_state)
          == jax.tree_util.tree_structure(tx.init(variables['params']['head'])))
  new_state, _ = step(parallel.replicate(state), parallel.shard(batch),
                      parallel.replicate(teacher_vars), parallel.replicate(generator_params),
                      jax.random.PRNGKey(7))
  new_state = parallel.to_host(new_state)
  for name, params in variables['params'].items():
    moved = [not np.array_equal(a, b) for a, b in zip(
        jax.tree_util.tree_leaves(new_state.params[name]), jax.tree_util.tree_leaves(params))]
    assert all(moved) if name == 'head' else not any(moved), name
  for a, b in zip(jax.tree_util.tree_leaves(new_state.batch_stats),
                  jax.tree_util.tree_leaves(variables['batch_stats'])):
    np.testing.assert_array_equal(a, b)
