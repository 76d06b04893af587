"""What a run prints: this project's own lines, without the libraries' INFO noise.

`native_logs_hidden` hides what native libraries print straight to stderr while
the entry point imports them: TensorFlow's oneDNN notice and absl's "All log
messages before absl::InitializeLog()", twice each (TensorFlow reads
`TF_CPP_MIN_LOG_LEVEL` only from the environment the process started with, so
setting it from Python is too late; JAX sets it to 1 on import, which lets
both through). `install` formats absl's handler as `HH:MM:SS message` and lets
through INFO lines of mfgr_jax only, and warnings and errors of every library;
with `verbose` (absl's `--verbosity=1` or more) every line is shown as before.
"""

import contextlib
import logging as std_logging
import os
import time
from typing import Iterator

from absl import logging


@contextlib.contextmanager
def native_logs_hidden() -> Iterator[None]:
  """Sends file descriptor 2 to /dev/null for the block (Python's own errors are
  raised, not printed, inside it)."""
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


def _is_own(record: std_logging.LogRecord) -> bool:
  # absl logs every module through one logger: the module is in the path.
  return f'{os.sep}mfgr_jax{os.sep}' in record.pathname


def _keep(record: std_logging.LogRecord) -> bool:
  """This project's lines and every library's warnings; Orbax's without tracebacks
  (of its background threads after a failed write: our one-line error says what failed)."""
  if record.levelno >= std_logging.WARNING:
    if f'{os.sep}orbax{os.sep}' in record.pathname:
      record.exc_info, record.exc_text = None, None
    return True
  return _is_own(record)


class _Formatter(std_logging.Formatter):
  """`HH:MM:SS message`, with the level named for warnings and errors."""

  def format(self, record: std_logging.LogRecord) -> str:
    prefix = '' if record.levelno < std_logging.WARNING else f'{record.levelname.lower()}: '
    return f'{self.formatTime(record, "%H:%M:%S")} {prefix}{record.getMessage()}'


def install(verbose: bool) -> None:
  """Shows the run's own lines (and everything when `verbose`) on stderr."""
  handler = logging.get_absl_handler()
  if verbose:
    return
  handler.setFormatter(_Formatter())
  handler.addFilter(_keep)


def rounded(value: float | None, digits: int = 2) -> str:
  """A number rounded for the console, or '–' when there is none (e.g. old accuracy at task 0)."""
  return '–' if value is None else f'{value:.{digits}f}'


def byte_size(size: float) -> str:
  """A size in bytes for a person: GB (2**30 bytes) from one GB up, MB below."""
  return f'{size / 2**30:.3g} GB' if size >= 2**30 else f'{size / 2**20:.3g} MB'


def pace(step: int, total_steps: int, timed_from: tuple[int, float] | None) -> str:
  """'R steps/s, H:MM:SS left' of the stage, timed from the step after the one that
  compiled (so that compiling never shows as a crawl); 'compiled' at that step."""
  if timed_from is None or step <= timed_from[0]:
    return 'compiled'
  rate = (step - timed_from[0]) / max(time.time() - timed_from[1], 1e-9)
  left = int(round((total_steps - step) / rate))
  return f'{rate:.3g} steps/s, {left // 3600}:{left // 60 % 60:02d}:{left % 60:02d} left'
