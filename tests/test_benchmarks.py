"""The weight-gradient reformulations the convolution benchmark times are exact."""

import jax
import numpy as np
import pytest

from benchmarks.conv_weight_gradient import conv, im2col, shifted_matmuls


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('formulation', [shifted_matmuls, im2col])
def test_weight_gradient_reformulations_match_xla(formulation, stride):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (4, 8, 8, 3))
  w = jax.random.normal(keys[1], (3, 3, 3, 5))
  dy = jax.random.normal(keys[2], conv(x, w, stride).shape)
  expected = jax.vjp(lambda w_: conv(x, w_, stride), w)[1](dy)[0]
  np.testing.assert_allclose(formulation(x, dy, stride), expected, rtol=1e-5, atol=1e-5)
