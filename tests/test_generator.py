"""models/generator.py: the generators of stage I, their sizes, output
standardisation and resizing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfgr_jax.models.generator import BatchStatisticsNorm, Generator, generator_features


def test_generator_output_is_standardised_per_channel():
  generator = Generator(28, 1, latent_dim=16, hidden=8)
  params = generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 16)))
  images = generator.apply(params, jax.random.normal(jax.random.PRNGKey(1), (64, 16)))
  assert images.shape == (64, 28, 28, 1)
  assert float(jnp.mean(images)) == pytest.approx(0.0, abs=1e-4)
  assert float(jnp.std(images)) == pytest.approx(1.0, abs=1e-3)


@pytest.mark.parametrize('size,channels,params', [(32, 3, 8_423_939), (64, 3, 33_024_515)])
def test_generator_sizes(size, channels, params):
  # DAFL's Generator32: Linear(1000, 8192) + BN + 3 convs; the 64-px one starts at 16x16.
  generator = Generator(size, channels)
  shapes = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 1000))))
  assert sum(x.size for x in jax.tree_util.tree_leaves(shapes)) == params


def test_pyramid_generator_256_resized_to_224():
  # Generator256 (the paper's CUB generator): 4x4 start, six up+conv blocks 256,128,64,32,16,8, conv to 3.
  generator = Generator(256, 3, latent_dim=1000, hidden=256, architecture='pyramid',
                        output_size=224)
  shapes = jax.eval_shape(lambda: generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 1000))))
  convs = [v['kernel'].shape for k, v in sorted(shapes['params'].items(), key=lambda kv: int(
      kv[0].split('_')[-1])) if k.startswith('Conv')]
  assert convs == [(3, 3, 256, 256), (3, 3, 256, 128), (3, 3, 128, 64), (3, 3, 64, 32),
                   (3, 3, 32, 16), (3, 3, 16, 8), (3, 3, 8, 3)]
  assert shapes['params']['Linear_0']['dense']['kernel'].shape == (1000, 256 * 4 * 4)
  out = jax.eval_shape(lambda: generator.apply(generator.init(
      jax.random.PRNGKey(0), jnp.zeros((2, 1000))), jnp.zeros((2, 1000))))
  assert out.shape == (2, 224, 224, 3)


def test_generator_resize_is_half_pixel_bilinear_without_antialiasing():
  # PyTorch's F.interpolate(bilinear, align_corners=False) halving a side samples at input
  # coordinates 0.5, 2.5, ...: each output pixel is the mean of a 2x2 block (antialiasing
  # would blur wider).
  full = Generator(16, 1, latent_dim=8, hidden=8)
  halved = Generator(16, 1, latent_dim=8, hidden=8, output_size=8)
  params = full.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  z = jax.random.normal(jax.random.PRNGKey(1), (4, 8))
  big, small = full.apply(params, z), halved.apply(params, z)
  blocks = np.asarray(big).reshape(4, 8, 2, 8, 2, 1).mean((2, 4))
  np.testing.assert_allclose(np.asarray(small), blocks, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('architecture,size', [('dafl', 30), ('pyramid', 48), ('pyramid', 4),
                                               ('gan', 32)])
def test_impossible_generator_sizes_are_refused(architecture, size):
  with pytest.raises(ValueError, match='generator'):
    generator_features(architecture, 64, size)


def test_running_statistics_follow_pytorch_and_normalise_in_eval_mode():
  # One training call of PyTorch's BatchNorm (momentum 0.1): running mean 0.1 * the batch
  # mean, running variance 0.9 + 0.1 * the unbiased batch variance; eval mode then
  # normalises with them instead of the batch's.
  x = jnp.asarray(np.random.default_rng(0).normal(2.0, 3.0, (6, 2, 2, 3)), jnp.float32)
  norm = BatchStatisticsNorm(epsilon=1e-5, track_running=True)
  variables = norm.init(jax.random.PRNGKey(0), x)
  np.testing.assert_array_equal(variables['batch_stats']['mean'], np.zeros(3))
  np.testing.assert_array_equal(variables['batch_stats']['var'], np.ones(3))
  trained, updated = norm.apply(variables, x, mutable=['batch_stats'])
  flat = np.asarray(x, np.float64).reshape(-1, 3)
  mean, biased, unbiased = flat.mean(0), flat.var(0), flat.var(0, ddof=1)
  np.testing.assert_allclose(updated['batch_stats']['mean'], 0.1 * mean, rtol=1e-5)
  np.testing.assert_allclose(updated['batch_stats']['var'], 0.9 + 0.1 * unbiased, rtol=1e-5)
  np.testing.assert_allclose(trained, ((flat - mean) / np.sqrt(biased + 1e-5)).reshape(x.shape),
                             rtol=1e-4, atol=1e-5)
  evaluated = norm.apply({**variables, **updated}, x, use_running_average=True)
  running_mean, running_var = 0.1 * mean, 0.9 + 0.1 * unbiased
  np.testing.assert_allclose(
      evaluated, ((flat - running_mean) / np.sqrt(running_var + 1e-5)).reshape(x.shape),
      rtol=1e-4, atol=1e-5)


def test_without_running_statistics_the_generator_keeps_none():
  generator = Generator(16, 1, latent_dim=8, hidden=8)
  variables = generator.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  assert set(variables) == {'params'}
  with pytest.raises(ValueError, match='track_running'):
    generator.apply(variables, jnp.zeros((2, 8)), use_running_average=True)
  tracked = Generator(16, 1, latent_dim=8, hidden=8, track_running_statistics=True)
  tracked_variables = tracked.init(jax.random.PRNGKey(0), jnp.zeros((2, 8)))
  # The same parameters: tracking adds statistics and changes nothing else.
  assert jax.tree.all(jax.tree.map(np.array_equal, tracked_variables['params'],
                                   variables['params']))
  assert len(jax.tree.leaves(tracked_variables['batch_stats'])) == 2 * 4  # 4 BatchNorms
