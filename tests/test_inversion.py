"""inversion.py, stage I's steps: MFGR's and ABD's generator steps against the
plain single-device loss and its gradients, and DeepInversion's pixel step (jitter,
the pool it fills, the classes it targets)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mfgr_jax import inversion, losses, parallel
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics
from mfgr_jax.methods.abd import ABD_TERMS
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.models.resnet import resnet


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


def _one_generator_step(terms, *step_args, **step_kwargs):
  """One data-parallel generator step with plain SGD at lr 1 (so the update is minus the
  gradient, its scale checked too); returns what a plain single-device check needs:
  (teacher_vars, config, state before, state after, metrics, its noise z, its pair key)."""
  teacher, teacher_vars, generator, config = _tiny_stage_one()
  tx = optax.sgd(1.0)
  state = parallel.to_host(inversion.init_state(generator, jax.random.PRNGKey(2), tx))
  key = jax.random.PRNGKey(3)
  step = inversion.make_generator_step(generator, teacher, tx, config, terms, *step_args,
                                       **step_kwargs)
  new_state, metrics = step(parallel.replicate(state), parallel.replicate(teacher_vars), key)
  noise_key, pair_key = jax.random.split(jax.random.fold_in(key, 0))
  return (teacher_vars, config, state, new_state, metrics, jax.random.normal(noise_key, (16, 8)),
          pair_key)


def test_generator_step_descends_the_plain_single_device_loss():
  """Loss and gradient of the data-parallel step equal a plain jax.grad of the formula."""
  teacher_vars, config, state, new_state, metrics, z, pair_key = _one_generator_step(MFGR_TERMS)
  plain_generator = Generator(16, 1, latent_dim=8, hidden=8)
  plain_teacher = resnet(18, 3, width=4)

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


def test_abd_generator_step_is_its_weighted_terms_from_the_method_section():
  """ABD's terms, weighted by the weights given (not `config.weights`) and with the
  content temperature, equal the plain formula; the update is minus its gradient."""
  weights = dict(content=1.0, normalised_balance=1.0, bn_kl=50.0, smoothness=1e-3)
  teacher_vars, _, state, new_state, metrics, z, _ = _one_generator_step(
      ABD_TERMS, weights, content_temperature=1000.0)
  plain_generator, plain_teacher = Generator(16, 1, latent_dim=8, hidden=8), resnet(18, 3, width=4)

  def plain_terms(params):
    images = plain_generator.apply({'params': params}, z)
    (logits, _), moments = plain_teacher.apply(teacher_vars, images, train=False,
                                               mutable=[BN_INPUT_MOMENTS])
    layers = bn_input_statistics(moments[BN_INPUT_MOMENTS], teacher_vars['batch_stats'])
    return {'content': losses.content_loss(logits, 1000.0),
            'normalised_balance': losses.normalised_class_balance_loss(
                jnp.mean(jax.nn.softmax(logits), 0)),
            'bn_kl': losses.bn_kl_loss(layers), 'smoothness': losses.smoothness_prior_loss(images)}

  plain_loss = lambda params: sum(weights[t] * v for t, v in plain_terms(params).items())
  loss, grads = jax.value_and_grad(plain_loss)(state.params)
  for term, value in plain_terms(state.params).items():  # each term, unweighted
    assert float(metrics[term]) == pytest.approx(float(value), rel=1e-5), term
  assert float(metrics['loss']) == pytest.approx(float(loss), rel=1e-5)
  deltas = jax.tree_util.tree_map(lambda new, old: old - new, new_state.params, state.params)
  # The untrained teacher's BN statistics make the KL term ~1e4 and gradients ~1e6;
  # the biases before a BN have a true gradient of 0, and float32 noise there
  # scales with the largest gradient, hence the tolerance relative to it.
  largest = max(float(np.max(np.abs(g))) for g in jax.tree_util.tree_leaves(grads))
  for got, want in zip(jax.tree_util.tree_leaves(deltas), jax.tree_util.tree_leaves(grads)):
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=1e-6 * largest)


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


def _pixel_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      batches=2, batch_size=6, iterations=3, learning_rate=0.05, jitter=2, flip=True,
      weights=dict(target_ce=1.0, bn_statistics=20.0, total_variation=2.5e-3, l2_prior=1e-3)))
  config.update(overrides)
  return config


def test_jitter_shifts_and_flips_the_whole_batch_together():
  images = jnp.arange(2 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5, 1)
  for seed in range(8):
    out = inversion.jitter(images, jax.random.PRNGKey(seed), 2, True)
    matches = [(dy, dx, f) for dy in range(-2, 3) for dx in range(-2, 3) for f in (0, 1)
               if np.array_equal(out, (lambda r: r[:, :, ::-1] if f else r)(
                   jnp.roll(images, (dy, dx), axis=(1, 2))))]
    assert len(matches) == 1  # one shift and one flip decision for every image


def test_pixel_step_descends_the_plain_loss_and_fills_the_pool():
  config = _pixel_config()
  teacher = resnet(18, 3, width=4, bn_axis_name=parallel.AXIS)
  teacher_vars = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 1)), train=False)
  tx = optax.sgd(1.0)  # update = -gradient, so the gradient's scale is checked too
  step = inversion.make_pixel_step(teacher, tx, config, num_classes=3)
  state = parallel.replicate(inversion.init_pixel_state(config, (8, 8, 1), tx))
  key = jax.random.PRNGKey(2)
  replicated_teacher = parallel.replicate(teacher_vars)
  state, metrics = step(state, replicated_teacher, key)

  plain_teacher = resnet(18, 3, width=4)
  noise_key, jitter_key = jax.random.split(jax.random.fold_in(key, 0))  # batch 0's keys
  start = jax.random.normal(noise_key, (6, 8, 8, 1))
  targets = jnp.asarray([0, 1, 2, 0, 1, 2])  # class-balanced

  def plain_loss(pixels):
    images = inversion.jitter(pixels, jax.random.fold_in(jitter_key, 0), 2, True)
    (logits, _), moments = plain_teacher.apply(teacher_vars, images, train=False,
                                               mutable=[BN_INPUT_MOMENTS])
    w = config.weights
    return (w.target_ce * losses.cross_entropy(logits, targets)
            + w.bn_statistics * losses.bn_statistics_loss(
                bn_input_statistics(moments[BN_INPUT_MOMENTS], teacher_vars['batch_stats']))
            + w.total_variation * losses.total_variation_l2_loss(images)
            + w.l2_prior * losses.l2_prior_loss(images))

  loss, grads = jax.value_and_grad(plain_loss)(start)
  assert float(metrics['loss']) == pytest.approx(float(loss), rel=1e-5)
  np.testing.assert_allclose(state.pixels, start - grads, rtol=1e-4, atol=1e-6)
  assert not np.any(np.asarray(state.pool))  # batch 0 is not finished yet

  for _ in range(2):
    state, _ = step(state, replicated_teacher, key)
  first_batch = np.asarray(state.pixels)
  np.testing.assert_array_equal(state.pool[:6], first_batch)  # written after its last iteration
  assert not np.any(np.asarray(state.pool[6:]))
  state, _ = step(state, replicated_teacher, key)  # batch 1 starts from fresh noise
  fresh = jax.random.normal(jax.random.split(jax.random.fold_in(key, 1))[0], (6, 8, 8, 1))
  assert float(jnp.max(jnp.abs(state.pixels - fresh))) < 10 * float(jnp.max(jnp.abs(grads)))
  assert not np.allclose(state.pixels, first_batch)
  for _ in range(2):
    state, _ = step(state, replicated_teacher, key)
  np.testing.assert_array_equal(state.pool[6:], state.pixels)
  np.testing.assert_array_equal(state.pool[:6], first_batch)


def test_pool_targets_cycle_through_the_classes_across_batches():
  # 7 images per batch over 3 classes: batch 1 continues where batch 0 stopped.
  config = _pixel_config(batches=3, batch_size=7, iterations=1,
                         weights=dict(target_ce=1.0, bn_statistics=0.0, total_variation=0.0,
                                      l2_prior=0.0))
  teacher = resnet(18, 3, width=4, bn_axis_name=parallel.AXIS)
  teacher_vars = parallel.replicate(
      teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 8, 8, 1)), train=False))
  tx = optax.sgd(0.0)
  step = inversion.make_pixel_step(teacher, tx, config, num_classes=3)
  state = parallel.replicate(inversion.init_pixel_state(config, (8, 8, 1), tx))
  ces = []
  for _ in range(3):
    state, metrics = step(state, teacher_vars, jax.random.PRNGKey(2))
    ces.append(float(metrics['target_ce']))
  # With lr 0 the pool is the initial noise; recompute each batch's CE with its targets.
  plain = resnet(18, 3, width=4)
  variables = jax.device_get(teacher_vars)
  for batch in range(3):
    pixels = state.pool[7 * batch:7 * (batch + 1)]
    jitter_key = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(2), batch))[1]
    logits, _ = plain.apply(variables, inversion.jitter(pixels, jax.random.fold_in(jitter_key, 0),
                                                        2, True), train=False)
    targets = (7 * batch + jnp.arange(7)) % 3
    assert ces[batch] == pytest.approx(float(losses.cross_entropy(logits, targets)), rel=1e-5)


def test_running_statistics_change_no_training_step_and_follow_the_batch():
  # Tracking running statistics adds them to the state; the training forward pass (batch
  # statistics) and so the parameters are bitwise those of the generator without them.
  teacher, teacher_vars, generator, config = _tiny_stage_one()
  tracked = Generator(16, 1, latent_dim=8, hidden=8, axis_name=parallel.AXIS,
                      track_running_statistics=True)
  tx = optax.adam(0.01)
  states, steps = [], []
  for each in (generator, tracked):
    states.append(parallel.replicate(inversion.init_state(each, jax.random.PRNGKey(2), tx)))
    steps.append(inversion.make_generator_step(each, teacher, tx, config, MFGR_TERMS))
  for i in range(2):
    for j in range(2):
      states[j], _ = steps[j](states[j], parallel.replicate(teacher_vars), jax.random.PRNGKey(3))
  plain, with_stats = parallel.to_host(states[0]), parallel.to_host(states[1])
  assert type(plain) is inversion.GeneratorState  # the layout old checkpoints hold
  assert jax.tree.all(jax.tree.map(np.array_equal, plain.params, with_stats.params))
  means = [np.asarray(v) for v in jax.tree.leaves(with_stats.batch_stats)]
  assert all(np.all(np.isfinite(m)) for m in means) and any(np.any(m != 0) for m in means)
  # Sampling with them differs from sampling with the batch's statistics.
  sample = inversion.make_sampler(tracked, 16)
  key = jax.random.PRNGKey(4)
  running = sample(parallel.replicate(with_stats.variables()), key)
  batch = inversion.make_sampler(generator, 16)(parallel.replicate(plain.variables()), key)
  assert np.all(np.isfinite(running)) and not np.allclose(running, batch)
