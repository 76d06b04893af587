"""Shared fixtures and helpers: tiny configs, runs of the real entry point, TensorBoard readers.

Test files live in folders that mirror the package (methods/ for mfgr_jax/methods/,
end_to_end/ for runs of `python -m mfgr_jax.main`); pytest puts this folder on
sys.path, so they import `conftest` and the helpers beside it (`archives`,
`logistic_model`, `loss_references`) by name.
Test file names must be unique across the folders (there are no __init__.py).
"""

import atexit
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

# One persistent XLA compilation cache for the whole session, shared by this
# process and every run the tests start: most tests run the same smoke shapes,
# and compiling them, not training, is most of a smoke run's time (measured:
# 59 s cold, 19 s warm, identical results). Set before jax is imported.
# With pytest-xdist, the workers inherit the cache of the process that started them
# (MFGR_JAX_TEST_XLA_CACHE), which alone removes it at the end.
_XLA_CACHE = os.environ.get('MFGR_JAX_TEST_XLA_CACHE')
if _XLA_CACHE is None:
  _XLA_CACHE = tempfile.mkdtemp(prefix='mfgr_jax_test_xla_cache_')
  os.environ['MFGR_JAX_TEST_XLA_CACHE'] = _XLA_CACHE
  atexit.register(shutil.rmtree, _XLA_CACHE, ignore_errors=True)
# And XLA's CPU backend at optimisation level 0: compiling, not running, is most of
# a test's time, and level 0 compiles 25-30 % faster (measured: tests/methods/
# test_mas.py 120 s -> 90 s, data_parallel_steps.py 213 s -> 149 s). Every
# comparison in the suite is between runs made the same way, or to references
# within tolerances, so nothing a test checks depends on the level.
_TEST_XLA_FLAGS = '--xla_backend_optimization_level=0'
os.environ.update(JAX_COMPILATION_CACHE_DIR=_XLA_CACHE,
                  JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0',
                  XLA_FLAGS=f'{os.environ.get("XLA_FLAGS", "")} {_TEST_XLA_FLAGS}'.strip())
# The tests compute with the flags that runs use on this CPU (the runs they start
# set them for themselves).
from mfgr_jax import cpu_flags  # pylint: disable=wrong-import-position

cpu_flags.use_project_flags()

import pytest
from tensorboard.backend.event_processing import event_accumulator

from mfgr_jax.results import RUN_ENVIRONMENT, read_results

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # so that `configs` imports as in `python -m mfgr_jax.main`
SMOKE = str(REPO / 'configs' / 'smoke.py')
def comparable(results: dict) -> dict:
  """`results` less the fields allowed to differ between equal runs."""
  return {k: v for k, v in results.items() if k not in RUN_ENVIRONMENT}


def load_results(workdir) -> dict:
  results = read_results(workdir)
  assert results is not None, f'{workdir} has no readable results.json'
  return results


def env(devices: int) -> dict:
  return dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices} '
                                   f'{_TEST_XLA_FLAGS}',
              JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')


def run_main(*args: str, devices: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
  """Runs `python -m mfgr_jax.main ARGS` on `devices` simulated CPU devices."""
  return subprocess.run([sys.executable, '-m', 'mfgr_jax.main', *args], cwd=REPO,
                        env=env(devices), capture_output=True, text=True, timeout=timeout)


def tensorboard_tags(workdir: pathlib.Path) -> set[str]:
  """Every tag (scalars, images, histograms, ...) written to TensorBoard in `workdir`."""
  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  return {tag for tags in events.Tags().values() if isinstance(tags, list) for tag in tags}


def scalars(workdir: pathlib.Path, tag: str) -> list[float]:
  """Every value of the TensorBoard scalar `tag` written in `workdir`, in order."""
  import tensorflow as tf  # here, so that unit tests that never read events skip its import
  return [float(tf.make_ndarray(value.tensor))
          for path in sorted(workdir.glob('events.out.tfevents.*'))
          for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value if value.tag == tag]


def start_main(*args: str, stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
  """Starts `python -m mfgr_jax.main ARGS` on one CPU device, stdout discarded."""
  return subprocess.Popen([sys.executable, '-m', 'mfgr_jax.main', *args], cwd=REPO, env=env(1),
                          stdout=subprocess.DEVNULL, stderr=stderr)


def signal_when(ready: Callable[[str], bool], workdir: pathlib.Path, *args: str,
                signum: int, what: str) -> tuple[int, str]:
  """Starts `main --workdir WORKDIR ARGS`, sends it `signum` once `ready(its stderr
  so far)` (`what` names that moment in a failure), and waits for it to end;
  returns its exit status and stderr."""
  with tempfile.TemporaryFile('w+') as stderr:
    proc = start_main(f'--workdir={workdir}', *args, stderr=stderr)
    deadline = time.time() + 300
    try:
      while not ready(_written(stderr)):
        assert proc.poll() is None, f'the run ended before {what}'
        assert time.time() < deadline, f'not {what} within 300 s'
        time.sleep(0.05)
    finally:
      proc.send_signal(signum)
      status = proc.wait(timeout=300)
    return status, _written(stderr)


def _written(file: Any) -> str:
  # pread: the run shares the file's offset, so seeking it would misplace its writes.
  return os.pread(file.fileno(), os.fstat(file.fileno()).st_size, 0).decode(errors='replace')


def signal_after_checkpoint(workdir: pathlib.Path, first: int, last: int, *args: str,
                            signum: int = signal.SIGKILL) -> tuple[int, str]:
  """`signal_when` a mid-task checkpoint with a global step in [first, last] is on disk."""
  folder = workdir / 'checkpoints' / 'progress'
  return signal_when(
      lambda _: folder.exists() and any(p.name.isdigit() and first <= int(p.name) <= last
                                        for p in folder.iterdir()),
      workdir, *args, signum=signum, what=f'a checkpoint in steps [{first}, {last}]')


def kill_9_after_checkpoint(workdir: pathlib.Path, first: int, last: int, *args: str) -> None:
  """kill -9s `main --workdir WORKDIR ARGS` at a checkpoint in [first, last]."""
  signal_after_checkpoint(workdir, first, last, *args)


def finished_run(tmp_path_factory: Any, name: str, *args: str) -> pathlib.Path:
  """The workdir of an uninterrupted run of `main ARGS` in a new temporary folder NAME."""
  workdir = tmp_path_factory.mktemp(name)
  proc = run_main(f'--workdir={workdir}', *args)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir


def kill_9_then_rerun(workdir: pathlib.Path, first: int, last: int,
                      *args: str) -> subprocess.CompletedProcess:
  """kill -9s `main --workdir WORKDIR ARGS` at a checkpoint in [first, last] (see
  `kill_9_after_checkpoint`), then runs the same command again to the end; returns
  the rerun, which must succeed."""
  kill_9_after_checkpoint(workdir, first, last, *args)
  rerun = run_main(f'--workdir={workdir}', *args)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  return rerun


@pytest.fixture
def smoke_config():
  from configs import smoke
  return smoke.get_config()
