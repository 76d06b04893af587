"""The weight-gradient reformulations the convolution benchmark times are exact, and
the PyTorch comparison copies every weight of our models (its outputs-equal check
against PyTorch itself runs in the benchmark, where torch is installed)."""

import jax
import numpy as np
import pytest

import flax

from benchmarks import vs_pytorch
from benchmarks.conv_weight_gradient import conv, im2col, shifted_matmuls
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.pretrained import torch_key_place
from mfgr_jax.models.resnet import resnet


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('formulation', [shifted_matmuls, im2col])
def test_weight_gradient_reformulations_match_xla(formulation, stride):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (4, 8, 8, 3))
  w = jax.random.normal(keys[1], (3, 3, 3, 5))
  dy = jax.random.normal(keys[2], conv(x, w, stride).shape)
  expected = jax.vjp(lambda w_: conv(x, w_, stride), w)[1](dy)[0]
  np.testing.assert_allclose(formulation(x, dy, stride), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('depth', [18, 34])
def test_torchvision_keys_take_every_resnet_weight_once(depth):
  variables = jax.tree.map(np.asarray, resnet(depth, 10, 4).init(
      jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)), train=False))
  keys = vs_pytorch.torchvision_keys(depth)
  places = [torch_key_place(key) for key in keys if not key.startswith('fc.')]
  ours = [(collection, path) for collection in ('params', 'batch_stats')
          for path, _ in flax.traverse_util.flatten_dict(variables[collection]).items()
          if path[0] != 'head']
  assert sorted(places) == sorted(ours)  # each of our weights from exactly one key
  state = vs_pytorch._resnet_state_dict(variables, keys)
  assert state['conv1.weight'].shape == (4, 3, 3, 3)  # OIHW
  assert state['fc.weight'].shape == (10, 32)  # (out, in)


def test_generator_weights_keep_the_channel_order_of_the_first_map():
  generator = Generator(16, 1, latent_dim=3, hidden=8)
  params = jax.tree.map(np.asarray, generator.init(jax.random.PRNGKey(0), np.zeros((2, 3))))
  state = vs_pytorch._generator_state_dict(params['params'], 4)
  assert sum(x.size for x in state.values()) == sum(x.size for x in jax.tree.leaves(params))
  # PyTorch's linear output viewed as (c, h, w) is ours reshaped as (h, w, c).
  z = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
  dense = params['params']['Linear_0']['dense']
  ours = (z @ dense['kernel'] + dense['bias']).reshape(2, 4, 4, 8)
  theirs = (z @ state['linear.weight'].T + state['linear.bias']).reshape(2, 8, 4, 4)
  np.testing.assert_allclose(theirs, ours.transpose(0, 3, 1, 2), rtol=1e-6)
