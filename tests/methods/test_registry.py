"""The method registry (methods/__init__.py): every method is found by name, an
unknown one is a one-line error listing them, every section a method reads has
defaults in the run's config, and no module of the per-task loop names a method
(a method is added by adding its module, without touching the loop). Methods of
an installed plugin distribution join the registry with their config sections;
a broken or clashing plugin is a one-line error."""

import ast
import dataclasses
import importlib.metadata
import pkgutil
import re
import subprocess
import sys

import pytest

from mfgr_jax import config_fields as F
from mfgr_jax import methods
from mfgr_jax.errors import UserError
from mfgr_jax.scenario import Task

from conftest import REPO, SMOKE, env
import loss_references as ref
from plugins import install_plugin

METHODS = ('finetune', 'lwf', 'oracle', 'ewc', 'mas', 'muc_mas', 'lwm', 'muc_lwf', 'icarl',
           'icarl_mfgr', 'mfgr', 'lwf_g_bn', 'g_bn', 'lwf_g_base', 'deepinversion', 'abd', 'rdfcil')
# The per-task loop and what it is made of: none of it may name a method.
LOOP = ('train.py', 'stage_runner.py', 'experiment.py', 'workdir.py', 'results.py',
        'data/sampler.py')


@pytest.mark.parametrize('name', METHODS)
def test_get_method_finds_every_method(name):
  assert methods.get_method(name).name == name


def _installed_plugin_methods() -> set[str]:
  """The methods of plugins installed in this environment (none in CI)."""
  return {method.name for entry in importlib.metadata.entry_points(group=methods.ENTRY_POINT_GROUP)
          for method in entry.load().METHODS}


@pytest.mark.parametrize('name', METHODS)
def test_task_0_is_plain_cross_entropy_for_every_method(name):
  # One task-0 model serves every method (init_from): the loss there is the
  # method's own only after task 0.
  method = methods.get_method(name)
  logits, labels = ref.LOGITS[:, :2], ref.LABELS - 4
  value, metrics = method.task_loss(Task(0, (0, 1), 0, 2), None)(ref.forward(logits), labels,
                                                                 None, None)
  assert float(value) == pytest.approx(ref.cross_entropy(logits, labels), rel=1e-6)
  assert set(metrics) == {'ce'}
  make_loss = lambda task, config: ('the method\'s loss of task', task.index)
  assert dataclasses.replace(method, make_loss=make_loss).task_loss(ref.TASK, None) == (
      'the method\'s loss of task', 1)


def test_the_registry_holds_exactly_the_methods():
  assert sorted(set(methods.all_methods()) - _installed_plugin_methods()) == sorted(METHODS)


LAB_METHODS = """
import dataclasses
from mfgr_jax import config_fields as F
from mfgr_jax.methods import lwf
METHODS = (dataclasses.replace(lwf.METHODS[0], name=NAME, sections=('lab',)),)
CONFIG = {SECTION: dict(strength=F.positive_number(2.0))}
"""


@pytest.fixture
def plugin(tmp_path, monkeypatch):
  """`plugin(source)`: installs a distribution `lab-methods` whose entry point is a
  module with `source`, for this test."""
  monkeypatch.syspath_prepend(str(tmp_path))

  def install(source: str) -> None:
    (tmp_path / 'lab_methods.py').write_text(source)
    install_plugin(tmp_path, 'lab-methods', {'lab': 'lab_methods'})

  yield install
  import sys
  sys.modules.pop('lab_methods', None)


def test_a_plugin_adds_its_methods_and_config_sections(plugin):
  plugin(LAB_METHODS.replace('NAME', "'lab_lwf'").replace('SECTION', "'lab'"))
  assert methods.get_method('lab_lwf').sections == ('lab',)
  from configs import default
  config = default.get_config()  # the plugin's section joins every config, with its default
  assert config.lab.strength == 2.0
  config.method = 'lab_lwf'
  from mfgr_jax.experiment import check_config
  check_config(config, 'test')  # an accepted choice of --config.method


@pytest.mark.parametrize('source, words', [
    ('raise ImportError("no module named torch")',
     "method plugin 'lab_methods' (entry point 'lab' of lab-methods) failed to import: "
     'ImportError: no module named torch; fix it, or uninstall lab-methods'),
    ('X = 1', "method plugin 'lab_methods' (entry point 'lab' of lab-methods) defines no "
              'METHODS'),
    (LAB_METHODS.replace('NAME', "'lwf'").replace('SECTION', "'lab'"),
     "method 'lwf' is defined twice (mfgr_jax.methods.lwf and lab_methods); rename one"),
    (LAB_METHODS.replace('NAME', "'lab_lwf'").replace('SECTION', "'abd'"),
     "config section 'abd' is defined twice (again in lab_methods); rename one"),
], ids=['broken', 'no_methods', 'method_clash', 'section_clash'])
def test_a_bad_plugin_is_one_line_naming_it(plugin, source, words):
  plugin(source)
  with pytest.raises(UserError) as error:
    methods.all_methods()
    methods.config_sections()
  assert words in str(error.value) and '\n' not in str(error.value)


def test_an_unknown_method_is_one_line_listing_the_choices():
  with pytest.raises(UserError) as error:
    methods.get_method('ewc2')
  message = str(error.value)
  assert '\n' not in message and "unknown method 'ewc2'" in message
  assert all(re.search(rf'\b{name}\b', message) for name in METHODS)
  assert '--config.method' in message


def test_every_section_a_method_reads_has_defaults_in_the_config():
  from configs import default
  sections = methods.config_sections()
  config = default.get_config()
  for method in methods.all_methods().values():
    read = set(method.sections) | ({method.stage_one.section} - {''})
    assert read <= set(sections), method.name
    # The checkpoint fingerprint of every method can be built from the default config:
    # every section it reads, without the fields added later that are at their defaults
    # (config_fields.added), so that workdirs made before them still resume.
    fingerprint = method.fingerprint(config)
    assert set(fingerprint) == {'method'} | read and fingerprint['method'] == method.name
    for section in read:
      added = {name for name, field in sections[section].items()
               if isinstance(field, F.Field) and field.omitted_at_default}
      assert fingerprint[section] == {name: value for name, value in
                                      config[section].to_dict().items() if name not in added}


def _method_modules() -> set[str]:
  return {info.name for info in pkgutil.iter_modules(methods.__path__)}


def names_of_methods(source: str) -> list[str]:
  """Where `source` names a method: a string in which a method's name is a word, an
  identifier that is a method's name, or an import of a method's module."""
  names, modules = set(METHODS), _method_modules()
  found = []
  for node in ast.walk(ast.parse(source)):
    where = f'line {getattr(node, "lineno", "?")}'
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      found += [f'{where}: {name!r} in a string' for name in sorted(names)
                if re.search(rf'\b{name}\b', node.value)]
    identifier = (node.id if isinstance(node, ast.Name) else
                  node.attr if isinstance(node, ast.Attribute) else
                  node.arg if isinstance(node, (ast.arg, ast.keyword)) else
                  node.name if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                 ast.ClassDef)) else
                  node.asname if isinstance(node, ast.alias) else None)
    if identifier in names:
      found.append(f'{where}: identifier {identifier}')
    if isinstance(node, ast.ImportFrom) and node.module == 'mfgr_jax.methods':
      found += [f'{where}: imports methods.{alias.name}' for alias in node.names
                if alias.name in modules]
    imported = ([node.module or ''] if isinstance(node, ast.ImportFrom) else
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
    found += [f'{where}: imports {module}' for module in imported
              if module.split('.')[:2] == ['mfgr_jax', 'methods'] and len(module.split('.')) > 2
              and module.split('.')[2] in modules]
  return found


@pytest.mark.parametrize('module', LOOP)
def test_no_module_of_the_loop_names_a_method(module):
  assert names_of_methods((REPO / 'mfgr_jax' / module).read_text()) == []


@pytest.mark.parametrize('planted', [
    "if experiment.method.name == 'icarl':\n  pass\n",
    'seconds["importance" if name == "ewc" else "x"] = 1\n',
    'from mfgr_jax.methods import lwf\n',
    'from mfgr_jax.methods import Method, muc\n',
    'import mfgr_jax.methods.mas\n',
    'from mfgr_jax.methods.icarl import memory_like\n',
    'state = oracle.seen_class_images(experiment, task, None)\n',
    'def mfgr(experiment):\n  return experiment\n',
    'from mfgr_jax import methods as lwm\n',
], ids=['compared', 'in_an_expression', 'module', 'module_among_names', 'dotted_module',
        'from_module', 'attribute_of', 'function', 'alias'])
def test_the_check_catches_a_method_planted_in_the_loop(planted):
  source = (REPO / 'mfgr_jax' / 'train.py').read_text() + '\n' + planted
  assert names_of_methods(source)


def test_a_broken_plugin_stops_the_command_line_in_one_line(tmp_path):
  (tmp_path / 'lab_methods.py').write_text('raise ImportError("no module named torch")')
  install_plugin(tmp_path, 'lab-methods', {'lab': 'lab_methods'})
  process = subprocess.run([sys.executable, '-m', 'mfgr_jax.main', f'--config={SMOKE}',
                            f'--workdir={tmp_path / "run"}'], cwd=REPO, capture_output=True,
                           text=True, timeout=300, env=dict(env(1), PYTHONPATH=str(tmp_path)))
  assert process.returncode == 2 and not (tmp_path / 'run').exists()
  assert process.stderr.strip() == (
      "mfgr_jax: error: method plugin 'lab_methods' (entry point 'lab' of lab-methods) failed "
      'to import: ImportError: no module named torch; fix it, or uninstall lab-methods')
