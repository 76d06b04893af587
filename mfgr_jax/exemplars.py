"""iCaRL's exemplar memory: a fixed total size, herding selection, nearest mean of exemplars.

The memory holds indices into the training set (the images themselves are
the dataset's, loaded once; a checkpoint's fingerprint pins the dataset), in
class order and, within a class, in herding order, so that shrinking a
class's share keeps its best exemplars (iCaRL's prefix property).
"""

from typing import Sequence

import numpy as np


def class_quotas(class_sizes: Sequence[int], memory_size: int) -> np.ndarray:
  """Exemplars per class: as equal as possible, `memory_size` in total (fewer only
  when the classes hold fewer images); the first classes take the remainder."""
  sizes = np.asarray(class_sizes, np.int64)
  # The largest equal share q that fits, then one more for as many classes as still fit.
  low, high = 0, int(sizes.max(initial=0))
  while low < high:
    middle = (low + high + 1) // 2
    low, high = (middle, high) if np.minimum(sizes, middle).sum() <= memory_size else (low, middle - 1)
  quotas = np.minimum(sizes, low)
  room = np.flatnonzero(sizes > low)[:memory_size - int(quotas.sum())]
  quotas[room] += 1
  return quotas


def herding(features: np.ndarray, count: int) -> np.ndarray:
  """Indices of `count` rows of `features` (L2-normalised) chosen greedily so that
  the running mean of the chosen stays closest to the mean of all (Welling 2009)."""
  features = np.asarray(features, np.float64)
  target = features.mean(axis=0)
  chosen, total = [], np.zeros_like(target)
  available = np.ones(len(features), bool)
  for k in range(1, min(count, len(features)) + 1):
    distances = np.linalg.norm(target - (total + features) / k, axis=1)
    distances[~available] = np.inf
    best = int(np.argmin(distances))
    chosen.append(best)
    available[best] = False
    total += features[best]
  return np.asarray(chosen, np.int64)


def update_memory(memory: np.ndarray, memory_classes: np.ndarray, quotas: np.ndarray,
                  new_classes: Sequence[int], new_exemplars: dict[int, np.ndarray]) -> np.ndarray:
  """The memory after a task: each old class keeps the first `quotas[c]` of its
  exemplars; each new class c adds `new_exemplars[c]` (herding order)."""
  parts = []
  for c in range(len(quotas)):
    if c in new_classes:
      parts.append(np.asarray(new_exemplars[c][:quotas[c]], np.int64))
    else:
      parts.append(memory[memory_classes == c][:quotas[c]])
  return np.concatenate(parts).astype(np.int32)


def class_means(features: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
  """L2-normalised mean of each class's (L2-normalised) exemplar features."""
  sums = np.zeros((num_classes, features.shape[-1]))
  np.add.at(sums, labels, features)
  norms = np.linalg.norm(sums, axis=1, keepdims=True)
  return sums / np.maximum(norms, 1e-12)


def flip_averaged_means(features: np.ndarray, flipped_features: np.ndarray, labels: np.ndarray,
                        num_classes: int) -> np.ndarray:
  """iCaRL's class means: the normalised average of the class means of the exemplars
  and of their flipped copies (all features L2-normalised)."""
  return class_means(np.concatenate([class_means(features, labels, num_classes),
                                     class_means(flipped_features, labels, num_classes)]),
                     np.tile(np.arange(num_classes), 2), num_classes)


def nearest_mean(features: np.ndarray, means: np.ndarray) -> np.ndarray:
  """Class of the nearest mean to each (L2-normalised) feature: for unit vectors
  the smallest Euclidean distance is the largest inner product."""
  return np.argmax(features @ means.T, axis=1)
