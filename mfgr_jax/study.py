"""A study: methods x seeds of one config, each seed's methods from one shared
task-0 model, every finished run's small outputs kept (e.g. in the repository),
so that the study survives interruptions, days and machines.

  python -m mfgr_jax.study --config configs/fashion_finegrained.py:full \\
      --methods finetune,lwf,mfgr --seeds 0,1,2 --keep docs/fashion_finegrained_full/runs \\
      [--workdirs workdirs/fashion_finegrained_full] [--commit] \\
      [--method_args abd=--config.replay.single_pass=True] [-- MORE --config.X=Y ARGS]

Per seed, task 0 is trained once (`--config.method=finetune
--config.scenario.num_tasks=1`, into WORKDIRS/seed<s>/task0), and each method
runs the whole scenario from it (`--config.init_from`) in WORKDIRS/seed<s>/<method>,
as `python -m mfgr_jax.main` in its own process. When a run finishes, its
results.json, config.json and sample grids are copied to KEEP/<method>-seed<s>/
(task 0's to KEEP/task0-seed<s>/) and, with --commit, committed to git at once
(that folder only). Task 0's model (its Orbax checkpoint, 2.7 MB at the
fine-grained study's size) is kept too, because training it again elsewhere need not
give the same weights (XLA's CPU kernels differ between processors): each seed's
methods start from the kept model, on any machine, and a task-0 model of the
workdirs that differs from it is replaced by it. Only a seed whose task-0 run was
kept without its model (kept before 2026-12-01) trains task 0 again, with a warning
when it differs. A run whose kept results.json holds every task is skipped; an
unfinished one resumes from its workdir's checkpoint, as main does when run again.
The runs share JAX's persistent compilation cache, WORKDIRS/xla_cache (or
$JAX_COMPILATION_CACHE_DIR where set), so that each program is compiled once per
study, not once per run (JAX keeps those that took over a second to compile).
`python -m mfgr_jax.report KEEP` reads the kept runs (it leaves out the task0-seed*
folders: those are finetune runs of task 0 alone). Ctrl-C or SIGTERM stops
the run in progress (at its current step, with a checkpoint there, or at once in
after-task work), and the study with main's exit status 3; the same command continues it.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

from mfgr_jax import cpu_flags

cpu_flags.use_project_flags()  # the runs it starts inherit them; before anything starts JAX

from absl import flags
from absl import logging

from mfgr_jax import command_line
from mfgr_jax import console
from mfgr_jax.errors import Interrupted, UserError
from mfgr_jax.methods import get_method
from mfgr_jax.results import FILE_NAME, read_results

KEPT_FILES = (FILE_NAME, 'config.json')
TASK0_MODEL = pathlib.Path('checkpoints', 'tasks', '0')  # what `init_from` reads
# What the study sets for each run itself: not accepted after `--`.
PER_RUN = ('--config.seed', '--config.method', '--config.init_from')


def _flag_values() -> flags.FlagValues:
  """The command line's flags (see `command_line`)."""
  values = flags.FlagValues()
  flags.DEFINE_string('config', None, 'the config file (with :ARG if it takes one)',
                      flag_values=values)
  flags.DEFINE_list('methods', [], 'the methods to run, comma-separated', flag_values=values)
  flags.DEFINE_list('seeds', ['0', '1', '2'], 'the seeds, comma-separated', flag_values=values)
  flags.DEFINE_string('keep', None, "the folder that keeps every finished run's outputs",
                      flag_values=values)
  flags.DEFINE_string('workdirs', 'workdirs/study', 'where the runs train (their checkpoints)',
                      flag_values=values)
  flags.DEFINE_multi_string('method_args', [], "METHOD=--config.X=Y: an argument for one "
                            "method's runs (repeatable)", flag_values=values)
  flags.DEFINE_bool('commit', False, 'git-commit each kept run as it finishes',
                    flag_values=values)
  return values


def is_finished(folder: pathlib.Path) -> bool:
  """Whether the run in `folder` (a workdir or a kept run) evaluated every task it
  planned: its config's `scenario.num_tasks` (0: all of results.json's tasks)."""
  results = read_results(folder)
  if results is None:
    return False
  try:
    planned = json.loads((folder / 'config.json').read_text())['scenario']['num_tasks']
    return len(results['accuracy']) == (planned or len(results['tasks']))
  except (OSError, ValueError, KeyError, TypeError):  # no config.json, or not a run's
    return False


def keep_run(workdir: pathlib.Path, kept: pathlib.Path, commit: bool,
             with_model: bool = False) -> None:
  """Copies a finished run's results.json, config.json and sample grids to `kept`, and
  `with_model` its task-0 checkpoint (results.json last, each file written whole, so
  that an interrupted copy does not count as kept); commits it."""
  if with_model and not (workdir / TASK0_MODEL).is_dir():
    raise UserError(f'{workdir} is a finished task-0 run without its model ({TASK0_MODEL}); '
                    'delete that folder so that the study trains task 0 again')
  if kept.exists():
    shutil.rmtree(kept)
  (kept / 'samples').mkdir(parents=True)
  for grid in sorted((workdir / 'samples').glob('*.png')):
    shutil.copy2(grid, kept / 'samples' / grid.name)
  if with_model:
    shutil.copytree(workdir / TASK0_MODEL, kept / TASK0_MODEL)
  for name in reversed(KEPT_FILES):
    shutil.copy2(workdir / name, kept / f'.{name}.tmp')
    os.replace(kept / f'.{name}.tmp', kept / name)
  if commit:
    _commit(kept)


def has_model(kept: pathlib.Path) -> bool:
  """Whether the kept task-0 run `kept` holds its model (complete: results.json, which
  is_finished reads, is copied after it)."""
  return (kept / TASK0_MODEL).is_dir() and is_finished(kept)


def _commit(kept: pathlib.Path) -> None:
  """Commits the folder `kept` alone, in the git repository that holds it."""
  folder = str(kept.resolve())
  try:
    # -f: an ignore rule of the user's (e.g. checkpoints/) must not leave the model out.
    subprocess.run(['git', '-C', folder, 'add', '-f', '--', folder], check=True,
                   capture_output=True)
    unchanged = subprocess.run(['git', '-C', folder, 'diff', '--cached', '--quiet', '--',
                                folder], check=False).returncode == 0
    if not unchanged:  # (kept again with the same files: nothing to commit)
      subprocess.run(['git', '-C', folder, 'commit', '-q', '-m', f'study: {kept.name} finished',
                      '--', folder], check=True, capture_output=True)
  except (OSError, subprocess.CalledProcessError) as e:
    detail = getattr(e, 'stderr', b'') or b''
    raise UserError(f'{kept} is kept but could not be committed ({e}; '
                    f'{detail.decode(errors="replace").strip()[:200]}); is --keep inside a git '
                    'repository with user.name and user.email set? Commit it by hand or drop '
                    '--commit, then run the same command again') from None


def _warn_if_retrained(task0: pathlib.Path, kept0: pathlib.Path) -> None:
  """Logs a warning when task 0, trained again here, is not the model that a kept
  task-0 run without its checkpoint (kept before models were kept) reported."""
  before, now = read_results(kept0), read_results(task0)
  if before is not None and before.get('accuracy') != now['accuracy']:
    logging.warning('study: task 0 trained again in %s reaches %.2f %%, the kept %s %.2f %%: '
                    'that model was not kept, so the runs kept before come from it and the '
                    'next ones from this one (kept now with its model); delete the kept runs '
                    'of this seed to run them all from this one', task0, now['accuracy'][0],
                    kept0, before['accuracy'][0])


def run_main(config: str, workdir: pathlib.Path, args: Sequence[str]) -> None:
  """`python -m mfgr_jax.main` on one run; its console passes through."""
  command = [sys.executable, '-m', 'mfgr_jax.main', f'--config={config}',
             f'--workdir={workdir}', *args]
  logging.info('study: %s', ' '.join(command[2:]))
  process = subprocess.Popen(command)
  # Ctrl-C reaches the run through the terminal's process group, SIGTERM is passed on:
  # either way the run saves a checkpoint and exits 3, and the study stops after it.
  handlers = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
              signal.SIGTERM: signal.signal(signal.SIGTERM,
                                            lambda *_: process.send_signal(signal.SIGTERM))}
  try:
    status = process.wait()
  finally:
    for signum, handler in handlers.items():
      signal.signal(signum, handler)
  if status == Interrupted.exit_status:
    raise Interrupted(f'the run in {workdir} was stopped (its message is above); run the same '
                      'study command to continue it from its last checkpoint, and the rest')
  # Killed by the signal while it started (before main's handler), or main's own exit
  # at a second signal (128 + signal): a stop, not an error.
  if status in (-signal.SIGTERM, -signal.SIGINT, 128 + signal.SIGTERM, 128 + signal.SIGINT):
    raise Interrupted(f'the run in {workdir} was stopped by a signal without a new checkpoint; '
                      'run the same study command to continue it from its last one')
  if status:
    raise UserError(f'the run in {workdir} stopped with exit status {status} (its error is '
                    'above); fix it and run the same study command again to go on')


def shared_task0(config: str, seed_args: Sequence[str], task0: pathlib.Path,
                 kept0: pathlib.Path, commit: bool) -> None:
  """Makes the workdir `task0` hold the seed's task-0 model: the kept one where it is
  kept, so that every run of the seed starts from one model on any machine; else one
  trained here, which is kept."""
  if has_model(kept0):
    if read_results(task0) != read_results(kept0):  # none here yet, or another model
      keep_run(kept0, task0, commit=False, with_model=True)  # copied back, the same way
      logging.info('study: task 0 of %s is the kept model in %s', task0.parent.name, kept0)
    return
  if not is_finished(task0):
    run_main(config, task0, [*seed_args, '--config.method=finetune',
                             '--config.scenario.num_tasks=1'])
    _warn_if_retrained(task0, kept0)
  keep_run(task0, kept0, commit, with_model=True)


def run_study(config: str, methods: Sequence[str], seeds: Sequence[int], keep: pathlib.Path,
              workdirs: pathlib.Path, method_args: dict[str, list[str]], extra: Sequence[str],
              commit: bool) -> list[pathlib.Path]:
  """Runs what is not kept yet; returns the kept folders of every run, in order."""
  kept_runs = []
  for seed in seeds:
    seed_args = [f'--config.seed={seed}', *extra]
    task0, kept0 = workdirs / f'seed{seed}' / 'task0', keep / f'task0-seed{seed}'
    pending = [m for m in methods if not is_finished(keep / f'{m}-seed{seed}')]
    if pending:
      shared_task0(config, seed_args, task0, kept0, commit)
    for method in methods:
      kept = keep / f'{method}-seed{seed}'
      kept_runs.append(kept)
      if method not in pending:
        logging.info('study: %s is kept already; skipped', kept)
        if commit:  # a study killed between keeping a run and committing it
          _commit(kept)
        continue
      start = time.time()
      workdir = workdirs / f'seed{seed}' / method
      run_main(config, workdir, seed_args + [f'--config.method={method}',
                                             f'--config.init_from={task0}',
                                             *method_args.get(method, [])])
      keep_run(workdir, kept, commit)
      logging.info('study: %s finished in %.0f s; kept in %s', workdir, time.time() - start,
                   kept)
  return kept_runs


def _parse(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
  """(the flags, the arguments after `--` for every run) of the command line `argv`."""
  values = _flag_values()
  extra = command_line.parse('mfgr_jax.study', __doc__, values, argv)
  for name in ('config', 'keep'):
    if not values[name].value:
      raise UserError(f'--{name} is required; see --help')
  if not values.methods:
    raise UserError('--methods=A,B,... is required: the methods to run')
  for method in values.methods:
    get_method(method)  # a one-line error for an unknown one, before any run
  if not values.seeds or not all(seed.isdigit() for seed in values.seeds):
    raise UserError(f'--seeds={",".join(values.seeds)} must be integers, e.g. 0,1,2')
  if any(not arg.startswith('--config.') for arg in extra):
    raise UserError(f'after --, give only --config.X=Y arguments for every run, got {extra}')
  for arg in extra + [item.partition('=')[2] for item in values.method_args]:
    if arg.partition('=')[0] in PER_RUN:
      raise UserError(f'{arg}: the study sets {", ".join(PER_RUN)} for each run itself')
  return values, extra


def _method_args(items: Sequence[str]) -> dict[str, list[str]]:
  parsed: dict[str, list[str]] = {}
  for item in items:
    method, sep, argument = item.partition('=')
    if not sep or not argument.startswith('--config.'):
      raise UserError(f'--method_args={item} is not METHOD=--config.X=Y')
    get_method(method)
    parsed.setdefault(method, []).append(argument)
  return parsed


def main(argv: Sequence[str]) -> None:
  try:
    values, extra = _parse(argv)
    # The runs compile the same programs (every method's per seed, each program of a
    # resumed run): JAX's persistent cache keeps them for the whole study.
    os.environ.setdefault('JAX_COMPILATION_CACHE_DIR',
                          str(pathlib.Path(values.workdirs, 'xla_cache').absolute()))
    kept = run_study(values.config, values.methods, [int(s) for s in values.seeds],
                     pathlib.Path(values.keep), pathlib.Path(values.workdirs),
                     _method_args(values.method_args), extra, values.commit)
  except Interrupted as e:  # main's exit status 3 or a signal: stopped, nothing wrong
    print(f'mfgr_jax.study: {e}', file=sys.stderr, flush=True)
    raise SystemExit(e.exit_status) from None
  except UserError as e:
    raise SystemExit(f'mfgr_jax.study: error: {e}') from None
  print('\n'.join(['mfgr_jax.study: every run is kept:'] + [str(k) for k in kept]))


if __name__ == '__main__':
  logging.use_absl_handler()  # (absl's app.run would; the flags here are our own)
  logging.set_verbosity(logging.INFO)
  console.install(verbose=False)
  main(sys.argv[1:])
