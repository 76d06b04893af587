"""data/sampler.py: a task's training batches are a pure function of the step (so a
resumed run sees the batches an uninterrupted one does), each epoch a fresh
permutation of the task's images."""

import jax
import numpy as np
import pytest

from mfgr_jax.data.sampler import BatchSampler

# 40 one-pixel "images" whose value is their index, so a batch says which it holds.
IMAGES = np.arange(40, dtype=np.int32).reshape(40, 1, 1, 1)
TARGETS = (np.arange(40) % 7).astype(np.int32)


def sampler(indices: np.ndarray, batch_size: int, order_seed: int = 0,
            augment_seed: int = 1) -> BatchSampler:
  return BatchSampler(IMAGES, TARGETS, indices, batch_size, jax.random.PRNGKey(order_seed),
                      jax.random.PRNGKey(augment_seed))


def chosen(batch: dict) -> np.ndarray:
  """The indices of the images in `batch`."""
  return np.asarray(batch['image']).reshape(-1)


def test_each_epoch_is_a_permutation_of_the_task_images():
  indices = np.arange(3, 40, 3)  # 13 images: 3 batches of 4, one image left out per epoch
  batches = sampler(indices, 4)
  for epoch in range(3):
    seen = np.concatenate([chosen(batches(3 * epoch + i)) for i in range(3)])
    assert len(set(seen.tolist())) == 12  # no image twice within an epoch
    assert set(seen.tolist()) <= set(indices.tolist())


def test_a_whole_number_of_batches_visits_every_image_once_per_epoch():
  indices = np.arange(0, 24, 2)
  batches = sampler(indices, 4)
  for epoch in range(2):
    seen = np.concatenate([chosen(batches(3 * epoch + i)) for i in range(3)])
    np.testing.assert_array_equal(np.sort(seen), indices)


def test_epochs_are_shuffled_differently():
  batches = sampler(np.arange(24), 8)
  first, second = (np.concatenate([chosen(batches(3 * epoch + i)) for i in range(3)])
                   for epoch in range(2))
  assert not np.array_equal(first, second)
  assert not np.array_equal(first, np.arange(24))


def test_the_batch_of_a_step_depends_only_on_the_keys_and_the_step():
  indices = np.arange(30)
  in_order = sampler(indices, 5)
  batches = [in_order(step) for step in range(12)]
  resumed = sampler(indices, 5)  # a fresh sampler, asked from step 7 on (as after a resume)
  for step in (7, 8, 11, 3):
    for key in ('image', 'label', 'aug_key'):
      np.testing.assert_array_equal(np.asarray(resumed(step)[key]), np.asarray(batches[step][key]))
  other = sampler(indices, 5, order_seed=2)
  assert not np.array_equal(chosen(other(0)), chosen(batches[0]))


def test_labels_are_the_targets_of_the_images():
  batch = sampler(np.arange(40), 8)(4)
  np.testing.assert_array_equal(np.asarray(batch['label']), TARGETS[chosen(batch)])


def test_every_image_of_every_step_gets_its_own_augmentation_key():
  batches = sampler(np.arange(16), 4)
  keys = np.concatenate([np.asarray(batches(step)['aug_key']) for step in range(8)])
  assert len({tuple(key) for key in keys.tolist()}) == 32
  again = sampler(np.arange(16), 4, order_seed=5)
  np.testing.assert_array_equal(np.asarray(again(3)['aug_key']),
                                np.asarray(batches(3)['aug_key']))  # not tied to the order


@pytest.mark.parametrize('batch_size', [1, 4])
def test_the_batch_has_the_batch_size(batch_size):
  batch = sampler(np.arange(10), batch_size)(0)
  assert {key: np.shape(value)[0] for key, value in batch.items()} == {
      'image': batch_size, 'label': batch_size, 'aug_key': batch_size}
