"""Data parallelism over all devices: pmap semantics via `shard_map` under `jit`.

Step bodies are written per device, as for `jax.pmap`: they see their shard of
the global batch and reduce with collectives over `AXIS` (no device indexing).
In the JAX this project pins (0.12), `jax.pmap` is itself implemented as
`jit(shard_map(...))` and its helpers (`device_put_replicated`) are removed, so
we call `shard_map` directly: arrays keep their global shapes, state is
replicated, batches are split along their leading axis.
"""

import functools
from typing import Any, Callable

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from mfgr_jax.errors import UserError

AXIS = 'batch'
REPLICATED = PartitionSpec()
SHARDED = PartitionSpec(AXIS)


@functools.cache
def mesh() -> Mesh:
  """A 1-D mesh over every device, named `AXIS`."""
  return Mesh(np.asarray(jax.devices()), (AXIS,))


def device_count() -> int:
  return mesh().size


def data_parallel(fn: Callable[..., Any], in_specs: tuple, out_specs: Any,
                  donate_argnums: tuple[int, ...] = ()) -> Callable[..., Any]:
  """jit(shard_map(fn)) over `mesh()`; specs are `REPLICATED` or `SHARDED`."""
  mapped = jax.shard_map(fn, mesh=mesh(), in_specs=in_specs, out_specs=out_specs)
  return jax.jit(mapped, donate_argnums=donate_argnums)


def replicate(tree: Any) -> Any:
  """Places a full copy of `tree` on every device."""
  return jax.device_put(tree, NamedSharding(mesh(), REPLICATED))


def shard(tree: Any) -> Any:
  """Splits the leading (global batch) axis of every leaf across the devices."""
  return jax.device_put(tree, NamedSharding(mesh(), SHARDED))


def to_host(tree: Any) -> Any:
  return jax.tree_util.tree_map(np.asarray, tree)


def check_divisible(batch_size: int, field: str) -> None:
  if batch_size % device_count():
    raise UserError(f'{field}={batch_size} is not divisible by the {device_count()} devices; '
                    f'choose a multiple of {device_count()}')


def per_device(tree: Any) -> Any:
  """Marks replicated values (parameters) as varying across devices.

  Inside `shard_map`, JAX transposes the implicit broadcast of a replicated
  input into a `psum`, so `jax.grad` w.r.t. replicated parameters returns the
  *sum* of the per-device gradients. Differentiating w.r.t. `per_device(params)`
  gives each device its own gradient instead, which `pmean` then averages:
  exactly pmap's semantics, and the single-device gradient of the global batch.

  A loss term computed from cross-device means (the same value on every
  device) must also pass through `per_device` before it is added to the local
  terms, so that its gradient is summed over the devices it depends on rather
  than counted once per device.
  """
  return jax.lax.pcast(tree, AXIS, to='varying')


def sharded_normal(key: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """N(0, I) noise of a global batch, made inside `jit` with each device's rows on it.

  The values do not depend on the device count (JAX's threefry is
  partitionable), so generator steps see the same noise on 1 or N devices.
  """
  return sharded(jax.random.normal(key, shape))


def sharded(x: jax.Array) -> jax.Array:
  """`x` (made inside `jit`) laid out with its leading axis split across the devices."""
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh(), SHARDED))


def pmean(tree: Any) -> Any:
  """Mean over the data-parallel devices (inside a `data_parallel` body)."""
  return jax.lax.pmean(tree, AXIS)


def all_gather(x: jax.Array) -> jax.Array:
  """The global batch of a per-device array (inside a `data_parallel` body).

  The result is typed invariant (the same on every device), like a `pmean`.
  """
  return jax.lax.all_gather(x, AXIS, tiled=True, to='invarying')
