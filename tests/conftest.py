"""Shared fixtures: tiny configs and a helper that runs the real entry point."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # so that `configs` imports as in `python -m mfgr_jax.main`


def run_main(*args: str, devices: int = 1, timeout: float = 600, **popen) -> subprocess.CompletedProcess:
  """Runs `python -m mfgr_jax.main ARGS` on `devices` simulated CPU devices."""
  env = dict(os.environ, XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'mfgr_jax.main', *args], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=timeout, **popen)


@pytest.fixture
def smoke_config():
  from configs import smoke
  return smoke.get_config()
