"""Oracle: warm-started training on every seen class's data (the code's upper bound).

Not joint training from scratch: each task continues from the previous model
with the widened head, as `--method oracle --dataloader_type oracle` does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mfgr_jax.methods import Method, MethodState
from mfgr_jax.methods.finetune import make_loss
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment


def seen_class_images(experiment: Experiment, task: Task,
                      method_state: MethodState) -> np.ndarray:
  del method_state
  return experiment.class_images(0, task.num_seen)


METHODS = (Method('oracle', make_loss=make_loss, train_images=seen_class_images),)
