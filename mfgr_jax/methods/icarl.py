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

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import config_fields as F
from mfgr_jax import exemplars, losses, stage_one
from mfgr_jax.classifier import ClassifierLoss, ReplayLoss
from mfgr_jax.errors import UserError
from mfgr_jax.methods import Method, previous_model
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# iCaRL (icarl, icarl_mfgr): exemplars kept in total over all seen classes,
# split as evenly as possible and chosen by herding (iCaRL's K = 2000).
CONFIG = {'icarl': dict(memory_size=F.positive_integer(2000))}


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
  def loss(out, labels, teacher, method_state):
    del method_state  # the memory only selects the training images
    value = losses.icarl_distillation_loss(out.logits, labels, teacher.logits)
    return value, {'bce': value}

  return loss


def make_replay_loss(task: Task, config: ml_collections.ConfigDict) -> ReplayLoss:
  def loss(real, labels, teacher_real, generated, teacher_generated):
    metrics = {
        'bce': losses.icarl_distillation_loss(real.logits, labels, teacher_real.logits),
        # No generated image belongs to a new class: label -1, all-zero new targets.
        'bce_generated': losses.icarl_distillation_loss(
            generated.logits, jnp.full(len(generated.logits), -1), teacher_generated.logits)}
    return metrics['bce'] + metrics['bce_generated'], metrics

  return loss


def exemplar_quotas(experiment: Experiment, task: Task) -> np.ndarray:
  """Exemplars per seen class in the memory after `task` (`exemplars.class_quotas`)."""
  targets = experiment.train_targets
  sizes = np.bincount(targets[targets >= 0], minlength=len(experiment.order))
  return exemplars.class_quotas(sizes[:task.num_seen], experiment.config.icarl.memory_size)


def images_with_memory(experiment: Experiment, task: Task,
                       method_state: dict | None) -> np.ndarray:
  """The new classes' training images, then the memory of the tasks before."""
  own = experiment.class_images(task.num_old, task.num_seen)
  return own if method_state is None else np.concatenate([own, method_state['exemplars']])


def count_with_memory(experiment: Experiment, task: Task) -> int:
  count = len(experiment.class_images(task.num_old, task.num_seen))
  if task.index:
    count += int(exemplar_quotas(experiment, experiment.tasks[task.index - 1]).sum())
  return count


def select_exemplars(experiment: Experiment, task: Task, variables: dict,
                     previous: dict | None) -> dict:
  """After `task`: {'exemplars': training-set indices}, the old classes' shrunk to their
  new quota, the new classes' chosen by herding on the model's features."""
  quotas = exemplar_quotas(experiment, task)
  features = experiment.features_step(task)
  chosen = {}
  for c in range(task.num_old, task.num_seen):
    indices = np.flatnonzero(experiment.train_targets == c)
    class_features = experiment.in_batches(features, variables,
                                           experiment.dataset.train_images[indices])
    chosen[c] = indices[exemplars.herding(class_features, int(quotas[c]))]
  memory = previous['exemplars'] if previous is not None else np.zeros(0, np.int32)
  return {'exemplars': exemplars.update_memory(memory, experiment.train_targets[memory], quotas,
                                               range(task.num_old, task.num_seen), chosen)}


def memory_like(experiment: Experiment, task: Task) -> dict:
  return {'exemplars': np.zeros(int(exemplar_quotas(experiment, task).sum()), np.int32)}


def nearest_mean_of_exemplars(experiment: Experiment, task: Task, variables: dict,
                              method_state: dict, images: np.ndarray) -> np.ndarray:
  """iCaRL's classifier: the nearest class mean of the exemplars' normalised features
  (each mean over the exemplars and their flipped copies)."""
  memory = method_state['exemplars']
  stored = experiment.dataset.train_images[memory]
  plain, flipped = experiment.features_step(task), experiment.features_step(task, flip=True)
  means = exemplars.flip_averaged_means(experiment.in_batches(plain, variables, stored),
                                        experiment.in_batches(flipped, variables, stored),
                                        experiment.train_targets[memory], task.num_seen)
  return exemplars.nearest_mean(experiment.in_batches(plain, variables, images), means)


def check_memory_size(experiment: Experiment) -> dict:
  if experiment.config.icarl.memory_size < len(experiment.order):
    raise UserError(f'icarl.memory_size={experiment.config.icarl.memory_size} leaves some of '
                    f'the {len(experiment.order)} classes without exemplars; use at least '
                    f'{len(experiment.order)}')
  return {}


_ICARL = Method('icarl', make_loss=make_loss, sections=('icarl', 'distillation'),
                teacher=previous_model, train_images=images_with_memory,
                train_count=count_with_memory, after_task=select_exemplars,
                after_task_name='exemplars', state_like=memory_like,
                predict=nearest_mean_of_exemplars, prepare=check_memory_size)
METHODS = (_ICARL,
           dataclasses.replace(_ICARL, name='icarl_mfgr', make_loss=make_replay_loss,
                               stage_one=stage_one.generator(MFGR_TERMS)))
