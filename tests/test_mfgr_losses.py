"""Stage I losses against hand-computed values, and the stage I step's gradients."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mfgr_jax import inversion, losses, parallel
from mfgr_jax.models.generator import Generator, generator_features
from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics
from mfgr_jax.models.resnet import resnet


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_one_hot_loss_is_ce_against_own_argmax():
  logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.5]], np.float32)
  expected = -np.mean(np.log([_softmax(logits[0])[0], _softmax(logits[1])[1]]))
  assert float(losses.one_hot_loss(logits)) == pytest.approx(expected, rel=1e-6)
  # The argmax target is not differentiated: the gradient is softmax - onehot.
  grad = jax.grad(losses.one_hot_loss)(jnp.asarray(logits))
  np.testing.assert_allclose(grad, (_softmax(logits) - np.eye(3)[[0, 1]]) / 2, rtol=1e-5)


def test_class_balance_loss_is_log10_and_minimal_when_balanced():
  p = np.array([0.5, 0.25, 0.25, 0.0])
  expected = 0.5 * np.log10(0.5) + 2 * 0.25 * np.log10(0.25)  # 0 log 0 = 0
  assert float(losses.class_balance_loss(p)) == pytest.approx(expected, rel=1e-6)
  assert float(losses.class_balance_loss(np.full(20, 0.05))) == pytest.approx(-np.log10(20), rel=1e-6)


def test_activation_loss():
  assert float(losses.activation_loss(np.array([[1.0, -3.0], [0.5, 0.5]]))) == pytest.approx(-1.25)


def test_signed_difference_loss_by_hand():
  image = np.array([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.0]], np.float32)
  x = image[None, :, :, None]
  h = np.mean(image[:, :-1] - image[:, 1:])
  v = np.mean(image[:-1] - image[1:])
  d1 = np.mean(image[1:, :-1] - image[:-1, 1:])
  d2 = np.mean(image[:-1, :-1] - image[1:, 1:])
  expected = (abs(h) + abs(v) + abs(d1) + abs(d2)) / 4
  assert float(losses.signed_difference_loss(x)) == pytest.approx(expected, rel=1e-6)


def test_bn_statistics_loss_by_hand_and_safe_at_zero():
  layers = [
      {'mean': jnp.array([1.0, 2.0]), 'var': jnp.array([1.0, 1.0]),
       'running_mean': jnp.array([1.0, 0.0]), 'running_var': jnp.array([4.0, 5.0])},
      {'mean': jnp.array([0.0]), 'var': jnp.array([2.0]),
       'running_mean': jnp.array([0.0]), 'running_var': jnp.array([2.0])},
  ]
  # layer 1: ||(-3, -4)|| + ||(0, 2)|| = 5 + 2; layer 2: 0. Mean over layers: 3.5.
  assert float(losses.bn_statistics_loss(layers)) == pytest.approx(3.5)
  grad = jax.grad(lambda m: losses.bn_statistics_loss([{**layers[1], 'mean': m}]))(jnp.array([0.0]))
  assert np.all(np.isfinite(grad))


def test_pixel_diversity_loss_is_minus_symmetric_kl():
  images = np.random.default_rng(0).normal(size=(2, 3, 3, 1)).astype(np.float32)
  p, q = _softmax(images[0].ravel()), _softmax(images[1].ravel())
  expected = -0.5 * (np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))
  got = losses.pixel_diversity_loss(images, jax.random.PRNGKey(0), num_pairs=1)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  identical = np.repeat(images[:1], 4, axis=0)
  assert float(losses.pixel_diversity_loss(identical, jax.random.PRNGKey(0), 2)) == pytest.approx(0, abs=1e-6)
  with pytest.raises(ValueError, match='diversity pairs'):
    losses.pixel_diversity_loss(identical, jax.random.PRNGKey(0), 3)


def test_bn_statistics_loss_vanishes_when_batch_matches_running_statistics():
  model = resnet(18, 3, width=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
  # Train mode normalises with the batch statistics; copy them into the running
  # statistics, and the eval-mode pass sees exactly the same BN inputs.
  _, state = model.apply(variables, x, train=True, mutable=['batch_stats', BN_INPUT_MOMENTS])
  layers = bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats'])
  running = jax.tree_util.tree_map(lambda a: a, variables['batch_stats'])
  from flax import traverse_util
  flat = traverse_util.flatten_dict(running)
  paths = sorted(p[:-1] for p in traverse_util.flatten_dict(state[BN_INPUT_MOMENTS]) if p[-1] == 'moments')
  assert len(paths) == len(layers) == 20
  for path, layer in zip(paths, layers):
    flat[path + ('bn', 'mean')], flat[path + ('bn', 'var')] = layer['mean'], layer['var']
  matched = {**variables, 'batch_stats': traverse_util.unflatten_dict(flat)}
  _, state = model.apply(matched, x, train=False, mutable=[BN_INPUT_MOMENTS])
  loss = losses.bn_statistics_loss(bn_input_statistics(state[BN_INPUT_MOMENTS], matched['batch_stats']))
  assert float(loss) < 1e-3
  _, state = model.apply(variables, x, train=False, mutable=[BN_INPUT_MOMENTS])
  assert float(losses.bn_statistics_loss(
      bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats']))) > 0.1


ALL_TERMS = inversion.GENERATOR_TERMS + ('target_ce', 'total_variation', 'l2_prior')


def _tiny_stage_one():
  teacher = resnet(18, 3, width=4, bn_axis_name=parallel.AXIS)
  teacher_vars = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)), train=False)
  generator = Generator(16, 1, latent_dim=8, hidden=8, axis_name=parallel.AXIS)
  config = ml_collections.ConfigDict(dict(
      batch_size=16, diversity_pairs=4, learning_rate=0.01,
      weights=dict(one_hot=1.0, class_balance=5.0, activation=0.1, signed_difference=10.0,
                   bn_statistics=20.0, diversity=0.1)))
  return teacher, teacher_vars, generator, config


def test_generator_step_descends_the_plain_single_device_loss():
  """Loss and gradient of the data-parallel step equal a plain jax.grad of the formula."""
  teacher, teacher_vars, generator, config = _tiny_stage_one()
  tx = optax.sgd(1.0)  # update = -gradient, so the gradient's scale is checked too
  state = parallel.to_host(inversion.init_state(generator, jax.random.PRNGKey(2), tx))
  key = jax.random.PRNGKey(3)
  step = inversion.make_generator_step(generator, teacher, tx, config, inversion.GENERATOR_TERMS)
  new_state, metrics = step(parallel.replicate(state), parallel.replicate(teacher_vars), key)

  plain_generator = Generator(16, 1, latent_dim=8, hidden=8)
  plain_teacher = resnet(18, 3, width=4)
  noise_key, pair_key = jax.random.split(jax.random.fold_in(key, 0))
  z = jax.random.normal(noise_key, (16, 8))

  def plain_loss(params):
    images = plain_generator.apply({'params': params}, z)
    (logits, features), moments = plain_teacher.apply(teacher_vars, images, train=False,
                                                      mutable=[BN_INPUT_MOMENTS])
    w = config.weights
    return (w.one_hot * losses.one_hot_loss(logits)
            + w.class_balance * losses.class_balance_loss(jnp.mean(jax.nn.softmax(logits), 0))
            + w.activation * losses.activation_loss(features)
            + w.signed_difference * losses.signed_difference_loss(images)
            + w.bn_statistics * losses.bn_statistics_loss(
                bn_input_statistics(moments[BN_INPUT_MOMENTS], teacher_vars['batch_stats']))
            + w.diversity * losses.pixel_diversity_loss(images, pair_key, 4))

  loss, grads = jax.value_and_grad(plain_loss)(state.params)
  assert float(metrics['loss']) == pytest.approx(float(loss), rel=1e-5)
  assert int(np.sum(metrics['class_counts'])) == 16
  deltas = jax.tree_util.tree_map(lambda new, old: old - new, new_state.params, state.params)
  for got, want in zip(jax.tree_util.tree_leaves(deltas), jax.tree_util.tree_leaves(grads)):
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6)


def test_stage_one_gradient_reaches_only_the_generator():
  teacher, teacher_vars, generator, config = _tiny_stage_one()
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)))['params']

  def total(teacher_vars, params, z):
    images = generator.apply({'params': params}, z)
    values, _ = inversion.inversion_loss_terms(teacher, teacher_vars, images, ALL_TERMS,
                                               jax.random.PRNGKey(1), 4, jnp.arange(16) % 3)
    return parallel.pmean(sum(values.values()))

  grad_fn = parallel.data_parallel(
      jax.grad(total, argnums=(0, 1)), in_specs=(parallel.REPLICATED,) * 2 + (parallel.SHARDED,),
      out_specs=parallel.REPLICATED)
  teacher_grads, generator_grads = grad_fn(teacher_vars, params,
                                           jax.random.normal(jax.random.PRNGKey(2), (16, 8)))
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree_util.tree_leaves(teacher_grads))
  assert any(np.any(np.asarray(g) != 0) for g in jax.tree_util.tree_leaves(generator_grads))


def test_generator_output_is_standardised_per_channel():
  generator = Generator(28, 1, latent_dim=16, hidden=8)
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)))
  images = generator.apply(params, jax.random.normal(jax.random.PRNGKey(1), (64, 16)))
  assert images.shape == (64, 28, 28, 1)
  assert float(jnp.mean(images)) == pytest.approx(0.0, abs=1e-4)
  assert float(jnp.std(images)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize('size,channels,params', [(32, 3, 8_423_939), (64, 3, 33_024_515)])
def test_generator_sizes(size, channels, params):
  # DAFL's Generator32: Linear(1000, 8192) + BN + 3 convs; the 64-px one starts at 16x16.
  generator = Generator(size, channels)
  shapes = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 1000))))
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == params


def test_pyramid_generator_256_resized_to_224():
  # Generator256 (spec §2.2): 4x4 start, six up+conv blocks 256,128,64,32,16,8, conv to 3.
  generator = Generator(256, 3, latent_dim=1000, hidden=256, architecture='pyramid',
                        output_size=224)
  shapes = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 1000))))
  convs = [v['kernel'].shape for k, v in sorted(shapes['params'].items(), key=lambda kv: int(
      kv[0].split('_')[-1])) if k.startswith('Conv')]
  assert convs == [(3, 3, 256, 256), (3, 3, 256, 128), (3, 3, 128, 64), (3, 3, 64, 32),
                   (3, 3, 32, 16), (3, 3, 16, 8), (3, 3, 8, 3)]
  assert shapes['params']['Linear_0']['dense']['kernel'].shape == (1000, 256 * 4 * 4)
  out = jax.eval_shape(lambda: generator.apply(generator.init(
      jax.random.PRNGKey(0), jnp.zeros((2, 1000))), jnp.zeros((2, 1000))))
  assert out.shape == (2, 224, 224, 3)


def test_generator_resize_is_half_pixel_bilinear_without_antialiasing():
  # PyTorch's F.interpolate(bilinear, align_corners=False) halving a side samples at input
  # coordinates 0.5, 2.5, ...: each output pixel is the mean of a 2x2 block (antialiasing
  # would blur wider).
  full = Generator(16, 1, latent_dim=8, hidden=8)
  halved = Generator(16, 1, latent_dim=8, hidden=8, output_size=8)
  params = full.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
  big, small = full.apply(params, z), halved.apply(params, z)
  blocks = np.asarray(big).reshape(4, 8, 2, 8, 2, 1).mean((2, 4))
  np.testing.assert_allclose(np.asarray(small), blocks, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('architecture,size', [('dafl', 30), ('pyramid', 48), ('pyramid', 4),
                                               ('gan', 32)])
def test_impossible_generator_sizes_are_refused(architecture, size):
  with pytest.raises(ValueError, match='generator'):
    generator_features(architecture, 64, size)


def test_replay_step_threads_bn_statistics_and_leaves_old_model_and_generator_alone():
  from mfgr_jax import classifier
  from mfgr_jax.methods import get_method
  from mfgr_jax.scenario import Task
  teacher, teacher_vars, generator, _ = _tiny_stage_one()
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
  new_state, metrics = step(parallel.replicate(state), parallel.replicate(teacher_vars),
                            parallel.replicate(generator_params), parallel.shard(batch), key)
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
