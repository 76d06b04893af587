"""Layers shared by the models: PyTorch-default initialisation and a BatchNorm
that can report the statistics of its input.

PyTorch initialises Conv and Linear weights with kaiming_uniform(a=sqrt(5)),
i.e. U(+-1/sqrt(fan_in)), and Linear/Conv biases with U(+-1/sqrt(fan_in)).
The official MFGR code never overrides this, so we reproduce it (xmengxin/MFGR
`models/resnet.py`).
"""

from typing import Any, Sequence

from flax import traverse_util
import flax.linen as nn
import jax
import jax.numpy as jnp

# Mutable collection into which `InputStatsBatchNorm` sows the moments of its
# input. Stage I (generator inversion) reads it to form the BN-statistics loss.
BN_INPUT_MOMENTS = 'bn_input_moments'

torch_kernel_init = nn.initializers.variance_scaling(1.0 / 3.0, 'fan_in', 'uniform')


def torch_bias_init(fan_in: int) -> nn.initializers.Initializer:
  """U(+-1/sqrt(fan_in)): PyTorch's default bias for Linear and Conv."""
  bound = 1.0 / jnp.sqrt(fan_in)

  def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class Linear(nn.Module):
  """nn.Dense with PyTorch's default initialisation of kernel and bias."""
  features: int
  dtype: Any = jnp.float32  # computation dtype; parameters stay float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    return nn.Dense(self.features, kernel_init=torch_kernel_init, dtype=self.dtype,
                    bias_init=torch_bias_init(x.shape[-1]), name='dense')(x)


class InputStatsBatchNorm(nn.Module):
  """BatchNorm (PyTorch momentum 0.1) that can sow the moments of its input.

  When the caller makes `BN_INPUT_MOMENTS` mutable, the layer records the
  per-channel first and second moments E[x], E[x^2] of its *input* over
  (batch, H, W), while normalising exactly as usual (with running statistics
  when `use_running_average`). Moments rather than (mean, variance) are sown so
  that a data-parallel caller can average them across devices before forming
  the biased variance E[x^2] - E[x]^2, which makes the statistics those of the
  global batch (see `bn_input_statistics`).
  """
  epsilon: float = 1e-5
  axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype; statistics stay float32

  @nn.compact
  def __call__(self, x: jax.Array, use_running_average: bool) -> jax.Array:
    if self.is_mutable_collection(BN_INPUT_MOMENTS) and not self.is_initializing():
      reduce_axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      moments = (jnp.mean(x32, axis=reduce_axes), jnp.mean(jnp.square(x32), axis=reduce_axes))
      self.sow(BN_INPUT_MOMENTS, 'moments', moments,
               init_fn=lambda: (), reduce_fn=lambda _, new: new)
    # Flax's momentum is the weight of the old running value: 0.9 == torch 0.1.
    return nn.BatchNorm(use_running_average=use_running_average, momentum=0.9, dtype=self.dtype,
                        epsilon=self.epsilon, axis_name=self.axis_name, name='bn')(x)


def bn_input_statistics(moments_tree: Any, running_stats: Any,
                        axis_name: str | None = None) -> list[dict[str, jax.Array]]:
  """Pairs each BN layer's input statistics with its running statistics.

  Args:
    moments_tree: the `BN_INPUT_MOMENTS` collection returned by `apply`.
    running_stats: the model's `batch_stats` collection (same module paths).
    axis_name: if given, the moments are averaged over this named device axis
      first, so the result describes the global batch.

  Returns:
    One dict per BN layer with `mean`, `var` (biased, of the input) and
    `running_mean`, `running_var`, in a deterministic (sorted-path) order.
  """
  flat_moments = traverse_util.flatten_dict(moments_tree)
  flat_running = traverse_util.flatten_dict(running_stats)
  layers = []
  for path in sorted(p for p in flat_moments if p[-1] == 'moments'):
    first, second = flat_moments[path]
    if axis_name is not None:
      first, second = jax.lax.pmean((first, second), axis_name)
    layer_path = path[:-1]
    layers.append({
        'mean': first,
        'var': second - jnp.square(first),
        'running_mean': flat_running[layer_path + ('bn', 'mean')],
        'running_var': flat_running[layer_path + ('bn', 'var')],
    })
  return layers

