"""Every paper setting (configs/<setting>.py) at its debug size, on miniature archives.

The full-size configs are checked against the spec's hyperparameters; every
debug config builds its scenario from the miniature archives, and one setting
per dataset runs its first two tasks (task 0, then stage I and stage II of MFGR)
end to end with the setting's own dataset, model depth, stem and image sizes.
The 5-, 10- and 6-phase settings of a dataset differ only in the class split
(checked for each), so running one of them covers the others' code; running all
took about 4 more minutes (230 s) of a 2-core CI, almost all of it compiling ResNet-34.
"""

import importlib
import json

import numpy as np
import PIL.Image
import pytest

from mfgr_jax import run_config, train
from mfgr_jax.experiment import build_experiment, check_config
from mfgr_jax.errors import UserError
from mfgr_jax.methods import get_method

import archives
from conftest import REPO, run_main

# setting -> (dataset, tasks, classes in task 0, increment, model depth, stem, image side)
SETTINGS = {
    'cifar100_5phase': ('cifar100', 5, 20, 20, 34, 'cifar', 32),
    'cifar100_10phase': ('cifar100', 10, 10, 10, 34, 'cifar', 32),
    'cifar100_6phase': ('cifar100', 6, 50, 10, 34, 'cifar', 32),
    'tinyimagenet_5phase': ('tiny_imagenet', 5, 40, 40, 34, 'cifar', 32),
    'tinyimagenet_10phase': ('tiny_imagenet', 10, 20, 20, 34, 'cifar', 32),
    'tinyimagenet_6phase': ('tiny_imagenet', 6, 100, 20, 34, 'cifar', 32),
    'cub_caltech_2phase': ('cub_caltech', 2, 50, 10, 18, 'imagenet', 224),
    'cub_10_10': ('caltech_birds2011', 2, 10, 10, 18, 'imagenet', 224),
}


def _config(setting, arg=None):
  return importlib.import_module(f'configs.{setting}').get_config(arg)


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory):
  """Miniature official archives of every dataset (2 train + 2 test images per class
  of CIFAR-100 and Tiny ImageNet; all CUB classes; the Caltech classes the configs use)."""
  root = tmp_path_factory.mktemp('paper_data')
  manual = root / 'manual'
  labels = np.repeat(np.arange(100), 2)
  archives.write_cifar100_python(manual, {'train': archives.cifar_split(200, 0, labels),
                                          'test': archives.cifar_split(200, 1, labels)})
  archives.write_tiny_imagenet(manual, train_per_class=2, val_per_class=2)
  archives.write_cub(manual, train_per_class=2, test_per_class=2)
  from configs import paper
  archives.write_caltech101(manual, per_class=32, labels=paper.CALTECH_OLD + paper.CALTECH_NEW)
  return {'manual_dir': str(manual), 'data_dir': str(root / 'tfds')}


@pytest.mark.parametrize('setting', SETTINGS)
def test_full_size_config_follows_the_spec(setting):
  dataset, num_tasks, first, increment, depth, stem, side = SETTINGS[setting]
  config = _config(setting)
  assert config.data.name == dataset and config.method == 'mfgr'
  assert (config.model.depth, config.model.stem, config.model.width) == (depth, stem, 64)
  assert (config.train.batch_size, config.train.learning_rate) == (128, 0.1)
  assert config.scenario.base_classes == first and config.scenario.increment == increment
  assert config.scenario.num_tasks == 0 and config.data.max_train_per_class in (0, 30)
  assert config.generator.weights.diversity == 0.1  # the full method ("Ours")
  if depth == 34:  # CIFAR-100 and Tiny ImageNet: the official run.sh recipe
    assert config.train.epochs == 150
    assert (config.generator.steps, config.generator.batch_size) == (60_000, 512)
    assert config.replay.generated_batch_size == 512 and config.data.crop_padding == 4
    assert config.generator.architecture == 'dafl'
    # DeepInversion's CIFAR setting; MUC's auxiliary SVHN.
    assert (config.deepinversion.iterations, config.deepinversion.batch_size) == (2000, 256)
    assert config.muc.auxiliary == 'svhn_cropped'
  else:
    assert (config.generator.architecture, config.generator.image_size) == ('pyramid', 256)
    assert config.data.image_size == side


def test_tiny_imagenet_resolution_option():
  assert _config('tinyimagenet_5phase').data.image_size == 32
  assert _config('tinyimagenet_5phase', 'res64').data.image_size == 64
  with pytest.raises(ValueError, match='unknown config option'):
    _config('cifar100_5phase', 'res64')


def test_cub_caltech_classes():
  order = [int(c) for c in _config('cub_caltech_2phase').scenario.class_order.split(',')]
  assert len(order) == len(set(order)) == 60
  assert all(c < 200 for c in order[:40]) and all(200 <= c < 302 for c in order[40:])


def _debug_config(setting, data_dirs):
  config = _config(setting, 'debug')
  config.data.update(data_dirs, download=False)
  return config


@pytest.mark.parametrize('setting', SETTINGS)
def test_debug_config_builds_its_scenario(setting, data_dirs, tmp_path):
  dataset, num_tasks, first, increment, depth, stem, side = SETTINGS[setting]
  experiment = build_experiment(_debug_config(setting, data_dirs), tmp_path)
  assert experiment.config.data.name == dataset
  assert len(experiment.tasks) == num_tasks
  assert [t.num_new for t in experiment.tasks] == [first] + [increment] * (num_tasks - 1)
  assert experiment.dataset.image_shape[:2] == (side, side)
  assert (experiment.config.model.depth, experiment.config.model.stem) == (depth, stem)


@pytest.mark.parametrize('setting', ['cifar100_5phase', 'tinyimagenet_10phase',
                                     'cub_caltech_2phase', 'cub_10_10'])
def test_debug_size_runs_two_tasks(setting, data_dirs, tmp_path):
  dataset, num_tasks, first, increment, depth, stem, side = SETTINGS[setting]
  config = _debug_config(setting, data_dirs)
  results = train.run(config, str(tmp_path))
  assert results['dataset'] == dataset and results['method'] == 'mfgr'
  assert len(results['tasks']) == num_tasks  # the whole split is planned ...
  assert [len(t) for t in results['tasks'][:2]] == [first, increment]
  assert len(results['accuracy']) == 2  # ... debug runs its first two tasks
  assert results['old_accuracy'][1] is not None and 'generator' in results['seconds'][1]
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert (saved['model']['depth'], saved['model']['stem']) == (depth, stem)
  grid = np.asarray(PIL.Image.open(tmp_path / 'samples' / 'task1.png'))
  assert grid.shape[0] % (side + 2) == 0  # tiles of the classifier's size, 1-pixel borders


def test_debug_option_through_the_command_line(data_dirs, tmp_path):
  # The setting and method of the first debug run above: its programs are in the
  # session's compilation cache, so this run costs its start-up, not a ResNet-34
  # compile (the 10-phase setting with LwF compiled three: 2 more minutes).
  proc = run_main(f'--config={REPO}/configs/cifar100_5phase.py:debug', f'--workdir={tmp_path}',
                  f'--config.data.manual_dir={data_dirs["manual_dir"]}',
                  f'--config.data.data_dir={data_dirs["data_dir"]}', '--config.data.download=False',
                  '--config.method=mfgr')
  assert proc.returncode == 0, proc.stderr[-2000:]
  results = json.loads((tmp_path / 'results.json').read_text())
  assert len(results['tasks']) == 5 and len(results['accuracy']) == 2  # debug: two of five tasks


@pytest.mark.parametrize('method', ['abd', 'rdfcil'])
@pytest.mark.parametrize('setting', SETTINGS)
def test_every_setting_accepts_the_data_free_peers(setting, method):
  """Their checks at every setting's full and debug size (the runs: below)."""
  for arg in (None, 'debug'):
    config = _config(setting, arg)
    config.method = method
    config, _ = run_config.with_method_settings(config)
    assert check_config(config) is get_method(method)


# The two kinds of stage I that synthesise images of the setting's shape: a pixel
# pool and ABD's generator (R-DFCIL's is the same generator with other weights).
# Every method runs whole on the smoke config (end_to_end/test_every_method.py).
@pytest.mark.parametrize('method', ['deepinversion', 'abd'])
def test_data_free_baselines_run_at_debug_size(method, data_dirs, tmp_path):
  config = _debug_config('cifar100_5phase', data_dirs)
  config.method = method
  config, _ = run_config.with_method_settings(config)  # as the command line does
  results = train.run(config, str(tmp_path))
  assert results['method'] == method and len(results['accuracy']) == 2


@pytest.mark.parametrize('setting', ['cifar100_5phase', 'tinyimagenet_10phase'])
def test_abd_and_rdfcil_get_their_official_code_s_settings(setting):
  for method, weight_decay in (('abd', 2e-4),
                               ('rdfcil', 5e-4 if setting.startswith('cifar') else 2e-4)):
    config = _config(setting)
    config.method = method
    config, applied = run_config.with_method_settings(config, explicit={'generator.steps'})
    assert config.train.weight_decay == weight_decay and config.train.schedule == 'multistep'
    assert config.replay.generated_batch_size == config.generator.batch_size == 128
    assert config.generator.learning_rate == 1e-3
    assert config.generator.sample_statistics == 'running'
    assert config.generator.warm_start == (method == 'abd')
    assert config.replay.single_pass == (method == 'abd')
    assert (config.train.epochs, config.train.milestones) == (
        (250, '100,150,200') if method == 'abd' else (160, '80,120'))
    assert config.generator.steps == 60_000  # given explicitly: the command line's value stays
    assert 'generator.steps=10000' not in applied and f'train.weight_decay={weight_decay!r}' in applied
    assert not config.per_method and check_config(config) is get_method(method)
  config = _config(setting)
  config.method = 'mfgr'  # no block of its own: the paper's shared settings
  assert run_config.with_method_settings(config)[0].train.to_dict() == config.train.to_dict()


def test_an_unapplied_block_of_the_run_s_method_is_refused():
  config = _config('cifar100_5phase')
  config.method = 'abd'
  with pytest.raises(UserError, match='settings for abd in per_method that were not applied'):
    check_config(config)


def test_the_command_line_applies_the_method_s_block_and_its_own_overrides_win(data_dirs,
                                                                               tmp_path):
  proc = run_main(f'--config={REPO}/configs/cifar100_5phase.py:debug', f'--workdir={tmp_path}',
                  f'--config.data.manual_dir={data_dirs["manual_dir"]}',
                  f'--config.data.data_dir={data_dirs["data_dir"]}', '--config.data.download=False',
                  '--config.method=abd', '--config.train.weight_decay=0.001',
                  '--config.scenario.num_tasks=1')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert 'abd with the settings the config gives it: ' in proc.stderr
  saved = json.loads((tmp_path / 'config.json').read_text())
  assert saved['train']['weight_decay'] == 0.001  # the command line's
  assert (saved['train']['schedule'], saved['train']['milestones']) == ('multistep', '100,150,200')
  assert saved['generator']['warm_start'] and saved['replay']['single_pass']
  assert saved['per_method'] == {}
