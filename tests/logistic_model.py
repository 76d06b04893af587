"""A two-parameter logistic model whose importance has a closed form.

The consolidation, EWC and MAS tests run the library's importance step on it
and compare with per-example gradients written out by hand. Not a test module
(no `test_` prefix); imported by name (see conftest).
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mfgr_jax import consolidation, parallel

WEIGHTS = (0.7, -1.3)


class Logistic(nn.Module):
  """Two classes with logits (0, x . w): p(y=1 | x) = sigmoid(x . w). No head, no BN."""

  @nn.compact
  def __call__(self, x, train):
    del train
    w = self.param('w', lambda key: jnp.asarray(WEIGHTS))
    z = x.reshape(x.shape[0], -1) @ w
    return jnp.stack([jnp.zeros_like(z), z], -1), z


def images() -> np.ndarray:
  """uint8 "images" of two pixels; normalised with mean 0, std 1/255 they are the values back."""
  return np.asarray([[3, 1], [0, 2], [5, 4], [1, 7], [2, 2]], np.uint8).reshape(5, 1, 2, 1)


def inputs_and_logits() -> tuple[np.ndarray, np.ndarray]:
  """`images()` as float64 rows x, and the logit z = x . w of each."""
  x = images().reshape(5, 2).astype(np.float64)
  return x, x @ np.asarray(WEIGHTS)


def variables() -> dict:
  return {'params': {'w': jnp.asarray(WEIGHTS)}, 'batch_stats': {}}


def importance_step(score: consolidation.Score,
                    reduce: Callable[[jax.Array], jax.Array]) -> Callable:
  """The library's importance step on `Logistic`, normalising as `images()` expects."""
  return consolidation.make_importance_step(Logistic(), score, reduce, (0.0,), (1 / 255,))


def mean_importance(score: consolidation.Score,
                    reduce: Callable[[jax.Array], jax.Array]) -> np.ndarray:
  """The mean over `images()` of reduce(d score / d w), by the library's importance step."""
  step = importance_step(score, reduce)
  return np.asarray(step(variables(), parallel.shard(images()),
                         parallel.shard(np.ones(5, np.float32)))['w']) / 5
