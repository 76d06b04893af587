"""LwF as the MFGR/MUC code runs it (xmengxin/MFGR `train_mfgr.py
--method lwf --loss_ratio_adaptive`, Liuy8/MUC's main-classifier loss).

L = (1 - lambda) * CE over the new-class logits + lambda * KD_T(old logits),
with lambda = C_old / C and the frozen previous model (eval mode) as teacher
on the same augmented batch.
"""

import ml_collections

from mfgr_jax import config_fields as F
from mfgr_jax import losses
from mfgr_jax.classifier import ClassifierLoss
from mfgr_jax.methods import Method, previous_model
from mfgr_jax.scenario import Task

# Knowledge distillation of lwf and the methods built on it: soft-target CE at
# this temperature, without Hinton's T^2 factor unless asked (the code has none).
CONFIG = {'distillation': dict(temperature=F.positive_number(2.0),
                               scale_by_t_squared=F.boolean(False))}


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
  weight = task.num_old / task.num_seen

  def loss(out, labels, teacher, method_state):
    del method_state
    ce = losses.cut_cross_entropy(out.logits, labels, task.num_old)
    kd = losses.distillation(out.logits[:, :task.num_old], teacher.logits,
                             config.distillation.temperature,
                             config.distillation.scale_by_t_squared)
    return (1.0 - weight) * ce + weight * kd, {'ce': ce, 'kd': kd}

  return loss


METHODS = (Method('lwf', make_loss=make_loss, sections=('distillation',), teacher=previous_model),)
