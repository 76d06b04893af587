"""The package (pyproject.toml): installed by setup.sh, importable from any folder,
its dependency ranges holding requirements.txt's pins, and the library never
importing the repository's configs (configs import the library, never the reverse)."""

import ast
import subprocess
import sys
import tomllib

from packaging.requirements import Requirement
import pytest

from conftest import REPO

PROJECT = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']


def _pins() -> dict[str, str]:
  """requirements.txt's exact versions, by normalised name."""
  pins = {}
  for line in (REPO / 'requirements.txt').read_text().splitlines():
    if line.strip() and not line.startswith('#'):
      requirement = Requirement(line)
      pins[requirement.name.lower().replace('_', '-')] = str(requirement.specifier).lstrip('=')
  return pins


def _imports(source: str) -> set[str]:
  found = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      found |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and not node.level:
      found.add(node.module or '')
  return found


@pytest.mark.parametrize('module', sorted(str(p.relative_to(REPO))
                                          for p in (REPO / 'mfgr_jax').rglob('*.py')))
def test_no_module_of_the_library_imports_the_configs(module):
  imported = _imports((REPO / module).read_text())
  assert not {name for name in imported if name.split('.')[0] == 'configs'}


def test_the_check_sees_an_import_of_the_configs():
  assert _imports('from configs import default\nimport configs.paper\n') == {'configs',
                                                                             'configs.paper'}


def test_every_dependency_is_pinned_and_every_pin_lies_in_its_range():
  pins = _pins()
  for line in PROJECT['dependencies']:
    requirement = Requirement(line)
    name = requirement.name.lower().replace('_', '-')
    assert name in pins, f'{name} is a dependency but not pinned in requirements.txt'
    assert requirement.specifier.contains(pins[name]), (line, pins[name])
  # The accelerator extras pull jax's own builds at the pinned jax.
  for extra in ('cuda12', 'cuda13', 'tpu'):
    (requirement,) = map(Requirement, PROJECT['optional-dependencies'][extra])
    assert requirement.name == 'jax' and requirement.extras == {extra}
    assert str(requirement.specifier) == f'=={pins["jax"]}'


def test_the_installed_package_imports_from_any_folder(tmp_path):
  """setup.sh installs the project: from another folder, without the repository on the
  path, `mfgr_jax` is this checkout's and `configs` is not importable."""
  process = subprocess.run(
      [sys.executable, '-c', 'import importlib.util, mfgr_jax.run_config; '
       'print(mfgr_jax.__file__); print(importlib.util.find_spec("configs"))'],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env={'PATH': '/usr/bin:/bin', 'HOME': str(tmp_path)})
  assert process.returncode == 0, (f'{process.stderr.strip().splitlines()[-1:]}: is the '
                                   'project installed? run ./setup.sh')
  package, configs = process.stdout.split()
  assert package == str(REPO / 'mfgr_jax' / '__init__.py') and configs == 'None'
