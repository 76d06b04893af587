"""results.json: one run's results, task by task (the output contract of docs/design.md)."""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from mfgr_jax import evaluation

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment


FILE_NAME = 'results.json'
# The fields that may differ between two runs with equal results: wall-clock times,
# rates, and what each task ran on (backend, CPU kind, XLA flags).
RUN_ENVIRONMENT = ('seconds', 'throughput', 'machine')


def read_results(folder: str | pathlib.Path) -> dict | None:
  """The results.json in `folder` (a workdir or a kept run), or None where there is
  none that can be read (absent, or cut short by a kill of another writer)."""
  try:
    return json.loads((pathlib.Path(folder) / FILE_NAME).read_text())
  except (OSError, ValueError):
    return None


def new_results(experiment: Experiment) -> dict:
  return {
      'method': experiment.method.name, 'dataset': experiment.dataset.name,
      'seed': experiment.config.seed, 'class_order': experiment.order,
      'class_names': experiment.dataset.class_names,
      'tasks': [list(t.classes) for t in experiment.tasks],
      'accuracy': [], 'accuracy_matrix': [], 'old_accuracy': [], 'new_accuracy': [],
      'per_class_accuracy': [], 'confusion_matrix': [], 'seconds': [], 'throughput': [],
      'machine': [], 'skipped_steps': [],
      'task0_from': None,
      'average_incremental_accuracy': None, 'last_accuracy': None, 'forgetting': None,
      'metric_definitions': evaluation.__doc__.split('\n\n', 1)[1].strip(),
  }


def record_task(results: dict, order: list[int], metrics: dict, seconds: dict,
                throughput: dict, skipped: dict, machine: dict) -> None:
  """Appends one task's evaluation to `results` and refreshes the summaries.
  `machine` is what the task ran on (`cpu_flags.machine()`)."""
  results['accuracy'].append(metrics['accuracy'])
  results['accuracy_matrix'].append(metrics['task_accuracies'])
  results['old_accuracy'].append(metrics['old_accuracy'])
  results['new_accuracy'].append(metrics['new_accuracy'])
  results['per_class_accuracy'].append(
      {str(order[c]): a for c, a in enumerate(metrics['per_class_accuracy'])})
  results['confusion_matrix'].append(metrics['confusion_matrix'])
  results['seconds'].append(seconds)
  results['throughput'].append(throughput)
  # Results of runs made before this field existed hold none for their earlier tasks.
  results.setdefault('machine', [None] * (len(results['accuracy']) - 1)).append(machine)
  results['skipped_steps'].append(dict(skipped))
  results['average_incremental_accuracy'] = evaluation.average_incremental_accuracy(
      results['accuracy'])
  results['last_accuracy'] = results['accuracy'][-1]
  results['forgetting'] = evaluation.forgetting(results['accuracy_matrix'])
