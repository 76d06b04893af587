"""The method registry (methods/__init__.py): every method is found by name, an
unknown one is a one-line error listing them, every section a method reads has
defaults in the run's config, and no module of the per-task loop names a method
(a method is added by adding its module, without touching the loop)."""

import ast
import pkgutil
import re

import pytest

from mfgr_jax import methods
from mfgr_jax.errors import UserError

from conftest import REPO

METHODS = ('finetune', 'lwf', 'oracle', 'ewc', 'mas', 'muc_mas', 'lwm', 'muc_lwf', 'icarl',
           'icarl_mfgr', 'mfgr', 'lwf_g_bn', 'g_bn', 'lwf_g_base', 'deepinversion', 'abd', 'rdfcil')
# The per-task loop and what it is made of: none of it may name a method.
LOOP = ('train.py', 'stage_runner.py', 'experiment.py', 'workdir.py', 'results.py',
        'data/sampler.py')


@pytest.mark.parametrize('name', METHODS)
def test_get_method_finds_every_method(name):
  assert methods.get_method(name).name == name


def test_the_registry_holds_exactly_the_methods():
  assert sorted(methods.all_methods()) == sorted(METHODS)


def test_an_unknown_method_is_one_line_listing_the_choices():
  with pytest.raises(UserError) as error:
    methods.get_method('ewc2')
  message = str(error.value)
  assert '\n' not in message and "unknown method 'ewc2'" in message
  assert all(re.search(rf'\b{name}\b', message) for name in METHODS)
  assert '--config.method' in message


def test_every_section_a_method_reads_has_defaults_in_the_config():
  from configs import default
  sections = methods.config_fields()
  config = default.get_config()
  for method in methods.all_methods().values():
    read = set(method.sections) | ({method.synthesis.section} - {''})
    assert read <= set(sections), method.name
    # The checkpoint fingerprint of every method can be built from the default config.
    fingerprint = method.fingerprint(config)
    assert fingerprint == {'method': method.name,
                           **{section: config[section].to_dict() for section in read}}


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
