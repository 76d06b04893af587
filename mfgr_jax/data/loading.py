"""Loads a dataset's splits once into host memory as uint8 arrays.

Each dataset can come from several sources, tried in this order: an already
prepared TFDS dataset in the data dir, official archives in the manual dir
(prepared into the data dir once), and finally TFDS's normal download when
`data.download` is true. Missing data raises a one-line `UserError` naming
where we looked and the command that fixes it.
"""

import contextlib
import dataclasses
import fcntl
import io
import os
import pathlib
import pickle
import socket
import tarfile
import time
import urllib.parse
from typing import Iterator, Sequence

from absl import logging
from etils import epath
import ml_collections
import numpy as np
import PIL.Image
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import download_manager

from mfgr_jax.data import builders  # registers our builders with TFDS
from mfgr_jax.data.synthetic import make_synthetic
from mfgr_jax.errors import UserError


@dataclasses.dataclass
class Dataset:
  name: str
  train_images: np.ndarray  # uint8, N x H x W x C
  train_labels: np.ndarray  # int32 dataset label ids
  test_images: np.ndarray
  test_labels: np.ndarray
  class_names: list[str]
  mean: tuple[float, ...]  # per-channel normalisation constants, in [0, 1] units
  std: tuple[float, ...]

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  @property
  def image_shape(self) -> tuple[int, int, int]:
    return tuple(self.train_images.shape[1:])


_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@dataclasses.dataclass(frozen=True)
class _Source:
  builder: str  # TFDS builder name
  manual_files: tuple[str, ...] = ()  # files it needs in the manual dir; () = download


@dataclasses.dataclass(frozen=True)
class _Spec:
  sources: tuple[_Source, ...]
  num_classes: int
  image_shape: tuple[int, int, int] | None  # None: photographs of any size
  # Images in the train and test splits (TFDS's figures; Caltech-101: our split).
  train_images: int
  test_images: int
  mean: tuple[float, ...]
  std: tuple[float, ...]
  default_manual_dir: str
  how_to_get: str


_SPECS = {
    'fashion_mnist': _Spec(
        sources=(_Source('fashion_mnist_idx', sum(builders.FASHION_MNIST_FILES.values(), ())),
                 _Source('fashion_mnist')),
        num_classes=10, image_shape=(28, 28, 1), train_images=60_000, test_images=10_000,
        mean=(0.2860,), std=(0.3530,),
        default_manual_dir='/usr/share/datasets/fashion-mnist',
        how_to_get='apt-get install dataset-fashion-mnist'),
    'cifar100': _Spec(
        sources=(_Source('cifar100', ('cifar-100-binary.tar.gz',)),
                 _Source('cifar100_python', (builders.CIFAR100_PYTHON_ARCHIVE,)),
                 _Source('cifar100')),
        # The official code's (MUC/LUCIR) constants; the std is a mean of per-image stds.
        num_classes=100, image_shape=(32, 32, 3), train_images=50_000, test_images=10_000,
        mean=(0.5071, 0.4866, 0.4409), std=(0.2009, 0.1984, 0.2023),
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get='place cifar-100-binary.tar.gz or cifar-100-python.tar.gz from '
                   'https://www.cs.toronto.edu/~kriz/cifar.html in that folder'),
    'tiny_imagenet': _Spec(
        # One source per layout; both prepare the same `tiny_imagenet` builder.
        sources=(_Source('tiny_imagenet', (builders.TINY_IMAGENET_ARCHIVE,)),
                 _Source('tiny_imagenet', (builders.TINY_IMAGENET_FOLDER,))),
        num_classes=200, image_shape=(64, 64, 3), train_images=100_000, test_images=10_000,
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get=f'place {builders.TINY_IMAGENET_ARCHIVE} from '
                   'http://cs231n.stanford.edu/tiny-imagenet-200.zip (or its extracted folder) in '
                   'that folder'),
    'caltech_birds2011': _Spec(
        sources=(_Source('caltech_birds2011_archive', (builders.CUB_ARCHIVE,)),
                 _Source('caltech_birds2011')),
        num_classes=200, image_shape=None, train_images=5_994, test_images=5_794,
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get=f'place {builders.CUB_ARCHIVE} from '
                   'https://data.caltech.edu/records/65de6-vp158 in that folder'),
    'caltech101': _Spec(
        sources=tuple(_Source('caltech101_archive', (name,))
                      for name in builders.CALTECH101_ARCHIVES) + (_Source('caltech101'),),
        num_classes=102, image_shape=None, train_images=3_060, test_images=6_084,
        mean=_IMAGENET_MEAN, std=_IMAGENET_STD,
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get=f'place {" or ".join(builders.CALTECH101_ARCHIVES)} from '
                   'https://data.caltech.edu/records/mzrjq-6wc02 in that folder'),
    # MUC's auxiliary unlabelled images; TFDS's download only.
    'svhn_cropped': _Spec(
        sources=(_Source('svhn_cropped'),),
        num_classes=10, image_shape=(32, 32, 3), train_images=73_257, test_images=26_032,
        mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get='run once with internet access and data.download=True (TFDS downloads it)'),
}
# Datasets made of others: label ids of part k follow those of parts 0..k-1, and
# class names get the part's name as a prefix.
_COMPOSITES = {'cub_caltech': ('caltech_birds2011', 'caltech101')}
DATASETS = ('synthetic',) + tuple(_SPECS) + tuple(_COMPOSITES)

# What bad or missing archives (and a failed download) raise while preparing.
_PREPARATION_ERRORS = (OSError, ValueError, EOFError, KeyError, tarfile.TarError,
                       pickle.UnpicklingError, download_manager.NonMatchingChecksumError)


def load_dataset(config: ml_collections.ConfigDict,
                 labels: Sequence[int] | None = None) -> Dataset:
  """Loads `config.name` (see `configs/` for the fields of `config.data`).

  Only the images of `labels` (dataset label ids; None = all) are decoded and
  kept; `class_names` still lists every class of the dataset. With
  `config.image_size` every image is resized to that square size.
  """
  if config.name == 'synthetic':
    splits = make_synthetic(config.synthetic.num_classes, config.synthetic.image_size,
                            config.synthetic.channels, config.synthetic.train_per_class,
                            config.synthetic.test_per_class, config.synthetic.seed)
    dataset = Dataset('synthetic', *splits['train'], *splits['test'],
                      class_names=[f'class_{c}' for c in range(config.synthetic.num_classes)],
                      mean=(0.5,) * config.synthetic.channels,
                      std=(0.25,) * config.synthetic.channels)
    return _keep_labels(dataset, labels)
  if config.name in _COMPOSITES:
    return _load_composite(config, labels)
  if config.name not in _SPECS:
    raise UserError(f'unknown dataset {config.name!r}; choose one of {", ".join(DATASETS)} '
                    '(--config.data.name=...)')
  spec = _SPECS[config.name]
  data_dir = config.data_dir or None
  manual_dir = pathlib.Path(config.manual_dir or spec.default_manual_dir).expanduser()
  builder = _prepared_builder(spec, data_dir, manual_dir, config.download)
  if builder is None:
    raise UserError(
        f'{config.name} not found: no prepared TFDS dataset in '
        f'{data_dir or "~/tensorflow_datasets"} and none of '
        f'{sorted({f for s in spec.sources for f in s.manual_files})} in {manual_dir}'
        f'{_download_note(spec, config.download)}; fix: {spec.how_to_get}, or '
        'set --config.data.manual_dir to where the files are')
  check_one_image_size(config)
  native_shape = builder.info.features['image'].shape
  wanted = None if labels is None else np.asarray(sorted(labels))
  train, test = (_read_split(builder, split, wanted, config.image_size, native_shape[-1])
                 for split in ('train', 'test'))
  logging.info('Loaded %s from TFDS builder %s (%s): %d train, %d test images', config.name,
               builder.name, builder.data_dir, len(train[1]), len(test[1]))
  return Dataset(config.name, *train, *test,
                 class_names=list(builder.info.features['label'].names),
                 mean=spec.mean, std=spec.std)


def num_classes(config: ml_collections.ConfigDict) -> int:
  """The classes of dataset `config.name` (`config`: the `data` section), known
  without loading it."""
  if config.name == 'synthetic':
    return config.synthetic.num_classes
  return sum(_SPECS[name].num_classes for name in _COMPOSITES.get(config.name, (config.name,)))


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int] | None:
  """The shape of every loaded image of `config.name` (after `image_size`), known
  without loading it; None for photographs of any size without an `image_size`."""
  if config.name == 'synthetic':
    return (config.synthetic.image_size,) * 2 + (config.synthetic.channels,)
  native = _SPECS[_COMPOSITES.get(config.name, (config.name,))[0]].image_shape
  if config.image_size:
    return (config.image_size,) * 2 + (native[-1] if native else 3,)
  return native


def split_sizes(config: ml_collections.ConfigDict) -> tuple[int, int]:
  """(train, test) images of `config.name` (`config`: the `data` section), known
  without loading it."""
  if config.name == 'synthetic':
    synthetic = config.synthetic
    return (synthetic.num_classes * synthetic.train_per_class,
            synthetic.num_classes * synthetic.test_per_class)
  specs = [_SPECS[name] for name in _COMPOSITES.get(config.name, (config.name,))]
  return sum(s.train_images for s in specs), sum(s.test_images for s in specs)


def image_count(config: ml_collections.ConfigDict) -> int:
  """The train and test images of `config.name`, known without loading it."""
  return sum(split_sizes(config))


def check_one_image_size(config: ml_collections.ConfigDict) -> None:
  """Refuses photographs of any size without an `image_size` to resize them to."""
  if image_shape(config) is None:
    raise UserError(f'{config.name} has images of different sizes; set --config.data.image_size '
                    '(e.g. 224) to resize them to one square size')


def _read_split(builder: tfds.core.DatasetBuilder, split: str, wanted: np.ndarray | None,
                image_size: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
  """(uint8 images, int32 labels) of the examples of `split` whose label is wanted."""
  if None not in builder.info.features['image'].shape:
    # One size: TensorFlow decodes the whole split at once (seconds for 70k images).
    data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    keep = slice(None) if wanted is None else np.isin(data['label'], wanted)
    images, labels = data['image'][keep], data['label'][keep]
    if image_size and images.shape[1:3] != (image_size, image_size):
      images = np.stack([_resize(image, image_size) for image in images])
    return images, labels.astype(np.int32)
  # Photographs of any size: filter before decoding, then decode one by one.
  dataset = builder.as_dataset(split=split, decoders={'image': tfds.decode.SkipDecoding()})
  if wanted is not None:
    dataset = dataset.filter(lambda example: tf.reduce_any(example['label'] == wanted))
  images, labels = [], []
  for example in tfds.as_numpy(dataset):
    image = np.asarray(PIL.Image.open(io.BytesIO(example['image'])).convert('RGB'))
    images.append(_resize(image, image_size))
    labels.append(example['label'])
  if not images:
    return np.zeros((0, image_size, image_size, channels), np.uint8), np.zeros((0,), np.int32)
  return np.stack(images), np.asarray(labels, np.int32)


def _resize(image: np.ndarray, size: int) -> np.ndarray:
  """HxWxC uint8 -> size x size x C with PIL's bilinear filter (torchvision's `Resize`)."""
  pil = PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
  resized = np.asarray(pil.resize((size, size), PIL.Image.BILINEAR), np.uint8)
  return resized.reshape(size, size, image.shape[-1])


def _load_composite(config: ml_collections.ConfigDict, labels: Sequence[int] | None) -> Dataset:
  """Loads the parts of a composite dataset and joins them (label ids offset by part)."""
  parts, offset = [], 0
  for name in _COMPOSITES[config.name]:
    part_config = ml_collections.ConfigDict({**config.to_dict(), 'name': name})
    num_classes = _SPECS[name].num_classes
    mine = None if labels is None else [l - offset for l in labels if offset <= l < offset + num_classes]
    part = load_dataset(part_config, mine)
    parts.append(dataclasses.replace(part, train_labels=part.train_labels + offset,
                                     test_labels=part.test_labels + offset))
    offset += num_classes
  join = lambda field: np.concatenate([getattr(p, field) for p in parts])
  return Dataset(config.name, join('train_images'), join('train_labels'), join('test_images'),
                 join('test_labels'),
                 class_names=[f'{p.name}:{n}' for p in parts for n in p.class_names],
                 mean=parts[0].mean, std=parts[0].std)


def _keep_labels(dataset: Dataset, labels: Sequence[int] | None) -> Dataset:
  if labels is None:
    return dataset
  train, test = (np.isin(dataset.train_labels, labels), np.isin(dataset.test_labels, labels))
  return dataclasses.replace(
      dataset, train_images=dataset.train_images[train], train_labels=dataset.train_labels[train],
      test_images=dataset.test_images[test], test_labels=dataset.test_labels[test])


def _download_note(spec: _Spec, download: bool) -> str:
  if not any(not source.manual_files for source in spec.sources):
    return ''  # no download to speak of
  return ' (its download server is unreachable)' if download else ' (download disabled)'


def _reachable(builder: tfds.core.DatasetBuilder, timeout: float = 5.0) -> bool:
  """Whether every host the builder downloads from accepts a connection."""
  for url in builder.url_infos or {}:
    parts = urllib.parse.urlsplit(url)
    try:
      socket.create_connection((parts.hostname, parts.port or
                                (443 if parts.scheme == 'https' else 80)), timeout).close()
    except OSError:
      logging.info('%s is unreachable: not downloading %s', parts.hostname, builder.name)
      return False
  return True


def _prepared_builder(spec: _Spec, data_dir: str | None, manual_dir: pathlib.Path,
                      download: bool) -> tfds.core.DatasetBuilder | None:
  for source in spec.sources:
    builder = tfds.builder(source.builder, data_dir=data_dir)
    if _is_complete(builder):
      return builder
  for source in spec.sources:
    has_files = source.manual_files and all((manual_dir / f).exists() for f in source.manual_files)
    if not has_files and not source.manual_files and download and not _reachable(
        tfds.builder(source.builder, data_dir=data_dir)):
      return None  # offline: TFDS would retry its download for minutes
    if has_files or (not source.manual_files and download):
      return _prepare(source.builder, data_dir, manual_dir if has_files else None)
  return None


def _is_complete(builder: tfds.core.DatasetBuilder) -> bool:
  """Whether the builder's version folder holds a whole prepared dataset: its
  dataset_info.json and every file of every split it lists. (TFDS's `is_prepared`
  looks at the first only, and warns about a folder that is not there yet.)"""
  if not (builder.data_path / 'dataset_info.json').exists():
    return False
  splits = builder.info.splits.values()
  return bool(splits) and all(path.exists() for split in splits for path in split.filepaths)


def lock_file(dataset_folder: epath.Path) -> epath.Path:
  """The file whose lock a run holds while it prepares the dataset in `dataset_folder`
  (`<data_dir>/<name>`): beside it, where TFDS looks for no versions."""
  return dataset_folder.parent / f'.{dataset_folder.name}.lock'


@contextlib.contextmanager
def _preparing(dataset_folder: epath.Path) -> Iterator[bool]:
  """Holds an exclusive lock (`lock_file`) for the block, so that two runs never
  prepare one dataset at once (the second waits, then finds it prepared); yields
  whether it holds one. The OS drops the lock when its holder dies, also after
  kill -9. Object stores (gs://...) have no locks, and a file system may refuse
  them (some NFS, CIFS or Lustre mounts): there the block runs unlocked."""
  if '://' in str(dataset_folder):
    yield False
    return
  dataset_folder.parent.mkdir(parents=True, exist_ok=True)
  descriptor = os.open(os.fspath(lock_file(dataset_folder)), os.O_RDWR | os.O_CREAT, 0o666)
  try:
    try:
      fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
      locked = True
    except BlockingIOError:
      logging.info('Waiting for another process that is preparing %s', dataset_folder)
      fcntl.flock(descriptor, fcntl.LOCK_EX)
      locked = True
    except OSError as e:
      logging.warning('cannot lock %s (%s): preparing %s without a lock',
                      lock_file(dataset_folder), e.strerror, dataset_folder)
      locked = False
    yield locked
  finally:
    os.close(descriptor)  # releases the lock


def _clear_interrupted(builder: tfds.core.DatasetBuilder) -> None:
  """Removes what an interrupted preparation of this version left: TFDS's
  `incomplete.*` folders and a version folder without all its files (a copy cut
  short). Only with the lock held, so that no other run is writing them; a
  complete version folder is never reached here."""
  version_folder = builder.data_path
  for leftover in [version_folder, *version_folder.parent.glob(f'incomplete.*_{version_folder.name}')]:
    if leftover.exists():
      logging.info('Removing %s, left by an interrupted preparation', leftover)
      leftover.rmtree()


def _prepare(name: str, data_dir: str | None, manual_dir: pathlib.Path | None
             ) -> tfds.core.DatasetBuilder:
  """Prepares TFDS builder `name` once into the data dir, from the files in
  `manual_dir` or (None) by TFDS's download; a run killed while doing so leaves
  nothing the next run trips on. TFDS's progress bars and prints are replaced by
  our two lines (they share stderr with the run's log and left its lines glued to
  a bar)."""
  where = f'files in {manual_dir}' if manual_dir else 'the TFDS download'
  with _preparing(tfds.builder(name, data_dir=data_dir).data_path.parent) as locked:
    builder = tfds.builder(name, data_dir=data_dir)  # made after the wait: sees its result
    if _is_complete(builder):
      return builder
    if locked:  # unlocked, what is there may be another run's work in progress
      _clear_interrupted(builder)
    logging.info('Preparing %s from %s into %s (once; later runs read it from there)',
                 name, where, builder.data_path)
    started = time.monotonic()
    tfds.disable_progress_bar()
    try:
      with contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if manual_dir else None))
    except _PREPARATION_ERRORS as e:
      raise UserError(f'preparing {name} from {where} failed: {type(e).__name__}: '
                      f'{str(e).splitlines()[0] if str(e) else ""}; check or replace those '
                      'files') from e
    finally:
      tfds.enable_progress_bar()
    logging.info('Prepared %s in %.0f s', name, time.monotonic() - started)
  return tfds.builder(name, data_dir=data_dir)


def subsample_per_class(dataset: Dataset, max_train: int, max_test: int,
                        seed: int = 0) -> Dataset:
  """Keeps at most `max_train` / `max_test` images of each class (0 = all).

  The subsets are seeded by `seed` only, not by the run's seed, so runs with
  different seeds see the same images.
  """
  def keep(labels: np.ndarray, limit: int, rng: np.random.RandomState) -> np.ndarray:
    if not limit:
      return np.arange(len(labels))
    return np.sort(np.concatenate([np.zeros((0,), np.int64)] + [
        rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]))

  train = keep(dataset.train_labels, max_train, np.random.RandomState(seed))
  test = keep(dataset.test_labels, max_test, np.random.RandomState([seed, 1]))
  return dataclasses.replace(
      dataset, train_images=dataset.train_images[train], train_labels=dataset.train_labels[train],
      test_images=dataset.test_images[test], test_labels=dataset.test_labels[test])
