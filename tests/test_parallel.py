"""parallel.py's batching of a whole array for data-parallel steps: padded global
batches, and mapping a step over every image. On the test process's one CPU
device (several devices: test_data_parallel.py)."""

import jax.numpy as jnp
import numpy as np
import pytest

from mfgr_jax import parallel


def batches(count: int, batch_size: int) -> list[tuple[list[int], list[float]]]:
  return [(positions.tolist(), weights.tolist())
          for positions, weights in parallel.padded_batches(count, batch_size)]


def test_nothing_to_batch_gives_no_batch():
  assert batches(0, 4) == []


def test_fewer_than_a_batch_is_one_batch_padded_with_position_0():
  assert batches(3, 5) == [([0, 1, 2, 0, 0], [1.0, 1.0, 1.0, 0.0, 0.0])]


def test_whole_batches_need_no_padding():
  assert batches(6, 3) == [([0, 1, 2], [1.0] * 3), ([3, 4, 5], [1.0] * 3)]


def test_a_partial_last_batch_is_padded_to_the_batch_size():
  assert batches(7, 3) == [([0, 1, 2], [1.0] * 3), ([3, 4, 5], [1.0] * 3),
                           ([6, 0, 0], [1.0, 0.0, 0.0])]


@pytest.mark.parametrize('count,batch_size', [(1, 4), (8, 4), (11, 4), (7, 3)])
def test_every_position_once_with_weight_1_and_integer_positions(count, batch_size):
  positions, weights = zip(*parallel.padded_batches(count, batch_size))
  positions, weights = np.concatenate(positions), np.concatenate(weights)
  assert positions.dtype.kind == 'i' and weights.dtype == np.float32  # indexes an array
  np.testing.assert_array_equal(positions[weights > 0], np.arange(count))
  assert np.all(positions[weights == 0] == 0)


def _step():
  """A data-parallel step whose rows depend on their own image only (as an eval step's)."""
  return parallel.data_parallel(lambda w, x: jnp.tanh(x @ w) + x.sum(-1, keepdims=True),
                                in_specs=(parallel.REPLICATED, parallel.SHARDED),
                                out_specs=parallel.SHARDED)


@pytest.mark.parametrize('count', [1, 6, 7])
def test_map_in_batches_equals_the_step_on_every_image_at_once(count):
  rng = np.random.default_rng(0)
  images = rng.normal(size=(count, 4)).astype(np.float32)
  w = parallel.replicate(rng.normal(size=(4, 2)).astype(np.float32))
  step = _step()
  mapped = parallel.map_in_batches(step, w, images, 3)
  assert mapped.shape == (count, 2) and isinstance(mapped, np.ndarray)
  np.testing.assert_allclose(mapped, np.asarray(step(w, images)), rtol=1e-6)
