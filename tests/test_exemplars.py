"""exemplars.py, iCaRL's memory: class quotas, herding, the memory update and
the nearest mean of exemplars."""

import numpy as np

from mfgr_jax import exemplars


def test_class_quotas_fill_the_memory_exactly_and_evenly():
  np.testing.assert_array_equal(exemplars.class_quotas([100, 100, 100], 41), [14, 14, 13])
  # A class with too few images keeps them all; the others share the rest.
  np.testing.assert_array_equal(exemplars.class_quotas([5, 100, 100], 41), [5, 18, 18])
  np.testing.assert_array_equal(exemplars.class_quotas([5, 6], 41), [5, 6])  # everything
  assert exemplars.class_quotas([96] * 6, 2000).sum() == 6 * 96


def test_herding_picks_the_running_mean_closest_to_the_class_mean():
  features = np.asarray([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]])
  order = exemplars.herding(features, 4)
  # Step 1: the row nearest to the mean (0.6, 0.6); step 2: the row whose
  # average with it is nearest to the mean.
  target = features.mean(0)
  assert order[0] == int(np.argmin(np.linalg.norm(target - features, axis=1)))
  second = np.linalg.norm(target - (features[order[0]] + features) / 2, axis=1)
  second[order[0]] = np.inf
  assert order[1] == int(np.argmin(second))
  assert sorted(order) == [0, 1, 2, 3]  # each row at most once


def test_memory_update_keeps_each_old_class_prefix():
  memory = np.asarray([10, 11, 12, 20, 21, 22], np.int32)  # classes 0, 0, 0, 1, 1, 1
  classes = np.asarray([0, 0, 0, 1, 1, 1])
  new = exemplars.update_memory(memory, classes, np.asarray([2, 2, 2]), [2],
                                {2: np.asarray([33, 31, 30])})
  np.testing.assert_array_equal(new, [10, 11, 20, 21, 33, 31])


def test_nearest_mean_of_normalised_features():
  features = np.asarray([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
  means = exemplars.class_means(features, np.asarray([0, 0, 1, 1]), 2)
  np.testing.assert_allclose(np.linalg.norm(means, axis=1), 1.0)
  np.testing.assert_allclose(means[0], np.asarray([1.8, 0.6]) / np.hypot(1.8, 0.6))
  test = np.asarray([[0.96, 0.28], [-0.28, 0.96]])
  np.testing.assert_array_equal(exemplars.nearest_mean(test, means), [0, 1])
