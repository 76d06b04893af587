"""consolidation.py, what every quadratic-penalty method shares: the importance
step's padding, the penalty and merging. EWC's and MAS's own scores are in
methods/test_ewc.py and methods/test_mas.py."""

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from mfgr_jax import consolidation, losses
from mfgr_jax.methods import ewc

import logistic_model


def test_padding_with_zero_weight_changes_nothing():
  step = logistic_model.importance_step(ewc.log_likelihood_of_prediction, jnp.square)
  variables = logistic_model.variables()
  images = logistic_model.images()
  padded = np.concatenate([images, np.full((3, 1, 2, 1), 9, np.uint8)])
  a = step(variables, images, np.ones(5, np.float32))['w']
  b = step(variables, padded, np.asarray([1] * 5 + [0] * 3, np.float32))['w']
  np.testing.assert_allclose(a, b, rtol=1e-6)


def test_quadratic_penalty_and_merge():
  params, anchor = {'a': jnp.asarray([1.0, 2.0]), 'b': jnp.asarray(3.0)}, {'a': jnp.zeros(2),
                                                                          'b': jnp.asarray(1.0)}
  importance = {'a': jnp.asarray([0.5, 0.25]), 'b': jnp.asarray(2.0)}
  # 0.5*1 + 0.25*4 + 2*4 = 9.5
  assert float(losses.quadratic_penalty(params, anchor, importance)) == pytest.approx(9.5)
  penalty = consolidation.make_penalty(ml_collections.ConfigDict(dict(weight=4.0)))
  head = {'head': {'w': jnp.ones(3)}}  # excluded from the penalty
  assert float(penalty({**params, **head}, {'anchor': anchor, 'importance': importance})) == \
      pytest.approx(0.5 * 4.0 * 9.5)
  new = {'a': jnp.asarray([1.5, 0.75]), 'b': jnp.asarray(0.0)}
  np.testing.assert_allclose(consolidation.merge(importance, new, 'average')['a'], [1.0, 0.5])
  np.testing.assert_allclose(consolidation.merge(importance, new, 'sum')['a'], [2.0, 1.0])
  assert consolidation.merge(None, new, 'sum') is new
