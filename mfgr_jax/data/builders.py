"""TFDS builders of ours for archives that TFDS's own builders cannot read here.

- `fashion_mnist_idx`: the four original Fashion-MNIST IDX files from a manual
  dir. Debian's `dataset-fashion-mnist` ships them recompressed, so TFDS's
  `fashion_mnist` builder rejects them by gzip checksum although the content is
  the original; we verify the content's structure instead.
- `cifar100_python`: the python-pickle archive `cifar-100-python.tar.gz`
  (what torchvision downloads); TFDS's `cifar100` reads the binary archive.
"""

import pickle
import tarfile

import numpy as np
import tensorflow_datasets as tfds

from mfgr_jax.data.idx import read_idx

FASHION_MNIST_FILES = {
    'train': ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz'),
    'test': ('t10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz'),
}
FASHION_MNIST_CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
                         'Shirt', 'Sneaker', 'Bag', 'Ankle boot')
CIFAR100_PYTHON_ARCHIVE = 'cifar-100-python.tar.gz'


class FashionMnistIdx(tfds.core.GeneratorBasedBuilder):
  """Fashion-MNIST from the original IDX files in a manual dir."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      'Place the four Fashion-MNIST IDX files (train-images-idx3-ubyte.gz, ...) in the manual '
      'dir; on Debian: apt-get install dataset-fashion-mnist (they land in '
      '/usr/share/datasets/fashion-mnist).')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(28, 28, 1)),
            'label': tfds.features.ClassLabel(names=FASHION_MNIST_CLASSES),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://github.com/zalandoresearch/fashion-mnist')

  def _split_generators(self, dl_manager):
    return {split: self._generate_examples(dl_manager.manual_dir, files)
            for split, files in FASHION_MNIST_FILES.items()}

  def _generate_examples(self, manual_dir, files):
    images_file, labels_file = (manual_dir / name for name in files)
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
      raise ValueError(f'{images_file}: expected N x 28 x 28 images, got shape {images.shape}')
    if labels.shape != (images.shape[0],):
      raise ValueError(f'{labels_file}: {labels.shape[0]} labels for {images.shape[0]} images')
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
      raise ValueError(f'{labels_file}: label {labels.max()} out of range 0..9')
    for i, (image, label) in enumerate(zip(images, labels)):
      yield i, {'image': image[..., None], 'label': int(label)}


class Cifar100Python(tfds.core.GeneratorBasedBuilder):
  """CIFAR-100 from the official python archive `cifar-100-python.tar.gz`."""

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {CIFAR100_PYTHON_ARCHIVE} (from https://www.cs.toronto.edu/~kriz/cifar.html) in '
      'the manual dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(32, 32, 3)),
            'label': tfds.features.ClassLabel(num_classes=100),
            'coarse_label': tfds.features.ClassLabel(num_classes=20),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.cs.toronto.edu/~kriz/cifar.html')

  def _split_generators(self, dl_manager):
    archive = dl_manager.manual_dir / CIFAR100_PYTHON_ARCHIVE
    with tarfile.open(archive, 'r:gz') as tar:
      members = {m.name.split('/')[-1]: m for m in tar.getmembers() if m.isfile()}
      missing = {'meta', 'train', 'test'} - set(members)
      if missing:
        raise ValueError(f'{archive} lacks {sorted(missing)}: not a cifar-100-python archive')
      load = lambda name: pickle.load(tar.extractfile(members[name]), encoding='latin1')
      self.info.features['label'].names = load('meta')['fine_label_names']
      self.info.features['coarse_label'].names = load('meta')['coarse_label_names']
      splits = {'train': load('train'), 'test': load('test')}
    return {split: self._generate_examples(batch) for split, batch in splits.items()}

  def _generate_examples(self, batch):
    # Rows are 3072 bytes: the red plane, then green, then blue, each 32x32 row-major.
    images = np.asarray(batch['data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    for i, (image, fine, coarse) in enumerate(
        zip(images, batch['fine_labels'], batch['coarse_labels'])):
      yield i, {'image': image, 'label': int(fine), 'coarse_label': int(coarse)}
