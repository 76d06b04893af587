"""CIFAR-100, 6 phases: B50 Inc10 (Fig. 8).

  python -m mfgr_jax.main --config configs/cifar100_6phase.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/cifar100_6phase.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.cifar100(50, 10, arg)
