"""Writing a run's files so that a kill leaves the old file or the new one, never a
part: results.json, config.json, report.md, sample grids and charts."""

import json
import os
import pathlib
from typing import Any

import numpy as np
import PIL.Image


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` so that a kill leaves the old file or the new one."""
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(text)
  os.replace(tmp, path)


def json_text(data: Any) -> str:
  """How results.json and config.json are written."""
  return json.dumps(data, indent=1) + '\n'


def write_json(path: pathlib.Path, data: Any) -> None:
  write_atomic(path, json_text(data))


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """Writes a uint8 HxWxC (C = 1 or 3) image as PNG, atomically."""
  tmp = path.with_name(f'.{path.name}.tmp')
  PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format='PNG')
  os.replace(tmp, path)
