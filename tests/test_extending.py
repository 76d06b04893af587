"""docs/extending.md's example method works as written: its code block is
examples/mfgr_examples/finetune_ncm.py, which, installed as a plugin (as pip installs
the examples), is found with its config section, runs, carries its class means across
tasks and resumes to the same results; and the examples' own config runs it through
the command line from a folder outside the repository."""

import pathlib
import re
import subprocess
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
import pytest

from mfgr_jax import methods, train
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.experiment import build_experiment

from conftest import REPO, SMOKE, comparable, env, load_results
from plugins import EXAMPLES, install_examples


def test_the_docs_block_is_the_example_module():
  doc = (REPO / 'docs' / 'extending.md').read_text()
  blocks = re.findall(r'```python\n# examples/mfgr_examples/finetune_ncm\.py\n(.*?)```', doc,
                      re.DOTALL)
  assert blocks == [(EXAMPLES / 'mfgr_examples' / 'finetune_ncm.py').read_text()]


@pytest.fixture(scope='module')
def site(tmp_path_factory) -> pathlib.Path:
  folder = tmp_path_factory.mktemp('site')
  install_examples(folder)
  return folder


@pytest.fixture(scope='module', autouse=True)
def registered(site):
  """The examples installed, on the path while this file runs."""
  sys.path.insert(0, str(site))
  try:
    yield
  finally:
    sys.path.remove(str(site))
    for module in [name for name in sys.modules if name.startswith('mfgr_examples')]:
      del sys.modules[module]


def smoke(num_tasks: int = 0) -> ml_collections.ConfigDict:
  """configs/smoke.py's config for finetune_ncm, made after the plugin is installed
  (the registry gathers the `CONFIG` sections when a config is made)."""
  from configs import smoke as smoke_module
  config = smoke_module.get_config()
  config.method = 'finetune_ncm'
  config.scenario.num_tasks = num_tasks
  return config


def parse_command_line(*overrides: str) -> ml_collections.ConfigDict:
  """The config `python -m mfgr_jax.main --config=configs/smoke.py OVERRIDES` would run."""
  argv = ['main', f'--config={SMOKE}', *overrides]
  values = flags.FlagValues()
  holder = config_flags.DEFINE_config_file('config', None, flag_values=values, lock_config=True,
                                           sys_argv=argv)
  values(argv)
  return holder.value


def restore_means(workdir: pathlib.Path, task: int) -> np.ndarray:
  """The means saved in `task`'s checkpoint, as saved (no target from the method)."""
  checkpoints = Checkpoints(workdir / 'checkpoints')
  means = checkpoints.restore_method_state(task, None)['means']
  checkpoints.close()
  return np.asarray(means)


@pytest.fixture(scope='module')
def whole_run(tmp_path_factory) -> tuple[pathlib.Path, dict]:
  workdir = tmp_path_factory.mktemp('whole')
  return workdir, train.run(smoke(), str(workdir))


def test_the_registry_finds_the_example_and_its_config_section():
  method = methods.get_method('finetune_ncm')
  assert method.sections == ('ncm',)
  assert method.fingerprint(smoke()) == {'method': 'finetune_ncm', 'ncm': {'normalise': True}}
  assert parse_command_line('--config.ncm.normalise=False').ncm.normalise is False
  with pytest.raises(AttributeError, match='Did you mean "normalise"'):
    parse_command_line('--config.ncm.normalize=False')


def test_the_example_runs_and_carries_the_means_of_earlier_classes(whole_run):
  workdir, results = whole_run
  assert results['method'] == 'finetune_ncm' and len(results['accuracy']) == 3
  assert results['accuracy'][-1] > 100 / 6  # chance over the 6 seen classes
  assert 'class_means' in results['seconds'][0]
  experiment = build_experiment(smoke(), workdir)
  feature_dim = experiment.variables_like(6)['params']['head']['linear']['dense']['kernel'].shape[0]
  means = restore_means(workdir, 2)
  assert means.shape == (6, feature_dim) and means.dtype == np.float32
  # What a resumed run restores into must match what was saved.
  like = experiment.method.state_like(experiment, experiment.tasks[2])['means']
  assert like.shape == means.shape and like.dtype == means.dtype
  # The classes of tasks 0 and 1 keep the means computed by the models of their tasks.
  np.testing.assert_array_equal(means[:2], restore_means(workdir, 0))
  np.testing.assert_array_equal(means[:4], restore_means(workdir, 1))


def test_stopping_after_task_1_and_continuing_restores_the_means(whole_run, tmp_path):
  _, results = whole_run
  assert len(train.run(smoke(num_tasks=2), str(tmp_path))['accuracy']) == 2
  assert comparable(train.run(smoke(), str(tmp_path))) == comparable(results)


def test_the_examples_config_runs_it_from_outside_the_repository(site, tmp_path):
  process = subprocess.run(
      [sys.executable, '-m', 'mfgr_jax.main', f'--config={EXAMPLES / "configs" / "finetune_ncm.py"}',
       f'--workdir={tmp_path / "run"}', '--config.scenario.num_tasks=2'],
      cwd=tmp_path, env=dict(env(1), PYTHONPATH=str(site)), capture_output=True, text=True,
      timeout=600)
  assert process.returncode == 0, process.stderr
  results = load_results(tmp_path / 'run')
  assert results['method'] == 'finetune_ncm' and len(results['accuracy']) == 2
