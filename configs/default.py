"""Default: real Fashion-MNIST, 5 tasks of 2 classes, LwF, ResNet-18 (width 16).

Sized for a 2-core CPU: LwF or finetune finish in about 11 minutes, MFGR (a
300-step generator per incremental task) in about half an hour. Switch the
method with `--config.method=...`: any method of mfgr_jax/methods/ or of an
installed plugin (docs/methods.md; an unknown name lists them).

Its fields, their defaults and the values each allows are declared in the library
(`mfgr_jax/run_config.py`); a run checks its whole config against them before it
loads data or compiles anything.
"""

import ml_collections

from mfgr_jax import run_config


def get_config() -> ml_collections.ConfigDict:
  return run_config.get_config()
