"""Fashion-MNIST, fine-grained old classes: does replay keep them where LwF forgets?

Task 0 (old): the four confusable tops T-shirt/top (0), Pullover (2), Coat (4)
and Shirt (6), with the easy Trouser (1) and Bag (8). Task 1 (new): Dress (3),
Sandal (5), Sneaker (7), Ankle boot (9). This mirrors the paper's Table 1/3
claim (LwF loses fine-grained old classes, MFGR keeps them) at a size that
finishes on a 2-core CPU: 1500 training images per class, ResNet-18 width 16,
3 epochs per task, a 400-step generator at batch 128 (DeepInversion: 400 steps too).

Share one task-0 model between methods (`--config.init_from=WORKDIR`), as the
paper does; `launch/fashion_finegrained.sh` runs the whole study.

`configs/fashion_finegrained.py:full` is the same split at a budget where the
methods separate (docs/results.md): every training image (6000 per class),
task 0 for 8 epochs and task 1 for 6, stage I 600 steps at batch 256 (the
generator of MFGR, its ablations, ABD and R-DFCIL; DeepInversion: 3 batches of
200 iterations at batch 256, as many steps), 128 real + 128 generated images
per replay step. 34-39 minutes per MFGR run on 2 CPU cores (measured, 3 seeds).
"""

import ml_collections

from mfgr_jax import run_config

FINE_GRAINED_OLD = (0, 2, 4, 6)
EASY_OLD = (1, 8)
NEW = (3, 5, 7, 9)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The budget of issue 3 (minutes per run), or with `arg` 'full' the larger one."""
  if arg not in (None, '', 'full'):
    raise ValueError(f"configs/fashion_finegrained.py takes no argument or ':full', got {arg!r}")
  config = run_config.get_config()
  config.method = 'mfgr'
  config.data.max_train_per_class = 1500
  config.scenario.class_order = ','.join(map(str, FINE_GRAINED_OLD + EASY_OLD + NEW))
  config.scenario.base_classes = len(FINE_GRAINED_OLD + EASY_OLD)
  config.scenario.increment = len(NEW)
  config.train.epochs = 3
  config.generator.steps = 400
  config.generator.batch_size = 128
  config.generator.diversity_pairs = 50
  config.replay.generated_batch_size = 128
  # DeepInversion: as many stage I steps as the generator's (2 batches x 200
  # iterations at batch 128), which buys a fixed pool of 256 images.
  config.deepinversion.batches = 2
  config.deepinversion.iterations = 200
  config.deepinversion.batch_size = 128
  config.deepinversion.log_every_steps = 25
  config.checkpoint_every_steps = 100
  config.log_every_steps = 25
  if arg == 'full':
    config.data.max_train_per_class = 0  # all 6000
    config.train.init_epochs = 8
    config.train.epochs = 6
    config.generator.steps = 600
    config.generator.batch_size = 256
    config.deepinversion.batches = 3
    config.deepinversion.batch_size = 256
    config.log_every_steps = 100
    config.checkpoint_every_steps = 200
  return config
