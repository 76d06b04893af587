"""The DAFL generator MFGR trains against the frozen old classifier (xmengxin/MFGR
`models/dafl_generator.py`).

Linear -> BN -> [nearest x2 -> conv3x3 -> BN(eps 0.8) -> LeakyReLU(0.2)] x 2 ->
conv3x3 -> tanh -> affine-free BN. The start map is image_size/4, so the same
module gives 28x28 (Fashion-MNIST), 32x32 (CIFAR, `Generator32`) and 64x64;
the 'pyramid' architecture stacks more blocks for 128 and 256 pixels.

By default every BatchNorm normalises with the statistics of the current batch,
in training and when sampling for replay (MFGR's code never calls
`generator.eval()`), and the generator has no running statistics. With
`track_running_statistics` it also keeps PyTorch's running statistics and, called
with `use_running_average=True`, normalises with them: a generator sampled in
eval mode, as ABD's and R-DFCIL's code sample theirs. Under data parallelism the
batch statistics are those of the global batch.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mfgr_jax.models.layers import Linear, torch_bias_init, torch_kernel_init


class BatchStatisticsNorm(nn.Module):
  """BatchNorm that normalises with the (global) batch's mean and biased variance.

  With `track_running` it also keeps running statistics as PyTorch's BatchNorm
  does (collection `batch_stats`: mean from 0, variance from 1, each step moved by
  `momentum` towards the batch's, the variance unbiased), and normalises with
  them when called with `use_running_average=True`.
  """
  epsilon: float = 1e-5
  affine: bool = True
  axis_name: str | None = None
  track_running: bool = False
  momentum: float = 0.1  # PyTorch's convention: the weight of the new batch

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool = False) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    if self.track_running:
      running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (x.shape[-1],), jnp.float32)
      running_var = self.variable('batch_stats', 'var', jnp.ones, (x.shape[-1],), jnp.float32)
    elif use_running_average:
      raise ValueError('use_running_average needs a BatchStatisticsNorm with track_running')
    if use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      moments = (jnp.mean(x, axes), jnp.mean(jnp.square(x), axes))
      if self.axis_name is not None and not self.is_initializing():
        moments = jax.lax.pmean(moments, self.axis_name)
      mean, mean_square = moments
      var = jnp.maximum(mean_square - jnp.square(mean), 0.0)
      if self.track_running and not self.is_initializing():
        count = x.size // x.shape[-1]
        if self.axis_name is not None:
          count = count * jax.lax.psum(1, self.axis_name)
        running_mean.value = (1 - self.momentum) * running_mean.value + self.momentum * mean
        running_var.value = ((1 - self.momentum) * running_var.value +
                             self.momentum * var * count / jnp.maximum(count - 1, 1))
    x = (x - mean) * jax.lax.rsqrt(var + self.epsilon)
    if self.affine:
      x = x * self.param('scale', nn.initializers.ones, (x.shape[-1],))
      x = x + self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return x


def _upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2, as `F.interpolate(scale_factor=2)`."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def generator_features(architecture: str, hidden: int, image_size: int) -> tuple[int, ...]:
  """Output channels of the generator's upsampling blocks.

  'dafl': DAFL's `Generator32` (`models/dafl_generator.py`): two blocks (hidden, hidden/2) from
  an image_size/4 map. 'pyramid': MFGR's `Generator128/256` of the CUB and
  Caltech experiments: from a 4x4 map, one block per doubling, channels halving
  from `hidden` (256 in the code), e.g. 256, 128, 64, 32, 16, 8 for 256x256.
  """
  if architecture == 'dafl':
    if image_size % 4:
      raise ValueError(f"the 'dafl' generator needs an image size divisible by 4, got {image_size}")
    return (hidden, hidden // 2)
  if architecture == 'pyramid':
    blocks = int(np.log2(image_size / 4)) if image_size >= 8 else 0
    if blocks < 1 or 4 * 2**blocks != image_size:
      raise ValueError(f"the 'pyramid' generator needs an image size of 4 times a power of 2 "
                       f'(8, 16, ..., 256), got {image_size}')
    return tuple(max(hidden >> block, 1) for block in range(blocks))
  raise ValueError(f"unknown generator architecture {architecture!r}; use 'dafl' or 'pyramid'")


class Generator(nn.Module):
  """Maps z ~ N(0, I) of size `latent_dim` to images of `image_size`^2 x `channels`.

  With `output_size` the images are then resized bilinearly (half-pixel
  centres, no antialiasing: PyTorch's `F.interpolate(mode='bilinear',
  align_corners=False)`), as the code feeds 256-pixel samples to a 224-pixel
  classifier.
  """
  image_size: int = 32
  channels: int = 3
  latent_dim: int = 1000
  hidden: int = 128
  architecture: str = 'dafl'
  output_size: int = 0
  axis_name: str | None = None
  track_running_statistics: bool = False

  @nn.compact
  def __call__(self, z: jax.Array, use_running_average: bool = False) -> jax.Array:
    features = generator_features(self.architecture, self.hidden, self.image_size)
    start = self.image_size // 2**len(features)

    def conv(features, x):
      return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_kernel_init,
                     bias_init=torch_bias_init(9 * x.shape[-1]))(x)

    norm = lambda eps, x, affine=True: BatchStatisticsNorm(
        eps, affine, self.axis_name, self.track_running_statistics)(x, use_running_average)
    x = Linear(features[0] * start * start)(z).reshape(-1, start, start, features[0])
    x = norm(1e-5, x)
    for block_features in features:
      # eps 0.8 is DAFL's quirk (a positional argument meant as momentum), kept for fidelity.
      x = nn.leaky_relu(norm(0.8, conv(block_features, _upsample2(x))), 0.2)
    x = jnp.tanh(conv(self.channels, x))
    x = norm(1e-5, x, affine=False)
    if self.output_size and self.output_size != self.image_size:
      x = jax.image.resize(x, (x.shape[0], self.output_size, self.output_size, x.shape[-1]),
                           'bilinear', antialias=False)
    return x
