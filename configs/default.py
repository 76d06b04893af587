"""Default: real Fashion-MNIST, 5 tasks of 2 classes, LwF, ResNet-18 (width 16).

Sized for a 2-core CPU: LwF or finetune finish in about 9 minutes, MFGR (a
300-step generator per incremental task) in about half an hour. Switch the
method with `--config.method=...`, any module's name under mfgr_jax/methods/
(README, "Methods"; an unknown name lists them).
"""

import ml_collections

from mfgr_jax import methods


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = 'lwf'
  # Workdir of another run of the same setting whose task-0 model to reuse
  # ("we fix the initial model for all methods"); '' trains task 0 here.
  config.init_from = ''

  config.data = ml_collections.ConfigDict()
  # fashion_mnist | cifar100 | tiny_imagenet | caltech_birds2011 | caltech101 |
  # cub_caltech (CUB's 200 labels, then Caltech-101's 102) | synthetic
  config.data.name = 'fashion_mnist'
  config.data.data_dir = ''  # where TFDS keeps prepared data; '' = ~/tensorflow_datasets
  config.data.manual_dir = ''  # official archives; '' = the dataset's usual place
  config.data.download = True  # fall back to TFDS's download when nothing is found locally
  config.data.max_train_per_class = 0  # >0: a fixed (seed-0) subset of each class's training images
  config.data.max_test_per_class = 0  # >0: the same for the test images
  config.data.image_size = 0  # >0: resize every image to this square size (PIL bilinear)
  config.data.crop_padding = 2
  config.data.flip = True
  config.data.synthetic = ml_collections.ConfigDict(dict(
      num_classes=10, image_size=28, channels=1, train_per_class=256, test_per_class=64, seed=0))

  config.scenario = ml_collections.ConfigDict()
  config.scenario.class_order = 'identity'  # identity | seeded | comma-separated label ids
  config.scenario.class_order_seed = 1993
  config.scenario.base_classes = 0  # 0: the first task has `increment` classes too
  config.scenario.increment = 2
  config.scenario.num_tasks = 0  # >0: stop after this many tasks

  # stem: 'cifar' (3x3, no pooling) or 'imagenet' (7x7/2 + max-pool, for 224x224).
  # compute_dtype: 'bfloat16' for mixed precision on GPU/TPU (parameters, BN
  # statistics and losses stay float32); XLA's CPU is no faster in bfloat16.
  config.model = ml_collections.ConfigDict(dict(depth=18, width=16, stem='cifar',
                                                compute_dtype='float32'))

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 2
  config.train.batch_size = 128
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.eval_batch_size = 1000
  # A step whose loss or gradient is NaN/Inf is never applied; then 'stop' ends
  # the run naming the step and the terms, 'skip' counts it (results.json's
  # skipped_steps) and goes on.
  config.on_nonfinite = 'stop'

  # Every method's and stage I's own sections (distillation, lwm, ewc, mas, icarl,
  # muc, generator, deepinversion, replay), with their defaults and documentation,
  # live with the method: the `CONFIG` of each module under mfgr_jax/methods/ and
  # of mfgr_jax/synthesis.py.
  config.update(methods.default_config_sections())

  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  return config
