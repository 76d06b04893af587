"""What is fixed for a run: the checked config, the data in output-index space,
the tasks and the method; and what hooks need of it (models, keys, batches)."""

import dataclasses
import functools
import pathlib
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import classifier
from mfgr_jax import config_fields
from mfgr_jax import keys
from mfgr_jax import parallel
from mfgr_jax import run_config
from mfgr_jax import sizes
from mfgr_jax.data.loading import Dataset, check_one_image_size, load_dataset, num_classes
from mfgr_jax.data.loading import subsample_per_class
from mfgr_jax.errors import UserError
from mfgr_jax.methods import Method, get_method
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.pretrained import load_torch_resnet
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task, class_order, listed_classes, make_tasks


@dataclasses.dataclass
class Experiment:
  """Everything fixed for a run: data in output-index space, tasks, method."""
  config: ml_collections.ConfigDict
  workdir: pathlib.Path
  method: Method
  dataset: Dataset
  order: list[int]
  tasks: list[Task]  # the whole scenario, also when `config.scenario.num_tasks` stops early
  train_targets: np.ndarray  # output index of each training image, -1 if not in the order
  test_targets: np.ndarray
  resources: dict = dataclasses.field(default_factory=dict)  # `Method.prepare`'s

  @property
  def tasks_to_run(self) -> list[Task]:
    return self.tasks[:self.config.scenario.num_tasks or len(self.tasks)]

  def model(self, num_classes: int):
    return resnet(self.config.model.depth, num_classes, self.config.model.width,
                  self.config.model.stem, bn_axis_name=parallel.AXIS,
                  dtype=self.config.model.compute_dtype)

  def new_model(self, num_classes: int, key: jax.Array) -> tuple[dict, dict]:
    """(params, batch_stats) of a new model: initialised from `key`, with the backbone
    of `model.init_weights` (a pretrained torchvision/timm ResNet) if set."""
    variables = self.model(num_classes).init(
        key, jnp.zeros((1,) + self.dataset.image_shape, jnp.float32), train=False)
    if self.config.model.init_weights:
      variables = load_torch_resnet(self.config.model.init_weights, variables)
    return variables['params'], variables['batch_stats']

  def variables_like(self, num_classes: int) -> dict:
    """Host zeros shaped like the model's variables: a target for restoring."""
    return parallel.zeros_shaped_like(
        functools.partial(self.model(num_classes).init, train=False), jax.random.PRNGKey(0),
        jnp.zeros((1,) + self.dataset.image_shape))

  def feature_dim(self) -> int:
    """The size of the pooled features the head reads."""
    return self.variables_like(1)['params']['head']['linear']['dense']['kernel'].shape[0]

  def generator(self) -> Generator:
    height, _, channels = self.dataset.image_shape
    config = self.config.generator
    return Generator(image_size=config.image_size or height, channels=channels,
                     latent_dim=config.latent_dim, hidden=config.hidden,
                     architecture=config.architecture, output_size=height,
                     axis_name=parallel.AXIS,
                     track_running_statistics=config.sample_statistics == 'running')

  def task_key(self, task: Task, stream: int) -> jax.Array:
    return keys.task_key(self.config.seed, task.index, stream)

  def class_images(self, first: int, last: int) -> np.ndarray:
    """Indices of the training images of output classes first .. last - 1."""
    return np.flatnonzero((self.train_targets >= first) & (self.train_targets < last))

  def stage_one_steps(self, task: Task) -> int:
    """Stage I steps of `task`: none at task 0 or for methods that replay nothing."""
    return self.method.stage_one.steps(self.config) if task.num_old else 0

  def train_count(self, task: Task) -> int:
    return self.method.train_count(self, task)

  def steps_per_epoch(self, task: Task) -> int:
    return self.train_count(task) // self.config.train.batch_size

  def train_settings(self, task: Task) -> ml_collections.ConfigDict:
    """`config.train` for `task`: at task 0, `init_epochs` and `init_learning_rate`
    replace the epochs and learning rate where set (PyCIL's init_epochs / init_lr)."""
    train = self.config.train
    settings = ml_collections.ConfigDict(train.to_dict())
    if task.index == 0:
      settings.epochs = train.init_epochs or train.epochs
      settings.learning_rate = train.init_learning_rate or train.learning_rate
    return settings

  def total_steps(self, task: Task) -> int:
    return self.train_settings(task).epochs * self.steps_per_epoch(task)

  def head_steps(self, task: Task) -> int:
    """Steps of the method's head phase in `task`: none at task 0, without a head
    phase, or without a stage I to replay."""
    phase = self.method.head_phase
    return phase.steps(self, task) if phase is not None and self.stage_one_steps(task) else 0

  def task_steps(self, task: Task) -> int:
    """Every step of `task`: stage I, the classifier and the head phase."""
    return self.stage_one_steps(task) + self.total_steps(task) + self.head_steps(task)

  def fingerprint(self) -> dict:
    """What must match for a checkpoint of this workdir to be resumed."""
    data = self.config.data
    return {'dataset': self.dataset.name,
            'images': {k: data[k] for k in ('max_train_per_class', 'max_test_per_class',
                                            'image_size')},
            'class_order': self.order, 'tasks': [list(t.classes) for t in self.tasks],
            'model': self.config.model.to_dict(), **self._task0_budget(),
            **self.method.fingerprint(self.config)}

  def _task0_budget(self) -> dict:
    """Task 0's own epochs and learning rate, where set: a task-0 model shared with
    `init_from` must have been trained with them. (Absent when unset, so that the
    fingerprints of runs without them stay as they were.)"""
    train = self.config.train
    if not (train.init_epochs or train.init_learning_rate):
      return {}
    settings = self.train_settings(self.tasks[0])
    return {'task0_budget': {'epochs': settings.epochs, 'learning_rate': settings.learning_rate}}

  def in_batches(self, step: Callable, variables: dict, images: np.ndarray) -> np.ndarray:
    """`step(variables, batch)` of a data-parallel eval step over `images`, in
    batches of `eval_batch_size` (the last padded), concatenated."""
    return parallel.map_in_batches(step, parallel.replicate(variables), images,
                                   self.config.eval_batch_size)

  def features_step(self, task: Task, flip: bool = False, l2_normalise: bool = True) -> Callable:
    """`classifier.make_features_step` of the model after `task`."""
    return classifier.make_features_step(self.model(task.num_seen), self.dataset.mean,
                                         self.dataset.std, flip, l2_normalise)


def check_config(config: ml_collections.ConfigDict, source: str = 'the config',
                 memory: bool = True) -> Method:
  """Every rule of the config, before any data is loaded or anything is compiled:
  each field's (`run_config.get_fields`), then those across fields, and with
  `memory` whether its arrays fit on this machine (`sizes`); returns the method.
  Raises a one-line `UserError` (`source` names the config)."""
  config_fields.check(config, run_config.get_fields(), source)
  method = get_method(config.method)
  if config.method in config.per_method:
    raise UserError(f'{source} has settings for {config.method} in per_method that were not '
                    'applied; run it through python -m mfgr_jax.main, or apply them with '
                    'mfgr_jax.run_config.with_method_settings(config) first')
  parallel.check_divisible(config.train.batch_size, 'train.batch_size')
  parallel.check_divisible(config.eval_batch_size, 'eval_batch_size')
  planned_tasks(config)
  _check_schedule(config.train)
  check_one_image_size(config.data)
  weights = config.model.init_weights
  if weights and not pathlib.Path(weights).expanduser().is_file():
    raise UserError(f'model.init_weights={config.model.init_weights} is not a file; give the '
                    '.safetensors file of a torchvision/timm ResNet-18/34, or set it to \'\'')
  if config.init_from and not (pathlib.Path(config.init_from).expanduser() / 'checkpoints' /
                               'tasks' / '0').exists():
    raise UserError(f'init_from={config.init_from} has no task-0 checkpoint (checkpoints/tasks/0);'
                    ' point it at the workdir of a run that finished task 0, or set it to \'\'')
  method.stage_one.check_config(config)
  method.check_config(config)
  sizes.check_shapes(config)
  if memory:
    sizes.check_memory(config, method.stage_one.section)
  return method


def _check_schedule(train: ml_collections.ConfigDict) -> None:
  if (train.schedule == 'multistep') != bool(train.milestones.strip()):
    raise UserError(f'train.schedule={train.schedule!r} with train.milestones='
                    f'{train.milestones!r}: milestones belong to the multistep schedule; set '
                    "both (e.g. --config.train.schedule=multistep --config.train.milestones=80,120)"
                    ' or neither')


def planned_tasks(config: ml_collections.ConfigDict) -> list[Task]:
  """The scenario's tasks, from the dataset's class count (known without loading it)."""
  order = class_order(num_classes(config.data), config.scenario.class_order,
                      config.scenario.class_order_seed)
  tasks = make_tasks(order, config.scenario.base_classes, config.scenario.increment)
  if config.scenario.num_tasks > len(tasks):
    raise UserError(f'scenario.num_tasks={config.scenario.num_tasks} but the scenario has '
                    f'{len(tasks)} tasks; use 0 (all) or a number up to {len(tasks)}')
  return tasks


def build_experiment(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                     method: Method | None = None) -> Experiment:
  """Checks the config (unless the caller did: `method` is then what `check_config`
  returned), loads the data and builds the scenario; raises `UserError`."""
  method = method or check_config(config)
  # An explicit class order may name a subset: only those classes are loaded.
  with parallel.main_process_first('prepare data'):
    dataset = load_dataset(config.data, listed_classes(config.scenario.class_order))
  if config.data.max_train_per_class or config.data.max_test_per_class:
    dataset = subsample_per_class(dataset, config.data.max_train_per_class,
                                  config.data.max_test_per_class)
  return experiment_of(config, workdir, method, dataset)


def experiment_of(config: ml_collections.ConfigDict, workdir: pathlib.Path, method: Method,
                  dataset: Dataset) -> Experiment:
  """The scenario of a checked config on `dataset` (loaded, or a stand-in of its
  shape: `plan`), with what the method prepares; raises `UserError`."""
  order = class_order(dataset.num_classes, config.scenario.class_order,
                      config.scenario.class_order_seed)
  tasks = make_tasks(order, config.scenario.base_classes, config.scenario.increment)
  output_of_label = np.full(dataset.num_classes, -1, np.int32)
  output_of_label[order] = np.arange(len(order))
  experiment = Experiment(config, workdir, method, dataset, order, tasks,
                          output_of_label[dataset.train_labels],
                          output_of_label[dataset.test_labels])
  method.stage_one.prepare(experiment)
  experiment.resources = method.prepare(experiment)
  for task in experiment.tasks_to_run:
    if experiment.steps_per_epoch(task) == 0:
      raise UserError(f'task {task.index} has {experiment.train_count(task)} training '
                      f'images, fewer than train.batch_size={config.train.batch_size}; lower '
                      'the batch size or use more data per class')
  return experiment
