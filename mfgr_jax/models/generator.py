"""The DAFL generator MFGR trains against the frozen old classifier (spec §2.2).

Linear -> BN -> [nearest x2 -> conv3x3 -> BN(eps 0.8) -> LeakyReLU(0.2)] x 2 ->
conv3x3 -> tanh -> affine-free BN. The start map is image_size/4, so the same
module gives 28x28 (Fashion-MNIST), 32x32 (CIFAR, `Generator32`) and 64x64.

Every BatchNorm normalises with the statistics of the current batch, in
training and when sampling for replay (the official code never calls
`generator.eval()`), so the generator has no running statistics at all. Under
data parallelism the statistics are those of the global batch.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from mfgr_jax.models.layers import Linear, torch_bias_init, torch_kernel_init


class BatchStatisticsNorm(nn.Module):
  """BatchNorm that always uses the (global) batch's mean and biased variance."""
  epsilon: float = 1e-5
  affine: bool = True
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    axes = tuple(range(x.ndim - 1))
    moments = (jnp.mean(x, axes), jnp.mean(jnp.square(x), axes))
    if self.axis_name is not None and not self.is_initializing():
      moments = jax.lax.pmean(moments, self.axis_name)
    mean, mean_square = moments
    x = (x - mean) * jax.lax.rsqrt(jnp.maximum(mean_square - jnp.square(mean), 0.0) + self.epsilon)
    if self.affine:
      x = x * self.param('scale', nn.initializers.ones, (x.shape[-1],))
      x = x + self.param('bias', nn.initializers.zeros, (x.shape[-1],))
    return x


def _upsample2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour x2, as `F.interpolate(scale_factor=2)`."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Generator(nn.Module):
  """Maps z ~ N(0, I) of size `latent_dim` to images of `image_size`^2 x `channels`."""
  image_size: int = 32
  channels: int = 3
  latent_dim: int = 1000
  hidden: int = 128
  axis_name: str | None = None

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    if self.image_size % 4:
      raise ValueError(f'image_size must be a multiple of 4, got {self.image_size}')
    start = self.image_size // 4

    def conv(features, x):
      return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=torch_kernel_init,
                     bias_init=torch_bias_init(9 * x.shape[-1]))(x)

    norm = lambda eps, x, affine=True: BatchStatisticsNorm(eps, affine, self.axis_name)(x)
    x = Linear(self.hidden * start * start)(z).reshape(-1, start, start, self.hidden)
    x = norm(1e-5, x)
    # eps 0.8 is DAFL's quirk (a positional argument meant as momentum), kept for fidelity.
    x = nn.leaky_relu(norm(0.8, conv(self.hidden, _upsample2(x))), 0.2)
    x = nn.leaky_relu(norm(0.8, conv(self.hidden // 2, _upsample2(x))), 0.2)
    x = jnp.tanh(conv(self.channels, x))
    return norm(1e-5, x, affine=False)
