"""The first SIGTERM in a single-process run: noted for the next step, or, in work
`unsaved` wraps, raised at once. (Through the command line: test_mfgr_runs.py and
test_reliability.py.)"""

import os
import signal
import time

import pytest

from mfgr_jax import preemption
from mfgr_jax.errors import Interrupted


@pytest.fixture
def handlers():
  preemption.install()
  yield
  preemption.uninstall()


def test_a_signal_during_unsaved_work_raises_at_once_through_except_exception(handlers):
  with pytest.raises(Interrupted, match='stopped by SIGTERM during task 0 importance, which '
                     'saves nothing until it ends; run the same command'):
    with preemption.unsaved('task 0 importance'):
      try:  # as JAX's compilation cache does around its reads and writes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # work that would go on; only the handler's exception ends it
      except Exception:  # pylint: disable=broad-except
        pass
      time.sleep(10)


def test_outside_unsaved_work_a_signal_is_only_noted_and_stops_the_next_unsaved_work(handlers):
  os.kill(os.getpid(), signal.SIGTERM)
  time.sleep(0.1)  # the handler runs between bytecodes: let it
  assert preemption.requested(1) == 'SIGTERM'
  with pytest.raises(Interrupted, match='stopped by SIGTERM during task 1 exemplars'):
    with preemption.unsaved('task 1 exemplars'):
      pytest.fail('the work started after a signal')
