"""The study runner (study.py): real runs kept and committed as they finish,
skipped when kept, the shared task-0 model kept and reused on a machine without
the workdirs (trained again only where it was not kept), and one-line errors
before any run."""

import json
import re
import os
import subprocess

import pytest

from mfgr_jax import study

from conftest import SMOKE, load_results

SHORT = ['--config.scenario.num_tasks=2', '--config.train.epochs=1']


@pytest.fixture
def repo(tmp_path, monkeypatch):
  """An empty git repository that the kept runs are committed to."""
  for name in ('AUTHOR', 'COMMITTER'):
    monkeypatch.setenv(f'GIT_{name}_NAME', 'test')
    monkeypatch.setenv(f'GIT_{name}_EMAIL', 'test@example.com')
  root = tmp_path / 'repo'
  subprocess.run(['git', 'init', '-q', str(root)], check=True)
  return root


def _commits(repo) -> list[str]:
  log = subprocess.run(['git', '-C', str(repo), 'log', '--format=%s'], check=True,
                       capture_output=True, text=True).stdout
  return log.splitlines()[::-1]


def test_finished_runs_are_kept_committed_skipped_and_task0_reused_elsewhere(repo, tmp_path,
                                                                              monkeypatch):
  keep, workdirs = repo / 'runs', tmp_path / 'workdirs'
  real_run_main = study.run_main
  (repo / '.gitignore').write_text('checkpoints/\n')  # a user's rule: the model is kept anyway
  kept = study.run_study(SMOKE, ['finetune'], [0], keep, workdirs, {}, SHORT, commit=True)
  assert kept == [keep / 'finetune-seed0']
  assert _commits(repo) == ['study: task0-seed0 finished', 'study: finetune-seed0 finished']
  for name, workdir in (('task0-seed0', workdirs / 'seed0' / 'task0'),
                        ('finetune-seed0', workdirs / 'seed0' / 'finetune')):
    assert load_results(keep / name) == load_results(workdir)
    assert json.loads((keep / name / 'config.json').read_text())['seed'] == 0
  results = load_results(keep / 'finetune-seed0')
  assert results['task0_from'] == str(workdirs / 'seed0' / 'task0')
  assert len(results['accuracy']) == 2
  # Run again: everything is kept, so nothing runs.
  monkeypatch.setattr(study, 'run_main', lambda *a: pytest.fail(f'ran {a}'))
  assert study.run_study(SMOKE, ['finetune'], [0], keep, workdirs, {}, SHORT, commit=True) == kept
  assert len(_commits(repo)) == 2
  # Kept again with the same files (e.g. by hand): nothing to commit, no error.
  study.keep_run(workdirs / 'seed0' / 'finetune', keep / 'finetune-seed0', commit=True)
  assert len(_commits(repo)) == 2
  # Another machine: a clone of the repository, no workdirs. A new method starts from the
  # kept task-0 model, committed with its run, and task 0 is not trained again.
  clone = tmp_path / 'clone'
  subprocess.run(['git', 'clone', '-q', str(repo), str(clone)], check=True)
  ran = []
  monkeypatch.setattr(study, 'run_main', lambda config, workdir, args: (
      ran.append(workdir.name), real_run_main(config, workdir, args)))
  study.run_study(SMOKE, ['lwf'], [0], clone / 'runs', tmp_path / 'elsewhere', {}, SHORT,
                  commit=True)
  assert ran == ['lwf']
  assert _commits(clone)[2:] == ['study: lwf-seed0 finished']
  assert (load_results(clone / 'runs' / 'lwf-seed0')['accuracy_matrix'][0] ==
          load_results(keep / 'task0-seed0')['accuracy_matrix'][0])


def _write_run(folder, accuracy, num_tasks=0):
  folder.mkdir(parents=True, exist_ok=True)
  (folder / 'config.json').write_text(json.dumps({'scenario': {'num_tasks': num_tasks}}))
  (folder / 'results.json').write_text(json.dumps({'tasks': [[0, 1], [2, 3]],
                                                   'accuracy': accuracy}))


def test_a_run_kept_but_not_committed_is_committed_by_the_next_study(repo, tmp_path, monkeypatch):
  """The study killed after copying a finished run and before committing it."""
  _write_run(repo / 'runs' / 'finetune-seed0', [90.0, 80.0])
  monkeypatch.setattr(study, 'run_main', lambda *a: pytest.fail(f'ran {a}'))
  study.run_study(SMOKE, ['finetune'], [0], repo / 'runs', tmp_path / 'workdirs', {}, SHORT,
                  commit=True)
  assert _commits(repo) == ['study: finetune-seed0 finished']


def test_task0_kept_without_its_model_is_trained_again_then_only_what_is_not_kept(
    tmp_path, monkeypatch, caplog):
  keep, workdirs = tmp_path / 'runs', tmp_path / 'elsewhere'
  _write_run(keep / 'task0-seed0', [89.0], 1)  # kept before models were kept
  _write_run(keep / 'lwf-seed0', [90.0, 50.0])
  _write_run(keep / 'mfgr-seed0', [90.0])  # unfinished (one task of two): it runs again
  _write_run(keep / 'ewc-seed0', [90.0, 50.0])
  (keep / 'ewc-seed0' / 'results.json').write_text('{"accura')  # a copy cut short: again
  calls = []

  def fake_main(config, workdir, args):
    calls.append((workdir.name, args))
    _write_run(workdir, [90.0] if workdir.name == 'task0' else [90.0, 60.0],
               1 if workdir.name == 'task0' else 0)
    (workdir / study.TASK0_MODEL).mkdir(parents=True)

  monkeypatch.setattr(study, 'run_main', fake_main)
  study.run_study(SMOKE, ['lwf', 'mfgr', 'ewc'], [0], keep, workdirs,
                  {'mfgr': ['--config.generator.steps=5']}, ['--config.train.epochs=1'], False)
  task0 = workdirs / 'seed0' / 'task0'
  assert calls == [
      ('task0', ['--config.seed=0', '--config.train.epochs=1', '--config.method=finetune',
                 '--config.scenario.num_tasks=1']),
      ('mfgr', ['--config.seed=0', '--config.train.epochs=1', '--config.method=mfgr',
                f'--config.init_from={task0}', '--config.generator.steps=5']),
      ('ewc', ['--config.seed=0', '--config.train.epochs=1', '--config.method=ewc',
               f'--config.init_from={task0}'])]
  assert all(study.is_finished(keep / f'{run}-seed0') for run in ('mfgr', 'ewc', 'task0'))
  assert load_results(keep / 'mfgr-seed0')['accuracy'] == [90.0, 60.0]
  assert study.has_model(keep / 'task0-seed0')
  assert load_results(keep / 'task0-seed0')['accuracy'] == [90.0]
  assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == [
      f'study: task 0 trained again in {task0} reaches 90.00 %, the kept '
      f'{keep / "task0-seed0"} 89.00 %: that model was not kept, so the runs kept before come '
      'from it and the next ones from this one (kept now with its model); delete the kept '
      'runs of this seed to run them all from this one']


def test_a_kept_task0_model_replaces_another_one_in_the_workdirs(tmp_path, monkeypatch):
  keep, workdirs = tmp_path / 'runs', tmp_path / 'workdirs'
  _write_run(keep / 'task0-seed0', [89.0], 1)
  (keep / 'task0-seed0' / study.TASK0_MODEL).mkdir(parents=True)
  _write_run(workdirs / 'seed0' / 'task0', [90.0], 1)  # trained here, another model
  ran = []

  def fake_main(config, workdir, args):
    ran.append(workdir.name)
    _write_run(workdir, [89.0, 60.0])

  monkeypatch.setattr(study, 'run_main', fake_main)
  study.run_study(SMOKE, ['lwf'], [0], keep, workdirs, {}, [], False)
  assert ran == ['lwf']
  assert load_results(workdirs / 'seed0' / 'task0')['accuracy'] == [89.0]
  assert study.has_model(workdirs / 'seed0' / 'task0')
  assert load_results(keep / 'task0-seed0')['accuracy'] == [89.0]


def test_a_finished_task0_without_its_model_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', str(tmp_path / 'cache'))
  _write_run(tmp_path / 'w' / 'seed0' / 'task0', [90.0], 1)  # its checkpoints deleted
  monkeypatch.setattr(study, 'run_main', lambda *a: pytest.fail(f'ran {a}'))
  with pytest.raises(SystemExit) as error:
    study.main([f'--config={SMOKE}', '--methods=lwf', f'--keep={tmp_path}/k',
                f'--workdirs={tmp_path}/w'])
  assert str(error.value) == (
      f'mfgr_jax.study: error: {tmp_path}/w/seed0/task0 is a finished task-0 run without its '
      'model (checkpoints/tasks/0); delete that folder so that the study trains task 0 again')
  assert not (tmp_path / 'k' / 'task0-seed0').exists()


@pytest.mark.parametrize('args,message', [
    (['--methods=lwf,ewc2', '--keep=k'], "unknown method 'ewc2'"),
    (['--methods=lwf'], '--keep is required'),
    (['--methods=lwf', '--keep=k', '--seeds=0,x'], '--seeds=0,x must be integers'),
    (['--methods=lwf', '--keep=k', '--method_args=lwf'], 'is not METHOD=--config.X=Y'),
    (['--methods=lwf', '--keep=k', '--', 'stray'], 'give only --config.X=Y arguments'),
    (['--methods=lwf', '--keep=k', '--', '--config.seed=3'], 'the study sets --config.seed'),
    (['--methods=lwf', '--keep=k', '--method_args=lwm2=--config.x=1'], "unknown method 'lwm2'"),
    (['--methods=lwf', '--keep=k', '--seeds='], 'must be integers'),
    (['--methods=lwf', '--keep=k', '--seedz=1'], "Unknown command line flag 'seedz'"),
])
def test_bad_command_lines_are_one_line_before_any_run(args, message, monkeypatch):
  monkeypatch.setattr(study, 'run_main', lambda *a: pytest.fail(f'ran {a}'))
  with pytest.raises(SystemExit) as error:
    study.main([f'--config={SMOKE}', *args])
  text = str(error.value)
  assert text.startswith('mfgr_jax.study: error: ') and '\n' not in text and message in text


@pytest.mark.parametrize('preset', [None, '/elsewhere/cache'])
def test_the_runs_share_a_compilation_cache_in_the_workdirs(preset, tmp_path, monkeypatch):
  if preset:
    monkeypatch.setenv('JAX_COMPILATION_CACHE_DIR', preset)
  else:
    monkeypatch.delenv('JAX_COMPILATION_CACHE_DIR', raising=False)
  seen = []
  monkeypatch.setattr(study, 'run_main',
                      lambda *a: seen.append(os.environ['JAX_COMPILATION_CACHE_DIR']))
  monkeypatch.setattr(study, 'keep_run', lambda *a, **k: None)
  monkeypatch.setattr(study, 'is_finished', lambda folder: folder.name == 'task0')
  study.main([f'--config={SMOKE}', '--methods=lwf', '--seeds=0', f'--keep={tmp_path}/k',
              f'--workdirs={tmp_path}/w'])
  assert seen == [preset or str(tmp_path / 'w' / 'xla_cache')]


@pytest.mark.parametrize('status, message', [
    (3, 'was stopped (its message is above); run the same study command to continue it from '
        'its last checkpoint'),
    (-15, 'was stopped by a signal without a new checkpoint; run the same study command'),
    (143, 'was stopped by a signal without a new checkpoint; run the same study command'),
    (2, 'stopped with exit status 2 (its error is above)')])
def test_a_run_that_stops_stops_the_study_in_one_line(status, message, tmp_path, monkeypatch):
  class Run:  # a `python -m mfgr_jax.main` that exits with `status`
    def __init__(self, command):
      self.command = command

    def wait(self):
      return status

  monkeypatch.setattr(study.subprocess, 'Popen', Run)
  with pytest.raises(study.UserError, match=re.escape(message)):
    study.run_main(SMOKE, tmp_path / 'run', ['--config.seed=0'])
  # The study's own exit status: main's 3 for a stop (also a SIGTERM while the run
  # started, before main handles it, and main's exit 143 at a second SIGTERM), else 1.
  with pytest.raises(SystemExit) as exit_:
    study.main([f'--config={SMOKE}', '--methods=lwf', '--seeds=0', f'--keep={tmp_path}/k',
                f'--workdirs={tmp_path}/w'])
  assert exit_.value.code == 3 if status in (3, -15, 143) else str(exit_.value.code).startswith(
      'mfgr_jax.study: error: the run in')
