"""Whole runs of the entry point on the synthetic smoke config (LwF, its default):
what a run writes, equal results after resuming or kill -9, a shared task-0
model, refusing a changed config or a busy workdir, one-line errors for bad input."""

import json
import time

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator

from mfgr_jax import train
from mfgr_jax.errors import UserError

from conftest import (SMOKE, comparable, kill_9_after_checkpoint, load_results, run_main,
                      start_main)


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
  events = event_accumulator.EventAccumulator(str(workdir))
  events.Reload()
  tags = set(events.Tags()['scalars']) | set(events.Tags()['tensors'])
  assert {'classifier/loss', 'classifier/kd', 'eval/accuracy', 'eval/old_accuracy'} <= tags


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
  with pytest.raises(UserError, match='different model'):
    train.run(smoke_config, str(tmp_path / 'wider'))


@pytest.mark.parametrize('field,value,difference', [
    ('method', 'finetune', 'different method'),
    ('model.width', 8, 'different model'),
    ('scenario.class_order', '5,4,3,2,1,0', 'different class_order, tasks'),
    ('data.max_train_per_class', 64, 'different images'),
    ('distillation.temperature', 4.0, 'different distillation')])
def test_resuming_with_another_config_is_refused(smoke_config, lwf_run, field, value, difference):
  section, _, name = field.rpartition('.')
  (smoke_config[section] if section else smoke_config)[name] = value
  with pytest.raises(UserError, match=f'{difference} than this config .* use a new --workdir'):
    train.run(smoke_config, str(lwf_run[0]))


@pytest.mark.parametrize('override,message', [
    ('--config.method=ewc2', "unknown method 'ewc2'"),
    ('--config.data.name=mnist', "unknown dataset 'mnist'"),
    ('--config.scenario.increment=4', 'cannot split 6 classes'),
    ('--config.train.batch_size=1000', 'fewer than train.batch_size=1000'),
    ('--config.scenario.num_tasks=9', 'scenario.num_tasks=9'),
    ('--config.trian.epochs=1', 'Did you mean "train"'),
    ('--config.train.epochs=abc', 'flag --config.train.epochs=abc'),
    ('--bogus=1', "Unknown command line flag 'bogus'"),
    ('--config=configs/nope.py', 'config file configs/nope.py not found'),
    ('--config=configs/cifar100_5phase.py:res64', 'unknown config option'),
    ('--config.method=mas --config.mas.output_norm=l3', 'mas.output_norm must be'),
    ('--config.method=ewc --config.ewc.accumulate=max', "accumulate must be 'average' or 'sum'"),
    ('--config.method=mas --config.mas.importance_batch_size=0', 'must be positive'),
    ('--config.model.stem=foo', "stem must be 'cifar' or 'imagenet'"),
    ('--config.model.compute_dtype=float16', "compute_dtype must be 'float32' or 'bfloat16'"),
    ('--num_processes=2', 'needs all of --coordinator_address, --num_processes and --process_id'),
    ('--config.method=mfgr --config.generator.architecture=gan', 'unknown generator architecture'),
    ('--config.log_every_steps=0', 'log_every_steps=0 must be positive'),
    ('--config.on_nonfinite=ignore', "on_nonfinite='ignore' must be 'stop' or 'skip'"),
    ('--workdir=/proc/mfgr_jax_run', 'cannot write to workdir /proc/mfgr_jax_run'),
    ('--config.method=deepinversion --config.deepinversion.batch_size=0',
     'deepinversion.batch_size=0 must be positive'),
    ('--config.method=deepinversion --config.deepinversion.jitter=-1', 'jitter=-1 must be >= 0'),
    ('--config.method=deepinversion --config.deepinversion.batches=1 '
     '--config.deepinversion.batch_size=2', 'cannot hold one image of each of 4 old classes'),
    ('--config.method=icarl --config.icarl.memory_size=5', 'leaves some of the 6 classes'),
    ('--config.method=muc_lwf --config.muc.side_heads=0', 'muc.side_heads=0 must be positive'),
    ('--config.method=muc_lwf --config.muc.auxiliary=svhn', "unknown dataset 'svhn'"),
    ('--config.method=muc_lwf --config.muc.auxiliary=svhn_cropped --config.data.data_dir=/nonexistent',
     'svhn_cropped'),
])
def test_bad_input_is_one_line_without_traceback(tmp_path, override, message):
  args = override.split()
  if not any(arg.startswith('--workdir') for arg in args):
    args.append(f'--workdir={tmp_path}')
  proc = run_main(f'--config={SMOKE}', *args, timeout=120)
  assert proc.returncode == 2
  errors = [l for l in proc.stderr.splitlines() if l.startswith('mfgr_jax: error:')]
  assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr


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
