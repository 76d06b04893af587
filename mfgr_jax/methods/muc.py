"""MUC-LwF (Liu et al. 2020, "More Classifiers, Less Forgetting"), single-head, as
Liuy8/MUC runs it.

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

from __future__ import annotations

from typing import TYPE_CHECKING

from absl import logging
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import config_fields as F
from mfgr_jax import classifier, keys, losses, parallel
from mfgr_jax.data.loading import DATASETS, Dataset, load_dataset
from mfgr_jax.errors import UserError
from mfgr_jax.methods import Method, lwf, previous_model
from mfgr_jax.scenario import Task
from mfgr_jax.side_classifiers import side_logits, train_side_heads

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# MUC (muc_lwf, muc_mas): side classifiers per task on frozen features, with a
# discrepancy term on the training images of `auxiliary` (a `data.name`; SVHN
# in the paper; synthetic ones are made in the main dataset's shape). MUC's
# recipe: 3 heads, 80 epochs, SGD 0.1 divided by 10 at 1/2, 3/4 and 7/8.
CONFIG = {'muc': dict(auxiliary=F.choice('synthetic', DATASETS), side_heads=F.positive_integer(3),
                      side_epochs=F.positive_integer(80),
                      side_learning_rate=F.positive_number(0.1),
                      side_batch_size=F.positive_integer(128))}


def make_loss(task: Task, config: ml_collections.ConfigDict) -> classifier.ClassifierLoss:
  lwf_loss = lwf.make_loss(task, config)
  weight = task.num_old / task.num_seen
  temperature = config.distillation.temperature
  scale = config.distillation.scale_by_t_squared

  def loss(out, labels, teacher, method_state):
    total, metrics = lwf_loss(out, labels, teacher, method_state)
    heads = method_state['side_heads']
    student, target = side_logits(heads, out.features), side_logits(heads, teacher.features)
    kd_side = jnp.mean(jnp.stack([losses.distillation(s, t, temperature, scale)
                                  for s, t in zip(student, target)]))
    return total + weight * kd_side, {**metrics, 'kd_side': kd_side}

  return loss


def train_side_classifiers(experiment: Experiment, task: Task, variables: dict,
                           previous: dict | None = None) -> dict:
  """After `task`: {'side_heads'} trained on its new classes' frozen features."""
  del previous  # only the most recent task's heads are distilled
  features = experiment.features_step(task, l2_normalise=False)
  indices = experiment.class_images(task.num_old, task.num_seen)
  auxiliary = experiment.resources['auxiliary']
  heads, metrics = train_side_heads(
      experiment.in_batches(features, variables, experiment.dataset.train_images[indices]),
      experiment.train_targets[indices] - task.num_old,
      experiment.in_batches(features, variables, auxiliary.train_images),
      experiment.config.muc, experiment.task_key(task, keys.SIDE_HEADS))
  logging.info('task %d side classifiers: %s', task.index,
               ', '.join(f'{k} {v:.4f}' for k, v in metrics.items()))
  return {'side_heads': heads}


def side_heads_like(experiment: Experiment, task: Task) -> dict:
  heads = experiment.config.muc.side_heads
  return {'side_heads': {'kernel': np.zeros((heads, experiment.feature_dim(), task.num_new),
                                            np.float32),
                         'bias': np.zeros((heads, task.num_new), np.float32)}}


def load_auxiliary(experiment: Experiment) -> dict[str, Dataset]:
  """MUC's unlabelled images: `muc.auxiliary`, read like `data` (synthetic ones in
  the main dataset's shape)."""
  config, dataset = experiment.config, experiment.dataset
  auxiliary = ml_collections.ConfigDict(config.data.to_dict())
  auxiliary.name = config.muc.auxiliary
  auxiliary.synthetic.image_size, _, auxiliary.synthetic.channels = dataset.image_shape
  with parallel.main_process_first('prepare auxiliary data'):
    loaded = load_dataset(auxiliary, None)
  if loaded.image_shape != dataset.image_shape:
    raise UserError(f'muc.auxiliary={auxiliary.name!r} has {loaded.image_shape} images but '
                    f'{dataset.name} has {dataset.image_shape}; choose another dataset or set '
                    '--config.data.image_size')
  return {'auxiliary': loaded}


METHODS = (Method('muc_lwf', make_loss=make_loss, sections=('muc', 'distillation'),
                  teacher=previous_model, after_task=train_side_classifiers,
                  after_task_name='side_classifiers', state_like=side_heads_like,
                  prepare=load_auxiliary),)
