"""Where a whole run's time goes: compiling, each stage's steps, checkpoints, evaluation.

    python -m benchmarks.task_phases --config configs/fashion_finegrained.py:full \\
        --config.method=mfgr --config.init_from=TASK0_WORKDIR [--config.X=Y ...] \\
        [--runs 2] [--out FILE]

Runs the config twice, each time in a process of its own and a new workdir, with
one persistent XLA compilation cache (JAX's, `JAX_COMPILATION_CACHE_DIR`, with
its defaults): first empty, as in any first run of a setting; then filled by
the first run, as in every later run of the same shapes (the other seeds and
methods of a study, a run resumed after a kill). Inside each run the phases are
timed from the loop's own calls (`StageRunner.run` and `.save`, `train.evaluate`,
`after_task`, `save_task`), and compiling from JAX's monitoring events (tracing,
lowering, XLA compiling or reading the cache), charged to the phase that
compiled. Each phase's time excludes the phases inside it (a stage's time
excludes its checkpoints); `setup` is the rest (loading data and the task-0
model, building and initialising the models). Prints the table (and writes it
to --out).
"""

import collections
import contextlib
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from typing import Callable, Iterator

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from benchmarks import emit
from mfgr_jax import console
from mfgr_jax import stage_runner
from mfgr_jax import train
from mfgr_jax.errors import UserError

_CONFIG = config_flags.DEFINE_config_file('config', None, 'the config to time',
                                          lock_config=True)
_OUT = flags.DEFINE_string('out', '', 'also write the table to this file')
_RUNS = flags.DEFINE_integer('runs', 2, '1: the run with an empty cache only; 2: and the '
                             'run with the cache it filled', lower_bound=1, upper_bound=2)
_CHILD = flags.DEFINE_string('child', '', '(internal) time one run into this workdir; write '
                             'its phases to WORKDIR/phases.json')

# JAX's events for the parts of a compilation (the last: XLA's compile or a cache read).
COMPILE_EVENTS = ('/jax/core/compile/jaxpr_trace_duration',
                  '/jax/core/compile/jaxpr_to_mlir_module_duration',
                  '/jax/core/compile/backend_compile_duration')
RUNS = ('empty cache', 'warm cache')


class PhaseClock:
  """Wall time per phase, each excluding the phases entered inside it, and the
  seconds spent compiling in each (overlapping compile events merged)."""

  def __init__(self):
    self.seconds: dict[str, float] = collections.defaultdict(float)
    self._compile_spans: dict[str, list] = collections.defaultdict(list)
    self._stack: list[str] = []
    self._since = 0.0

  @contextlib.contextmanager
  def phase(self, name: str) -> Iterator[None]:
    self._switch(push=name)
    try:
      yield
    finally:
      self._switch(push=None)

  def _switch(self, push: str | None) -> None:
    now = time.time()
    if self._stack:
      self.seconds[self._stack[-1]] += now - self._since
    if push is None:
      self._stack.pop()
    else:
      self._stack.append(push)
    self._since = now

  def on_event_span(self, event: str, start: float, end: float, **unused) -> None:
    if event in COMPILE_EVENTS and self._stack:
      self._compile_spans[self._stack[-1]].append((start, end))

  def compile_seconds(self, name: str) -> float:
    total, reached = 0.0, float('-inf')
    for start, end in sorted(self._compile_spans[name]):
      total += max(0.0, end - max(start, reached))
      reached = max(reached, end)
    return total

  def phases(self) -> dict[str, dict[str, float]]:
    return {name: {'seconds': seconds, 'compiling': self.compile_seconds(name)}
            for name, seconds in self.seconds.items()}


def _timed(clock: PhaseClock, phase: str | Callable[..., str], function: Callable) -> Callable:
  @functools.wraps(function)
  def wrapper(*args, **kwargs):
    with clock.phase(phase if isinstance(phase, str) else phase(*args, **kwargs)):
      return function(*args, **kwargs)
  return wrapper


def time_run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, dict[str, float]]:
  """Runs `train.run(config, workdir)` with the loop's calls timed; the phases."""
  clock = PhaseClock()
  jax.monitoring.register_event_time_span_listener(clock.on_event_span)
  runner = stage_runner.StageRunner
  patches = [(runner, 'run', _timed(clock, lambda self, stage, *a, **k: stage, runner.run)),
             (runner, 'save', _timed(clock, 'checkpoints', runner.save)),
             (train, 'save_task', _timed(clock, 'checkpoints', train.save_task)),
             (train, 'evaluate', _timed(clock, 'evaluation', train.evaluate)),
             (train, 'after_task', _timed(clock, 'after task', train.after_task))]
  originals = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
  for owner, name, timed in patches:
    setattr(owner, name, timed)
  try:
    with clock.phase('setup'):
      train.run(config, workdir)
  finally:
    for owner, name, original in originals:
      setattr(owner, name, original)
    jax.monitoring.unregister_event_time_span_listener(clock.on_event_span)
  return clock.phases()


def markdown(runs: dict[str, dict], description: str) -> str:
  """One row per phase: seconds (of them compiling) in each run."""
  names = sorted({name for phases in runs.values() for name in phases},
                 key=lambda n: (n == 'setup', n))
  lines = [description, '',
           '| phase | ' + ' | '.join(f'{run}: s (compiling)' for run in runs) + ' |',
           '|---|' + '---|' * len(runs)]

  def cell(phase: dict | None) -> str:
    return f"{phase['seconds']:.1f} ({phase['compiling']:.1f})" if phase else '–'

  for name in names:
    lines.append(f'| {name} | ' + ' | '.join(cell(phases.get(name)) for phases in runs.values())
                 + ' |')
  totals = [{'seconds': sum(p['seconds'] for p in phases.values()),
             'compiling': sum(p['compiling'] for p in phases.values())}
            for phases in runs.values()]
  lines.append('| **whole run** | ' + ' | '.join(f'**{cell(t)}**' for t in totals) + ' |')
  return '\n'.join(lines) + '\n'


def _run_arguments(argv: list[str]) -> list[str]:
  """The command line without this benchmark's own flags: what each run is given."""
  own = tuple(f'--{flag.name}' for flag in (_OUT, _RUNS, _CHILD))
  arguments, skip_value = [], False
  for arg in argv:
    if skip_value:
      skip_value = False
    elif arg in own:
      skip_value = True
    elif not arg.startswith(tuple(f'{name}=' for name in own)):
      arguments.append(arg)
  return arguments


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise SystemExit(f'task_phases: error: unexpected arguments {argv[1:]}')
  if _CONFIG.value is None:
    raise SystemExit('task_phases: error: --config=FILE is required; see --help')
  console.install(verbose=False)
  if _CHILD.value:
    try:
      phases = time_run(_CONFIG.value, _CHILD.value)
    except UserError as e:
      raise SystemExit(f'task_phases: error: {e}') from None
    pathlib.Path(_CHILD.value, 'phases.json').write_text(json.dumps(phases))
    return
  arguments = _run_arguments(sys.argv[1:])
  runs = {}
  with tempfile.TemporaryDirectory(prefix='task_phases_') as folder:
    environment = dict(os.environ, JAX_COMPILATION_CACHE_DIR=f'{folder}/cache')
    for i, run in enumerate(RUNS[:_RUNS.value]):
      workdir = f'{folder}/run{i}'
      status = subprocess.run([sys.executable, '-m', 'benchmarks.task_phases',
                               f'--child={workdir}', *arguments], env=environment).returncode
      if status:
        raise SystemExit(f'task_phases: error: run {i + 1} ({run}) stopped with exit status '
                         f'{status}; its error is above')
      runs[run] = json.loads(pathlib.Path(workdir, 'phases.json').read_text())
  description = (f"jax {jax.__version__} ({jax.default_backend()}), `{' '.join(arguments)}`: "
                 f'method {_CONFIG.value.method}, seconds per phase of the whole run (of them '
                 'compiling, in brackets).')
  emit(markdown(runs, description), _OUT.value)


if __name__ == '__main__':
  app.run(main)
