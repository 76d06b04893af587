"""1 vs 2 simulated CPU devices: every train step gives the same result on the same global batch."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO


def _run(devices):
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(REPO))
  proc = subprocess.run([sys.executable, str(REPO / 'tests' / 'data_parallel_steps.py')],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope='module')
def one_and_two():
  return _run(1), _run(2)


@pytest.mark.parametrize('name', ['lwf', 'lwm', 'generator', 'pixels', 'replay0', 'replay1',
                                  'replay_pool', 'importance'])
def test_two_devices_compute_the_single_device_steps(one_and_two, name):
  one, two = one_and_two
  assert (one['devices'], two['devices']) == (1, 2)
  # Tolerance: float32 reductions summed in a different order across devices.
  for i in range(2):
    a, b = one[f'{name}_metrics_{i}'], two[f'{name}_metrics_{i}']
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5, err_msg=f'{name} step {i} {k}')
  np.testing.assert_allclose(one[f'{name}_state'], two[f'{name}_state'], rtol=1e-4, atol=1e-4)
