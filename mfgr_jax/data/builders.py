"""TFDS builders of ours for archives that TFDS's own builders cannot read here.

- `fashion_mnist_idx`: the four original Fashion-MNIST IDX files from a manual
  dir. Debian's `dataset-fashion-mnist` ships them recompressed, so TFDS's
  `fashion_mnist` builder rejects them by gzip checksum although the content is
  the original; we verify the content's structure instead.
- `cifar100_python`: the python-pickle archive `cifar-100-python.tar.gz`
  (what torchvision downloads); TFDS's `cifar100` reads the binary archive.
- `tiny_imagenet`: TFDS has no builder for it.
- `caltech_birds2011_archive`, `caltech101_archive`: the official archives in a
  manual dir (TFDS's builders download them, and CUB's also needs the
  segmentation archive); same label ids as TFDS's `caltech_birds2011` and
  `caltech101`.

Photographs are stored as their original JPEG bytes when those decode to RGB
(re-encoded as JPEG otherwise: grayscale and CMYK files exist in all three).
"""

import io
import os
import pathlib
import pickle
import tarfile
from typing import Iterator
import zlib

import numpy as np
import PIL.Image
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


# --- Datasets of photographs of any size, stored as their original JPEG bytes. ---

TINY_IMAGENET_ARCHIVE = 'tiny-imagenet-200.zip'
TINY_IMAGENET_FOLDER = 'tiny-imagenet-200'
CUB_ARCHIVE = 'CUB_200_2011.tgz'
CALTECH101_ARCHIVES = ('101_ObjectCategories.tar.gz', 'caltech-101.zip')
CALTECH101_TRAIN_PER_CLASS = 30  # the usual protocol, as TFDS's caltech101


def _image_bytes(data: bytes) -> bytes | PIL.Image.Image:
  """JPEG bytes as they are when they decode to RGB; anything else converted to RGB."""
  image = PIL.Image.open(io.BytesIO(data))
  if image.format == 'JPEG' and image.mode == 'RGB':
    return data
  return image.convert('RGB')


def _iter_files(dl_manager, path: pathlib.Path) -> Iterator[tuple[str, bytes]]:
  """(posix path inside, content) of every file of an archive or a folder, in archive order."""
  if path.is_dir():
    path = pathlib.Path(os.fspath(path))  # an epath; its glob refuses '**'
    for file in sorted(p for p in path.rglob('*') if p.is_file()):
      yield file.relative_to(path.parent).as_posix(), file.read_bytes()
  else:
    for name, fileobj in dl_manager.iter_archive(path):
      yield name.replace('\\', '/'), fileobj.read()


def _photo_features(**labels: tfds.features.FeatureConnector) -> tfds.features.FeaturesDict:
  return tfds.features.FeaturesDict({
      'image': tfds.features.Image(shape=(None, None, 3), encoding_format='jpeg'),
      'file_name': tfds.features.Text(), **labels})


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet (200 classes, 64x64): train from `train/<wnid>/images`, test = `val`.

  Labels follow the sorted wnids (torchvision `ImageFolder` order, as MUC's
  reorganised val folders); the official test split has no labels.
  """

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {TINY_IMAGENET_ARCHIVE} (http://cs231n.stanford.edu/tiny-imagenet-200.zip) or '
      f'its extracted folder {TINY_IMAGENET_FOLDER}/ in the manual dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(64, 64, 3), encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(num_classes=200),
            'file_name': tfds.features.Text()}),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/c/tiny-imagenet')

  def _split_generators(self, dl_manager):
    folder = dl_manager.manual_dir / TINY_IMAGENET_FOLDER
    source = folder if folder.is_dir() else dl_manager.manual_dir / TINY_IMAGENET_ARCHIVE
    texts = {name.split('/', 1)[-1]: data.decode() for name, data in _iter_files(dl_manager, source)
             if name.endswith(('wnids.txt', 'words.txt', 'val_annotations.txt'))}
    missing = {'wnids.txt', 'words.txt', 'val/val_annotations.txt'} - set(texts)
    if missing:
      raise ValueError(f'{source} lacks {sorted(missing)}: not the tiny-imagenet-200 layout')
    wnids = sorted(texts['wnids.txt'].split())
    if len(wnids) != 200:
      raise ValueError(f'{source}: wnids.txt lists {len(wnids)} classes, expected 200')
    words = dict(line.split('\t', 1) for line in texts['words.txt'].splitlines() if '\t' in line)
    self.info.features['label'].names = [words.get(w, w).split(',')[0].strip() for w in wnids]
    label_of_wnid = {wnid: i for i, wnid in enumerate(wnids)}
    val_labels = {fields[0]: label_of_wnid[fields[1]] for fields in
                  (line.split('\t') for line in texts['val/val_annotations.txt'].splitlines())
                  if len(fields) > 1}

    def train_label(parts):  # tiny-imagenet-200/train/<wnid>/images/<file>
      return label_of_wnid[parts[2]] if len(parts) == 5 and parts[1] == 'train' else None

    def val_label(parts):  # tiny-imagenet-200/val/images/<file>
      return val_labels.get(parts[3]) if len(parts) == 4 and parts[1:3] == ['val', 'images'] else None

    return {'train': self._generate_examples(dl_manager, source, train_label),
            'test': self._generate_examples(dl_manager, source, val_label)}

  def _generate_examples(self, dl_manager, source, label_of_parts):
    for name, data in _iter_files(dl_manager, source):
      if name.endswith('.JPEG'):
        label = label_of_parts(name.split('/'))
        if label is not None:
          yield name, {'image': _image_bytes(data), 'label': label, 'file_name': name}


class CaltechBirds2011Archive(tfds.core.GeneratorBasedBuilder):
  """CUB-200-2011 from the official `CUB_200_2011.tgz`, with its train/test split.

  Label i is the class numbered i+1 in `classes.txt`, as TFDS's own
  `caltech_birds2011` (which also needs the segmentation archive).
  """

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {CUB_ARCHIVE} (https://data.caltech.edu/records/65de6-vp158) in the manual dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=_photo_features(label=tfds.features.ClassLabel(num_classes=200)),
        supervised_keys=('image', 'label'),
        homepage='https://www.vision.caltech.edu/datasets/cub_200_2011/')

  def _split_generators(self, dl_manager):
    archive = dl_manager.manual_dir / CUB_ARCHIVE
    wanted = ('classes.txt', 'images.txt', 'image_class_labels.txt', 'train_test_split.txt')
    tables = {name.split('/')[-1]: [line.split() for line in data.decode().splitlines() if line]
              for name, data in _iter_files(dl_manager, archive)
              if name.count('/') == 1 and name.split('/')[-1] in wanted}
    if set(tables) != set(wanted):
      raise ValueError(f'{archive} lacks {sorted(set(wanted) - set(tables))}: not CUB_200_2011.tgz')
    names = dict(tables['classes.txt'])
    self.info.features['label'].names = [names[str(i + 1)].split('.', 1)[-1] for i in range(200)]
    path_of = dict(tables['images.txt'])
    label_of = {path_of[i]: int(c) - 1 for i, c in tables['image_class_labels.txt']}
    split_of = {path_of[i]: 'train' if flag == '1' else 'test'
                for i, flag in tables['train_test_split.txt']}
    return {split: self._generate_examples(dl_manager, archive, split, split_of, label_of)
            for split in ('train', 'test')}

  def _generate_examples(self, dl_manager, archive, split, split_of, label_of):
    for name, data in _iter_files(dl_manager, archive):
      path = name.split('/images/', 1)[-1]  # CUB_200_2011/images/<class>/<file>
      if split_of.get(path) == split:
        yield path, {'image': _image_bytes(data), 'label': label_of[path], 'file_name': path}


class Caltech101Archive(tfds.core.GeneratorBasedBuilder):
  """Caltech-101 from `101_ObjectCategories.tar.gz` (or `caltech-101.zip`, which holds it).

  Labels are TFDS's `caltech101` label list (102 lower-cased folder names,
  background included), so label ids agree with that builder. Split: 30
  training images per class, the rest test; which 30 is a permutation seeded
  by the class name over the sorted file names (TFDS's own split depends on
  the file system's listing order).
  """

  VERSION = tfds.core.Version('1.0.0')
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Place {" or ".join(CALTECH101_ARCHIVES)} (https://data.caltech.edu/records/mzrjq-6wc02) '
      'in the manual dir.')

  def _info(self) -> tfds.core.DatasetInfo:
    names_file = tfds.core.tfds_path('image_classification/caltech101_labels.txt')
    return self.dataset_info_from_configs(
        features=_photo_features(label=tfds.features.ClassLabel(names_file=names_file)),
        supervised_keys=('image', 'label'), homepage='https://doi.org/10.22002/D1.20086')

  def _split_generators(self, dl_manager):
    archive = next((dl_manager.manual_dir / name for name in CALTECH101_ARCHIVES
                    if (dl_manager.manual_dir / name).exists()), None)
    if archive is None:
      raise FileNotFoundError(f'none of {CALTECH101_ARCHIVES} in {dl_manager.manual_dir}')
    files = {}
    for name, _ in self._iter_images(dl_manager, archive, content=False):
      files.setdefault(name.split('/')[-2], []).append(name)
    names = self.info.features['label'].names
    unknown = sorted(set(folder.lower() for folder in files) - set(names))
    if unknown:
      raise ValueError(f'{archive}: unknown class folders {unknown[:3]}: not Caltech-101')
    split_of = {}
    for folder, class_files in files.items():
      class_files = sorted(class_files)
      seed = zlib.crc32(folder.lower().encode())
      order = np.random.RandomState(seed).permutation(len(class_files))
      for rank, index in enumerate(order):
        split_of[class_files[index]] = 'train' if rank < CALTECH101_TRAIN_PER_CLASS else 'test'
    return {split: self._generate_examples(dl_manager, archive, split, split_of)
            for split in ('train', 'test')}

  def _iter_images(self, dl_manager, archive, content=True):
    """(folder/file name, JPEG bytes) of the images, from either archive."""
    if archive.name.endswith('.zip'):
      inner = next((data for name, data in _iter_files(dl_manager, archive)
                    if name.endswith(CALTECH101_ARCHIVES[0])), None)
      if inner is None:
        raise ValueError(f'{archive} holds no {CALTECH101_ARCHIVES[0]}')
      tar = tarfile.open(fileobj=io.BytesIO(inner), mode='r:gz')
    else:
      tar = tarfile.open(archive, mode='r|gz')
    with tar:
      for member in tar:
        parts = member.name.split('/')
        if member.isfile() and parts[-1].endswith('.jpg') and len(parts) >= 2:
          yield '/'.join(parts[-2:]), tar.extractfile(member).read() if content else None

  def _generate_examples(self, dl_manager, archive, split, split_of):
    for name, data in self._iter_images(dl_manager, archive):
      if split_of.get(name) == split:
        yield name, {'image': _image_bytes(data), 'label': name.split('/')[0].lower(),
                     'file_name': name}
