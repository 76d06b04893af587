"""Methods: each module defines one `Method` record; `get_method` looks it up.

A method owns its classifier loss and which data it trains on; the per-task
loop (`train.py`) owns data, steps, evaluation, checkpoints and I/O. Task 0 is
the same for every method (plain cross-entropy), so one task-0 model can be
shared across methods, as in the paper.
"""

import dataclasses
from typing import Any, Callable

import jax
import ml_collections

from mfgr_jax.errors import UserError
from mfgr_jax.models.resnet import Forward
from mfgr_jax.scenario import Task

# (the model's outputs, logits over the seen classes; output-index labels; the
# frozen previous model's outputs on the same images, logits over the old
# classes, or None; what the method carried from earlier tasks, or None)
# -> (loss, metrics). Runs inside the jitted step.
ClassifierLoss = Callable[[Forward, jax.Array, Forward | None, Any],
                          tuple[jax.Array, dict[str, jax.Array]]]
# Replay (stage II): (outputs on the real batch, labels, teacher outputs on it,
# outputs on the replayed batch, teacher outputs on it) -> (loss, metrics).
ReplayLoss = Callable[[Forward, jax.Array, Forward, Forward, Forward],
                      tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Importance:
  """How a quadratic-penalty method (EWC, MAS) measures parameter importance
  after a task (`consolidation.py`): per example, `reduce` of the gradient of
  `make_score(task, config)(logits over the seen classes)`."""
  make_score: Callable[[Task, ml_collections.ConfigDict], Callable[[jax.Array], jax.Array]]
  reduce: Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  # Whether the frozen previous model runs on each batch (distillation).
  uses_teacher: bool
  # Whether incremental tasks train on every seen class's data (oracle) or only the new ones.
  trains_on_all_seen: bool
  # Builds the task's loss from the task and the run's config: a ClassifierLoss,
  # or a ReplayLoss at tasks t > 0 of methods that replay synthesised images.
  make_loss: Callable[[Task, ml_collections.ConfigDict], ClassifierLoss | ReplayLoss]
  # Stage I of methods that replay synthesised old-class images at tasks t > 0,
  # named by its config section: '' (none), 'generator' (MFGR: a generator
  # trained with `generator_terms`) or 'deepinversion' (a pool of optimised images).
  synthesis: str = ''
  # Loss terms (`inversion.GENERATOR_TERMS`) of the generator trained against
  # the old model before each incremental task.
  generator_terms: tuple[str, ...] = ()
  # The method's own config section (its hyperparameters; part of the
  # checkpoint fingerprint), '' if none.
  config_section: str = ''
  # Methods with an exemplar memory (iCaRL): its size is in the config section;
  # the memory joins the new data in training and classifies by nearest mean.
  exemplars: bool = False
  # MUC: side classifiers trained after each task (config section `muc`), carried
  # to the next task for the loss.
  side_classifiers: bool = False
  # Methods with an importance-weighted penalty on the backbone (EWC, MAS):
  # how importance is measured; its weight and merging are in the config section.
  importance: Importance | None = None


def get_method(name: str) -> Method:
  # Imported here so that method modules can import this one for `Method`.
  from mfgr_jax.methods import deepinversion, ewc, finetune, icarl, lwf, lwm, mas, mfgr, muc, oracle  # pylint: disable=g-import-not-at-top
  registry = {m.name: m for module in (deepinversion, ewc, finetune, icarl, lwf, lwm, mas, mfgr,
                                       muc, oracle)
              for m in module.METHODS}
  if name not in registry:
    raise UserError(f'unknown method {name!r}; choose one of {", ".join(sorted(registry))} '
                    '(--config.method=...)')
  return registry[name]
