"""muc_lwf: the loss adds the side heads' distillation to LwF's, by hand, and a run
that distils the side heads and resumes with them. (The side heads themselves:
test_side_classifiers.py; muc_mas: test_mas.py.)"""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import train
from mfgr_jax.methods import muc
from mfgr_jax.models.resnet import Forward

from conftest import comparable, scalars
import loss_references as ref


def test_loss_adds_the_side_heads_distillation_weighted_by_the_old_classes_share():
  # Two side heads over the task's 4 classes, on 3 features.
  rng = np.random.default_rng(0)
  features, old_features = rng.normal(size=(2, 2, 3))
  heads = {'kernel': rng.normal(size=(2, 3, 4)), 'bias': rng.normal(size=(2, 4))}
  config = ml_collections.ConfigDict(dict(distillation=dict(temperature=2.0,
                                                            scale_by_t_squared=False)))
  value, metrics = muc.make_loss(ref.TASK, config)(
      Forward(jnp.asarray(ref.LOGITS), jnp.asarray(features), None, None), ref.LABELS,
      Forward(jnp.asarray(ref.TEACHER), jnp.asarray(old_features), None, None),
      {'side_heads': {k: jnp.asarray(v) for k, v in heads.items()}})
  lwf = (2 / 3) * ref.cut_cross_entropy(ref.LOGITS, ref.LABELS, 2) + (1 / 3) * ref.distillation(
      ref.LOGITS[:, :2], ref.TEACHER, 2.0)
  kd_side = np.mean([ref.distillation(features @ kernel + bias, old_features @ kernel + bias, 2.0)
                     for kernel, bias in zip(heads['kernel'], heads['bias'])])
  assert float(metrics['kd_side']) == pytest.approx(kd_side, rel=1e-4)
  assert float(value) == pytest.approx(lwf + kd_side / 3, rel=1e-4)


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
