"""Default: real Fashion-MNIST, 5 tasks of 2 classes, LwF, ResNet-18 (width 16).

Sized to finish in about 10 minutes on a 2-core CPU. Switch the method with
`--config.method=finetune|lwf|oracle`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.method = 'lwf'
  # Workdir of another run of the same setting whose task-0 model to reuse
  # ("we fix the initial model for all methods"); '' trains task 0 here.
  config.init_from = ''

  config.data = ml_collections.ConfigDict()
  config.data.name = 'fashion_mnist'  # fashion_mnist | cifar100 | synthetic
  config.data.data_dir = ''  # where TFDS keeps prepared data; '' = ~/tensorflow_datasets
  config.data.manual_dir = ''  # official archives; '' = the dataset's usual place
  config.data.download = True  # fall back to TFDS's download when nothing is found locally
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

  config.model = ml_collections.ConfigDict(dict(depth=18, width=16))

  config.train = ml_collections.ConfigDict()
  config.train.epochs = 2
  config.train.batch_size = 128
  config.train.learning_rate = 0.1
  config.train.momentum = 0.9
  config.train.weight_decay = 5e-4
  config.eval_batch_size = 1000

  config.lwf = ml_collections.ConfigDict(dict(temperature=2.0, scale_by_t_squared=False))

  config.log_every_steps = 50
  config.checkpoint_every_steps = 200
  return config
