"""A run's files (files.py): written whole or not at all, the JSON as results.json
and config.json are, PNG grids in grey or colour."""

import json
import os

import numpy as np
import PIL.Image
import pytest

from mfgr_jax import files


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
  path = tmp_path / 'results.json'
  files.write_json(path, {'accuracy': [99.0]})
  assert path.read_text() == '{\n "accuracy": [\n  99.0\n ]\n}\n'

  def killed(source, destination):  # the process dies between writing and renaming
    raise KeyboardInterrupt
  monkeypatch.setattr(os, 'replace', killed)
  with pytest.raises(KeyboardInterrupt):
    files.write_json(path, {'accuracy': [99.0, 70.0]})
  assert json.loads(path.read_text()) == {'accuracy': [99.0]}


@pytest.mark.parametrize('channels, mode', [(1, 'L'), (3, 'RGB')])
def test_png_grids_in_grey_or_colour(tmp_path, channels, mode):
  image = np.arange(4 * 5 * channels, dtype=np.uint8).reshape(4, 5, channels)
  files.write_png(tmp_path / 'task1.png', image)
  with PIL.Image.open(tmp_path / 'task1.png') as png:
    assert png.mode == mode
    np.testing.assert_array_equal(np.asarray(png).reshape(image.shape), image)
  assert [p.name for p in tmp_path.iterdir()] == ['task1.png']  # no temporary file left
