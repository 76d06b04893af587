"""Table 4: 20 CUB-200-2011 classes, 10 old then 10 new, at 224x224.

The paper picked the 20 classes at random without listing them; ours are
`np.random.RandomState(0).choice(200, 20, replace=False)` in that order (the
first ten old). CUB's official split gives about 30 train and 29 test images
per class. Needs CUB_200_2011.tgz in the manual dir; model, generator and
recipe as `configs/cub_caltech_2phase.py` (see `configs/paper.py`).

  python -m mfgr_jax.main --config configs/cub_10_10.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/cub_10_10.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper

CLASSES = (18, 170, 107, 98, 177, 182, 5, 146, 12, 152,
           61, 125, 180, 154, 80, 7, 33, 130, 37, 74)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.cub(CLASSES, base_classes=10, increment=10, name='caltech_birds2011', arg=arg)
