"""The fields of a run's config: each with its default and the values it allows.

`get_fields()` declares them (the rules are `config_fields.py`'s); `get_config()`
is the config of their defaults, from which every config file under configs/
(and a user's own) starts. The sections a method or a stage I reads join from
the method modules and installed plugins (`methods.config_sections()`). Every run
checks its whole config against these rules before it loads data or compiles
anything (`experiment.check_config`).
"""

from typing import Any, Collection

import ml_collections

from mfgr_jax import classifier
from mfgr_jax import config_fields as F
from mfgr_jax import methods
from mfgr_jax.data.loading import DATASETS
from mfgr_jax.errors import UserError
from mfgr_jax.models.resnet import COMPUTE_DTYPES, STAGE_BLOCKS, STEMS


def _settings_by_method(value: Any) -> bool:
  def plain(tree: Any) -> bool:
    return isinstance(tree, (dict, ml_collections.ConfigDict)) and all(
        plain(v) if isinstance(v, (dict, ml_collections.ConfigDict)) else
        isinstance(v, (bool, int, float, str)) for v in tree.values())
  return plain(value) and all(isinstance(block, (dict, ml_collections.ConfigDict))
                              for block in value.values())


def _milestones(spec: str) -> bool:
  try:
    classifier.parse_milestones(spec)
  except ValueError:
    return False
  return True


def _class_order(spec: str) -> bool:
  return spec in ('identity', 'seeded') or all(
      part.strip().isdigit() for part in spec.split(','))


def get_fields() -> dict:
  """Every field of a run's config: its default and the values it allows
  (`mfgr_jax/config_fields.py`). `get_config` gives the defaults; every run's
  config is checked against these rules before any work."""
  fields = dict(
      seed=F.seed(0),
      method=F.choice('lwf', tuple(sorted(methods.all_methods()))),
      # Workdir of another run of the same setting whose task-0 model to reuse
      # ("we fix the initial model for all methods"); '' trains task 0 here.
      init_from=F.text(''),
      data=dict(
          # fashion_mnist | cifar100 | tiny_imagenet | caltech_birds2011 | caltech101 |
          # cub_caltech (CUB's 200 labels, then Caltech-101's 102) | synthetic
          name=F.choice('fashion_mnist', DATASETS),
          data_dir=F.text(''),  # where TFDS keeps prepared data; '' = ~/tensorflow_datasets
          manual_dir=F.text(''),  # official archives; '' = the dataset's usual place
          # Fall back to TFDS's download when nothing is found locally (and its
          # server answers).
          download=F.boolean(True),
          # >0: a fixed (seed-0) subset of each class's training images; and of its test images.
          max_train_per_class=F.integer(0),
          max_test_per_class=F.integer(0),
          image_size=F.integer(0),  # >0: resize every image to this square size (PIL bilinear)
          crop_padding=F.integer(2),  # random crops of the image padded by this many pixels
          flip=F.boolean(True),
          synthetic=dict(num_classes=F.positive_integer(10), image_size=F.positive_integer(28),
                         channels=F.choice(1, (1, 3)), train_per_class=F.positive_integer(256),
                         test_per_class=F.positive_integer(64), seed=F.seed(0))),
      scenario=dict(
          class_order=F.text('identity', "'identity', 'seeded' or comma-separated label ids",
                             _class_order),
          class_order_seed=F.seed(1993),
          base_classes=F.integer(0),  # 0: the first task has `increment` classes too
          increment=F.positive_integer(2),
          num_tasks=F.integer(0)),  # >0: stop after this many tasks
      # stem: 'cifar' (3x3, no pooling) or 'imagenet' (7x7/2 + max-pool, for 224x224).
      # compute_dtype: 'bfloat16' for mixed precision on GPU/TPU (parameters, BN
      # statistics and losses stay float32); XLA's CPU is no faster in bfloat16.
      # init_weights: '' = random; else a .safetensors file of an ImageNet-pretrained
      # torchvision/timm ResNet-18/34 (stem 'imagenet', width 64) whose backbone task 0
      # starts from (mfgr_jax/models/pretrained.py; the paper's CUB/Caltech setting).
      model=dict(depth=F.choice(18, tuple(sorted(STAGE_BLOCKS))), width=F.positive_integer(16),
                 stem=F.choice('cifar', STEMS), compute_dtype=F.choice('float32', COMPUTE_DTYPES),
                 init_weights=F.text('')),
      train=dict(epochs=F.positive_integer(2), batch_size=F.positive_integer(128),
                 learning_rate=F.positive_number(0.1), momentum=F.number(0.9, below=1.0),
                 weight_decay=F.number(5e-4),
                 # The learning rate over a task: 'cosine' to 0 per step (MFGR's code), or
                 # 'multistep' (ABD's and R-DFCIL's code: PyTorch's MultiStepLR per epoch),
                 # times lr_decay at each of `milestones`: epochs ('100,150,200') or
                 # fractions of the task's epochs ('0.4,0.6,0.8').
                 schedule=F.choice('cosine', ('cosine', 'multistep')),
                 milestones=F.text('', "'' or increasing epochs or fractions, e.g. '80,120'",
                                   _milestones),
                 lr_decay=F.positive_number(0.1),
                 # Task 0's own budget (PyCIL's init_epochs / init_lr); 0 = as the
                 # other tasks. Part of what a shared task-0 model (init_from) must match.
                 init_epochs=F.integer(0), init_learning_rate=F.number(0.0)),
      eval_batch_size=F.positive_integer(1000),
      # A step whose loss or gradient is NaN/Inf is never applied; then 'stop' ends
      # the run naming the step and the terms, 'skip' counts it (results.json's
      # skipped_steps) and goes on.
      on_nonfinite=F.choice('stop', ('stop', 'skip')),
      log_every_steps=F.positive_integer(50),
      checkpoint_every_steps=F.positive_integer(200),
      # Settings a config file gives a method when the run uses it (e.g. the paper
      # configs give abd and rdfcil their official code's): {method: {section:
      # {field: value}}}. The command line applies the run's method's block, except
      # the fields it overrides itself (`with_method_settings`).
      per_method=F.Field({}, 'a mapping {method: {section: {field: value}}}',
                         _settings_by_method))
  # Every method's and stage I's own sections (distillation, lwm, ewc, mas, icarl,
  # muc, generator, deepinversion, replay, abd, rdfcil), with their rules, defaults
  # and documentation, live with the method: the `CONFIG` of each module under
  # mfgr_jax/methods/ and of mfgr_jax/stage_one.py.
  fields.update(methods.config_sections())
  return fields


def get_config() -> ml_collections.ConfigDict:
  return F.defaults(get_fields())


def with_method_settings(config: ml_collections.ConfigDict, explicit: Collection[str] = ()
                         ) -> tuple[ml_collections.ConfigDict, list[str]]:
  """`config` with the block `per_method[config.method]` applied, except the fields
  named in `explicit` (dotted paths a user set on the command line, which win),
  and `per_method` emptied; and the settings applied, as 'path=value'. Raises a
  one-line `UserError` for a block that names no field of the config."""
  if not _settings_by_method(config.get('per_method')) or config.method not in config.per_method:
    return config, []  # nothing to apply (a malformed per_method is refused by the check)
  block = config.per_method[config.method].to_dict()
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  applied = []
  for path, value in F.flatten(block).items():
    if path in explicit:
      continue
    section, _, name = path.rpartition('.')
    target = config
    for part in filter(None, section.split('.')):
      target = target.get(part) if isinstance(target, ml_collections.ConfigDict) else None
    if not isinstance(target, ml_collections.ConfigDict) or name not in target:
      raise UserError(f'per_method.{config.method}.{path} is not a field of the config; fix '
                      "the config file's per_method block")
    target[name] = value
    applied.append(f'{path}={value!r}')
  config.per_method = {}
  return config, applied
