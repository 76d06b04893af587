"""Smoke test: a synthetic 3-task problem on a tiny ResNet-18; seconds on a CPU."""

import ml_collections

from mfgr_jax import run_config


def get_config() -> ml_collections.ConfigDict:
  config = run_config.get_config()
  config.data.name = 'synthetic'
  config.data.download = False
  config.data.synthetic = ml_collections.ConfigDict(dict(
      num_classes=6, image_size=16, channels=1, train_per_class=96, test_per_class=32, seed=0))
  config.scenario.increment = 2
  config.model.width = 4
  config.train.epochs = 3
  config.train.batch_size = 32
  config.eval_batch_size = 64
  config.log_every_steps = 4
  config.checkpoint_every_steps = 4
  config.generator.steps = 12
  config.generator.batch_size = 32
  config.generator.hidden = 16
  config.generator.latent_dim = 32
  config.generator.diversity_pairs = 8
  config.generator.log_every_steps = 4
  config.replay.generated_batch_size = 32
  config.deepinversion.iterations = 12
  config.deepinversion.batch_size = 32
  config.deepinversion.log_every_steps = 4
  return config
