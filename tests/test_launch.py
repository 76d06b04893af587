"""launch/fashion_finegrained.sh, launch/stage_swap.sh and launch/official_code_options.sh:
the studies' command lines and the report over every kept run.

The script runs with PY set to a stand-in interpreter that records its arguments, so
what is checked is the shell's own work: which budget, methods and seeds reach
`mfgr_jax.study`, and which kept runs reach `mfgr_jax.report`, in which order.
"""

import itertools
import json
import os
import pathlib
import subprocess
import sys

from conftest import REPO
from mfgr_jax import report

SCRIPT = REPO / 'launch' / 'fashion_finegrained.sh'


def _fake_python(tmp_path: pathlib.Path) -> pathlib.Path:
  """An interpreter that appends its arguments to calls.jsonl and exits STUDY_STATUS
  (0 by default) when it is asked to run the study."""
  fake = tmp_path / 'python'
  fake.write_text(f'''#!{sys.executable}
import json, os, sys
with open({str(tmp_path / 'calls.jsonl')!r}, 'a') as calls:
  calls.write(json.dumps(sys.argv[1:]) + '\\n')
sys.exit(int(os.environ.get('STUDY_STATUS', '0')) if sys.argv[2] == 'mfgr_jax.study' else 0)
''')
  fake.chmod(0o755)
  return fake


def _launch(tmp_path: pathlib.Path, *args: str, script: pathlib.Path = SCRIPT,
            **env: str) -> tuple[subprocess.CompletedProcess, list]:
  """Runs the script with `args` and the fake interpreter; returns it and the calls it made."""
  environment = dict(os.environ, PY=str(_fake_python(tmp_path)), OUT=str(tmp_path / 'out'),
                     ROOT=str(tmp_path / 'root'), **env)
  process = subprocess.run(['bash', str(script), *args], env=environment, capture_output=True,
                           text=True, timeout=60)
  calls_file = tmp_path / 'calls.jsonl'
  calls = [json.loads(line) for line in calls_file.read_text().splitlines()
           ] if calls_file.exists() else []
  return process, calls


def _keep(tmp_path: pathlib.Path, *runs: str) -> None:
  """Kept-run folders under OUT/runs; a name ending in '!' has no results.json."""
  for run in runs:
    folder = tmp_path / 'out' / 'runs' / run.rstrip('!')
    folder.mkdir(parents=True)
    if not run.endswith('!'):
      (folder / 'results.json').write_text('{}')


def _report_runs(report_call: list[str], runs: pathlib.Path) -> tuple[list[str], list[str]]:
  """(the RUNS arguments the script gave the report, the runs the report reads from them),
  both relative to `runs`."""
  args = list(itertools.takewhile(lambda arg: not arg.startswith('-'), report_call[2:]))
  relative = lambda path: str(pathlib.Path(path).relative_to(runs))
  # A labelled argument (LABEL=RUNS) keeps its label.
  labelled = lambda arg: (f'{arg.partition("=")[0]}={relative(arg.partition("=")[2])}'
                          if '=' in arg else relative(arg))
  return [labelled(arg) for arg in args], [relative(run) for run in report.run_dirs(args)]


def _flag(call: list[str], name: str) -> str:
  return next(arg.partition('=')[2] for arg in call if arg.startswith(f'--{name}='))


def test_full_budget_runs_the_named_subset_and_reports_every_kept_run(tmp_path):
  # Kept: runs of methods outside METHODS, a run without results.json, and a folder
  # of a method the full study does not know.
  _keep(tmp_path, 'mfgr-seed1', 'lwf-seed0', 'mfgr-seed0', 'finetune-seed0', 'g_bn-seed0!',
        'muc_lwf-seed0', 'task0-seed0', 'stray-seed0')
  process, calls = _launch(tmp_path, BUDGET='full', COMMIT='1', METHODS='mfgr muc_lwf lwf',
                           SEEDS='0 1')
  assert process.returncode == 0, process.stderr
  study, report = calls
  assert study[:2] == ['-m', 'mfgr_jax.study']
  assert _flag(study, 'config') == 'configs/fashion_finegrained.py:full'
  assert _flag(study, 'methods') == 'mfgr,muc_lwf,lwf'
  assert _flag(study, 'seeds') == '0,1'
  assert _flag(study, 'keep') == str(tmp_path / 'out' / 'runs')
  assert _flag(study, 'workdirs') == str(tmp_path / 'root')
  assert _flag(study, 'commit') == '1'
  assert report[:2] == ['-m', 'mfgr_jax.report']
  patterns, runs = _report_runs(report, tmp_path / 'out' / 'runs')
  # One pattern per method with kept runs, which the report expands: the full study's
  # method order first, then the named methods it does not list.
  assert patterns == ['finetune-seed*', 'lwf-seed*', 'mfgr-seed*', 'muc_lwf-seed*']
  # Each kept run once; no task-0 model, no folder without results.json, nothing unnamed.
  assert runs == ['finetune-seed0', 'lwf-seed0', 'mfgr-seed0', 'mfgr-seed1', 'muc_lwf-seed0']
  assert report[report.index('--out') + 1] == str(tmp_path / 'out')
  assert report[report.index('--confusion') + 1] == '1,6,7,8'
  assert '--groups' in report and 'fine-grained old=0,2,4,6' in report


def test_seeds_given_as_arguments_and_the_quick_budget(tmp_path):
  _keep(tmp_path, 'lwf-seed4')
  process, (study, _) = _launch(tmp_path, '4', '5', METHODS='lwf')
  assert process.returncode == 0, process.stderr
  assert _flag(study, 'config') == 'configs/fashion_finegrained.py'
  assert _flag(study, 'seeds') == '4,5'
  assert _flag(study, 'commit') == '0'


def test_a_stopped_study_passes_its_exit_status_on_and_writes_no_report(tmp_path):
  _keep(tmp_path, 'lwf-seed0')
  process, calls = _launch(tmp_path, BUDGET='full', METHODS='lwf', STUDY_STATUS='3')
  assert process.returncode == 3  # main's "stopped": run again to resume
  assert [call[1] for call in calls] == ['mfgr_jax.study']


def test_unknown_budget_is_one_line(tmp_path):
  process, calls = _launch(tmp_path, BUDGET='huge')
  assert process.returncode == 2 and not calls
  assert process.stderr.strip().splitlines() == [
      'launch/fashion_finegrained.sh: BUDGET=huge is not quick or full']


def test_stage_swap_installs_its_plugin_runs_the_four_cells_and_reports_them(tmp_path):
  _keep(tmp_path, 'abd-seed0', 'mfgr-seed0', 'abd_generator_mfgr_replay-seed0', 'task0-seed0',
        'lwf-seed0')
  process, (install, study, report) = _launch(
      tmp_path, '0', script=REPO / 'launch' / 'stage_swap.sh')
  assert process.returncode == 0, process.stderr
  assert install == ['-m', 'pip', 'install', '-qq', '--no-deps', '-e', 'examples']
  assert _flag(study, 'methods') == ('mfgr,mfgr_generator_abd_replay,abd_generator_mfgr_replay,'
                                     'abd')
  assert _flag(study, 'config') == 'configs/fashion_finegrained.py:full'
  assert _flag(study, 'seeds') == '0' and _flag(study, 'commit') == '1'
  # Both cells with ABD's stage II see real and generated images in one pass.
  assert [arg for arg in study if arg.startswith('--method_args=')] == [
      '--method_args=abd=--config.replay.single_pass=True',
      '--method_args=mfgr_generator_abd_replay=--config.replay.single_pass=True']
  patterns, runs = _report_runs(report, tmp_path / 'out' / 'runs')
  assert patterns == ['mfgr-seed*', 'abd_generator_mfgr_replay-seed*', 'abd-seed*']
  # The 2x2 table's order, not the names' (abd first), and no task-0 model.
  assert runs == ['mfgr-seed0', 'abd_generator_mfgr_replay-seed0', 'abd-seed0']


def test_official_code_options_runs_both_variants_from_the_kept_task0_model(tmp_path):
  _keep(tmp_path, 'defaults/abd-seed0', 'code_generator/rdfcil-seed0', 'defaults/mfgr-seed0')
  process, (defaults, code_generator, report) = _launch(
      tmp_path, script=REPO / 'launch' / 'official_code_options.sh')
  assert process.returncode == 0, process.stderr
  for variant, study in (('defaults', defaults), ('code_generator', code_generator)):
    assert _flag(study, 'config') == 'configs/fashion_finegrained.py:full'
    assert _flag(study, 'methods') == 'abd,rdfcil' and _flag(study, 'seeds') == '0'
    assert _flag(study, 'keep') == str(tmp_path / 'out' / 'runs' / variant)
    # Each variant's runs start from the full-budget study's kept task-0 model.
    assert (tmp_path / 'out' / 'runs' / variant / 'task0-seed0' / 'results.json').is_file()
  method_args = lambda study: [a.partition('=')[2] for a in study if a.startswith('--method_args=')]
  assert method_args(defaults) == ['abd=--config.replay.single_pass=True']
  assert method_args(code_generator) == [
      'abd=--config.replay.single_pass=True', 'abd=--config.generator.warm_start=True',
      'abd=--config.generator.sample_statistics=running',
      'abd=--config.generator.learning_rate=0.001',
      'rdfcil=--config.generator.sample_statistics=running']
  patterns, runs = _report_runs(report, tmp_path / 'out' / 'runs')
  assert patterns == ['abd defaults=defaults/abd-seed*',
                      'rdfcil code_generator=code_generator/rdfcil-seed*']
  # Neither a variant's copy of the task-0 model nor a run of another method.
  assert runs == ['defaults/abd-seed0', 'code_generator/rdfcil-seed0']
