"""Reading and writing the IDX format of (Fashion-)MNIST, plain or gzipped."""

import gzip
import pathlib

import numpy as np

_DTYPE_CODE = 0x08  # unsigned byte: the only element type MNIST-style files use


def read_idx(path: str | pathlib.Path) -> np.ndarray:
  """Returns the uint8 array stored in an IDX file (gzip detected by magic)."""
  raw = pathlib.Path(path).read_bytes()
  if raw[:2] == b'\x1f\x8b':
    raw = gzip.decompress(raw)
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _DTYPE_CODE:
    raise ValueError(f'{path} is not an unsigned-byte IDX file (bad magic number)')
  ndim = raw[3]
  header = 4 + 4 * ndim
  shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(ndim))
  if len(raw) != header + int(np.prod(shape)):
    raise ValueError(f'{path}: header says shape {shape}, but the file holds '
                     f'{len(raw) - header} data bytes (truncated or corrupt)')
  return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def write_idx(path: str | pathlib.Path, array: np.ndarray) -> None:
  """Writes a uint8 array as an IDX file, gzipped if `path` ends in .gz."""
  array = np.ascontiguousarray(array, np.uint8)
  header = bytes([0, 0, _DTYPE_CODE, array.ndim])
  header += b''.join(int(d).to_bytes(4, 'big') for d in array.shape)
  data = header + array.tobytes()
  path = pathlib.Path(path)
  path.write_bytes(gzip.compress(data) if path.suffix == '.gz' else data)
