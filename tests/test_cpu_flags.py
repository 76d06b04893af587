"""mfgr_jax.cpu_flags: which XLA flags a CPU run adds, and that they change the kernels
but not what the steps compute."""

import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO
from mfgr_jax import cpu_flags

FLAG = cpu_flags.FLAGS_BY_CPU['avx2'][0]
ZEN3 = 'processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma\n'
ZEN4 = 'processor\t: 0\nflags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw\n'


def test_cpu_kind_reads_the_instruction_sets_from_cpuinfo():
  assert cpu_flags.cpu_kind(ZEN3) == 'avx2'
  assert cpu_flags.cpu_kind(ZEN4) == 'avx512'
  assert cpu_flags.cpu_kind('processor\t: 0\nflags\t\t: fp asimd\n') == 'other'
  assert cpu_flags.cpu_kind('') == 'other'


def cpu_environ(**variables: str) -> dict:
  return {'JAX_PLATFORMS': 'cpu', **variables}


@pytest.fixture(autouse=True)
def measured_jaxlib(monkeypatch):
  """The jaxlib the flags were measured with, whatever is installed."""
  monkeypatch.setattr(cpu_flags, '_jaxlib_version', lambda: '0.12.0.1')


def test_the_measured_flags_are_appended_to_the_users_xla_flags_once():
  environ = cpu_environ(XLA_FLAGS='--xla_force_host_platform_device_count=2')
  assert cpu_flags.use_project_flags(environ, kind='avx2') == (FLAG,)
  assert environ['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=2 {FLAG}'
  # A child process, which inherits the variable, adds nothing again.
  assert cpu_flags.use_project_flags(environ, kind='avx2') == ()
  assert environ['XLA_FLAGS'] == f'--xla_force_host_platform_device_count=2 {FLAG}'


def test_a_flag_the_user_set_is_never_overridden():
  name = FLAG.split('=')[0]
  environ = cpu_environ(XLA_FLAGS=f'{name}=individual_dot,individual_convolution')
  assert cpu_flags.project_flags(environ, kind='avx2') == ()


@pytest.mark.parametrize('environ', [
    cpu_environ(MFGR_JAX_CPU_FLAGS='off'),
    {'JAX_PLATFORMS': 'cuda'},
    {'JAX_PLATFORMS': 'tpu,cpu'},
], ids=['turned off', 'GPU', 'TPU'])
def test_no_flags_when_turned_off_or_off_the_cpu(environ):
  assert cpu_flags.project_flags(environ, kind='avx2') == ()


def test_no_flags_for_a_jaxlib_they_were_not_measured_with(monkeypatch):
  monkeypatch.setattr(cpu_flags, '_jaxlib_version', lambda: '0.13.0')
  assert cpu_flags.project_flags(cpu_environ(), kind='avx2') == ()


@pytest.mark.parametrize('plugin', [False, True])
def test_without_jax_platforms_an_installed_gpu_or_tpu_plugin_means_no_flags(monkeypatch, plugin):
  monkeypatch.setattr(cpu_flags, '_accelerator_plugin_installed', lambda: plugin)
  assert cpu_flags.project_flags({}, kind='avx2') == (() if plugin else (FLAG,))


def test_no_flags_on_a_cpu_kind_where_none_were_measured_to_help():
  assert cpu_flags.project_flags(cpu_environ(), kind='avx512') == ()
  assert cpu_flags.project_flags(cpu_environ(), kind='other') == ()


def test_machine_names_the_backend_the_cpu_kind_and_the_flags_in_force(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_enable_fast_math=false')
  info = cpu_flags.machine()
  assert info['backend'] == 'cpu' and info['cpu'] == cpu_flags.cpu_kind()
  assert info['xla_flags'] == '--xla_cpu_enable_fast_math=false'


def _steps_under(xla_flags: str, out) -> dict:
  environment = dict(os.environ, XLA_FLAGS=xla_flags, MFGR_JAX_CPU_FLAGS='off',
                     JAX_PLATFORMS='cpu', PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL='3')
  environment.pop('JAX_COMPILATION_CACHE_DIR')  # each process compiles with its own flags
  proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'steps_under_flags.py'), str(out)],
                        cwd=REPO, env=environment, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return dict(np.load(out))


def test_every_step_kind_computes_the_same_losses_and_gradients_with_the_flags(tmp_path):
  # Whatever this machine's CPU kind: the flags are forced on here, as on an AVX2 CPU.
  without = _steps_under('', tmp_path / 'without.npz')
  with_flags = _steps_under(FLAG, tmp_path / 'with.npz')
  assert without.keys() == with_flags.keys()
  steps = {key.split('/')[0] for key in without}
  assert steps == {'finetune', 'lwf', 'generator (stage I)', 'replay (stage II)'}
  for step in steps:
    # The flag took effect: some convolutions left YNNPACK for XLA's own kernels.
    assert with_flags[f'{step}/ynn_fusions'] < without[f'{step}/ynn_fusions'], step
    for part in ('metric', 'opt_state', 'batch_stats'):
      keys = [k for k in without if k.startswith(f'{step}/{part}')]
      assert keys or part == 'batch_stats', (step, part)  # the generator step has none
      # Per leaf, to the scale of the step's whole part: a bias that BatchNorm cancels
      # has gradients of 1e-9 whose relative rounding means nothing.
      scale = max(float(np.max(np.abs(without[k]))) for k in keys) if keys else 0.0
      for key in keys:
        np.testing.assert_allclose(with_flags[key], without[key], rtol=1e-4,
                                   atol=1e-5 * scale, err_msg=key)
