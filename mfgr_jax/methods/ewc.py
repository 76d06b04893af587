"""EWC (Kirkpatrick et al. 2017) with FACIL's choices (mmasana/FACIL
`src/approach/ewc.py`), single-head.

L = CE over the new-class logits + weight/2 * sum_i F_i (theta_i - theta*_i)^2.
F is the diagonal Fisher at the model's own prediction y^ (FACIL's
`max_pred`): the mean over the finished task's training images of
(d log p(y^|x) / d theta)^2, one gradient per image; merged across tasks as
`ewc.accumulate` says; backbone only. Unlike FACIL, the gradients are per image
(FACIL squares batch-mean gradients, which shrinks the Fisher by up to the batch
size) and the model is in eval mode (FACIL's is in train mode), so the Fisher is
that of the model evaluated. Hence the default weight is 50, not FACIL's 5000:
SGD on the penalty alone is stable while lr * weight * max F < 2 (1 + momentum),
and the largest Fisher entry here is about 0.2 (Fashion-MNIST and the smoke
config), so at lr 0.1 the weight must stay below about 190; 5000 diverges there
within the first penalised task.

This module also holds what every quadratic-penalty method shares (`mas.py`
uses it): the penalised loss, the importance after a task, the state
{'anchor', 'importance'} it carries, and the checks of its config section.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import config_fields as F
from mfgr_jax import classifier, consolidation, losses, parallel
from mfgr_jax.methods import Method
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# Quadratic penalties on the backbone (consolidation.py): weight/2 * sum Omega
# (theta - theta*)^2; Omega merged over tasks by 'average' (FACIL) or 'sum'.
# importance_batch_size: images per step of the per-example gradients.
CONFIG = {'ewc': dict(weight=F.number(50.0),
                      accumulate=F.choice('average', consolidation.ACCUMULATE),
                      importance_batch_size=F.positive_integer(64))}

# (task, the method's config section) -> score(logits of one example over the seen classes).
MakeScore = Callable[[Task, ml_collections.ConfigDict], consolidation.Score]


def make_penalised_loss(section: str):
  """`make_loss` of a quadratic-penalty method whose config section is `section`:
  cut CE + the penalty (`consolidation.make_penalty`) of the tasks consolidated before."""

  def make_loss(task: Task, config: ml_collections.ConfigDict) -> classifier.ClassifierLoss:
    penalty = consolidation.make_penalty(config[section])

    def loss(out, labels, teacher, method_state):
      del teacher
      ce = losses.cut_cross_entropy(out.logits, labels, task.num_old)
      value = penalty(out.params, method_state)
      return ce + value, {'ce': ce, 'penalty': value}

    return loss

  return make_loss


def log_likelihood_of_prediction(logits: jax.Array) -> jax.Array:
  """log p(y^ | x) at the argmax y^ of one example's logits."""
  return jax.nn.log_softmax(logits)[jnp.argmax(jax.lax.stop_gradient(logits))]


def mean_importance(experiment: Experiment, task: Task, model: nn.Module, variables: dict,
                    score: consolidation.Score, reduce: Callable[[jax.Array], jax.Array],
                    batch_size: int) -> Any:
  """Mean over `task`'s training images of reduce(d score / d backbone), in eval mode."""
  step = consolidation.make_importance_step(model, score, reduce, experiment.dataset.mean,
                                            experiment.dataset.std)
  indices = experiment.class_images(task.num_old, task.num_seen)
  replicated, total, rows = parallel.replicate(variables), None, parallel.local_rows(batch_size)
  for positions, weights in parallel.padded_batches(len(indices), batch_size):
    summed = step(replicated, parallel.shard(experiment.dataset.train_images[
        indices[positions[rows]]]), parallel.shard(weights[rows]))
    total = summed if total is None else jax.tree.map(jnp.add, total, summed)
  return jax.tree.map(lambda x: x / len(indices), parallel.to_host(total))


def consolidated(config: ml_collections.ConfigDict, variables: dict, importance: Any,
                 previous: dict | None) -> dict:
  """The state after a task: {'anchor': its backbone, 'importance': merged with `previous`'s}."""
  return {'anchor': consolidation.backbone(variables['params']),
          'importance': consolidation.merge(None if previous is None else previous['importance'],
                                            importance, config.accumulate)}


def make_consolidate(section: str, make_score: MakeScore, reduce: Callable[[jax.Array], jax.Array]):
  """`after_task` of a quadratic-penalty method: importance of reduce(d score / d backbone)."""

  def consolidate(experiment: Experiment, task: Task, variables: dict,
                  previous: dict | None) -> dict:
    config = experiment.config[section]
    importance = mean_importance(experiment, task, experiment.model(task.num_seen), variables,
                                 make_score(task, config), reduce, config.importance_batch_size)
    return consolidated(config, variables, importance, previous)

  return consolidate


def penalty_state_like(experiment: Experiment, task: Task) -> dict:
  backbone = consolidation.backbone(experiment.variables_like(task.num_seen)['params'])
  return {'anchor': backbone, 'importance': backbone}


def make_check(section: str):
  """`check_config` of a quadratic-penalty method whose config section is `section`."""

  def check(config: ml_collections.ConfigDict) -> None:
    parallel.check_divisible(config[section].importance_batch_size,
                             f'{section}.importance_batch_size')

  return check


def penalty_method(name: str, section: str, make_score: MakeScore,
                   reduce: Callable[[jax.Array], jax.Array]) -> Method:
  """A method of cut CE plus an importance-weighted quadratic penalty on the backbone."""
  return Method(name, make_loss=make_penalised_loss(section), sections=(section,),
                after_task=make_consolidate(section, make_score, reduce),
                after_task_name='importance', state_like=penalty_state_like,
                check_config=make_check(section))


METHODS = (penalty_method('ewc', 'ewc', lambda task, config: log_likelihood_of_prediction,
                          jnp.square),)
