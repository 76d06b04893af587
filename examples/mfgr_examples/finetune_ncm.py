"""Finetune with a nearest-class-mean classifier (NCM, Mensink et al. 2013).

Trains as finetune. After each task, the mean feature of each new class's
training images, computed with the task's model, joins the state; the classes
of earlier tasks keep the means of when they were learned (no old images are
kept to recompute them). A test image goes to the class of the nearest mean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mfgr_jax import config_fields as F
from mfgr_jax.methods import Method
from mfgr_jax.methods.finetune import make_loss
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# finetune_ncm: normalise = L2-normalise the features before averaging them and
# before comparing a test image's feature with the means.
CONFIG = {'ncm': dict(normalise=F.boolean(True))}


def features(experiment: Experiment, task: Task, variables: dict,
             images: np.ndarray) -> np.ndarray:
  """The pooled features of `images` under the model after `task` (eval mode)."""
  step = experiment.features_step(task, l2_normalise=experiment.config.ncm.normalise)
  return experiment.in_batches(step, variables, images)


def add_class_means(experiment: Experiment, task: Task, variables: dict,
                    method_state: dict | None) -> dict:
  """After `task`: {'means': (seen classes, feature dim)}, the earlier rows kept,
  one new row per new class, the mean feature of its training images."""
  indices = experiment.class_images(task.num_old, task.num_seen)
  new_features = features(experiment, task, variables, experiment.dataset.train_images[indices])
  labels = experiment.train_targets[indices]
  means = np.stack([new_features[labels == c].mean(axis=0)
                    for c in range(task.num_old, task.num_seen)])
  earlier = [] if method_state is None else [method_state['means']]
  return {'means': np.concatenate(earlier + [means])}


def means_like(experiment: Experiment, task: Task) -> dict:
  """Zeros shaped like the state after `task`: the target that restores it on resume."""
  return {'means': np.zeros((task.num_seen, experiment.feature_dim()), np.float32)}


def nearest_class_mean(experiment: Experiment, task: Task, variables: dict,
                       method_state: dict, images: np.ndarray) -> np.ndarray:
  """The class whose mean is nearest (Euclidean) to each image's feature."""
  test, means = features(experiment, task, variables, images), method_state['means']
  # |f - m|^2 = |f|^2 - 2 f.m + |m|^2, and |f|^2 is the same for every class.
  return np.argmin(np.sum(means ** 2, axis=1) - 2 * test @ means.T, axis=1)


METHODS = (Method('finetune_ncm', make_loss=make_loss, sections=('ncm',),
                  after_task=add_class_means, after_task_name='class_means',
                  state_like=means_like, predict=nearest_class_mean),)
