"""A class-conditional image dataset made in code, for tests and smoke runs.

Each class has a smooth random prototype; examples are the prototype with a
random shift, contrast and pixel noise, so a small convnet can learn the
classes in a few steps but not trivially from one pixel.
"""

import numpy as np


def make_synthetic(num_classes: int, image_size: int, channels: int, train_per_class: int,
                   test_per_class: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Returns {'train': (images uint8 NHWC, labels int32), 'test': (...)}."""
  rng = np.random.default_rng(seed)
  coarse = rng.uniform(0.0, 1.0, (num_classes, 4, 4, channels))
  # Nearest-upsample the 4x4 grid and crop, so prototypes are blocky but smooth.
  reps = -(-image_size // 4)
  prototypes = np.repeat(np.repeat(coarse, reps, axis=1), reps, axis=2)
  prototypes = prototypes[:, :image_size, :image_size]

  def split(per_class):
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    shifts = rng.integers(-2, 3, size=(labels.size, 2))
    images = np.stack([np.roll(prototypes[c], tuple(s), axis=(0, 1))
                       for c, s in zip(labels, shifts)])
    contrast = rng.uniform(0.7, 1.3, (labels.size, 1, 1, 1))
    images = 0.5 + contrast * (images - 0.5) + rng.normal(0.0, 0.15, images.shape)
    order = rng.permutation(labels.size)
    return (np.clip(images * 255.0, 0, 255).astype(np.uint8)[order], labels[order])

  return {'train': split(train_per_class), 'test': split(test_per_class)}
