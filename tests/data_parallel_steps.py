"""Runs two steps of each train step on fixed global batches; prints what they produced.

`test_data_parallel.py` runs this on 1 and on 8 simulated CPU devices and
compares. Not a test module itself (no `test_` prefix).
"""

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import classifier, consolidation, inversion, parallel
from mfgr_jax.methods import ewc, get_method, rdfcil
from mfgr_jax.methods.abd import ABD_TERMS
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import LOSS_PARAMS, resnet
from mfgr_jax.scenario import Task

AUGMENT = dict(padding=2, flip=True, mean=(0.5,), std=(0.25,))
CONFIG = ml_collections.ConfigDict(dict(
    distillation=dict(temperature=2.0, scale_by_t_squared=False), lwm=dict(attention_weight=1.0),
    rdfcil=dict(lambda_ce=0.5, lambda_hkd=0.15, lambda_rkd=0.5, head_ce_weight=0.5)))


def _fingerprint(tree):
  return [float(np.sum(np.asarray(x, np.float64))) for x in jax.tree_util.tree_leaves(tree)]


def main():
  task = Task(1, (2, 3), 2, 4)
  model, teacher = resnet(18, 4, 4, bn_axis_name='batch'), resnet(18, 2, 4, bn_axis_name='batch')
  generator = Generator(16, 1, latent_dim=8, hidden=8, axis_name='batch')
  teacher_vars = parallel.replicate(
      teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)), train=False))
  # On host: donated device copies must not delete the arrays reused below.
  model_vars = parallel.to_host(
      model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), train=False))
  rng = np.random.default_rng(0)
  batch = parallel.shard({
      'image': rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8),
      'label': (2 + np.arange(16) % 2).astype(np.int32),
      'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(2), 16))})
  out = {'devices': jax.device_count()}

  tx = classifier.make_optimizer(ml_collections.ConfigDict(
      dict(learning_rate=0.05, momentum=0.9, weight_decay=5e-4, schedule='cosine')), 20)
  for method in ('lwf', 'lwm'):
    train_step = classifier.make_train_step(
        model, tx, get_method(method).make_loss(task, CONFIG), AUGMENT, teacher)
    state = parallel.replicate(classifier.init_train_state(model_vars['params'],
                                                           model_vars['batch_stats'], tx))
    for i in range(2):
      state, metrics = train_step(state, batch, teacher_vars, None)
      out[f'{method}_metrics_{i}'] = {k: float(v) for k, v in metrics.items()}
    out[f'{method}_state'] = _fingerprint(state)

  # Plain SGD in stage I so that a wrongly scaled gradient shows (Adam would hide it).
  generator_tx = optax.sgd(0.1)
  config = ml_collections.ConfigDict(dict(
      batch_size=16, diversity_pairs=4,
      weights=dict(one_hot=1.0, class_balance=5.0, activation=0.1, signed_difference=10.0,
                   bn_statistics=20.0, diversity=0.1, content=1.0, normalised_balance=1.0,
                   # The untrained teacher's KL to its BN statistics is ~1e4: a small
                   # weight keeps the SGD step, and so the comparison, well scaled.
                   bn_kl=1e-3, smoothness=0.1)))
  generator_step = inversion.make_generator_step(generator, teacher, generator_tx, config,
                                                 MFGR_TERMS)
  generator_state = parallel.replicate(
      inversion.init_state(generator, jax.random.PRNGKey(3), generator_tx))
  for i in range(2):
    generator_state, metrics = generator_step(generator_state, teacher_vars,
                                              jax.random.PRNGKey(4))
    out[f'generator_metrics_{i}'] = {k: np.asarray(v).tolist() for k, v in metrics.items()}
  out['generator_state'] = _fingerprint(generator_state)
  # ABD's terms on their own: the replay steps below start from MFGR's generator.
  abd_step = inversion.make_generator_step(generator, teacher, generator_tx, config, ABD_TERMS,
                                           content_temperature=10.0)
  abd_state = parallel.replicate(
      inversion.init_state(generator, jax.random.PRNGKey(3), generator_tx))
  for i in range(2):
    abd_state, metrics = abd_step(abd_state, teacher_vars, jax.random.PRNGKey(4))
    out[f'generator_abd_metrics_{i}'] = {k: np.asarray(v).tolist() for k, v in metrics.items()}
  out['generator_abd_state'] = _fingerprint(abd_state)

  # DeepInversion: each device optimises its rows of the pixel batch; plain SGD shows the scale.
  pixel_config = ml_collections.ConfigDict(dict(
      batches=1, batch_size=8, iterations=2, jitter=2, flip=True,
      weights=dict(target_ce=1.0, bn_statistics=20.0, total_variation=2.5e-3, l2_prior=1e-3)))
  pixel_step = inversion.make_pixel_step(teacher, optax.sgd(0.5), pixel_config, num_classes=2)
  pixel_state = parallel.replicate(inversion.init_pixel_state(pixel_config, (16, 16, 1),
                                                              optax.sgd(0.5)))
  for i in range(2):
    pixel_state, metrics = pixel_step(pixel_state, teacher_vars, jax.random.PRNGKey(6))
    out[f'pixels_metrics_{i}'] = {k: np.asarray(v).tolist() for k, v in metrics.items()}
  out['pixels_state'] = _fingerprint(pixel_state)

  # Stage II from a generator (two passes, one pass) and from DeepInversion's pool.
  replays = {'replay0': (classifier.generator_source(generator, 8), generator_state.params, False),
             'replay1': (classifier.generator_source(generator, 8), generator_state.params, True),
             'replay_pool': (classifier.pool_source(8, 8), pixel_state.pool, False)}
  for name, (source, source_arrays, single_pass) in replays.items():
    replay_step = classifier.make_replay_step(
        model, tx, get_method('mfgr').make_loss(task, CONFIG), AUGMENT, teacher, source,
        single_pass=single_pass)
    state = parallel.replicate(classifier.init_train_state(model_vars['params'],
                                                           model_vars['batch_stats'], tx))
    for i in range(2):
      state, metrics = replay_step(state, batch, teacher_vars, source_arrays,
                                   jax.random.PRNGKey(5))
      out[f'{name}_metrics_{i}'] = {k: float(v) for k, v in metrics.items()}
    out[f'{name}_state'] = _fingerprint(state)

  # R-DFCIL: its stage II (the RKD angles span the global batch; the projections are
  # the loss's own parameters) and its head phase (class-weighted CE normalised
  # over the global batch; only the head moves).
  generator_source = classifier.generator_source(generator, 8)
  with_projections = {**model_vars['params'],
                      LOSS_PARAMS: rdfcil.projection_params(32, jax.random.PRNGKey(7))}
  rdfcil_steps = {
      'replay_rdfcil': (classifier.make_replay_step(
          model, tx, rdfcil.make_loss(task, CONFIG), AUGMENT, teacher, generator_source),
          classifier.init_train_state(with_projections, model_vars['batch_stats'], tx)),
      'head_rdfcil': (classifier.make_replay_step(
          model, tx, rdfcil.head_loss(task, CONFIG, [1.0, 3.0, 2.0, 1.5]), AUGMENT, teacher,
          generator_source, head_only=True),
          classifier.init_train_state(model_vars['params'], model_vars['batch_stats'], tx,
                                      'head'))}
  # Labels sorted, so that devices hold different classes and so different total
  # weights: a head CE normalised per device instead of globally would show.
  sorted_batch = parallel.shard({
      'image': rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8),
      'label': np.repeat(np.int32([2, 3]), 8),
      'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(8), 16))})
  for name, (step, state) in rdfcil_steps.items():
    state = parallel.replicate(state)
    for i in range(2):
      state, metrics = step(state, sorted_batch, teacher_vars, generator_state.params,
                            jax.random.PRNGKey(5))
      out[f'{name}_metrics_{i}'] = {k: float(v) for k, v in metrics.items()}
    out[f'{name}_state'] = _fingerprint(state)

  # EWC's per-example Fisher, summed over the global batch (padding weight 0 on the last 3).
  importance_step = consolidation.make_importance_step(
      model, ewc.log_likelihood_of_prediction, jnp.square, (0.5,), (0.25,))
  weights = (np.arange(16) < 13).astype(np.float32)
  fisher = importance_step(parallel.replicate(model_vars), batch['image'], parallel.shard(weights))
  out['importance_metrics_0'] = {'sum': float(sum(np.sum(x) for x in jax.tree.leaves(fisher)))}
  out['importance_metrics_1'] = {'max': float(max(np.max(x) for x in jax.tree.leaves(fisher)))}
  out['importance_state'] = _fingerprint(fisher)
  print(json.dumps(out))


if __name__ == '__main__':
  main()
