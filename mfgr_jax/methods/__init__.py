"""Methods: a method is one module under `methods/` that defines `METHODS`.

A `Method` is a record of pure functions, one for each point where methods
differ (FACIL's approach hooks, in the functional style of dm_nevis's
learners): its loss, its stage I (`stage_one`), its teacher, the images it
trains on, what it does after a task and the state it carries to the next
(with the template to restore that state from a checkpoint), how it predicts,
the one-line checks of its settings and the config sections it reads (part of
the checkpoint fingerprint); trainable parameters its loss owns, and a phase
that trains only the head after stage II. Every hook has a default, so a method overrides
only what it changes. The per-task loop (`train.py`) calls the hooks and never
asks which method runs.

The registry is the directory and the installed plugins: every module here that
defines `METHODS`, and every module an installed distribution names in the
entry-point group `mfgr_jax.methods` (a researcher's own package, outside this
one: docs/extending.md), is found by `get_method`, and its `CONFIG` (config
sections with their defaults) joins the run's config (`config_fields`, used by
`run_config.py`).
Task 0 is the same for every method (plain cross-entropy, `Method.task_loss`),
so one task-0 model can be shared across methods, as in the paper.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
from typing import TYPE_CHECKING, Any, Callable

import flax.linen as nn
import ml_collections
import numpy as np
import optax

from mfgr_jax import classifier
from mfgr_jax import config_fields
from mfgr_jax import losses
from mfgr_jax import stage_one as stage_one_kinds
from mfgr_jax.errors import UserError
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# What a method carries from task to task (a pytree of arrays), or None.
MethodState = Any


def cross_entropy_loss(out: classifier.Forward, labels: Any, teacher: classifier.Forward | None,
                       method_state: MethodState) -> tuple[Any, dict]:
  """Cross-entropy over every seen logit: each method's loss at task 0."""
  del teacher, method_state
  ce = losses.cross_entropy(out.logits, labels)
  return ce, {'ce': ce}


def no_teacher(experiment: Experiment, task: Task) -> nn.Module | None:
  del experiment, task
  return None


def previous_model(experiment: Experiment, task: Task) -> nn.Module | None:
  """The frozen model of the previous task (eval mode, never differentiated)."""
  return experiment.model(task.num_old) if task.num_old else None


def new_class_images(experiment: Experiment, task: Task, method_state: MethodState) -> np.ndarray:
  """The training images of the task's new classes."""
  del method_state
  return experiment.class_images(task.num_old, task.num_seen)


def count_images_without_state(experiment: Experiment, task: Task) -> int:
  """How many images the method's `train_images` gives when it carries nothing: right
  for every method whose training images do not depend on its state."""
  return len(experiment.method.train_images(experiment, task, None))


def carry_nothing(experiment: Experiment, task: Task, variables: dict,
                  method_state: MethodState) -> MethodState:
  del experiment, task, variables, method_state
  return None


def nothing_carried(experiment: Experiment, task: Task) -> MethodState:
  del experiment, task
  return None


def argmax_of_seen_logits(experiment: Experiment, task: Task, variables: dict,
                          method_state: MethodState, images: np.ndarray) -> np.ndarray:
  """The predicted class: the argmax of the logits over the seen classes."""
  del method_state
  predict = classifier.make_predict_step(experiment.model(task.num_seen), experiment.dataset.mean,
                                         experiment.dataset.std)
  return experiment.in_batches(predict, variables, images)


def no_loss_params(experiment: Experiment, task: Task, key: Any) -> Any:
  del experiment, task, key
  return None


def no_checks(config: ml_collections.ConfigDict) -> None:
  del config


def nothing_to_prepare(experiment: Experiment) -> dict:
  del experiment
  return {}


@dataclasses.dataclass(frozen=True)
class HeadPhase:
  """A phase after stage II that trains only the classifier's head, on the task's
  images and replayed ones, with the backbone frozen in eval mode (its BatchNorm
  statistics unchanged): R-DFCIL's class-balanced head fine-tuning. It runs at
  tasks t > 0 of a method with a stage I, as the checkpointed stage 'head'.
  """
  # (experiment, task) -> its number of steps.
  steps: Callable[[Experiment, Task], int]
  # (experiment, task, stage I's replay arrays, the old model's replicated
  # variables) -> its loss, run in `classifier.make_replay_step(head_only=True)`.
  make_loss: Callable[[Experiment, Task, Any, Any], classifier.ReplayLoss]
  # (config, steps) -> the head's optimiser, new for the phase.
  optimizer: Callable[[ml_collections.ConfigDict, int], optax.GradientTransformation]


@dataclasses.dataclass(frozen=True)
class Method:
  """A class-incremental method as the hooks the per-task loop calls."""
  name: str
  # (task, config) -> the classifier loss of an incremental task t > 0
  # (`classifier.ClassifierLoss`, or with a stage I a `classifier.ReplayLoss`);
  # task 0 is plain cross-entropy for every method (`task_loss`).
  make_loss: Callable[[Task, ml_collections.ConfigDict],
                      classifier.ClassifierLoss | classifier.ReplayLoss]
  # Config sections the method reads: they are part of the checkpoint fingerprint.
  sections: tuple[str, ...] = ()
  # (experiment, task) -> the frozen model run on each batch for the loss, or None.
  teacher: Callable[[Experiment, Task], nn.Module | None] = no_teacher
  # Stage I before each incremental task: what stage II replays (`stage_one.py`).
  stage_one: stage_one_kinds.StageOne = stage_one_kinds.NONE
  # (experiment, task, method_state) -> indices of the training images the task learns
  # from, and (experiment, task) -> their count, known before the task runs (override
  # it when the images depend on the state, as iCaRL's memory does).
  train_images: Callable[[Experiment, Task, MethodState], np.ndarray] = new_class_images
  train_count: Callable[[Experiment, Task], int] = count_images_without_state
  # (experiment, task, model variables after it, method_state) -> the method state
  # after it:
  # what the method carries to the next task (importance, memory, side heads).
  after_task: Callable[[Experiment, Task, dict, MethodState], MethodState] = carry_nothing
  # Its key in results.json's `seconds` (e.g. 'importance'); '' if it does nothing.
  after_task_name: str = ''
  # (experiment, task) -> host arrays shaped like the state after `task`, the
  # target for restoring it from a checkpoint; None if the method carries nothing.
  state_like: Callable[[Experiment, Task], MethodState] = nothing_carried
  # (experiment, task, variables, method_state, images) -> predicted output indices.
  predict: Callable[[Experiment, Task, dict, MethodState, np.ndarray],
                    np.ndarray] = argmax_of_seen_logits
  # One-line `UserError`s for bad settings, before any data is loaded.
  check_config: Callable[[ml_collections.ConfigDict], None] = no_checks
  # After the data is loaded: checks that need it, and what the method needs
  # besides the dataset (e.g. MUC's auxiliary images), in `experiment.resources`.
  prepare: Callable[[Experiment], dict] = nothing_to_prepare
  # (experiment, task, key) -> trainable parameters of the task's loss (a pytree,
  # e.g. R-DFCIL's projections) or None. They join the classifier's params under
  # `resnet.LOSS_PARAMS`, where the loss finds them (`Forward.params`), are
  # optimised and checkpointed with it, and are dropped after the task.
  loss_params: Callable[[Experiment, Task, Any], Any] = no_loss_params
  # Trains the head alone after stage II (`HeadPhase`), or None.
  head_phase: HeadPhase | None = None

  def task_loss(self, task: Task, config: ml_collections.ConfigDict
                ) -> classifier.ClassifierLoss | classifier.ReplayLoss:
    """The classifier loss of `task`: plain cross-entropy at task 0, where
    nothing is old (the same for every method, so one task-0 model serves them
    all: `init_from`), the method's `make_loss` after it."""
    return self.make_loss(task, config) if task.num_old else cross_entropy_loss

  def fingerprint(self, config: ml_collections.ConfigDict) -> dict:
    """The method's part of the checkpoint fingerprint: its name and its sections
    (`config_fields.fingerprint`)."""
    sections = (self.stage_one.section,) + self.sections if self.stage_one.section else self.sections
    fields = config_sections()
    return {'method': self.name,
            **{s: config_fields.fingerprint(config[s].to_dict(), fields[s]) for s in sections}}


# The entry-point group under which another distribution declares its method
# modules (pyproject.toml: [project.entry-points."mfgr_jax.methods"] NAME = "MODULE").
ENTRY_POINT_GROUP = 'mfgr_jax.methods'


def _plugin_modules() -> list[Any]:
  """The method modules that installed distributions declare in ENTRY_POINT_GROUP."""
  modules = []
  for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
    where = f'method plugin {entry.value!r} (entry point {entry.name!r} of {entry.dist.name})'
    try:
      module = entry.load()
    except Exception as e:  # any error of the plugin's own code
      raise UserError(f'{where} failed to import: {type(e).__name__}: {e}; fix it, or '
                      f'uninstall {entry.dist.name}') from e
    if not hasattr(module, 'METHODS'):
      raise UserError(f'{where} defines no METHODS; point the entry point at a module '
                      'that defines METHODS (docs/extending.md)')
    modules.append(module)
  return modules


def _method_modules() -> list[Any]:
  """Every module of this package that defines METHODS, by name, then the plugins'."""
  modules = [importlib.import_module(f'{__name__}.{info.name}')
             for info in pkgutil.iter_modules(__path__)]
  return [m for m in modules if hasattr(m, 'METHODS')] + _plugin_modules()


def all_methods() -> dict[str, Method]:
  registry, defined_in = {}, {}
  for module in _method_modules():
    for method in module.METHODS:
      if method.name in registry:
        raise UserError(f'method {method.name!r} is defined twice ({defined_in[method.name]} '
                        f'and {module.__name__}); rename one of them')
      registry[method.name], defined_in[method.name] = method, module.__name__
  return registry


def get_method(name: str) -> Method:
  registry = all_methods()
  if name not in registry:
    raise UserError(f'unknown method {name!r}; choose one of {", ".join(sorted(registry))} '
                    '(--config.method=...)')
  return registry[name]


def config_sections() -> dict[str, dict]:
  """Every config section a method or a stage I reads, as fields with their
  defaults and rules (each module's `CONFIG`, `config_fields.py`);
  `run_config.get_fields` adds them to the run's config."""
  sections = dict(stage_one_kinds.CONFIG)
  for module in _method_modules():
    for name, section in getattr(module, 'CONFIG', {}).items():
      if name in sections:
        raise UserError(f'config section {name!r} is defined twice (again in '
                        f'{module.__name__}); rename one of them')
      sections[name] = section
  return sections

