"""CIFAR-100, 5 phases: B20 Inc20 (Tables 2 and 5).

  python -m mfgr_jax.main --config configs/cifar100_5phase.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/cifar100_5phase.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.cifar100(20, 20, arg)
