"""Loaders on miniature files in the official formats, written by the tests."""

import fcntl
import logging as std_logging
import os
import re
import signal
import subprocess
import sys
import threading

from etils import epath
import jax
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import checksums
from tensorflow_datasets.image_classification.cifar import Cifar100

from mfgr_jax.data import augment
from mfgr_jax.data.idx import read_idx, write_idx
from mfgr_jax.data import loading
from mfgr_jax.data.loading import load_dataset
from mfgr_jax.errors import UserError

import archives

CIFAR100_BINARY_URL = 'https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz'


def _data_config(name, tmp_path, **kw):
  return ml_collections.ConfigDict({**dict(name=name, data_dir=str(tmp_path / 'tfds'),
                                           manual_dir=str(tmp_path / 'manual'), download=False,
                                           image_size=0), **kw})


def _images(n, shape, seed):
  return np.random.default_rng(seed).integers(0, 256, (n,) + shape, dtype=np.uint8)


@pytest.mark.parametrize('name', ['x.idx', 'x.idx.gz'])
def test_idx_roundtrip(tmp_path, name):
  array = _images(5, (3, 4), 0)
  write_idx(tmp_path / name, array)
  np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_idx_rejects_truncated_files(tmp_path):
  write_idx(tmp_path / 'x.idx', _images(5, (3, 4), 0))
  raw = (tmp_path / 'x.idx').read_bytes()
  (tmp_path / 'x.idx').write_bytes(raw[:-3])
  with pytest.raises(ValueError, match='truncated'):
    read_idx(tmp_path / 'x.idx')


def _write_fashion(manual, train_n=30, test_n=10, labels_n=None):
  manual.mkdir(parents=True)
  splits = {}
  for prefix, n, seed in [('train', train_n, 1), ('t10k', test_n, 2)]:
    images, labels = _images(n, (28, 28), seed), np.arange(labels_n or n, dtype=np.uint8) % 10
    write_idx(manual / f'{prefix}-images-idx3-ubyte.gz', images)
    write_idx(manual / f'{prefix}-labels-idx1-ubyte.gz', labels)
    splits[prefix] = images, labels
  return splits


def test_fashion_mnist_from_idx_files_in_manual_dir(tmp_path):
  written = _write_fashion(tmp_path / 'manual')
  dataset = load_dataset(_data_config('fashion_mnist', tmp_path))
  assert dataset.train_images.shape == (30, 28, 28, 1)
  assert dataset.train_images.dtype == np.uint8
  # TFDS may store examples in any order; compare as (image, label) multisets.
  for images, labels, (want_images, want_labels) in [
      (dataset.train_images, dataset.train_labels, written['train']),
      (dataset.test_images, dataset.test_labels, written['t10k'])]:
    got = sorted((l, i.tobytes()) for i, l in zip(images[..., 0], labels))
    want = sorted((l, i.tobytes()) for i, l in zip(want_images, want_labels))
    assert got == want
  assert dataset.class_names[0] == 'T-shirt/top' and dataset.num_classes == 10
  # A second load reuses the prepared dataset, even without the manual files.
  for f in (tmp_path / 'manual').iterdir():
    f.unlink()
  assert load_dataset(_data_config('fashion_mnist', tmp_path)).train_images.shape[0] == 30


def test_fashion_mnist_malformed_files_give_one_line_error(tmp_path):
  _write_fashion(tmp_path / 'manual', labels_n=29)
  with pytest.raises(UserError, match=r'preparing fashion_mnist_idx from files in .* failed') as e:
    load_dataset(_data_config('fashion_mnist', tmp_path))
  assert '\n' not in str(e.value)


# A run killed while preparing, at each point: before TFDS starts, during (TFDS's
# incomplete.* folder half written: the leftover the rerun must remove), and after
# the version folder is complete (killed before the run used it: the rerun must use
# it untouched). The child process SIGKILLs itself at that point. 'during' and the
# damaged version folders below are what TFDS alone does not recover from; 'before'
# and 'after' guard the recovery against harming what it must keep.
_KILLED_PREPARATION = """
import os, signal, sys
import ml_collections
import tensorflow_datasets as tfds
from mfgr_jax.data import builders, loading
die = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGKILL)
point = sys.argv[1]
if point == 'before':
  tfds.core.DatasetBuilder.download_and_prepare = die
elif point == 'during':
  generate = builders.FashionMnistIdx._generate_examples
  def half_then_die(self, *args, **kwargs):
    for i, example in enumerate(generate(self, *args, **kwargs)):
      if i == 12:
        die()
      yield example
  builders.FashionMnistIdx._generate_examples = half_then_die
else:
  tfds.core.DatasetBuilder._log_download_done = die
loading.load_dataset(ml_collections.ConfigDict(dict(
    name='fashion_mnist', data_dir=sys.argv[2], manual_dir=sys.argv[3], download=False,
    image_size=0)))
"""


def _examples(dataset):
  return [sorted((int(l), i.tobytes()) for i, l in zip(images, labels)) for images, labels in
          [(dataset.train_images, dataset.train_labels),
           (dataset.test_images, dataset.test_labels)]]


@pytest.mark.parametrize('point', ['before', 'during', 'after'])
def test_a_run_killed_while_preparing_data_leaves_nothing_the_rerun_trips_on(tmp_path, point):
  _write_fashion(tmp_path / 'manual')
  killed = subprocess.run([sys.executable, '-c', _KILLED_PREPARATION, point,
                           str(tmp_path / 'tfds'), str(tmp_path / 'manual')],
                          capture_output=True, text=True)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
  left = tmp_path / 'tfds' / 'fashion_mnist_idx'
  version = left / '1.0.0'
  assert list(left.glob('incomplete.*')) if point == 'during' else True
  complete_before = {f.name: f.stat().st_mtime_ns for f in version.iterdir()} if point == 'after' else None
  rerun = load_dataset(_data_config('fashion_mnist', tmp_path))
  clean = load_dataset(_data_config('fashion_mnist', tmp_path, data_dir=str(tmp_path / 'clean')))
  assert _examples(rerun) == _examples(clean)
  assert not list(left.glob('incomplete.*'))
  if complete_before is not None:  # a complete folder is used as it is
    assert {f.name: f.stat().st_mtime_ns for f in version.iterdir()} == complete_before


@pytest.mark.parametrize('damage', ['empty', 'a shard missing'])
def test_a_version_folder_without_all_its_files_is_prepared_again(tmp_path, damage):
  """TFDS would "reuse" an empty version folder (and fail reading it), or one a copy
  to a store without atomic renames cut short."""
  _write_fashion(tmp_path / 'manual')
  version = tmp_path / 'tfds' / 'fashion_mnist_idx' / '1.0.0'
  if damage == 'empty':
    version.mkdir(parents=True)
  else:
    load_dataset(_data_config('fashion_mnist', tmp_path))
    next(version.glob('*-train.tfrecord*')).unlink()
  assert _examples(load_dataset(_data_config('fashion_mnist', tmp_path))) == _examples(
      load_dataset(_data_config('fashion_mnist', tmp_path, data_dir=str(tmp_path / 'clean'))))


def test_a_second_run_waits_for_the_one_preparing_the_same_data(tmp_path, caplog):
  _write_fashion(tmp_path / 'manual')
  folder = tmp_path / 'tfds' / 'fashion_mnist_idx'
  folder.parent.mkdir(parents=True)
  held = os.open(loading.lock_file(epath.Path(folder)), os.O_RDWR | os.O_CREAT)
  fcntl.flock(held, fcntl.LOCK_EX)  # another run preparing
  loaded = []
  waiting = threading.Thread(target=lambda: loaded.append(
      load_dataset(_data_config('fashion_mnist', tmp_path))), daemon=True)
  try:
    with caplog.at_level(std_logging.INFO):
      waiting.start()
      waiting.join(timeout=5)
      assert waiting.is_alive() and not (folder / '1.0.0').exists()
      assert not list(folder.glob('incomplete.*'))  # it has not started preparing
      assert any(record.getMessage().startswith('Waiting for another process that is preparing')
                 for record in caplog.records)
  finally:
    os.close(held)
  waiting.join(timeout=120)
  assert len(loaded) == 1 and loaded[0].train_images.shape == (30, 28, 28, 1)


def test_preparing_prints_our_lines_only(tmp_path, capfd, caplog):
  _write_fashion(tmp_path / 'manual')
  with caplog.at_level(std_logging.INFO):
    load_dataset(_data_config('fashion_mnist', tmp_path))
  lines = [record.getMessage() for record in caplog.records]
  out, err = capfd.readouterr()
  assert out == '' and 'Generating' not in err and 'Variant folder' not in err
  assert not [line for line in lines if 'Variant folder' in line]  # TFDS's is_prepared warns
  assert any(line.startswith('Preparing fashion_mnist_idx from files in') for line in lines)
  assert any(re.fullmatch(r'Prepared fashion_mnist_idx in \d+ s', line) for line in lines)


def test_missing_data_says_where_it_looked_and_how_to_fix(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(UserError) as e:
    load_dataset(_data_config('fashion_mnist', tmp_path))
  message = str(e.value)
  assert '\n' not in message
  assert str(tmp_path / 'manual') in message and str(tmp_path / 'tfds') in message
  assert 'apt-get install dataset-fashion-mnist' in message


@pytest.mark.parametrize('name,archives_named', [
    ('cifar100', "['cifar-100-binary.tar.gz', 'cifar-100-python.tar.gz']"),
    ('fashion_mnist', "'train-images-idx3-ubyte.gz'"),
])
def test_offline_with_nothing_local_fails_at_once_naming_the_archives(tmp_path, monkeypatch, name,
                                                                      archives_named):
  """With download on but its server unreachable, no download is tried (TFDS would
  retry for minutes): one line with the archives to place and the folder."""
  probed = []

  def unreachable(address, timeout=None):
    probed.append(address)
    raise OSError('Network is unreachable')

  def no_download(*args, **kwargs):
    raise AssertionError('a download was tried')

  monkeypatch.setattr(loading.socket, 'create_connection', unreachable)
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', no_download)
  with pytest.raises(UserError) as e:
    load_dataset(_data_config(name, tmp_path, download=True))
  message = str(e.value)
  assert '\n' not in message and probed
  assert archives_named in message and f'in {tmp_path / "manual"}' in message
  assert "its download server is unreachable" in message


def test_the_class_count_and_image_shape_known_before_loading_are_the_builders():
  for name, spec in loading._SPECS.items():
    info = tfds.builder(spec.sources[0].builder).info
    assert spec.num_classes == info.features['label'].num_classes, name
    native = info.features['image'].shape
    assert spec.image_shape == (None if None in native else native), name


def test_unknown_dataset(tmp_path):
  with pytest.raises(UserError, match="unknown dataset 'mnist'"):
    load_dataset(_data_config('mnist', tmp_path))


def test_cifar100_from_python_archive(tmp_path):
  splits = {'train': archives.cifar_split(12, 0), 'test': archives.cifar_split(6, 1)}
  archives.write_cifar100_python(tmp_path / 'manual', splits)
  dataset = load_dataset(_data_config('cifar100', tmp_path))
  _assert_same_examples(dataset, splits)
  assert dataset.class_names[:2] == ['fine0', 'fine1']


def test_cifar100_from_binary_archive_through_tfds(tmp_path, monkeypatch):
  splits = {'train': archives.cifar_split(10, 2), 'test': archives.cifar_split(4, 3)}
  archive = archives.write_cifar100_binary(tmp_path / 'manual', splits)
  # TFDS accepts a manual file only if it matches the registered checksum of
  # the real archive; register the miniature's instead.
  monkeypatch.setattr(Cifar100, 'url_infos', {CIFAR100_BINARY_URL: checksums.compute_url_info(archive)})
  dataset = load_dataset(_data_config('cifar100', tmp_path))
  _assert_same_examples(dataset, splits)


def _assert_same_examples(dataset, splits):
  for images, labels, (want_images, want_labels, _) in [
      (dataset.train_images, dataset.train_labels, splits['train']),
      (dataset.test_images, dataset.test_labels, splits['test'])]:
    assert images.shape == want_images.shape
    got = sorted((int(l), i.tobytes()) for i, l in zip(images, labels))
    want = sorted((int(l), i.tobytes()) for i, l in zip(want_images, want_labels))
    assert got == want


def test_cifar100_corrupt_archive_is_a_one_line_error(tmp_path):
  (tmp_path / 'manual').mkdir()
  (tmp_path / 'manual' / 'cifar-100-python.tar.gz').write_bytes(b'not a tarball')
  with pytest.raises(UserError, match='cifar100_python') as e:
    load_dataset(_data_config('cifar100', tmp_path))
  assert '\n' not in str(e.value)


def test_synthetic_is_deterministic_and_learnable_shape():
  config = ml_collections.ConfigDict(dict(name='synthetic', synthetic=dict(
      num_classes=3, image_size=12, channels=2, train_per_class=4, test_per_class=2, seed=5)))
  a, b = load_dataset(config), load_dataset(config)
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert a.train_images.shape == (12, 12, 12, 2) and a.test_images.shape == (6, 12, 12, 2)
  assert np.bincount(a.train_labels).tolist() == [4, 4, 4]


def test_augment_crops_flips_and_normalises_per_example_key():
  image = np.arange(16, dtype=np.uint8).reshape(1, 4, 4, 1).repeat(64, 0)
  keys = jax.random.split(jax.random.PRNGKey(0), 64)
  out = np.asarray(augment.augment(image, keys, padding=1, flip=True, mean=(0.0,), std=(1.0 / 255,)))
  assert out.shape == (64, 4, 4, 1)
  # Every output is a shifted (zero-filled) and possibly mirrored copy of the input.
  src = np.pad(np.arange(16.0).reshape(4, 4), 1)
  candidates = [src[i:i + 4, j:j + 4][:, ::f] for i in range(3) for j in range(3) for f in (1, -1)]
  distinct = {next(k for k, c in enumerate(candidates) if np.array_equal(o[..., 0], c)) for o in out}
  assert len(distinct) > 6  # not the same crop every time
  # The same key gives the same augmentation.
  again = augment.augment(image[:2], keys[:2], padding=1, flip=True, mean=(0.0,), std=(1.0 / 255,))
  np.testing.assert_array_equal(again, out[:2])
