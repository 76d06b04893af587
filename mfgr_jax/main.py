"""Entry point: `python -m mfgr_jax.main --config CONFIG [--workdir DIR]`.

Fields of the config can be overridden on the command line, for example
`--config.method=finetune --config.train.epochs=1`. Running the same command
again resumes the run in its workdir.

Multi-process runs (TPU pod slices, several GPU hosts) start the same command
on every host with `--distributed` (the cluster is read from the environment:
Cloud TPU, SLURM, Open MPI) or with the explicit coordinator flags; see
`launch/`.
"""

import os
import pathlib
import sys

from mfgr_jax import cpu_flags

cpu_flags.use_project_flags()  # before JAX starts its CPU backend, which reads XLA_FLAGS

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from mfgr_jax import console
from mfgr_jax.console import rounded
from mfgr_jax.errors import UserError, first_line

with console.native_logs_hidden():  # they import TensorFlow
  from mfgr_jax import parallel
  from mfgr_jax import run_config
  from mfgr_jax import train
  from mfgr_jax.experiment import check_config

_DEFAULT_CONFIG = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'default.py'

_CONFIG = config_flags.DEFINE_config_file(
    'config', str(_DEFAULT_CONFIG), 'Experiment config file (a get_config() module).',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Output folder; default workdirs/<config name>[-<options>]-<method>-seed<seed>.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', False, 'Join a multi-process run whose processes JAX finds in the environment '
    '(Cloud TPU pod, SLURM, Open MPI).')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0 of a multi-process run (implies '
    '--distributed; with --num_processes and --process_id).')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the multi-process run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process\'s index, 0 .. num_processes-1.')


def default_workdir(config_path: str, method: str, seed: int) -> str:
  path, _, options = config_path.partition(':')
  name = pathlib.Path(path).stem + (f'-{options.replace(",", "-")}' if options else '')
  return str(pathlib.Path('workdirs') / f'{name}-{method}-seed{seed}')


def _quiet_closed_event_loops(unraisable) -> None:
  # After a failed checkpoint write, TensorStore's callbacks into Orbax's finished
  # event loops raise 'Event loop is closed'; nothing is lost, so do not print them.
  if not (isinstance(unraisable.exc_value, RuntimeError) and
          'Event loop is closed' in str(unraisable.exc_value)):
    sys.__unraisablehook__(unraisable)


def _fail(message: str, exit_status: int = 2) -> None:
  print(f'mfgr_jax: error: {" ".join(message.split())}', file=sys.stderr, flush=True)
  sys.stdout.flush()
  # Not sys.exit: after a failed checkpoint read or write, Orbax's background threads
  # would print tracebacks while the interpreter shuts down. Our files are closed.
  os._exit(exit_status)  # pylint: disable=protected-access


def _config_file(argv: list[str]) -> str:
  """The --config argument of the command line, as given."""
  for i, arg in enumerate(argv):
    if arg.startswith('--config='):
      return arg.split('=', 1)[1]
    if arg == '--config' and i + 1 < len(argv):
      return argv[i + 1]
  return str(_DEFAULT_CONFIG)


def _parse_flags(argv: list[str]) -> list[str]:
  """absl's parser, with a one-line error for a bad flag, config file or override."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = str(e)
    if 'Traceback (most recent call last)' in message:
      # A config file's get_config raised: keep where, and the exception's own line.
      where = message.split('Traceback (most recent call last)')[0].rstrip(': \n')
      message = f'{where}: {message.strip().splitlines()[-1]}'
    _fail(f'{message}; see --helpshort')
  except UserError as e:  # the config's making found a fault (e.g. a method plugin's)
    _fail(str(e))
  except SyntaxError as e:
    _fail(f'config file {e.filename}, line {e.lineno}: SyntaxError: {e.msg}; fix the file')
  except AttributeError as e:
    if 'get_config' not in str(e):
      _fail(f'bad config override: {e}; fields are listed in the config file')
    _fail(f'config file {_config_file(argv)} has no get_config(); a config file is a module '
          'whose get_config() returns an ml_collections.ConfigDict (see configs/default.py)')
  except (KeyError, TypeError, ValueError) as e:
    # ml_collections reports a mistyped field as KeyError('field\nDid you mean ...').
    _fail(f'bad config override: {e.args[0] if e.args else e}; fields are listed in the config file')
  except Exception as e:  # pylint: disable=broad-except
    # Importing the config module failed (a missing import, an error at its top level).
    _fail(f'cannot load config file {_config_file(argv)}: {first_line(e)}')


def _load_config() -> ml_collections.ConfigDict:
  filename = flags.FLAGS['config'].config_filename
  if not pathlib.Path(filename.split(':')[0]).is_file():
    _fail(f'config file {filename} not found; pass an existing file, e.g. --config configs/default.py')
  try:
    config = _CONFIG.value
  except Exception as e:  # pylint: disable=broad-except
    # The config module itself failed (syntax error, bad import, ...).
    cause = e.__cause__ or e
    if 'Unexpected None value' in str(cause):  # absl's words for get_config() returning None
      _fail(f'config file {filename}: get_config() returned None, not an '
            'ml_collections.ConfigDict; return the config')
    _fail(f'cannot load config file {filename}: {type(cause).__name__}: {cause}')
  if not isinstance(config, ml_collections.ConfigDict):
    _fail(f'config file {filename}: get_config() returned a {type(config).__name__}, not an '
          'ml_collections.ConfigDict; start from mfgr_jax.run_config.get_config()')
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    _fail(f'unexpected argument(s) {" ".join(argv[1:])}: options are --config, --workdir and '
          '--config.FIELD=VALUE (see --helpshort)')
  console.install(verbose=flags.FLAGS.verbosity >= 1)
  sys.unraisablehook = _quiet_closed_event_loops
  config = _load_config()
  try:
    config, applied = run_config.with_method_settings(
        config, config_flags.get_override_values(flags.FLAGS['config']))
  except UserError as e:
    _fail(str(e))
  explicit = (_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  if any(v is not None for v in explicit) and any(v is None for v in explicit):
    _fail('a multi-process run needs all of --coordinator_address, --num_processes and '
          '--process_id (or none of them with --distributed)')
  try:
    if _DISTRIBUTED.value or explicit[0] is not None:
      parallel.initialize_processes(*explicit)
    method = check_config(config, f'config file {flags.FLAGS["config"].config_filename}')
  except UserError as e:
    _fail(str(e))
  workdir = _WORKDIR.value or default_workdir(flags.FLAGS['config'].config_filename,
                                              config.method, config.seed)
  logging.info('JAX process %d of %d, devices: %s', jax.process_index(), jax.process_count(),
               jax.devices())
  if applied:
    logging.info('%s with the settings the config gives it: %s', config.method, ', '.join(applied))
  if parallel.is_main_process():
    print(f'mfgr_jax: workdir {pathlib.Path(workdir).absolute()}', flush=True)
  try:
    results = train.run(config, workdir, method)
  except UserError as e:
    _fail(str(e), e.exit_status)
  except OSError as e:  # a full disk or a lost mount while writing checkpoints or results
    what = e.filename or 'the workdir'
    _fail(f'cannot write {what} ({e.strerror or e}); free space on that disk (or fix its '
          'permissions) and run the same command again: it resumes from the last complete '
          'checkpoint')
  if parallel.is_main_process():
    accuracy = ' '.join(map(rounded, results['accuracy']))
    print(f'mfgr_jax: done; accuracy after each task {accuracy}, results in '
          f"{pathlib.Path(workdir).absolute() / 'results.json'}", flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
