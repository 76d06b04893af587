"""Loads a dataset's splits once into host memory as uint8 arrays.

Each dataset can come from several sources, tried in this order: an already
prepared TFDS dataset in the data dir, official archives in the manual dir
(prepared into the data dir once), and finally TFDS's normal download when
`data.download` is true. Missing data raises a one-line `UserError` naming
where we looked and the command that fixes it.
"""

import dataclasses
import pathlib
import pickle
import tarfile

from absl import logging
import ml_collections
import numpy as np
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


@dataclasses.dataclass(frozen=True)
class _Source:
  builder: str  # TFDS builder name
  manual_files: tuple[str, ...] = ()  # files it needs in the manual dir; () = download


@dataclasses.dataclass(frozen=True)
class _Spec:
  sources: tuple[_Source, ...]
  mean: tuple[float, ...]
  std: tuple[float, ...]
  default_manual_dir: str
  how_to_get: str


_SPECS = {
    'fashion_mnist': _Spec(
        sources=(_Source('fashion_mnist_idx', sum(builders.FASHION_MNIST_FILES.values(), ())),
                 _Source('fashion_mnist')),
        mean=(0.2860,), std=(0.3530,),
        default_manual_dir='/usr/share/datasets/fashion-mnist',
        how_to_get='apt-get install dataset-fashion-mnist'),
    'cifar100': _Spec(
        sources=(_Source('cifar100', ('cifar-100-binary.tar.gz',)),
                 _Source('cifar100_python', (builders.CIFAR100_PYTHON_ARCHIVE,)),
                 _Source('cifar100')),
        # The official code's (MUC/LUCIR) constants; the std is a mean of per-image stds.
        mean=(0.5071, 0.4866, 0.4409), std=(0.2009, 0.1984, 0.2023),
        default_manual_dir='~/tensorflow_datasets/downloads/manual',
        how_to_get='place cifar-100-binary.tar.gz or cifar-100-python.tar.gz from '
                   'https://www.cs.toronto.edu/~kriz/cifar.html in that folder'),
}
DATASETS = ('synthetic',) + tuple(_SPECS)

# What bad or missing archives (and a failed download) raise while preparing.
_PREPARATION_ERRORS = (OSError, ValueError, EOFError, KeyError, tarfile.TarError,
                       pickle.UnpicklingError, download_manager.NonMatchingChecksumError)


def load_dataset(config: ml_collections.ConfigDict) -> Dataset:
  """Loads `config.name` (see `configs/` for the fields of `config.data`)."""
  if config.name == 'synthetic':
    splits = make_synthetic(config.synthetic.num_classes, config.synthetic.image_size,
                            config.synthetic.channels, config.synthetic.train_per_class,
                            config.synthetic.test_per_class, config.synthetic.seed)
    return Dataset('synthetic', *splits['train'], *splits['test'],
                   class_names=[f'class_{c}' for c in range(config.synthetic.num_classes)],
                   mean=(0.5,) * config.synthetic.channels,
                   std=(0.25,) * config.synthetic.channels)
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
        f'{"" if config.download else " (download disabled)"}; fix: {spec.how_to_get}, or '
        'set --config.data.manual_dir to where the files are')
  train, test = (tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
                 for split in ('train', 'test'))
  logging.info('Loaded %s from TFDS builder %s (%s): %d train, %d test images', config.name,
               builder.name, builder.data_dir, len(train['label']), len(test['label']))
  return Dataset(config.name, train['image'], train['label'].astype(np.int32),
                 test['image'], test['label'].astype(np.int32),
                 class_names=list(builder.info.features['label'].names),
                 mean=spec.mean, std=spec.std)


def _prepared_builder(spec: _Spec, data_dir: str | None, manual_dir: pathlib.Path,
                      download: bool) -> tfds.core.DatasetBuilder | None:
  builders_ = [tfds.builder(s.builder, data_dir=data_dir) for s in spec.sources]
  for builder in builders_:
    if builder.is_prepared():
      return builder
  for source, builder in zip(spec.sources, builders_):
    has_files = source.manual_files and all((manual_dir / f).exists() for f in source.manual_files)
    if has_files or (not source.manual_files and download):
      logging.info('Preparing %s into %s (manual dir %s)', source.builder, builder.data_dir,
                   manual_dir if has_files else None)
      try:
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
            manual_dir=str(manual_dir) if has_files else None))
      except _PREPARATION_ERRORS as e:
        where = f'files in {manual_dir}' if has_files else 'the TFDS download'
        raise UserError(f'preparing {source.builder} from {where} failed: '
                        f'{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ""}; '
                        'check or replace those files') from e
      return builder
  return None


def limit_per_class(dataset: Dataset, max_per_class: int, seed: int = 0) -> Dataset:
  """Keeps at most `max_per_class` training images of each class (a seeded, fixed subset).

  The subset depends only on `seed`, not on the run's seed, so runs with
  different seeds train on the same images. The test split is kept whole.
  """
  rng = np.random.RandomState(seed)
  keep = np.sort(np.concatenate([
      rng.permutation(np.flatnonzero(dataset.train_labels == c))[:max_per_class]
      for c in range(dataset.num_classes)]))
  return dataclasses.replace(dataset, train_images=dataset.train_images[keep],
                             train_labels=dataset.train_labels[keep])
