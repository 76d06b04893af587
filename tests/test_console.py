"""console.py: which log lines a run shows and how, and the pace of a stage."""

import logging as std_logging
import os
import time

from mfgr_jax import console


def record(path: str, level: int, message: str = 'm', exc_info=None) -> std_logging.LogRecord:
  return std_logging.LogRecord('absl', level, path, 1, message, None, exc_info)


def test_own_info_lines_and_every_warning_pass_library_info_does_not():
  own = os.path.join(os.sep, 'repo', 'mfgr_jax', 'train.py')
  library = os.path.join(os.sep, 'venv', 'jax', '_src', 'xla_bridge.py')
  assert console._keep(record(own, std_logging.INFO))
  assert not console._keep(record(library, std_logging.INFO))
  assert console._keep(record(library, std_logging.WARNING))


def test_orbax_warnings_pass_without_their_tracebacks():
  try:
    raise RuntimeError('write failed')
  except RuntimeError as e:
    warning = record(os.path.join(os.sep, 'venv', 'orbax', 'checkpoint', 'x.py'),
                     std_logging.ERROR, exc_info=(type(e), e, e.__traceback__))
  assert console._keep(warning) and warning.exc_info is None


def test_lines_are_time_then_message_with_the_level_of_warnings():
  formatter = console._Formatter()
  info = formatter.format(record('x.py', std_logging.INFO, 'task 1 starts'))
  warning = formatter.format(record('x.py', std_logging.WARNING, 'disk low'))
  assert info[2] == info[5] == ':' and info[8:] == ' task 1 starts'
  assert warning.endswith(' warning: disk low')


def test_numbers_are_rounded_and_absent_ones_are_a_dash():
  assert console.rounded(11.799999999999999) == '11.80'
  assert console.rounded(None) == '–'
  assert console.rounded(3.14159, 3) == '3.142'


def test_the_pace_excludes_the_compiling_step():
  assert console.pace(4, 18, None) == 'compiled'
  # 10 steps in ~2 s after the compiled step 2: ~5 steps/s, 8 steps left.
  pace = console.pace(12, 20, (2, time.time() - 2.0))
  rate, left = pace.split(' steps/s, ')
  assert 4.5 < float(rate) <= 5.0 and left == '0:00:02 left'
