"""Tiny ImageNet, CUB-200-2011, Caltech-101 and their mixture, from miniature official archives."""

import ml_collections
import numpy as np
import pytest

from mfgr_jax.data.loading import load_dataset, subsample_per_class
from mfgr_jax.errors import UserError

import archives


def _config(name, tmp_path, **kw):
  return ml_collections.ConfigDict({**dict(name=name, data_dir=str(tmp_path / 'tfds'),
                                           manual_dir=str(tmp_path / 'manual'), download=False,
                                           image_size=0), **kw})


def _assert_colours_match_labels(images, labels, label_offset=0, tolerance=6):
  # Each miniature image is one flat colour per class (grey ones excepted).
  for image, label in zip(images, labels):
    colour = np.asarray(archives.class_colour(int(label) - label_offset))
    mean = image.reshape(-1, 3).mean(0)
    grey = np.ptp(mean) < 1 and np.ptp(colour) > 10
    if not grey:
      np.testing.assert_allclose(mean, colour, atol=tolerance)


@pytest.mark.parametrize('as_zip', [True, False])
def test_tiny_imagenet_from_zip_or_folder(tmp_path, as_zip):
  archives.write_tiny_imagenet(tmp_path / 'manual', train_per_class=2, as_zip=as_zip)
  dataset = load_dataset(_config('tiny_imagenet', tmp_path))
  assert dataset.train_images.shape == (400, 64, 64, 3)
  assert dataset.test_images.shape == (200, 64, 64, 3)  # val/, with labels; test/ has none
  assert np.bincount(dataset.train_labels).tolist() == [2] * 200
  # Labels follow the sorted wnids (ImageFolder order); names from words.txt.
  assert dataset.class_names[:2] == ['thing 0', 'thing 1']
  _assert_colours_match_labels(dataset.train_images, dataset.train_labels)
  _assert_colours_match_labels(dataset.test_images, dataset.test_labels)
  assert dataset.mean == (0.485, 0.456, 0.406)


def test_tiny_imagenet_resized_to_32_and_label_subset(tmp_path):
  archives.write_tiny_imagenet(tmp_path / 'manual', train_per_class=1)
  dataset = load_dataset(_config('tiny_imagenet', tmp_path, image_size=32), labels=[5, 199])
  assert dataset.train_images.shape == (2, 32, 32, 3)
  assert sorted(dataset.test_labels.tolist()) == [5, 199]
  _assert_colours_match_labels(dataset.test_images, dataset.test_labels)


def test_tiny_imagenet_malformed_archive_is_one_line(tmp_path):
  (tmp_path / 'manual').mkdir()
  import zipfile
  with zipfile.ZipFile(tmp_path / 'manual' / 'tiny-imagenet-200.zip', 'w') as archive:
    archive.writestr('tiny-imagenet-200/train/x.txt', b'')
  with pytest.raises(UserError, match='wnids.txt') as e:
    load_dataset(_config('tiny_imagenet', tmp_path))
  assert '\n' not in str(e.value)


def test_cub_official_split_labels_and_resize(tmp_path):
  archives.write_cub(tmp_path / 'manual', train_per_class=2, test_per_class=1,
                     classes=[0, 1, 199])
  with pytest.raises(UserError, match='data.image_size') as e:
    load_dataset(_config('caltech_birds2011', tmp_path))
  assert '\n' not in str(e.value)
  dataset = load_dataset(_config('caltech_birds2011', tmp_path, image_size=24))
  assert dataset.train_images.shape == (6, 24, 24, 3)
  assert sorted(dataset.test_labels.tolist()) == [0, 1, 199]  # label = class number - 1
  assert dataset.class_names[199] == 'Bird_199' and dataset.num_classes == 200
  _assert_colours_match_labels(dataset.train_images, dataset.train_labels)


@pytest.mark.parametrize('as_zip', [False, True])
def test_caltech101_30_train_images_per_class_and_tfds_label_ids(tmp_path, as_zip):
  labels = [1, 4, 38, 101]  # airplanes, background_google, faces_easy, yin_yang
  archives.write_caltech101(tmp_path / 'manual', per_class=33, labels=labels, as_zip=as_zip)
  dataset = load_dataset(_config('caltech101', tmp_path, image_size=16))
  assert np.bincount(dataset.train_labels, minlength=102)[labels].tolist() == [30] * 4
  assert np.bincount(dataset.test_labels, minlength=102)[labels].tolist() == [3] * 4
  assert [dataset.class_names[l] for l in labels] == ['airplanes', 'background_google',
                                                      'faces_easy', 'yin_yang']
  _assert_colours_match_labels(dataset.train_images, dataset.train_labels)


def test_caltech101_split_is_deterministic(tmp_path):
  archives.write_caltech101(tmp_path / 'a' / 'manual', per_class=32, labels=[1])
  archives.write_caltech101(tmp_path / 'b' / 'manual', per_class=32, labels=[1])
  a, b = (load_dataset(_config('caltech101', tmp_path / d, image_size=8)) for d in 'ab')
  np.testing.assert_array_equal(a.test_images, b.test_images)


def test_cub_caltech_mixture_offsets_labels_and_loads_only_wanted_classes(tmp_path):
  archives.write_cub(tmp_path / 'manual', classes=[3, 7, 9])
  archives.write_caltech101(tmp_path / 'manual', per_class=31, labels=[1, 57])
  dataset = load_dataset(_config('cub_caltech', tmp_path, image_size=20),
                         labels=[3, 7, 200 + 1, 200 + 57])
  assert dataset.num_classes == 302
  assert sorted(set(dataset.train_labels.tolist())) == [3, 7, 201, 257]
  assert dataset.class_names[201] == 'caltech101:airplanes'
  assert dataset.class_names[3] == 'caltech_birds2011:Bird_3'
  cub = dataset.train_labels < 200
  _assert_colours_match_labels(dataset.train_images[cub], dataset.train_labels[cub])
  _assert_colours_match_labels(dataset.train_images[~cub], dataset.train_labels[~cub], 200)


def test_missing_archive_names_the_file(tmp_path):
  (tmp_path / 'manual').mkdir()
  with pytest.raises(UserError, match='CUB_200_2011.tgz') as e:
    load_dataset(_config('caltech_birds2011', tmp_path, image_size=8))
  assert '\n' not in str(e.value) and str(tmp_path / 'manual') in str(e.value)


def test_subsample_per_class_is_fixed_and_balanced():
  config = ml_collections.ConfigDict(dict(name='synthetic', image_size=0, synthetic=dict(
      num_classes=3, image_size=4, channels=1, train_per_class=10, test_per_class=6, seed=0)))
  dataset = load_dataset(config)
  a = subsample_per_class(dataset, 4, 2)
  b = subsample_per_class(dataset, 4, 2)
  assert np.bincount(a.train_labels).tolist() == [4, 4, 4]
  assert np.bincount(a.test_labels).tolist() == [2, 2, 2]
  np.testing.assert_array_equal(a.train_images, b.train_images)
  assert len(subsample_per_class(dataset, 0, 2).train_labels) == 30
