"""EWC (Kirkpatrick et al. 2017) with FACIL's choices, single-head (spec §8.4).

L = CE over the new-class logits + weight/2 * sum_i F_i (theta_i - theta*_i)^2.
F is the diagonal Fisher at the model's own prediction y^ (FACIL's
`max_pred`): the mean over the finished task's training images of
(d log p(y^|x) / d theta)^2, one gradient per image; merged across tasks as
`ewc.accumulate` says; backbone only. FACIL's weight is 5000. Unlike FACIL, the
gradients are per image (FACIL squares batch-mean gradients) and the model is in
eval mode (FACIL's is in train mode), so the Fisher is that of the model evaluated.
"""

import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import consolidation, losses
from mfgr_jax.methods import ClassifierLoss, Importance, Method
from mfgr_jax.scenario import Task


def make_penalised_loss(section: str):
  """`make_loss` of a quadratic-penalty method whose config section is `section`:
  cut CE + the penalty (`consolidation.make_penalty`) once a task has been consolidated."""

  def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
    penalty = consolidation.make_penalty(config[section])

    def loss(out, labels, teacher, carried):
      del teacher
      ce = losses.cut_cross_entropy(out.logits, labels, task.num_old)
      if carried is None:  # task 0
        return ce, {'ce': ce}
      value = penalty(out.params, carried)
      return ce + value, {'ce': ce, 'penalty': value}

    return loss

  return make_loss


def log_likelihood_of_prediction(logits: jax.Array) -> jax.Array:
  """log p(y^ | x) at the argmax y^ of one example's logits."""
  return jax.nn.log_softmax(logits)[jnp.argmax(jax.lax.stop_gradient(logits))]


METHODS = (Method('ewc', uses_teacher=False, trains_on_all_seen=False,
                  make_loss=make_penalised_loss('ewc'),
                  config_section='ewc',
                  importance=Importance(lambda task, config: log_likelihood_of_prediction,
                                        jnp.square)),)
