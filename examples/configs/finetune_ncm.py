"""finetune_ncm on a synthetic 3-task problem that runs in about a minute on a CPU.

A config of your own project: it builds from the library's defaults
(`mfgr_jax.run_config`), not from the repository's configs/, so it runs from any
folder once mfgr_jax and these examples are installed:

  python -m mfgr_jax.main --config examples/configs/finetune_ncm.py --workdir /tmp/ncm
"""

import ml_collections

from mfgr_jax import run_config


def get_config() -> ml_collections.ConfigDict:
  config = run_config.get_config()
  config.method = 'finetune_ncm'
  config.data.name = 'synthetic'
  config.data.download = False
  config.data.synthetic.update(num_classes=6, image_size=16, channels=1, train_per_class=96,
                               test_per_class=32)
  config.model.width = 4
  config.train.update(epochs=3, batch_size=32)
  config.eval_batch_size = 64
  config.log_every_steps = 4
  return config
