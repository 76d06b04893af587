"""LwM, DeepInversion, iCaRL and MUC: their pieces against hand-computed values, smoke
runs, and resumption (also after kill -9)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
import tensorflow as tf

from mfgr_jax import exemplars, inversion, losses, side_classifiers, train
from mfgr_jax.methods import lwm
from mfgr_jax.models.resnet import classify, resnet

from conftest import (SMOKE, comparable, kill_9_then_rerun, load_results, run_main,
                      tensorboard_tags)

DEEPINVERSION_ARGS = ('--config.method=deepinversion', '--config.deepinversion.batches=2',
                      '--config.deepinversion.iterations=8', '--config.deepinversion.batch_size=32',
                      '--config.checkpoint_every_steps=4')


def scalars(workdir, tag: str) -> list[float]:
  """Every value of the TensorBoard scalar `tag` written in `workdir`."""
  return [float(tf.make_ndarray(value.tensor))
          for path in sorted(workdir.glob('events.out.tfevents.*'))
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value if value.tag == tag]


def test_attention_distillation_is_the_l1_distance_of_l2_normalised_maps():
  student = jnp.asarray([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
  teacher = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])
  # Image 0: (0.6, 0, 0, 0.8) - (1, 0, 0, 0) -> 0.4 + 0.8; image 1: 0 - (0, 1, 0, 0) -> 1.
  np.testing.assert_allclose(losses.attention_distillation_loss(student, teacher),
                             (1.2 + 1.0) / 2, rtol=1e-6)


def test_grad_cam_equals_the_closed_form_of_a_pooled_linear_head():
  # Through global average pooling and a linear head, d logit_c / d A[h, w, k] = W[k, c] / (H W),
  # so Grad-CAM is relu(sum_k W[k, c] A[h, w, k]) / (H W).
  model = resnet(18, 5, width=4)
  variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)), train=False)
  images = jax.random.normal(jax.random.PRNGKey(1), (3, 16, 16, 3))
  forward, _ = classify(model, variables, images, train=False)
  classes = jnp.asarray([4, 0, 2])
  cams = lwm.grad_cam(forward, classes)
  kernel = variables['params']['head']['linear']['dense']['kernel']
  height, width = forward.feature_map.shape[1:3]
  expected = jax.nn.relu(jnp.einsum('nhwk,kn->nhw', forward.feature_map, kernel[:, classes]))
  np.testing.assert_allclose(cams, expected / (height * width), rtol=1e-5, atol=1e-7)
  assert cams.shape == (3, height, width) and float(jnp.max(cams)) > 0
  # The map the loss uses is the model's own last stage.
  np.testing.assert_allclose(forward.features, jnp.mean(forward.feature_map, (1, 2)), rtol=1e-6)


def test_lwm_runs_and_records_its_attention_loss(smoke_config, tmp_path):
  smoke_config.method = 'lwm'
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'lwm' and len(results['accuracy']) == 2
  assert results['accuracy'][1] > 100 / 6  # better than chance over 6 classes
  attention = scalars(tmp_path, 'classifier/attention')
  assert attention and np.all(np.isfinite(attention)) and max(attention) > 0


def _pixel_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      batches=2, batch_size=6, iterations=3, learning_rate=0.05, jitter=2, flip=True,
      weights=dict(target_ce=1.0, bn_statistics=20.0, total_variation=2.5e-3, l2_prior=1e-3)))
  config.update(overrides)
  return config


def test_deepinversion_priors_against_hand_values():
  images = jnp.asarray([[[[1.0], [3.0]], [[0.0], [2.0]]]])  # one 2x2 image
  # Horizontal differences (-2, -2), vertical (1, 1), diagonals (3) and (-1).
  expected = np.sqrt(8) + np.sqrt(2) + 3 + 1
  np.testing.assert_allclose(losses.total_variation_l2_loss(images), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.l2_prior_loss(images), np.sqrt(14), rtol=1e-6)


def test_jitter_shifts_and_flips_the_whole_batch_together():
  images = jnp.arange(2 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5, 1)
  for seed in range(8):
    out = inversion.jitter(images, jax.random.PRNGKey(seed), 2, True)
    matches = [(dy, dx, f) for dy in range(-2, 3) for dx in range(-2, 3) for f in (0, 1)
               if np.array_equal(out, (lambda r: r[:, :, ::-1] if f else r)(
                   jnp.roll(images, (dy, dx), axis=(1, 2))))]
    assert len(matches) == 1  # one shift and one flip decision for every image


def test_pixel_step_descends_the_plain_loss_and_fills_the_pool():
  from mfgr_jax import parallel
  from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics
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


def _finished_smoke_run(tmp_path_factory, name: str, args: tuple[str, ...]):
  """The workdir of an uninterrupted smoke run of `main ARGS`."""
  workdir = tmp_path_factory.mktemp(name)
  proc = run_main(f'--config={SMOKE}', f'--workdir={workdir}', *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


@pytest.fixture(scope='module')
def deepinversion_run(tmp_path_factory):
  return _finished_smoke_run(tmp_path_factory, 'deepinversion', DEEPINVERSION_ARGS)


def test_deepinversion_runs_writes_samples_and_times_its_synthesis(deepinversion_run):
  results = load_results(deepinversion_run)
  assert results['method'] == 'deepinversion' and len(results['accuracy']) == 3
  assert results['seconds'][1]['synthesis'] > 0 and 'generator' not in results['seconds'][1]
  assert results['throughput'][1]['synthesis_images_per_second'] > 0
  assert (deepinversion_run / 'samples' / 'task1.png').exists()
  assert scalars(deepinversion_run, 'synthesis/bn_statistics')
  assert 'synthesis/samples' in tensorboard_tags(deepinversion_run)


def test_deepinversion_killed_mid_synthesis_resumes_identically(tmp_path, deepinversion_run):
  # Smoke tasks have 18 classifier steps; task 1 starts with 2 x 8 synthesis steps
  # (global steps 19-34), checkpointed every 4.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 23, 31, f'--config={SMOKE}', *DEEPINVERSION_ARGS)
  assert 'Resuming task 1 synthesis at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(load_results(deepinversion_run))


ICARL_ARGS = ('--config.method=icarl', '--config.icarl.memory_size=41')


def test_class_quotas_fill_the_memory_exactly_and_evenly():
  np.testing.assert_array_equal(exemplars.class_quotas([100, 100, 100], 41), [14, 14, 13])
  # A class with too few images keeps them all; the others share the rest.
  np.testing.assert_array_equal(exemplars.class_quotas([5, 100, 100], 41), [5, 18, 18])
  np.testing.assert_array_equal(exemplars.class_quotas([5, 6], 41), [5, 6])  # everything
  assert exemplars.class_quotas([96] * 6, 2000).sum() == 6 * 96


def test_herding_picks_the_running_mean_closest_to_the_class_mean():
  features = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
  order = exemplars.herding(features, 4)
  # Step 1: the row nearest to the mean (0.6, 0.6); step 2: the row whose
  # average with it is nearest to the mean.
  target = features.mean(0)
  assert order[0] == int(np.argmin(np.linalg.norm(target - features, axis=1)))
  second = np.linalg.norm(target - (features[order[0]] + features) / 2, axis=1)
  second[order[0]] = np.inf
  assert order[1] == int(np.argmin(second))
  assert sorted(order) == [0, 1, 2, 3]  # each row at most once


def test_memory_update_keeps_each_old_class_prefix():
  memory = np.asarray([10, 11, 12, 20, 21, 22], np.int32)  # classes 0, 0, 0, 1, 1, 1
  classes = np.asarray([0, 0, 0, 1, 1, 1])
  new = exemplars.update_memory(memory, classes, np.asarray([2, 2, 2]), [2],
                                {2: np.asarray([33, 31, 30])})
  np.testing.assert_array_equal(new, [10, 11, 20, 21, 33, 31])


def test_nearest_mean_of_normalised_features():
  features = np.asarray([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
  means = exemplars.class_means(features, np.asarray([0, 0, 1, 1]), 2)
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0)
  np.testing.assert_allclose(means[0], np.asarray([1.8, 0.6]) / np.hypot(1.8, 0.6))
  test = np.asarray([[0.96, 0.28], [-0.28, 0.96]])
  np.testing.assert_array_equal(exemplars.nearest_mean(test, means), [0, 1])


def test_icarl_loss_against_hand_values():
  logits = jnp.asarray([[0.0, 2.0, -1.0]])
  teacher = jnp.asarray([[1.0]])
  # Targets: sigmoid(1) on the old output 0, one-hot label 2 on the new outputs.
  p = 1 / (1 + np.exp(-1.0))
  bce = lambda z, t: -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z))))
  expected = (bce(0.0, p) + bce(2.0, 0.0) + bce(-1.0, 1.0)) / 3  # mean over the 3 outputs
  np.testing.assert_allclose(losses.icarl_distillation_loss(logits, jnp.asarray([2]), teacher),
                             expected, rtol=1e-5)
  # A generated image (label -1) has all-zero new-class targets.
  expected_generated = (bce(0.0, p) + bce(2.0, 0.0) + bce(-1.0, 0.0)) / 3
  np.testing.assert_allclose(losses.icarl_distillation_loss(logits, jnp.asarray([-1]), teacher),
                             expected_generated, rtol=1e-5)


@pytest.fixture(scope='module')
def icarl_run(tmp_path_factory):
  return _finished_smoke_run(tmp_path_factory, 'icarl', ICARL_ARGS)


def _memory(workdir, task):
  from mfgr_jax.checkpoints import Checkpoints
  checkpoints = Checkpoints(workdir / 'checkpoints')
  memory = checkpoints.restore_method_state(task, None)['exemplars']
  checkpoints.close()
  return np.asarray(memory)


def test_icarl_memory_has_the_configured_size_balanced_over_seen_classes(icarl_run):
  from configs import smoke
  from mfgr_jax.data.synthetic import make_synthetic
  results = load_results(icarl_run)
  assert results['method'] == 'icarl' and len(results['accuracy']) == 3
  labels = make_synthetic(**smoke.get_config().data.synthetic)['train'][1]  # identity order
  for task, seen in ((0, 2), (1, 4), (2, 6)):
    memory = _memory(icarl_run, task)
    assert len(memory) == 41 and len(set(memory.tolist())) == 41
    counts = np.bincount(labels[memory], minlength=6)[:seen]
    assert counts.max() - counts.min() <= 1 and counts.sum() == 41
  # Each old class keeps a prefix of its earlier exemplars (herding order).
  before, after = _memory(icarl_run, 0), _memory(icarl_run, 1)
  for c in (0, 1):
    kept = after[labels[after] == c]
    np.testing.assert_array_equal(kept, before[labels[before] == c][:len(kept)])


def test_icarl_killed_mid_task_resumes_with_its_memory(tmp_path, icarl_run):
  # Task 2 trains on 192 new images + 41 exemplars: 7 steps an epoch, 21 steps;
  # tasks 0 and 1 take 18 and 21 steps, so task 2 runs at global steps 40-60.
  workdir = tmp_path / 'killed'
  rerun = kill_9_then_rerun(workdir, 41, 56, f'--config={SMOKE}', *ICARL_ARGS)
  assert 'Resuming task 2 at step' in rerun.stderr
  assert comparable(load_results(workdir)) == comparable(load_results(icarl_run))
  np.testing.assert_array_equal(_memory(workdir, 2), _memory(icarl_run, 2))


def test_icarl_with_generated_images_runs(smoke_config, tmp_path):
  smoke_config.method = 'icarl_mfgr'
  smoke_config.icarl.memory_size = 41
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'icarl_mfgr' and results['seconds'][1]['generator'] > 0
  assert scalars(tmp_path, 'classifier/bce_generated')


def test_pool_targets_cycle_through_the_classes_across_batches():
  # 7 images per batch over 3 classes: batch 1 continues where batch 0 stopped.
  from mfgr_jax import parallel
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


def test_classifier_discrepancy_and_side_heads_against_hand_values():
  probabilities = jnp.asarray([[[0.5, 0.5]], [[1.0, 0.0]], [[0.0, 1.0]]])  # 3 heads, 1 image
  # Pairs (0,1): mean |.| 0.5; (0,2): 0.5; (1,2): 1.0.
  np.testing.assert_allclose(side_classifiers.classifier_discrepancy(probabilities), 2.0)
  heads = {'kernel': jnp.asarray([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]]),
           'bias': jnp.asarray([[0.0, 1.0], [0.5, 0.0]])}
  np.testing.assert_allclose(side_classifiers.side_logits(heads, jnp.asarray([[3.0, 4.0]])),
                             [[[3.0, 5.0]], [[6.5, 0.0]]])


def test_side_heads_fit_their_labels_and_disagree_off_distribution():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 40)
  centres = np.eye(3, 8) * 4.0
  features = (centres[labels] + rng.normal(0, 0.3, (120, 8))).astype(np.float32)
  auxiliary = rng.normal(0, 2.0, (200, 8)).astype(np.float32)
  config = ml_collections.ConfigDict(dict(side_heads=3, side_epochs=40, side_learning_rate=0.1,
                                          side_batch_size=32))
  heads, metrics = side_classifiers.train_side_heads(features, labels, auxiliary, config,
                                                     jax.random.PRNGKey(0))
  logits = side_classifiers.side_logits(heads, features)
  assert logits.shape == (3, 120, 3)
  assert all(float(jnp.mean(jnp.argmax(l, -1) == labels)) == 1.0 for l in logits)
  untrained = side_classifiers.init_side_heads(jax.random.PRNGKey(0), 3, 8, 3)
  before = side_classifiers.classifier_discrepancy(
      jax.nn.softmax(side_classifiers.side_logits(untrained, auxiliary)))
  assert metrics['discrepancy'] > float(before)


def test_muc_lwf_runs_distils_side_heads_and_resumes(smoke_config, tmp_path):
  smoke_config.method = 'muc_lwf'
  smoke_config.muc.side_epochs = 5
  smoke_config.scenario.num_tasks = 2
  first = train.run(smoke_config, str(tmp_path / 'a'))
  assert first['method'] == 'muc_lwf' and first['seconds'][0]['side_classifiers'] > 0
  assert scalars(tmp_path / 'a', 'classifier/kd_side')
  # Stopping after task 1 and going on to task 2 restores the side heads of task 1.
  smoke_config.scenario.num_tasks = 3
  resumed = train.run(smoke_config, str(tmp_path / 'a'))
  whole = train.run(smoke_config, str(tmp_path / 'b'))
  assert comparable(resumed) == comparable(whole)


def test_muc_mas_adds_the_side_classifiers_importance(smoke_config, tmp_path):
  # From the same task-0 model, MUC-MAS's importance is MAS's plus 1.4 x the side
  # heads' mean importance: never smaller, and larger somewhere.
  from mfgr_jax.checkpoints import Checkpoints
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
