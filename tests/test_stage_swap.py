"""examples/mfgr_examples/stage_swap.py, the stage-swap study's methods, written
outside the library as a plugin: each composed method has one parent's stage I and
the other's stage II, and both run through `python -m mfgr_jax.study` (as the study
runs them) from a folder outside the repository, with the examples installed (as
pip installs them) and nothing else of the repository on the path, logging the terms
of the right stages."""

import dataclasses
import subprocess
import sys

import pytest

from mfgr_jax.methods import abd, mfgr

from conftest import SMOKE, env, load_results, tensorboard_tags
from plugins import install_examples

CELLS = {  # method: (stage I terms, its weights' section, stage II's method)
    'mfgr_generator_abd_replay': (mfgr.MFGR_TERMS, '', 'abd'),
    'abd_generator_mfgr_replay': (abd.ABD_TERMS, 'abd', 'mfgr'),
}


@pytest.fixture(scope='module')
def site(tmp_path_factory):
  """A folder where the examples are installed."""
  folder = tmp_path_factory.mktemp('site')
  install_examples(folder)
  return folder


@pytest.fixture
def stage_swap(site, monkeypatch):
  monkeypatch.syspath_prepend(str(site))
  from mfgr_jax import methods
  yield methods
  for module in [name for name in sys.modules if name.startswith('mfgr_examples')]:
    del sys.modules[module]


@pytest.mark.parametrize('name', sorted(CELLS))
def test_each_cell_is_one_stage_i_with_the_others_stage_ii(stage_swap, name):
  terms, weights_section, replay = CELLS[name]
  method, parent = stage_swap.get_method(name), stage_swap.get_method(replay)
  assert method.stage_one.record.args == (terms, weights_section)
  # Everything but the name, stage I and the sections it reads is stage II's method's.
  assert dataclasses.replace(method, name=parent.name, stage_one=parent.stage_one,
                             sections=parent.sections) == parent
  assert set(method.sections) == set(parent.sections) | ({weights_section} - {''})


def test_the_cells_run_through_the_study_and_log_their_stages(site, tmp_path):
  keep, elsewhere = tmp_path / 'keep', tmp_path / 'elsewhere'
  elsewhere.mkdir()
  environment = dict(env(1), PYTHONPATH=str(site))
  subprocess.run(
      [sys.executable, '-m', 'mfgr_jax.study', f'--config={SMOKE}', f'--methods={",".join(CELLS)}',
       '--seeds=0', f'--keep={keep}', f'--workdirs={tmp_path / "workdirs"}',
       '--method_args=mfgr_generator_abd_replay=--config.replay.single_pass=True', '--',
       '--config.scenario.num_tasks=2', '--config.train.epochs=1'],
      cwd=elsewhere, env=environment, check=True, capture_output=True, timeout=900)
  for name, (terms, _, replay) in CELLS.items():
    results = load_results(keep / f'{name}-seed0')
    assert results['method'] == name and len(results['accuracy']) == 2
    assert (keep / f'{name}-seed0' / 'samples' / 'task1.png').exists()
    tags = tensorboard_tags(tmp_path / 'workdirs' / 'seed0' / name)
    assert {f'generator/{term}' for term in terms} <= tags
    replay_terms = {'abd': {'local_ce', 'head_ce', 'feature_kd'},
                    'mfgr': {'ce', 'kd_generated', 'kd_real'}}[replay]
    assert {f'classifier/{term}' for term in replay_terms} <= tags
  config = (keep / 'mfgr_generator_abd_replay-seed0' / 'config.json').read_text()
  assert '"single_pass": true' in config
