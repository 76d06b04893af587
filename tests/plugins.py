"""Method plugins installed for a test as pip installs a package: the module files
and a distribution's `.dist-info` folder whose `entry_points.txt` names the modules
in the entry-point group `mfgr_jax.methods`. With that folder on `sys.path` (or
`PYTHONPATH` for a child process), `importlib.metadata` finds it like any installed
package."""

import pathlib
import shutil
import tomllib

from mfgr_jax.methods import ENTRY_POINT_GROUP

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / 'examples'


def install_plugin(site: pathlib.Path, distribution: str, modules: dict[str, str]) -> None:
  """Writes into `site` the distribution `distribution` whose entry points are
  `modules` (entry-point name -> importable module name)."""
  info = site / f'{distribution.replace("-", "_")}-1.0.dist-info'
  info.mkdir(parents=True)
  (info / 'METADATA').write_text(f'Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n')
  lines = [f'[{ENTRY_POINT_GROUP}]'] + [f'{name} = {module}' for name, module in modules.items()]
  (info / 'entry_points.txt').write_text('\n'.join(lines) + '\n')


def install_examples(site: pathlib.Path) -> None:
  """The examples/ project installed into `site`: its package copied, its entry points
  as its pyproject.toml declares them."""
  project = tomllib.loads((EXAMPLES / 'pyproject.toml').read_text())['project']
  shutil.copytree(EXAMPLES / 'mfgr_examples', site / 'mfgr_examples')
  install_plugin(site, project['name'], project['entry-points'][ENTRY_POINT_GROUP])
