"""CIFAR-100, 10 phases: B10 Inc10 (Table 7).

  python -m mfgr_jax.main --config configs/cifar100_10phase.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/cifar100_10phase.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.cifar100(10, 10, arg)
