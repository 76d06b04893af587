"""abd (methods/abd.py): stage II's loss by hand, the head CE that trains only the
head, and task 0. (ABD's inversion terms: test_losses.py and test_inversion.py;
across devices: test_data_parallel.py; whole runs and kill -9:
end_to_end/test_dfcil_runs.py.)"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax.methods import get_method
from mfgr_jax.models.resnet import Forward
from mfgr_jax.scenario import Task

import loss_references as ref

CONFIG = ml_collections.ConfigDict(dict(abd=dict(feature_distillation_weight=0.1)))
TASK = Task(1, (2, 3, 4, 5), 2, 6)  # 2 old classes of 6: weights 1/3 (old), 2/3 (new)
RNG = np.random.default_rng(0)
# The student's head (3 features -> 6 classes) and the old model's (-> 2 classes).
KERNEL, BIAS = RNG.normal(size=(3, 6)).astype(np.float32), RNG.normal(size=6).astype(np.float32)
OLD_KERNEL = RNG.normal(size=(3, 2)).astype(np.float32)
REAL, REAL_OLD = RNG.normal(size=(2, 3)).astype(np.float32), RNG.normal(size=(2, 3)).astype(np.float32)
GENERATED = RNG.normal(size=(3, 3)).astype(np.float32)
GENERATED_OLD = RNG.normal(size=(3, 3)).astype(np.float32)
LABELS = np.array([4, 5], np.int32)


def _params(kernel, bias):
  return {'head': {'linear': {'dense': {'kernel': jnp.asarray(kernel), 'bias': jnp.asarray(bias)}}}}


def _forward(features, kernel, bias):
  """A model's outputs whose last feature map is 1x1, so pooling is the identity."""
  return Forward(logits=jnp.asarray(features @ kernel + bias), features=jnp.asarray(features),
                 feature_map=jnp.asarray(features)[:, None, None, :], params=_params(kernel, bias))


def _loss(real_features=REAL):
  loss = get_method('abd').make_loss(TASK, CONFIG)
  old_bias = np.zeros(2, np.float32)
  return loss(_forward(real_features, KERNEL, BIAS), jnp.asarray(LABELS),
              _forward(REAL_OLD, OLD_KERNEL, old_bias), _forward(GENERATED, KERNEL, BIAS),
              _forward(GENERATED_OLD, OLD_KERNEL, old_bias))


def test_stage_two_loss_by_hand():
  value, metrics = _loss()
  real_logits, generated_logits = REAL @ KERNEL + BIAS, GENERATED @ KERNEL + BIAS
  local_ce = ref.cut_cross_entropy(real_logits, LABELS, 2)
  # Generated images take the old model's argmax as their label; weights C_old/C, C_new/C.
  generated_labels = np.argmax(GENERATED_OLD @ OLD_KERNEL, -1)
  logits, labels = np.concatenate([real_logits, generated_logits]), np.concatenate(
      [LABELS, generated_labels])
  weights = np.where(labels < 2, 2 / 6, 4 / 6)
  per_image = -ref.log_softmax(logits)[np.arange(5), labels]
  head_ce = np.mean(weights * per_image)
  drift = np.concatenate([REAL - REAL_OLD, GENERATED - GENERATED_OLD]) @ OLD_KERNEL
  feature_kd = np.mean(drift**2)
  assert float(metrics['local_ce']) == pytest.approx(local_ce, rel=1e-5)
  assert float(metrics['head_ce']) == pytest.approx(head_ce, rel=1e-5)
  assert float(metrics['feature_kd']) == pytest.approx(feature_kd, rel=1e-5)
  assert float(value) == pytest.approx((4 / 6) * local_ce + head_ce + 0.1 * feature_kd, rel=1e-5)


def test_head_ce_does_not_reach_the_features():
  """The head CE sees detached features: only the local CE and the feature KD move them."""
  def term(name):
    return jax.grad(lambda features: _loss(features)[1][name])(jnp.asarray(REAL))
  assert np.all(np.asarray(term('head_ce')) == 0)
  assert np.any(np.asarray(term('local_ce')) != 0) and np.any(np.asarray(term('feature_kd')) != 0)

