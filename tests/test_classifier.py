import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from mfgr_jax import classifier
from mfgr_jax.methods import get_method
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task

from conftest import REPO


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
  config = ml_collections.ConfigDict(dict(temperature=2.0, scale_by_t_squared=False))
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
    state, metrics = step(state, None, batch)
    losses.append(float(metrics['loss']))
  assert losses[-1] < 0.5 * losses[0]
  assert int(state.step) == 10
  assert not np.allclose(state.batch_stats['stem_bn']['bn']['mean'], 0.0)


# Runs two LwF steps on a fixed global batch and prints what they produced.
_DATA_PARALLEL_SCRIPT = r'''
import json, jax, jax.numpy as jnp, ml_collections, numpy as np
from mfgr_jax import classifier, parallel
from mfgr_jax.methods import get_method
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task
task = Task(1, (2, 3), 2, 4)
model, teacher = resnet(18, 4, 4, bn_axis_name='batch'), resnet(18, 2, 4, bn_axis_name='batch')
tx = classifier.make_optimizer(ml_collections.ConfigDict(dict(learning_rate=0.05, momentum=0.9, weight_decay=5e-4)), 20)
loss = get_method('lwf').make_loss(task, ml_collections.ConfigDict(dict(temperature=2.0, scale_by_t_squared=False)))
step = classifier.make_train_step(model, tx, loss, dict(padding=2, flip=True, mean=(0.5,), std=(0.25,)), teacher)
v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 1)), train=False)
tv = teacher.init(jax.random.PRNGKey(1), jnp.zeros((1, 16, 16, 1)), train=False)
state = parallel.replicate(classifier.init_train_state(v['params'], v['batch_stats'], tx))
rng = np.random.default_rng(0)
batch = {'image': rng.integers(0, 256, (16, 16, 16, 1), dtype=np.uint8),
         'label': (2 + np.arange(16) % 2).astype(np.int32),
         'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(2), 16))}
out = []
for _ in range(2):
  state, metrics = step(state, parallel.replicate(tv), parallel.shard(batch))
  out.append({k: float(x) for k, x in metrics.items()})
print(json.dumps({'devices': jax.device_count(), 'metrics': out,
                  'bn_mean': np.asarray(state.batch_stats['stem_bn']['bn']['mean']).tolist(),
                  'head': np.asarray(state.params['head']['linear']['dense']['kernel']).ravel().tolist()}))
'''


def _run_data_parallel(devices):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-c', _DATA_PARALLEL_SCRIPT], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_two_devices_compute_the_single_device_step():
  one, two = _run_data_parallel(1), _run_data_parallel(2)
  assert (one['devices'], two['devices']) == (1, 2)
  # Same global batch: metrics, BN running statistics and parameters agree
  # up to float32 reduction order.
  for a, b in zip(one['metrics'], two['metrics']):
    assert a.keys() == b.keys()
    for k in a:
      assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k
  np.testing.assert_allclose(one['bn_mean'], two['bn_mean'], rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(one['head'], two['head'], rtol=1e-4, atol=1e-5)
