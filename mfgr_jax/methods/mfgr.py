"""MFGR (paper §5; xmengxin/MFGR `train_mfgr.py`, `trainers/df_generator_trainer.py`)
and its Table 2 ablations: generator inversion, then replay + LwF.

At every incremental task a fresh generator is trained against the frozen old
model (stage I, `inversion.py`) with the method's loss terms; then the widened
classifier learns from real new-class images and generated old-class images
(stage II):

  L = (1 - lambda) * CE(new logits, real) + lambda * (KD(old logits, generated)
      [+ KD(old logits, real)]),  lambda = C_old / C, KD at temperature T.

| method       | stage I terms                      | KD on real data |
|--------------|------------------------------------|-----------------|
| `lwf_g_base` | one-hot, balance, activation, TV   | yes             |
| `g_bn`       | + BN statistics                    | no              |
| `lwf_g_bn`   | + BN statistics (the code's run.sh)| yes             |
| `mfgr`       | + BN statistics + diversity        | yes             |

Task 0 is plain cross-entropy, as for every method.
"""

import functools

import ml_collections

from mfgr_jax import losses, stage_one
from mfgr_jax.classifier import ReplayLoss
from mfgr_jax.methods import Method, previous_model
from mfgr_jax.scenario import Task

BASE_TERMS = ('one_hot', 'class_balance', 'activation', 'signed_difference')
MFGR_TERMS = BASE_TERMS + ('bn_statistics', 'diversity')


def make_loss(task: Task, config: ml_collections.ConfigDict,
              distill_real: bool) -> ReplayLoss:
  weight = task.num_old / task.num_seen
  kd = functools.partial(losses.distillation, temperature=config.distillation.temperature,
                         scale_by_t_squared=config.distillation.scale_by_t_squared)

  def loss(real, labels, teacher_real, generated, teacher_generated):
    ce = losses.cut_cross_entropy(real.logits, labels, task.num_old)
    metrics = {'ce': ce, 'kd_generated': kd(generated.logits[:, :task.num_old],
                                            teacher_generated.logits)}
    if distill_real:
      metrics['kd_real'] = kd(real.logits[:, :task.num_old], teacher_real.logits)
    distilled = metrics['kd_generated'] + metrics.get('kd_real', 0.0)
    return (1.0 - weight) * ce + weight * distilled, metrics

  return loss


def _method(name: str, terms: tuple[str, ...], distill_real: bool) -> Method:
  return Method(name, make_loss=functools.partial(make_loss, distill_real=distill_real),
                sections=('distillation',), teacher=previous_model,
                stage_one=stage_one.generator(terms))


METHODS = (
    _method('lwf_g_base', BASE_TERMS, distill_real=True),
    _method('g_bn', BASE_TERMS + ('bn_statistics',), distill_real=False),
    _method('lwf_g_bn', BASE_TERMS + ('bn_statistics',), distill_real=True),
    _method('mfgr', MFGR_TERMS, distill_real=True),
)
