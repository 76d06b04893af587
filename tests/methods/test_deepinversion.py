"""deepinversion: MFGR's stage II loss with real-data distillation, by hand, and a
stage I that optimises a pool of pixels (its steps and restore target). (The
pixel step: test_inversion.py; runs and resuming mid-synthesis:
end_to_end/test_every_method.py.)"""

import ml_collections
import numpy as np
import pytest

from mfgr_jax.experiment import build_experiment
from mfgr_jax.methods import get_method

import loss_references as ref


def test_stage_two_loss_distils_replayed_and_real_images():
  config = ml_collections.ConfigDict(dict(distillation=dict(temperature=2.0,
                                                            scale_by_t_squared=False)))
  value, metrics = get_method('deepinversion').make_loss(ref.TASK, config)(
      ref.forward(ref.LOGITS), ref.LABELS, ref.forward(ref.TEACHER), ref.forward(ref.GENERATED),
      ref.forward(ref.TEACHER_GENERATED))
  ce = ref.cut_cross_entropy(ref.LOGITS, ref.LABELS, 2)
  kd_generated = ref.distillation(ref.GENERATED[:, :2], ref.TEACHER_GENERATED, 2.0)
  kd_real = ref.distillation(ref.LOGITS[:, :2], ref.TEACHER, 2.0)
  # lambda = C_old / C = 1/3 weighs both distillations.
  assert float(value) == pytest.approx((2 / 3) * ce + (kd_generated + kd_real) / 3, rel=1e-5)
  assert float(metrics['kd_real']) == pytest.approx(kd_real, rel=1e-5)


def test_stage_one_optimises_a_pool_of_batches_times_batch_size_images(smoke_config, tmp_path):
  smoke_config.method = 'deepinversion'
  smoke_config.deepinversion.update(batches=3, iterations=5, batch_size=8)
  experiment = build_experiment(smoke_config, tmp_path)
  stage_one = experiment.method.stage_one
  assert stage_one.stage == 'synthesis'
  # Every batch of the pool takes `iterations` steps; nothing to invert before task 1.
  assert [experiment.stage_one_steps(t) for t in experiment.tasks] == [0, 15, 15]
  pool = stage_one.arrays_like(experiment)  # what a resumed stage II restores
  assert pool.shape == (24, 16, 16, 1) and pool.dtype == np.float32
  assert experiment.fingerprint()['deepinversion'] == smoke_config.deepinversion.to_dict()
