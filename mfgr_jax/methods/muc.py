"""MUC-LwF (Liu et al. 2020, "More Classifiers, Less Forgetting"), single-head (spec §8.6).

After every task, `muc.side_heads` side classifiers are trained on the frozen
features of its classes with a maximum-classifier-discrepancy term on
unlabelled auxiliary images (`side_classifiers.py`; SVHN in the paper, any
dataset by `muc.auxiliary`). At the next task the loss is LwF's plus the
distillation of the side heads, applied to the new and to the old model's
features:

  L = (1 - lambda) CE_cut + lambda (KD(old logits) + 1/K sum_k KD_T(side_k(f), side_k(f_old))),

lambda = C_old / C (MUC: t/(t+1), the same for equal tasks). As MUC's code,
only the most recent task's side heads are distilled; they stay frozen.
"""

import jax.numpy as jnp
import ml_collections

from mfgr_jax import losses
from mfgr_jax.methods import ClassifierLoss, Method, lwf
from mfgr_jax.scenario import Task
from mfgr_jax.side_classifiers import side_logits


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
  lwf_loss = lwf.make_loss(task, config)
  if not task.num_old:
    return lwf_loss
  weight = task.num_old / task.num_seen
  temperature = config.distillation.temperature
  scale = config.distillation.scale_by_t_squared

  def loss(out, labels, teacher, carried):
    total, metrics = lwf_loss(out, labels, teacher, carried)
    heads = carried['side_heads']
    student, target = side_logits(heads, out.features), side_logits(heads, teacher.features)
    kd_side = jnp.mean(jnp.stack([losses.distillation(s, t, temperature, scale)
                                  for s, t in zip(student, target)]))
    return total + weight * kd_side, {**metrics, 'kd_side': kd_side}

  return loss


METHODS = (Method('muc_lwf', uses_teacher=True, trains_on_all_seen=False, make_loss=make_loss,
                  config_section='muc', side_classifiers=True),)
