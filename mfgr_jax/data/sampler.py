"""The training batches of one task, as a pure function of the step."""

import jax
import numpy as np

from mfgr_jax import parallel


class BatchSampler:
  """`sampler(step)`: the global batch of `step`, split across the devices (each
  process reads its own rows of it).

  Epoch e visits `indices` (of `images`) in a permutation keyed by
  fold_in(order_key, e); step s takes the (s mod steps_per_epoch)-th full batch
  of it (the last partial batch is dropped, so every step has the same shape).
  Each image gets its own augmentation key from fold_in(augment_key, s) and
  its position. A process reads only its own rows (`parallel.local_rows`).
  """

  def __init__(self, images: np.ndarray, targets: np.ndarray, indices: np.ndarray,
               batch_size: int, order_key: jax.Array, augment_key: jax.Array):
    self._images = images
    self._targets = targets
    self._indices = indices
    self._batch_size = batch_size
    self._steps_per_epoch = len(indices) // batch_size
    self._order_key = order_key
    self._augment_key = augment_key
    self._epoch, self._permutation = None, None
    self._rows = parallel.local_rows(batch_size)

  def __call__(self, step: int) -> dict[str, jax.Array]:
    epoch, position = divmod(step, self._steps_per_epoch)
    if epoch != self._epoch:
      self._epoch = epoch
      self._permutation = np.asarray(jax.random.permutation(
          jax.random.fold_in(self._order_key, epoch), self._indices))
    chosen = self._permutation[position * self._batch_size:(position + 1) * self._batch_size]
    keys = jax.random.split(jax.random.fold_in(self._augment_key, step), self._batch_size)
    chosen = chosen[self._rows]
    return parallel.shard({'image': self._images[chosen], 'label': self._targets[chosen],
                           'aug_key': np.asarray(keys)[self._rows]})
