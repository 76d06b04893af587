"""rdfcil (methods/rdfcil.py): stage II's loss and the head phase's loss by hand,
the projections its loss owns, the estimated class counts, and task 0. (Its loss
terms: test_losses.py; the head-only step: test_classifier.py; across devices:
test_data_parallel.py; whole runs and kill -9: end_to_end/test_dfcil_runs.py.)"""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import parallel
from mfgr_jax.experiment import build_experiment
from mfgr_jax.methods import get_method, rdfcil
from mfgr_jax.models.resnet import LOSS_PARAMS, Forward
from mfgr_jax.scenario import Task
from mfgr_jax.stage_one import generated_batch_size

import loss_references as ref

CONFIG = ml_collections.ConfigDict(dict(rdfcil=dict(
    lambda_ce=0.5, lambda_hkd=0.15, lambda_rkd=0.5, head_ce_weight=0.5)))
TASK = Task(1, (2, 3, 4, 5), 2, 6)  # 2 old classes, 4 new
RNG = np.random.default_rng(0)
REAL, REAL_OLD = RNG.normal(size=(4, 3)).astype(np.float32), RNG.normal(size=(4, 3)).astype(np.float32)
REAL_LOGITS = RNG.normal(size=(4, 6)).astype(np.float32)
GENERATED_LOGITS = RNG.normal(size=(3, 6)).astype(np.float32)
GENERATED_OLD_LOGITS = RNG.normal(size=(3, 2)).astype(np.float32)
LABELS = np.array([2, 5, 3, 4], np.int32)
PROJECTIONS = jax.tree.map(np.asarray, rdfcil.projection_params(3, jax.random.PRNGKey(0)))


def rkd_angle_reference(student: np.ndarray, teacher: np.ndarray) -> float:
  """The mean over every triple (i, j, k) of |cos angle_s - cos angle_t| at point i."""
  def cosine(e, i, j, k):
    u, v = e[j] - e[i], e[k] - e[i]
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    return 0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv))
  n = len(student)
  return float(np.mean([abs(cosine(student, *t) - cosine(teacher, *t))
                        for t in itertools.product(range(n), repeat=3)]))


def _forward(logits, features=None, params=None):
  features = None if features is None else jnp.asarray(features)
  logits = None if logits is None else jnp.asarray(logits)
  return Forward(logits, features, None, params)


def _on_devices(loss):
  """The loss's (value, metrics) run in a data-parallel body, as in a step (its
  RKD gathers the batch, its head CE averages the total weight over devices)."""
  def body(real_logits, real_features, labels, real_old, generated, generated_old):
    value, metrics = loss(_forward(real_logits, real_features, {LOSS_PARAMS: PROJECTIONS}),
                          labels, _forward(None, real_old), _forward(generated),
                          _forward(generated_old))
    return parallel.pmean((value, metrics))
  mapped = parallel.data_parallel(body, in_specs=(parallel.SHARDED,) * 6,
                                  out_specs=parallel.REPLICATED)
  return mapped(REAL_LOGITS, REAL, LABELS, REAL_OLD, GENERATED_LOGITS, GENERATED_OLD_LOGITS)


def test_stage_two_loss_by_hand():
  value, metrics = _on_devices(get_method('rdfcil').make_loss(TASK, CONFIG))
  # a = log2(4/2 + 1), b = sqrt(2/4).
  a, b = np.log2(3.0), np.sqrt(0.5)
  local_ce = ref.cut_cross_entropy(REAL_LOGITS, LABELS, 2)
  hkd = np.mean(np.abs(GENERATED_LOGITS[:, :2] - GENERATED_OLD_LOGITS))
  project = lambda p, f: f @ p['kernel'] + p['bias']
  rkd = rkd_angle_reference(project(PROJECTIONS['student'], REAL),
                            project(PROJECTIONS['teacher'], REAL_OLD))
  assert float(metrics['local_ce']) == pytest.approx(local_ce, rel=1e-5)
  assert float(metrics['hkd']) == pytest.approx(hkd, rel=1e-5)
  assert float(metrics['rkd']) == pytest.approx(rkd, rel=1e-4)
  assert float(value) == pytest.approx(
      0.5 * (1 + 1 / a) / b * local_ce + 0.15 * a * b * hkd + 0.5 * a * b * rkd, rel=1e-5)


def test_head_loss_by_hand_weights_classes_and_normalises():
  weights = np.array([4.0, 1.0, 2.0, 1.0, 3.0, 0.5], np.float32)
  value, metrics = _on_devices(rdfcil.head_loss(TASK, CONFIG, weights))
  logits = np.concatenate([REAL_LOGITS, GENERATED_LOGITS])
  labels = np.concatenate([LABELS, np.argmax(GENERATED_OLD_LOGITS, -1)])
  per_image = -ref.log_softmax(logits)[np.arange(len(labels)), labels]
  balanced_ce = np.sum(weights[labels] * per_image) / np.sum(weights[labels])
  hkd = np.mean(np.abs(GENERATED_LOGITS[:, :2] - GENERATED_OLD_LOGITS))
  a, b = np.log2(3.0), np.sqrt(0.5)
  assert float(metrics['balanced_ce']) == pytest.approx(balanced_ce, rel=1e-5)
  assert float(value) == pytest.approx(0.5 * balanced_ce + 0.15 * a * b * hkd, rel=1e-5)


def test_projections_double_the_width_with_pytorch_initialisation():
  params = rdfcil.projection_params(16, jax.random.PRNGKey(1))
  bound = 1 / np.sqrt(16)
  for side in ('student', 'teacher'):
    assert params[side]['kernel'].shape == (16, 32) and params[side]['bias'].shape == (32,)
    assert all(np.abs(np.asarray(x)).max() <= bound for x in params[side].values())
  assert not np.allclose(params['student']['kernel'], params['teacher']['kernel'])


def test_class_counts_add_real_and_replayed_labels_over_the_stage(smoke_config, tmp_path):
  smoke_config.method = 'rdfcil'
  experiment = build_experiment(smoke_config, tmp_path)
  task = experiment.tasks[1]
  assert rdfcil.projections(experiment, experiment.tasks[0], jax.random.PRNGKey(0)) is None
  assert rdfcil.projections(experiment, task, jax.random.PRNGKey(0))['student']['kernel'].shape == (
      experiment.feature_dim(), 2 * experiment.feature_dim())
  generator = experiment.generator()
  generator_params = generator.init(jax.random.PRNGKey(2),
                                    jnp.zeros((2, generator.latent_dim)))['params']
  old_model = experiment.model(task.num_old)
  old_vars = parallel.replicate(old_model.init(
      jax.random.PRNGKey(3), jnp.zeros((1,) + experiment.dataset.image_shape), train=False))
  counts = rdfcil.replay_class_counts(experiment, task, generator_params, old_vars)
  steps, batch = experiment.total_steps(task), smoke_config.train.batch_size
  replayed = steps * generated_batch_size(smoke_config, task)
  # Old classes come only from replay, new ones only from the (balanced) real images.
  assert counts[:task.num_old].sum() == pytest.approx(replayed)
  np.testing.assert_allclose(counts[task.num_old:], steps * batch / task.num_new)
  # The same keys give the same estimate.
  np.testing.assert_array_equal(
      counts, rdfcil.replay_class_counts(experiment, task, generator_params, old_vars))
