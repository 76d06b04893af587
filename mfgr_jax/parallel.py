"""Data parallelism over all devices: pmap semantics via `shard_map` under `jit`.

Step bodies are written per device, as for `jax.pmap`: they see their shard of
the global batch and reduce with collectives over `AXIS` (no device indexing).
In the JAX this project pins (0.12), `jax.pmap` is itself implemented as
`jit(shard_map(...))` and its helpers (`device_put_replicated`) are removed, so
we call `shard_map` directly: arrays keep their global shapes, state is
replicated, batches are split along their leading axis.

The mesh spans the devices of every process of a multi-process run (TPU pod
slices, multi-node GPU): each process feeds only its own rows of a global
batch (`local_rows`, `shard`) and `to_host` gathers results from all of them.
"""

import contextlib
import functools
from typing import Any, Callable, Iterator

import jax
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
import numpy as np

from mfgr_jax.errors import UserError, first_line

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


def initialize_processes(coordinator_address: str | None, num_processes: int | None,
                         process_id: int | None) -> None:
  """Joins a multi-process run (`jax.distributed.initialize`).

  Without arguments JAX reads the cluster from the environment (Cloud TPU
  pods, SLURM, Open MPI); the three arguments name it explicitly (e.g. two
  processes on one machine: 'localhost:PORT', 2, 0 and 1). On CPU the
  processes talk through gloo, JAX's default CPU collectives.
  """
  try:
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  except (RuntimeError, ValueError) as e:
    raise UserError(f'cannot join the multi-process run ({first_line(e)}); pass --coordinator_address, '
                    '--num_processes and --process_id, or run inside a TPU pod / SLURM job') from None


def is_main_process() -> bool:
  """Process 0 writes results, reports, samples and TensorBoard files."""
  return jax.process_index() == 0


@contextlib.contextmanager
def main_process_first(name: str) -> Iterator[None]:
  """Runs the body on process 0 before the others (e.g. preparing a dataset
  that every process then reads), so that they never write the same files."""
  if not is_main_process():
    multihost_utils.sync_global_devices(name)
  yield
  if is_main_process():
    multihost_utils.sync_global_devices(name)


def replicate(tree: Any) -> Any:
  """Places a full copy of `tree` (the same on every process) on every device."""
  return jax.device_put(tree, NamedSharding(mesh(), REPLICATED))


def local_rows(global_batch_size: int) -> slice:
  """The rows of a global batch that this process's devices hold."""
  index_map = NamedSharding(mesh(), SHARDED).addressable_devices_indices_map((global_batch_size,))
  starts = [index[0].start or 0 for index in index_map.values()]
  stops = [global_batch_size if index[0].stop is None else index[0].stop
           for index in index_map.values()]
  if sum(stop - start for start, stop in zip(starts, stops)) != max(stops) - min(starts):
    raise ValueError('this process\'s devices do not hold contiguous rows of the batch')
  return slice(min(starts), max(stops))


def shard(local_tree: Any) -> Any:
  """A global batch from this process's rows of it (`local_rows`; every process
  holds as many), split across the devices along the leading axis."""
  sharding = NamedSharding(mesh(), SHARDED)
  return jax.tree_util.tree_map(
      lambda x: jax.make_array_from_process_local_data(
          sharding, x, (len(x) * jax.process_count(),) + np.shape(x)[1:]), local_tree)


def to_host(tree: Any) -> Any:
  """Host numpy copies; arrays spread over several processes are gathered first."""

  def fetch(x: Any) -> np.ndarray:
    if isinstance(x, jax.Array) and not (x.is_fully_addressable or x.is_fully_replicated):
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree_util.tree_map(fetch, tree)


def zeros_shaped_like(function: Callable, *args: Any) -> Any:
  """Host zeros shaped like the arrays `function(*args)` returns, from its shapes alone
  (`jax.eval_shape`): e.g. a restore target of a model's variables, without running
  (and compiling, op by op) every initialiser of its `init`."""
  return jax.tree_util.tree_map(lambda shape: np.zeros(shape.shape, shape.dtype),
                                jax.eval_shape(function, *args))


def check_divisible(batch_size: int, field: str) -> None:
  if batch_size % device_count():
    raise UserError(f'{field}={batch_size} is not divisible by the {device_count()} devices; '
                    f'choose a multiple of {device_count()}')


def padded_batches(count: int, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Positions 0 .. count - 1 in global batches of `batch_size`, the last padded
  with position 0 so that every step has one shape: yields (positions, weights),
  weight 1.0 for a real row and 0.0 for padding. Feed `[local_rows(batch_size)]`
  of them to `shard`."""
  for begin in range(0, count, batch_size):
    positions = np.arange(begin, min(begin + batch_size, count))
    weights = (np.arange(batch_size) < len(positions)).astype(np.float32)
    yield np.concatenate([positions, np.zeros(batch_size - len(positions), np.int64)]), weights


def map_in_batches(step: Callable[[Any, jax.Array], jax.Array], replicated: Any,
                   images: np.ndarray, batch_size: int) -> np.ndarray:
  """`step(replicated, batch)` of a data-parallel step (sharded output) over every
  image, in padded global batches (`padded_batches`); host outputs, concatenated."""
  rows, outputs = local_rows(batch_size), []
  for positions, weights in padded_batches(len(images), batch_size):
    outputs.append(to_host(step(replicated, shard(images[positions[rows]])))[weights > 0])
  return np.concatenate(outputs)


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
