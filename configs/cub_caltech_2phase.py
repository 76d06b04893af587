"""Table 3: 40 fine-grained CUB classes + 10 Caltech-101 classes old, 10 Caltech-101 new.

About 30 train and 30 test images per class, ResNet-18 (ImageNet stem) at
224x224, Generator256 resized to 224. Needs CUB_200_2011.tgz and
101_ObjectCategories.tar.gz (or caltech-101.zip) in the manual dir. The class
lists and the choices the paper leaves open are in `configs/paper.py`.

  python -m mfgr_jax.main --config configs/cub_caltech_2phase.py [--config.method=lwf]
  python -m mfgr_jax.main --config configs/cub_caltech_2phase.py:debug   # CPU smoke size
"""

import ml_collections

from configs import paper

OLD_FINE_GRAINED = paper.CUB_FINE_GRAINED
OLD_NORMAL = tuple(paper.CALTECH_OFFSET + c for c in paper.CALTECH_OLD)
NEW = tuple(paper.CALTECH_OFFSET + c for c in paper.CALTECH_NEW)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return paper.cub(OLD_FINE_GRAINED + OLD_NORMAL + NEW, base_classes=50, increment=10,
                   name='cub_caltech', arg=arg)
