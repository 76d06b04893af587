"""docs/extending.md's example method works as written: its code block, placed where
the registry looks, is found with its config section, runs, carries its class means
across tasks and resumes to the same results.

The module is written to a temporary folder appended to the package's `__path__`
(where `pkgutil.iter_modules` finds it) for this file's tests only, so the
repository's methods/ stays as it is and other tests never see it.
"""

import pathlib
import re
import sys

from absl import flags
import ml_collections
from ml_collections import config_flags
import numpy as np
import pytest

from mfgr_jax import methods, train
from mfgr_jax.checkpoints import Checkpoints
from mfgr_jax.experiment import build_experiment

from conftest import REPO, SMOKE, comparable

MODULE = 'mfgr_jax.methods.finetune_ncm'


def example_module() -> str:
  """The python block of docs/extending.md that starts with the example's path."""
  doc = (REPO / 'docs' / 'extending.md').read_text()
  blocks = re.findall(r'```python\n(# mfgr_jax/methods/finetune_ncm\.py\n.*?)```', doc, re.DOTALL)
  assert len(blocks) == 1, 'docs/extending.md must hold exactly one finetune_ncm.py block'
  return blocks[0]


@pytest.fixture(scope='module', autouse=True)
def registered(tmp_path_factory):
  """finetune_ncm, discoverable as a module of mfgr_jax.methods while this file runs."""
  folder = tmp_path_factory.mktemp('methods')
  (folder / 'finetune_ncm.py').write_text(example_module())
  methods.__path__.append(str(folder))
  try:
    yield
  finally:
    methods.__path__.remove(str(folder))
    sys.modules.pop(MODULE, None)
    vars(methods).pop('finetune_ncm', None)


def smoke(num_tasks: int = 0) -> ml_collections.ConfigDict:
  """configs/smoke.py's config for finetune_ncm, made after the module is registered
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
