"""iCaRL (Rebuffi et al. 2017) and iCaRL with MFGR's generated images (the paper's Fig. 7).

`icarl`: trains on the new classes' images plus a herding exemplar memory of
`icarl.memory_size` images in total (`exemplars.py`), with iCaRL's sigmoid
loss (`losses.icarl_distillation_loss`: one-hot targets for the seen classes,
the old model's sigmoids on the old-class outputs), and classifies by the
nearest mean of exemplars (NME) on L2-normalised features, the class means
averaged over flipped copies.

`icarl_mfgr`: the same, plus MFGR's stage I (a generator trained with every
MFGR term) and a generated batch per step whose old-class outputs are
distilled with the same sigmoid loss (targets 0 for the new classes).

Task 0 is plain cross-entropy as for every method (a shared task-0 model),
and the classifier recipe is the common one, not iCaRL's lr 2.0 / 70 epochs.
"""

import jax.numpy as jnp
import ml_collections

from mfgr_jax import losses
from mfgr_jax.methods import ClassifierLoss, Method, ReplayLoss, finetune
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.scenario import Task


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
  if not task.num_old:  # task 0: plain CE, as every method
    return finetune.make_loss(task, config)

  def loss(out, labels, teacher, carried):
    del carried  # the memory only selects the training images
    value = losses.icarl_distillation_loss(out.logits, labels, teacher.logits)
    return value, {'bce': value}

  return loss


def make_replay_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss | ReplayLoss:
  if not task.num_old:
    return make_loss(task, config)

  def loss(real, labels, teacher_real, generated, teacher_generated):
    metrics = {
        'bce': losses.icarl_distillation_loss(real.logits, labels, teacher_real.logits),
        # No generated image belongs to a new class: label -1, all-zero new targets.
        'bce_generated': losses.icarl_distillation_loss(
            generated.logits, jnp.full(len(generated.logits), -1), teacher_generated.logits)}
    return metrics['bce'] + metrics['bce_generated'], metrics

  return loss


METHODS = (
    Method('icarl', uses_teacher=True, trains_on_all_seen=False, make_loss=make_loss,
           config_section='icarl', exemplars=True),
    Method('icarl_mfgr', uses_teacher=True, trains_on_all_seen=False, make_loss=make_replay_loss,
           config_section='icarl', exemplars=True, synthesis='generator',
           generator_terms=MFGR_TERMS),
)
