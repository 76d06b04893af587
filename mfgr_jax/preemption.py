"""SIGTERM / SIGINT: finish the current step, save a checkpoint, exit resumable.

One process: our handlers note the first signal and the outer loop stops at
its next step (`requested`); a second signal ends the process at once (the
last checkpoint stays valid, as after kill -9). Work without steps to save
between (a method's after-task work) runs `unsaved(...)`: a first signal there
stops it at once, as waiting for its end could take minutes and save nothing
more. Several processes must stop at the same step, so there JAX's preemption
sync point decides (it listens for SIGTERM itself, e.g. a TPU maintenance
event or SLURM's --signal).
"""

import contextlib
import os
import signal
from typing import Any, Iterator

import jax
from jax.experimental import multihost_utils

from mfgr_jax.errors import Interrupted

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_received: list[str] = []
_previous: dict[int, Any] = {}
_last_sync: list[tuple[int, str | None]] = []  # JAX's sync point needs increasing step ids
_unsaved: list[str] = []  # the work `unsaved` runs now, innermost last


def _note(signum: int, frame: Any) -> None:
  del frame
  if _received:
    os._exit(128 + signum)  # pylint: disable=protected-access
  _received.append(signal.Signals(signum).name)
  if _unsaved:
    raise _Stop


class _Stop(BaseException):
  """Raised by the handler inside `unsaved`. Not an Exception, as KeyboardInterrupt
  is not: libraries' `except Exception` (JAX's compilation cache, logging) would
  swallow it mid-work, and the work would run to its end."""


@contextlib.contextmanager
def unsaved(work: str) -> Iterator[None]:
  """Runs the body as `work` (e.g. 'task 0 importance'), which has no checkpoint of
  its own: a signal before or during it raises `Interrupted` at once rather than
  after it. Single-process runs only: with several, the sync point in `requested`
  decides, at the next step."""
  depth = len(_unsaved)
  try:
    _unsaved.append(work)
    if _received:  # before the work, or before the handler could see it
      raise _Stop
    yield
  except _Stop:
    raise Interrupted(f'stopped by {_received[0]} during {work}, which saves nothing until it '
                      'ends; run the same command to continue from the last checkpoint (it '
                      'does the steps since that checkpoint and this work again)') from None
  finally:
    del _unsaved[depth:]


def install() -> None:
  """Takes over SIGTERM and SIGINT in a single-process run (a no-op with several)."""
  _received.clear()
  if jax.process_count() == 1:
    for signum in _SIGNALS:
      _previous[signum] = signal.signal(signum, _note)


def uninstall() -> None:
  for signum, handler in _previous.items():
    signal.signal(signum, handler)
  _previous.clear()
  _received.clear()


def requested(global_step: int) -> str | None:
  """The signal to stop for at `global_step` (the same on every process), or None."""
  if jax.process_count() > 1:
    if not _last_sync or global_step > _last_sync[-1][0]:
      reached = multihost_utils.reached_preemption_sync_point(global_step)
      _last_sync[:] = [(global_step, 'a preemption notice' if reached else None)]
    return _last_sync[-1][1]
  return _received[0] if _received else None
