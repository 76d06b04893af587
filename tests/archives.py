"""Miniature datasets in the official archive layouts, written by the tests.

Every image of class c has the colour `class_colour(c)` (plus a little noise
in the raw CIFAR files), so a test can check that images and labels stay
together through preparation and loading.
"""

import io
import pathlib
import pickle
import tarfile
import zipfile

import numpy as np
import PIL.Image
from tensorflow_datasets.core import utils as tfds_utils

CALTECH101_LABELS = tfds_utils.tfds_path(
    'image_classification/caltech101_labels.txt').read_text().split()
# Folder names of the real archive whose case differs from TFDS's label list.
_CALTECH_FOLDERS = {'background_google': 'BACKGROUND_Google', 'faces': 'Faces',
                    'faces_easy': 'Faces_easy', 'leopards': 'Leopards', 'motorbikes': 'Motorbikes'}


def class_colour(label: int) -> tuple[int, int, int]:
  return (37 * label) % 256, (91 * label + 50) % 256, (17 * label + 100) % 256


def _jpeg(label: int, size: tuple[int, int], grey: bool = False) -> bytes:
  image = PIL.Image.new('RGB', size, class_colour(label))
  buffer = io.BytesIO()
  (image.convert('L') if grey else image).save(buffer, format='JPEG', quality=95)
  return buffer.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
  info = tarfile.TarInfo(name)
  info.size = len(data)
  tar.addfile(info, io.BytesIO(data))


def cifar_split(n: int, seed: int, labels: np.ndarray | None = None):
  """(images, fine, coarse): images whose R, G, B planes differ, as the official rows store them."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  fine = rng.integers(0, 100, n) if labels is None else labels
  return images, fine, fine // 5


def write_cifar100_python(manual: pathlib.Path, splits: dict) -> pathlib.Path:
  """`cifar-100-python.tar.gz` holding `splits` {'train'|'test': cifar_split(...)}."""
  manual.mkdir(parents=True, exist_ok=True)
  archive = manual / 'cifar-100-python.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    meta = {'fine_label_names': [f'fine{i}' for i in range(100)],
            'coarse_label_names': [f'coarse{i}' for i in range(20)]}
    _add(tar, 'cifar-100-python/meta', pickle.dumps(meta))
    for split, (images, fine, coarse) in splits.items():
      rows = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)  # R, G, B planes
      batch = {'data': rows, 'fine_labels': list(map(int, fine)),
               'coarse_labels': list(map(int, coarse)),
               'filenames': [f'{i}.png' for i in range(len(images))]}
      _add(tar, f'cifar-100-python/{split}', pickle.dumps(batch))
  return archive


def write_cifar100_binary(manual: pathlib.Path, splits: dict) -> pathlib.Path:
  manual.mkdir(parents=True, exist_ok=True)
  archive = manual / 'cifar-100-binary.tar.gz'
  with tarfile.open(archive, 'w:gz') as tar:
    for split, (images, fine, coarse) in splits.items():
      records = np.concatenate([coarse[:, None], fine[:, None],
                                images.transpose(0, 3, 1, 2).reshape(len(images), 3072)], 1)
      _add(tar, f'cifar-100-binary/{split}.bin', records.astype(np.uint8).tobytes())
    _add(tar, 'cifar-100-binary/fine_label_names.txt',
         '\n'.join(f'f{i}' for i in range(100)).encode())
    _add(tar, 'cifar-100-binary/coarse_label_names.txt',
         '\n'.join(f'c{i}' for i in range(20)).encode())
  return archive


def tiny_imagenet_wnids() -> list[str]:
  # Not in sorted order of creation, so the test sees the sorting.
  return [f'n{(7919 * i) % 100000:08d}' for i in range(200)]


def write_tiny_imagenet(manual: pathlib.Path, train_per_class: int = 2, val_per_class: int = 1,
                        as_zip: bool = True) -> pathlib.Path:
  """`tiny-imagenet-200.zip` (or the extracted folder): train/<wnid>/images, val/images +
  val_annotations.txt, an unlabelled test/ and the words file. Label = sorted-wnid rank."""
  wnids = tiny_imagenet_wnids()
  label = {w: i for i, w in enumerate(sorted(wnids))}
  files = {'tiny-imagenet-200/wnids.txt': '\n'.join(wnids).encode(),
           'tiny-imagenet-200/words.txt': ''.join(
               f'{w}\tthing {label[w]}, alias\n' for w in wnids).encode() + b'n99999999\tunused\n'}
  annotations = []
  for w in wnids:
    boxes = []
    for i in range(train_per_class):
      name = f'{w}_{i}.JPEG'
      files[f'tiny-imagenet-200/train/{w}/images/{name}'] = _jpeg(label[w], (64, 64), grey=i == 1)
      boxes.append(f'{name}\t0\t0\t63\t63')
    files[f'tiny-imagenet-200/train/{w}/{w}_boxes.txt'] = '\n'.join(boxes).encode()
    for i in range(val_per_class):
      name = f'val_{len(annotations)}.JPEG'
      files[f'tiny-imagenet-200/val/images/{name}'] = _jpeg(label[w], (64, 64))
      annotations.append(f'{name}\t{w}\t0\t0\t63\t63')
  files['tiny-imagenet-200/val/val_annotations.txt'] = '\n'.join(annotations).encode()
  files['tiny-imagenet-200/test/images/test_0.JPEG'] = _jpeg(0, (64, 64))
  manual.mkdir(parents=True, exist_ok=True)
  if as_zip:
    with zipfile.ZipFile(manual / 'tiny-imagenet-200.zip', 'w') as archive:
      for name, data in files.items():
        archive.writestr(name, data)
    return manual / 'tiny-imagenet-200.zip'
  for name, data in files.items():
    (manual / name).parent.mkdir(parents=True, exist_ok=True)
    (manual / name).write_bytes(data)
  return manual / 'tiny-imagenet-200'


def write_cub(manual: pathlib.Path, train_per_class: int = 1, test_per_class: int = 1,
              classes=range(200)) -> pathlib.Path:
  """`CUB_200_2011.tgz` with images of two sizes (one grey) of `classes`; label = number - 1."""
  classes = list(classes)
  images, labels, split = [], [], []
  manual.mkdir(parents=True, exist_ok=True)
  archive = manual / 'CUB_200_2011.tgz'
  with tarfile.open(archive, 'w:gz') as tar:
    folder = lambda c: f'{c + 1:03d}.Bird_{c}'
    for c in classes:
      for i in range(train_per_class + test_per_class):
        path = f'{folder(c)}/Bird_{c}_{i:04d}.jpg'
        _add(tar, f'CUB_200_2011/images/{path}', _jpeg(c, (40, 30) if i % 2 else (30, 36),
                                                       grey=(c, i) == (classes[0], 0)))
        images.append(path)
        labels.append(c + 1)
        split.append(int(i < train_per_class))
    tables = {
        'classes.txt': [f'{c + 1} {folder(c)}' for c in range(200)],
        'images.txt': [f'{i + 1} {p}' for i, p in enumerate(images)],
        'image_class_labels.txt': [f'{i + 1} {c}' for i, c in enumerate(labels)],
        'train_test_split.txt': [f'{i + 1} {s}' for i, s in enumerate(split)],
    }
    for name, lines in tables.items():
      _add(tar, f'CUB_200_2011/{name}', ('\n'.join(lines) + '\n').encode())
  return archive


def write_caltech101(manual: pathlib.Path, per_class: int = 32, labels=None,
                     as_zip: bool = False) -> pathlib.Path:
  """`101_ObjectCategories.tar.gz` (or `caltech-101.zip` holding it) with `per_class`
  images of each of `labels` (TFDS label ids; default all 102)."""
  labels = range(len(CALTECH101_LABELS)) if labels is None else labels
  inner = io.BytesIO()
  with tarfile.open(fileobj=inner, mode='w:gz') as tar:
    for label in labels:
      name = CALTECH101_LABELS[label]
      for i in range(per_class):
        _add(tar, f'101_ObjectCategories/{_CALTECH_FOLDERS.get(name, name)}/image_{i + 1:04d}.jpg',
             _jpeg(label, (24, 18)))
  manual.mkdir(parents=True, exist_ok=True)
  if not as_zip:
    (manual / '101_ObjectCategories.tar.gz').write_bytes(inner.getvalue())
    return manual / '101_ObjectCategories.tar.gz'
  with zipfile.ZipFile(manual / 'caltech-101.zip', 'w') as archive:
    archive.writestr('caltech-101/101_ObjectCategories.tar.gz', inner.getvalue())
    archive.writestr('caltech-101/show_annotation.m', b'% unused')
  return manual / 'caltech-101.zip'
