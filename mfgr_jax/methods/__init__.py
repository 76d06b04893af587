"""Methods: each module defines one `Method` record; `get_method` looks it up.

A method owns its classifier loss and which data it trains on; the per-task
loop (`train.py`) owns data, steps, evaluation, checkpoints and I/O. Task 0 is
the same for every method (plain cross-entropy), so one task-0 model can be
shared across methods, as in the paper.
"""

import dataclasses
from typing import Callable

import jax
import ml_collections

from mfgr_jax.errors import UserError
from mfgr_jax.scenario import Task

# (logits over seen classes, output-index labels, teacher logits over old
# classes or None) -> (loss, metrics). Runs inside the jitted step.
ClassifierLoss = Callable[[jax.Array, jax.Array, jax.Array | None],
                          tuple[jax.Array, dict[str, jax.Array]]]


@dataclasses.dataclass(frozen=True)
class Method:
  name: str
  # Whether the frozen previous model runs on each batch (distillation).
  uses_teacher: bool
  # Whether incremental tasks train on every seen class's data (oracle) or only the new ones.
  trains_on_all_seen: bool
  # Builds the task's loss from the task and the config section of the method.
  make_loss: Callable[[Task, ml_collections.ConfigDict], ClassifierLoss]


def get_method(name: str) -> Method:
  # Imported here so that method modules can import this one for `Method`.
  from mfgr_jax.methods import finetune, lwf, oracle  # pylint: disable=g-import-not-at-top
  registry = {m.METHOD.name: m.METHOD for m in (finetune, lwf, oracle)}
  if name not in registry:
    raise UserError(f'unknown method {name!r}; choose one of {", ".join(sorted(registry))} '
                    '(--config.method=...)')
  return registry[name]
