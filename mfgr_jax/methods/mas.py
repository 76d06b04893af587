"""MAS (Aljundi et al. 2018), single-head (spec §8.3).

L = CE over the new-class logits + weight/2 * sum_i Omega_i (theta_i - theta*_i)^2,
Omega_i = the mean over the finished task's training images of |d g(x) / d theta_i|,
one gradient per image, backbone only. `mas.output_norm` picks g:
- 'l2': the L2 norm of the logits of all seen classes (FACIL; weight 1,
  accumulate 'average');
- 'squared_l2': its square (the original paper);
- 'muc': the mean square of the current task's logits (MUC's MSE against 0,
  which the paper's MAS rows follow; there with weight 0.02, i.e. MUC's
  alpha = 0.01 without the 1/2, and accumulate 'sum').

`muc_mas` (MUC-MAS, spec §8.7) adds to each task's Omega 1.4 times the mean,
over MUC's side classifiers of that task (`side_classifiers.py`, config
`muc.*`), of the importance of `mean_square` of the side head's logits, as if
the side head were the model's head. The paper's MUC-MAS rows use it with
output_norm 'muc', weight 0.02 and accumulate 'sum'.
"""

import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax.methods import Importance, Method
from mfgr_jax.methods.ewc import make_penalised_loss
from mfgr_jax.scenario import Task


def mean_square(logits: jax.Array) -> jax.Array:
  """MUC's output norm: the MSE of the logits against 0."""
  return jnp.mean(jnp.square(logits))


def make_output_norm(task: Task, config: ml_collections.ConfigDict):
  """g(logits of one example), as `config.output_norm` says."""
  if config.output_norm == 'l2':
    # A safe norm: the gradient of sqrt at 0 is undefined.
    return lambda logits: jnp.sqrt(jnp.sum(jnp.square(logits)) + 1e-12)
  if config.output_norm == 'squared_l2':
    return lambda logits: jnp.sum(jnp.square(logits))
  if config.output_norm == 'muc':
    return lambda logits: mean_square(logits[task.num_old:])
  raise ValueError(f"mas.output_norm must be 'l2', 'squared_l2' or 'muc', got {config.output_norm!r}")


METHODS = (Method('mas', uses_teacher=False, trains_on_all_seen=False,
                  make_loss=make_penalised_loss('mas'),
                  config_section='mas', importance=Importance(make_output_norm, jnp.abs)),
           # MUC-MAS: side classifiers (`muc.*`) add their importance (`train.consolidate`).
           Method('muc_mas', uses_teacher=False, trains_on_all_seen=False,
                  make_loss=make_penalised_loss('mas'), config_section='mas',
                  importance=Importance(make_output_norm, jnp.abs), side_classifiers=True))
