"""mfgr and its ablations (lwf_g_base, g_bn, lwf_g_bn): stage II's loss by hand,
and a run with the paper's replay options. (The generator step:
test_inversion.py; the replay step: test_classifier.py; smoke runs through the
command line, the ablations' terms and resuming: end_to_end/test_mfgr_runs.py.)"""

import ml_collections
import pytest

from mfgr_jax import train
from mfgr_jax.methods import get_method

import loss_references as ref

CONFIG = ml_collections.ConfigDict(dict(distillation=dict(temperature=2.0,
                                                          scale_by_t_squared=False)))


@pytest.mark.parametrize('method,distill_real', [
    ('mfgr', True), ('lwf_g_bn', True), ('lwf_g_base', True), ('g_bn', False)])
def test_stage_two_loss_by_hand(method, distill_real):
  value, metrics = get_method(method).make_loss(ref.TASK, CONFIG)(
      ref.forward(ref.LOGITS), ref.LABELS, ref.forward(ref.TEACHER), ref.forward(ref.GENERATED),
      ref.forward(ref.TEACHER_GENERATED))
  ce = ref.cut_cross_entropy(ref.LOGITS, ref.LABELS, 2)
  kd_generated = ref.distillation(ref.GENERATED[:, :2], ref.TEACHER_GENERATED, 2.0)
  kd_real = ref.distillation(ref.LOGITS[:, :2], ref.TEACHER, 2.0) if distill_real else 0.0
  # lambda = C_old / C = 1/3 weighs the distillation of generated (and real) images.
  assert float(value) == pytest.approx((2 / 3) * ce + (kd_generated + kd_real) / 3, rel=1e-5)
  assert float(metrics['kd_generated']) == pytest.approx(kd_generated, rel=1e-5)
  assert ('kd_real' in metrics) == distill_real


def test_paper_replay_options_run(smoke_config, tmp_path):
  smoke_config.method = 'mfgr'
  smoke_config.scenario.num_tasks = 2
  smoke_config.replay.balance = 'per_class'  # 32 real per 2 new classes -> 32 generated
  smoke_config.replay.single_pass = True
  smoke_config.distillation.scale_by_t_squared = True
  results = train.run(smoke_config, str(tmp_path))
  assert len(results['accuracy']) == 2
