import flax.linen as nn
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfgr_jax.models.layers import BN_INPUT_MOMENTS, InputStatsBatchNorm, bn_input_statistics
from mfgr_jax.models.resnet import resnet, widen_head


def _init(model, shape):
  return model.init(jax.random.PRNGKey(0), jnp.zeros(shape), train=False)


@pytest.mark.parametrize('depth,params', [(18, 11_173_962), (34, 21_282_122)])
def test_parameter_counts_match_the_pytorch_cifar_resnets(depth, params):
  shapes = jax.eval_shape(lambda: _init(resnet(depth, 10, 64), (1, 32, 32, 3)))
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes['params'])) == params


def test_imagenet_stem_resnet18_matches_torchvision():
  # torchvision's resnet18 has 11,689,512 parameters with 1000 classes; 7x7/2 stem +
  # max-pool take 224 to 56, and the last stage is 7x7.
  model = resnet(18, 1000, 64, stem='imagenet')
  shapes = jax.eval_shape(lambda: _init(model, (1, 224, 224, 3)))
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes['params'])) == 11_689_512
  small = resnet(18, 3, 4, stem='imagenet')
  variables = _init(small, (1, 64, 64, 3))
  (logits, features), state = small.apply(variables, jnp.ones((2, 64, 64, 3)), train=False,
                                          mutable=[BN_INPUT_MOMENTS])
  assert logits.shape == (2, 3) and features.shape == (2, 32)
  stats = bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats'])
  assert len(stats) == 20


def test_max_pool_pads_with_minus_infinity():
  # PyTorch's MaxPool2d(3, 2, padding=1) never lets the padding win, even for negative maps.
  x = -jnp.ones((1, 4, 4, 1))
  assert float(nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1))).max()) == -1.0


@pytest.mark.parametrize('depth,layers', [(18, 20), (34, 36)])
def test_every_bn_input_is_reported(depth, layers):
  model = resnet(depth, 5, width=4)
  variables = _init(model, (2, 28, 28, 1))
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 28, 28, 1))
  (logits, features), state = model.apply(variables, x, train=False, mutable=[BN_INPUT_MOMENTS])
  assert logits.shape == (3, 5) and features.shape == (3, 32)
  stats = bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats'])
  assert len(stats) == layers
  # Reporting statistics must not change what the model computes.
  plain_logits, _ = model.apply(variables, x, train=False)
  np.testing.assert_allclose(logits, plain_logits, rtol=1e-6)


def test_input_stats_batchnorm_reports_input_moments_and_uses_running_stats():
  layer = InputStatsBatchNorm()
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 3, 3, 2)) * 2.0 + 1.0
  variables = layer.init(jax.random.PRNGKey(1), x, use_running_average=True)
  running = {'mean': jnp.array([0.5, -1.0]), 'var': jnp.array([2.0, 0.25])}
  variables = {'params': {'bn': {'scale': jnp.array([1.5, 0.5]), 'bias': jnp.array([0.1, 0.2])}},
               'batch_stats': {'bn': running}}
  y, state = layer.apply(variables, x, use_running_average=True, mutable=[BN_INPUT_MOMENTS])
  expected = (np.asarray(x) - [0.5, -1.0]) / np.sqrt(np.array([2.0, 0.25]) + 1e-5) * [1.5, 0.5]
  np.testing.assert_allclose(y, expected + [0.1, 0.2], rtol=1e-5, atol=1e-6)
  [stats] = bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats'])
  flat = np.asarray(x).reshape(-1, 2)
  np.testing.assert_allclose(stats['mean'], flat.mean(0), rtol=1e-5)
  np.testing.assert_allclose(stats['var'], flat.var(0), rtol=1e-4)  # biased variance
  np.testing.assert_array_equal(stats['running_var'], running['var'])


def test_batchnorm_momentum_is_pytorch_0_1():
  layer = InputStatsBatchNorm()
  x = jnp.arange(8.0).reshape(8, 1)
  variables = layer.init(jax.random.PRNGKey(0), x, use_running_average=False)
  _, state = layer.apply(variables, x, use_running_average=False, mutable=['batch_stats'])
  # running = 0.9 * old (0) + 0.1 * batch mean (3.5)
  assert float(state['batch_stats']['bn']['mean'][0]) == pytest.approx(0.35)


def test_pytorch_default_initialisation_bounds():
  variables = _init(resnet(18, 100, 64), (1, 32, 32, 3))
  flat = traverse_util.flatten_dict(variables['params'], sep='/')
  stem = np.asarray(flat['stem_conv/kernel'])  # fan_in 3*3*3
  block = np.asarray(flat['stage4_block2/Conv_1/kernel'])  # fan_in 3*3*512
  head_w, head_b = np.asarray(flat['head/linear/dense/kernel']), np.asarray(flat['head/linear/dense/bias'])
  for array, fan_in in [(stem, 27), (block, 4608), (head_w, 512), (head_b, 512)]:
    bound = 1 / np.sqrt(fan_in)
    assert np.abs(array).max() <= bound
    assert np.abs(array).max() > 0.95 * bound  # uniform, not a narrower normal
  assert abs(block.std() - 1 / np.sqrt(3 * 4608)) < 0.01 / np.sqrt(4608)


def test_widen_head_keeps_old_rows():
  model = resnet(18, 3, width=4)
  params = _init(model, (1, 16, 16, 1))['params']
  wide = widen_head(params, 5, jax.random.PRNGKey(7))
  old, new = params['head']['linear']['dense'], wide['head']['linear']['dense']
  assert new['kernel'].shape == (32, 5) and new['bias'].shape == (5,)
  np.testing.assert_array_equal(new['kernel'][:, :3], old['kernel'])
  np.testing.assert_array_equal(new['bias'][:3], old['bias'])
  assert np.abs(new['kernel'][:, 3:]).max() <= 1 / np.sqrt(32)
  assert np.abs(np.asarray(new['kernel'][:, 3:])).std() > 0
  np.testing.assert_array_equal(wide['stem_conv']['kernel'], params['stem_conv']['kernel'])
  x = jax.random.normal(jax.random.PRNGKey(2), (2, 16, 16, 1))
  batch_stats = _init(model, (1, 16, 16, 1))['batch_stats']
  logits3, _ = model.apply({'params': params, 'batch_stats': batch_stats}, x, train=False)
  logits5, _ = resnet(18, 5, width=4).apply({'params': wide, 'batch_stats': batch_stats}, x,
                                            train=False)
  np.testing.assert_allclose(logits5[:, :3], logits3, rtol=1e-5, atol=1e-6)


def test_mixed_precision_computes_in_bfloat16_and_keeps_float32_state():
  images = jax.random.normal(jax.random.PRNGKey(1), (8, 16, 16, 3))
  full, mixed = resnet(18, 5, 8), resnet(18, 5, 8, dtype='bfloat16')
  variables = full.init(jax.random.PRNGKey(0), images, train=False)
  (logits, features), state = mixed.apply(variables, images, train=True, mutable=['batch_stats'])
  assert logits.dtype == features.dtype == jnp.float32
  assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state))
  convolutions = [e for e in jax.make_jaxpr(
      lambda v: mixed.apply(v, images, train=False))(variables).jaxpr.eqns
                  if e.primitive.name == 'conv_general_dilated']
  assert convolutions and all(e.outvars[0].aval.dtype == jnp.bfloat16 for e in convolutions)
  # bfloat16 keeps 8 significant bits: the logits agree to about 1e-2.
  reference, _ = full.apply(variables, images, train=False)
  mixed_logits, _ = mixed.apply(variables, images, train=False)
  np.testing.assert_allclose(mixed_logits, reference, rtol=0.05, atol=0.05)
  assert not np.array_equal(mixed_logits, reference)


def test_unknown_compute_dtype_is_refused():
  with pytest.raises(ValueError, match='compute_dtype'):
    resnet(18, 5, 8, dtype='float16')
