"""Tiny ImageNet, 6 phases: B100 Inc20 (Fig. 8).

At 32x32 by default (the MUC convention the official code derives from);
`:res64` for the native 64x64 (see `configs/paper.py`).

  python -m mfgr_jax.main --config configs/tinyimagenet_6phase.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/tinyimagenet_6phase.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.tinyimagenet(100, 20, arg)
