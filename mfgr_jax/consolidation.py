"""Importance-weighted quadratic penalties anchored at the previous model (EWC, MAS).

After each task the loop measures how much every backbone parameter matters
for that task: the mean over its training images of `reduce(d score / d theta)`,
with one gradient per image (`jax.vmap` of `jax.grad`; squaring a batch-mean
gradient instead is a common EWC bug), and merges it with the earlier tasks'.
Later tasks add `weight/2 * sum_i Omega_i (theta_i - theta*_i)^2`. The head is
excluded: it widens every task, and the paper's baselines penalise the
backbone only.
"""

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import losses
from mfgr_jax import parallel
from mfgr_jax.data.augment import normalize

HEAD = 'head'
# How the importance of a task joins that of the tasks before (`merge`).
ACCUMULATE = ('average', 'sum')
# (logits of one example over the seen classes) -> the scalar whose gradient measures importance.
Score = Callable[[jax.Array], jax.Array]


def backbone(params: dict) -> dict:
  """The parameters a penalty covers: all but the head."""
  return {name: value for name, value in params.items() if name != HEAD}


def make_importance_step(model: nn.Module, score: Score, reduce: Callable[[jax.Array], jax.Array],
                         mean: tuple[float, ...], std: tuple[float, ...]) -> Callable:
  """Returns a data-parallel `step(variables, images, weights) -> summed importance`.

  Sums `weights[k] * reduce(grad of score(model(image_k)))` over the global
  batch (eval mode, no augmentation); weights of 0 mark padding.
  """

  def per_example(params, batch_stats, image, weight):
    def example_score(backbone_params):
      logits, _ = model.apply({'params': {**params, **backbone_params},
                               'batch_stats': batch_stats}, image[None], train=False)
      return score(logits[0])
    return jax.tree.map(lambda g: weight * reduce(g), jax.grad(example_score)(backbone(params)))

  def per_device(variables, images, weights):
    # Differentiate per device (see parallel.per_device), then sum over devices.
    params = parallel.per_device(variables['params'])
    per_image = jax.vmap(per_example, in_axes=(None, None, 0, 0))(
        params, variables['batch_stats'], normalize(images, mean, std), weights)
    return jax.lax.psum(jax.tree.map(lambda x: jnp.sum(x, 0), per_image), parallel.AXIS)

  return parallel.data_parallel(
      per_device, in_specs=(parallel.REPLICATED, parallel.SHARDED, parallel.SHARDED),
      out_specs=parallel.REPLICATED)


def merge(previous: Any | None, new: Any, accumulate: str) -> Any:
  """Ω after a task: 'average' = (Ω_old + Ω_new)/2 (FACIL), 'sum' = Ω_old + Ω_new (MUC's intent)."""
  if accumulate not in ACCUMULATE:
    raise ValueError(f"accumulate must be 'average' or 'sum', got {accumulate!r}")
  if previous is None:
    return new
  if accumulate == 'average':
    return jax.tree.map(lambda old, fresh: 0.5 * old + 0.5 * fresh, previous, new)
  return jax.tree.map(jnp.add, previous, new)


def make_penalty(config: ml_collections.ConfigDict) -> Callable[[Any, dict], jax.Array]:
  """`penalty(params, state) = weight/2 * sum Ω (θ - θ*)^2` with state {'anchor', 'importance'}."""

  def penalty(params: Any, state: dict) -> jax.Array:
    return 0.5 * config.weight * losses.quadratic_penalty(
        backbone(params), state['anchor'], state['importance'])

  return penalty
