"""Whole runs of the entry point on the synthetic smoke config (LwF, its default):
what a run writes, equal results after resuming or kill -9, a shared task-0
model, refusing a changed config or a busy workdir, one-line errors for bad input."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from mfgr_jax import cpu_flags
from mfgr_jax import train
from mfgr_jax.errors import UserError

from conftest import (REPO, SMOKE, comparable, env, kill_9_after_checkpoint, load_results,
                      run_main, start_main)


@pytest.fixture(scope='module')
def lwf_run(tmp_path_factory):
  """An uninterrupted LwF smoke run through the command line."""
  workdir = tmp_path_factory.mktemp('lwf')
  proc = run_main(f'--config={SMOKE}', f'--workdir={workdir}')
  assert proc.returncode == 0, proc.stderr[-3000:]
  return workdir, proc


def test_smoke_run_writes_results_report_and_tensorboard(lwf_run):
  workdir, proc = lwf_run
  assert f'mfgr_jax: workdir {workdir}' in proc.stdout
  results = load_results(workdir)
  assert results['method'] == 'lwf' and results['dataset'] == 'synthetic'
  assert results['tasks'] == [[0, 1], [2, 3], [4, 5]]
  assert len(results['accuracy']) == 3
  for t, row in enumerate(results['accuracy_matrix']):
    assert len(row) == t + 1  # lower-triangular
  assert results['accuracy'][0] > 90  # the synthetic classes are learnable
  assert results['average_incremental_accuracy'] == pytest.approx(np.mean(results['accuracy']))
  assert results['old_accuracy'][0] is None and results['old_accuracy'][2] is not None
  assert np.sum(results['confusion_matrix'][2]) == 6 * 32
  assert set(results['per_class_accuracy'][2]) == {str(c) for c in range(6)}
  assert '| after \\ on |' in (workdir / 'report.md').read_text()
  assert json.loads((workdir / 'config.json').read_text())['method'] == 'lwf'
  # What each task ran on, with the XLA flags of the command line and this CPU's own.
  assert len(results['machine']) == 3
  own = cpu_flags.project_flags(dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS=''))
  for machine in results['machine']:
    assert machine['backend'] == 'cpu' and machine['cpu'] == cpu_flags.cpu_kind()
    flags = machine['xla_flags'].split()
    assert '--xla_force_host_platform_device_count=1' in flags
    assert set(own) <= set(flags)
  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  tags = set(events.Tags()['scalars']) | set(events.Tags()['tensors'])
  assert {'classifier/loss', 'classifier/kd', 'eval/accuracy', 'eval/old_accuracy'} <= tags


def test_the_console_shows_only_the_projects_own_lines(lwf_run, tmp_path):
  """Every stderr line of a run is ours (time, then message); and without the tests'
  TF_CPP_MIN_LOG_LEVEL, TensorFlow's native import notices are hidden too."""
  _, proc = lwf_run
  lines = proc.stderr.splitlines()
  assert lines and all(re.match(r'\d\d:\d\d:\d\d ', line) for line in lines), lines[:5]
  assert any(re.search(r'task 2 classifier step 18/18 \([\d.]+ steps/s, 0:00:00 left\): ce ',
                       line) for line in lines)
  assert any(line.endswith('After task 0: accuracy 100.00% (old –, new 100.00); per task 100.00')
             for line in lines)
  plain_env = {k: v for k, v in env(1).items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  refused = subprocess.run([sys.executable, '-m', 'mfgr_jax.main', f'--config={SMOKE}',
                            '--config.train.epochs=0', f'--workdir={tmp_path}'], cwd=REPO,
                           env=plain_env, capture_output=True, text=True, timeout=120)
  assert refused.stderr.splitlines() == [
      'mfgr_jax: error: train.epochs=0 is not allowed: it must be an integer >= 1; fix '
      '--config.train.epochs'], refused.stderr


def test_same_config_same_results(smoke_config, tmp_path, lwf_run):
  results = train.run(smoke_config, str(tmp_path))
  assert comparable(results) == comparable(load_results(lwf_run[0]))


def test_resume_after_finished_tasks_gives_identical_results(smoke_config, tmp_path, lwf_run):
  smoke_config.scenario.num_tasks = 1
  train.run(smoke_config, str(tmp_path))
  smoke_config.scenario.num_tasks = 0
  results = train.run(smoke_config, str(tmp_path))
  assert results['seconds'][0] == load_results(tmp_path)['seconds'][0]
  assert comparable(results) == comparable(load_results(lwf_run[0]))


def test_kill_9_mid_task_then_rerun_gives_identical_results(tmp_path, lwf_run):
  # Task 0 has 18 steps; kill at a periodic checkpoint inside task 1.
  kill_9_after_checkpoint(tmp_path, 19, 35, f'--config={SMOKE}')
  assert not (tmp_path / 'results.json').exists() or len(load_results(tmp_path)['accuracy']) < 3
  rerun = run_main(f'--config={SMOKE}', f'--workdir={tmp_path}')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert 'Resuming task 1 at step' in rerun.stderr
  assert comparable(load_results(tmp_path)) == comparable(load_results(lwf_run[0]))


def test_task0_model_can_be_shared_between_methods(smoke_config, tmp_path, lwf_run):
  smoke_config.method = 'finetune'
  smoke_config.scenario.num_tasks = 2
  smoke_config.init_from = str(lwf_run[0])
  results = train.run(smoke_config, str(tmp_path / 'shared'))
  reference = load_results(lwf_run[0])
  assert results['task0_from'] == str(lwf_run[0])
  assert results['accuracy'][0] == reference['accuracy'][0]
  assert results['per_class_accuracy'][0] == reference['per_class_accuracy'][0]
  smoke_config.model.width = 8
  with pytest.raises(UserError, match="different model .* point init_from at a run of this "
                     "dataset, class order, first task, model and task-0 budget"):
    train.run(smoke_config, str(tmp_path / 'wider'))


def test_a_task0_model_with_its_own_budget_is_shared_only_with_that_budget(smoke_config, tmp_path):
  smoke_config.train.init_epochs = 1
  smoke_config.scenario.num_tasks = 1
  source = train.run(smoke_config, str(tmp_path / 'source'))
  smoke_config.method = 'finetune'
  smoke_config.init_from = str(tmp_path / 'source')
  shared = train.run(smoke_config, str(tmp_path / 'shared'))
  assert shared['task0_from'] == str(tmp_path / 'source')
  assert shared['accuracy'] == source['accuracy']
  smoke_config.train.init_epochs = 0  # task 0 would take train.epochs: not that model
  with pytest.raises(UserError, match=r"different task0_budget than this config \(saved \{'epochs': "
                                     r"1, 'learning_rate': 0.1\}, now None\)"):
    train.run(smoke_config, str(tmp_path / 'other'))


@pytest.mark.parametrize('damage', ['delete', 'truncate', 'garbage', 'edit'])
def test_a_rerun_of_a_finished_run_rewrites_missing_or_damaged_outputs(
    smoke_config, tmp_path, lwf_run, damage, caplog):
  workdir = tmp_path / 'run'
  shutil.copytree(lwf_run[0], workdir)
  intact = {name: (workdir / name).read_bytes() for name in ('results.json', 'report.md')}
  for name in intact:
    path = workdir / name
    if damage == 'delete':
      path.unlink()
    elif damage == 'truncate':
      path.write_bytes(intact[name][:len(intact[name]) // 2])
    elif damage == 'garbage':
      path.write_bytes(b'\xff\xfe\x00garbage')
    else:
      path.write_text(path.read_text().replace('9', '8'))
  results = train.run(smoke_config, str(workdir))
  assert comparable(results) == comparable(load_results(lwf_run[0]))
  assert {name: (workdir / name).read_bytes() for name in intact} == intact
  assert sum('missing or damaged: rewrote it from the checkpoints' in r.getMessage()
             for r in caplog.records) == 2
  caplog.clear()
  train.run(smoke_config, str(workdir))  # whole outputs are left alone
  assert not any('rewrote' in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize('field,value,difference', [
    ('method', 'finetune', 'different method, distillation'),  # finetune reads no such section
    ('model.width', 8, 'different model'),
    ('scenario.class_order', '5,4,3,2,1,0', 'different class_order, tasks'),
    ('data.max_train_per_class', 64, 'different images'),
    ('distillation.temperature', 4.0, 'different distillation')])
def test_resuming_with_another_config_is_refused(smoke_config, lwf_run, field, value, difference):
  section, _, name = field.rpartition('.')
  (smoke_config[section] if section else smoke_config)[name] = value
  with pytest.raises(UserError, match=f'{difference} than this config .* use a new --workdir'):
    train.run(smoke_config, str(lwf_run[0]))


# Every field's own rule and the rules across fields have rows in test_config_fields.py
# (through train.run); here, the command line's paths: its one stderr line, exit 2.
@pytest.mark.parametrize('override,message', [
    ('--config.method=ewc2', "method='ewc2' is not allowed: it must be one of 'abd', "),
    ('--config.train.epochs=0', 'train.epochs=0 is not allowed: it must be an integer >= 1'),
    ('--config.scenario.increment=4', 'cannot split 6 classes'),
    ('--config.train.batch_size=1000', 'fewer than train.batch_size=1000'),
    ('--config.trian.epochs=1', 'Did you mean "train"'),
    ('--config.train.epochs=abc', 'flag --config.train.epochs=abc'),
    ('--bogus=1', "Unknown command line flag 'bogus'"),
    ('stray', 'unexpected argument(s) stray: options are --config, --workdir'),
    ('--config=configs/nope.py', 'config file configs/nope.py not found'),
    ('--config=configs/cifar100_5phase.py:res64', 'unknown config option'),
    ('--num_processes=2', 'needs all of --coordinator_address, --num_processes and --process_id'),
    ('--workdir=/proc/mfgr_jax_run', 'cannot write to workdir /proc/mfgr_jax_run'),
    ('--config.method=deepinversion --config.deepinversion.batches=1 '
     '--config.deepinversion.batch_size=2', 'cannot hold one image of each of 4 old classes'),
    ('--config.method=icarl --config.icarl.memory_size=5', 'leaves some of the 6 classes'),
    ('--config=configs/default.py --config.data.image_size=100000',
     'needs at least 6.52e+05 GB of host memory for its 70000 images (uint8), and this machine has'),
    ('--config.data.synthetic.image_size=1', 'data.crop_padding=2 is as large as the 1x1 images'),
    ('--config.method=muc_lwf --config.muc.auxiliary=svhn_cropped --config.data.data_dir=/nonexistent',
     'svhn_cropped'),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, override, message):
  args = override.split()
  if not any(arg.startswith('--workdir') for arg in args):
    args.append(f'--workdir={tmp_path}')
  config = [] if any(arg.startswith('--config=') for arg in args) else [f'--config={SMOKE}']
  assert message in one_line_error(run_main(*config, *args, timeout=120))


def one_line_error(proc) -> str:
  """The only `mfgr_jax: error:` line of a run that exited 2 without a traceback."""
  assert proc.returncode == 2, proc.stderr[-2000:]
  errors = [l for l in proc.stderr.splitlines() if l.startswith('mfgr_jax: error:')]
  assert len(errors) == 1 and 'Traceback' not in proc.stderr, proc.stderr[-2000:]
  return errors[0]


@pytest.mark.parametrize('source,message', [
    ('def get_config(:\n', 'line 1: SyntaxError: invalid syntax; fix the file'),
    ('x = 1\n', 'has no get_config(); a config file is a module whose get_config() returns'),
    ('def get_config():\n  return {"seed": 0}\n',
     'get_config() returned a dict, not an ml_collections.ConfigDict'),
    ('def get_config():\n  return None\n', 'get_config() returned None'),
    ('import no_such_module\n', "cannot load config file {file}: ModuleNotFoundError: No module "
                                 "named 'no_such_module'"),
    ('def get_config():\n  raise ValueError("no setting")\n', 'ValueError: no setting'),
    ('from configs import default\n'
     'def get_config():\n  config = default.get_config()\n  del config.train["momentum"]\n'
     '  return config\n', 'config file {file} lacks the field train.momentum (default 0.9)'),
    ('from configs import default\n'
     'def get_config():\n  config = default.get_config()\n  config.train.epoch = 3\n'
     '  return config\n', 'unknown field train.epoch (did you mean train.epochs?)'),
])
def test_a_broken_config_file_is_one_line_naming_it(tmp_path, source, message):
  config_file = tmp_path / 'broken.py'
  config_file.write_text(source)
  error = one_line_error(run_main(f'--config={config_file}', f'--workdir={tmp_path / "run"}',
                                  timeout=120))
  assert message.format(file=config_file) in error and str(config_file) in error, error
  assert not (tmp_path / 'run').exists()


def test_a_second_run_on_a_busy_workdir_refuses(tmp_path):
  first = start_main(f'--config={SMOKE}', f'--workdir={tmp_path}')
  try:
    deadline = time.time() + 120
    while not (tmp_path / 'config.json').exists():  # written after the lock is taken
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.05)
    second = run_main(f'--config={SMOKE}', f'--workdir={tmp_path}', timeout=120)
    assert second.returncode == 2 and 'Traceback' not in second.stderr
    errors = [l for l in second.stderr.splitlines() if l.startswith('mfgr_jax: error:')]
    assert len(errors) == 1 and f'workdir {tmp_path} is in use by another run (pid ' in errors[0]
  finally:
    first.kill()
    first.wait()
  # The lock dies with its process (here kill -9): the same command then resumes.
  rerun = run_main(f'--config={SMOKE}', f'--workdir={tmp_path}')
  assert rerun.returncode == 0, rerun.stderr[-3000:]
