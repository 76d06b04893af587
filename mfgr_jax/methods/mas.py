"""MAS (Aljundi et al. 2018), single-head, with FACIL's choices
(mmasana/FACIL `src/approach/mas.py`) or MUC's (Liuy8/MUC).

L = CE over the new-class logits + weight/2 * sum_i Omega_i (theta_i - theta*_i)^2,
Omega_i = the mean over the finished task's training images of |d g(x) / d theta_i|,
one gradient per image, backbone only. `mas.output_norm` picks g:
- 'l2': the L2 norm of the logits of all seen classes (FACIL; weight 1,
  accumulate 'average');
- 'squared_l2': its square (the original paper);
- 'muc': the mean square of the current task's logits (MUC's MSE against 0,
  which the paper's MAS rows follow; there with weight 0.02, i.e. MUC's
  alpha = 0.01 without the 1/2, and accumulate 'sum').

`muc_mas` (MUC-MAS, as Liuy8/MUC runs it) adds to each task's Omega 1.4 times the mean,
over MUC's side classifiers of that task (`side_classifiers.py`, config
`muc.*`), of the importance of `mean_square` of the side head's logits, as if
the side head were the model's head. The paper's MUC-MAS rows use it with
output_norm 'muc', weight 0.02 and accumulate 'sum'.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import config_fields as F
from mfgr_jax import consolidation
from mfgr_jax.methods import ewc, muc
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

CONFIG = {'mas': dict(weight=F.number(1.0),
                      accumulate=F.choice('average', consolidation.ACCUMULATE),
                      output_norm=F.choice('l2', ('l2', 'squared_l2', 'muc')),
                      importance_batch_size=F.positive_integer(64))}

# MUC-MAS's weight of the side classifiers' importance.
SIDE_IMPORTANCE = 1.4


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


def _with_head(variables: dict, kernel: np.ndarray, bias: np.ndarray) -> dict:
  """`variables` with the linear head replaced (a side classifier as the head)."""
  head = {'linear': {'dense': {'kernel': kernel, 'bias': bias}}}
  return {**variables, 'params': {**variables['params'], 'head': head}}


def consolidate_with_side_heads(experiment: Experiment, task: Task, variables: dict,
                                previous: dict | None) -> dict:
  """MUC-MAS after `task`: MAS's importance plus `SIDE_IMPORTANCE` times the mean
  importance of the task's side classifiers (trained here, not carried)."""
  config = experiment.config.mas
  importance = ewc.mean_importance(experiment, task, experiment.model(task.num_seen), variables,
                                   make_output_norm(task, config), jnp.abs,
                                   config.importance_batch_size)
  heads = muc.train_side_classifiers(experiment, task, variables)['side_heads']
  side_model = experiment.model(task.num_new)
  per_head = [ewc.mean_importance(experiment, task, side_model,
                                  _with_head(variables, heads['kernel'][k], heads['bias'][k]),
                                  mean_square, jnp.abs, config.importance_batch_size)
              for k in range(len(heads['kernel']))]
  importance = jax.tree.map(
      lambda main, *side: main + SIDE_IMPORTANCE * sum(side) / len(side), importance, *per_head)
  return ewc.consolidated(config, variables, importance, previous)


_MAS = ewc.penalty_method('mas', 'mas', make_output_norm, jnp.abs)
METHODS = (_MAS,
           dataclasses.replace(_MAS, name='muc_mas', sections=('mas', 'muc'),
                               after_task=consolidate_with_side_heads,
                               prepare=muc.load_auxiliary))
