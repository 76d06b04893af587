"""results.json, one run's results task by task (its fields: docs/outputs.md), and
report.md, the same read by a person: made, written (both at
once, atomically) and read here."""

from __future__ import annotations

import json
import pathlib
from typing import TYPE_CHECKING

from mfgr_jax import evaluation
from mfgr_jax import files

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment


FILE_NAME = 'results.json'
# The fields that may differ between two runs with equal results: wall-clock times,
# rates, and what each task ran on (backend, CPU kind, XLA flags).
RUN_ENVIRONMENT = ('seconds', 'throughput', 'machine')
# The `seconds` keys of stage I, one per kind (`stage_one.py`'s kinds take their stage
# names from here, so that reading results needs none of the training code).
GENERATOR_STAGE, PIXEL_POOL_STAGE = 'generator', 'synthesis'
STAGE_ONE_NAMES = (GENERATOR_STAGE, PIXEL_POOL_STAGE)


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


def stage_one_seconds(seconds: dict) -> float | None:
  """Seconds of a task's stage I, whichever kind it was."""
  stages = [seconds[k] for k in STAGE_ONE_NAMES if k in seconds]
  return sum(stages) if stages else None


def stage_two_seconds(seconds: dict) -> float:
  """Seconds of a task's classifier training, a method's head phase included."""
  # results.json from before the generator existed call the classifier stage 'train'.
  return seconds.get('classifier', seconds.get('train', 0.0)) + seconds.get('head', 0.0)


def table_cell(value: float | None) -> str:
  """A number as report tables show it: two decimals, or a dash for none."""
  return '–' if value is None else f'{value:.2f}'


def run_report(results: dict) -> str:
  """One run's report.md: a table of accuracy per task, the accuracy matrix and the
  summary metrics."""
  lines = [
      f"# {results['method']} on {results['dataset']}",
      '',
      f"Class order: {', '.join(map(str, results['class_order']))}",
      '',
      '| task | classes | accuracy (%) | old (%) | new (%) | stage I s | classifier s | '
      'classifier img/s |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for t, classes in enumerate(results['tasks'][:len(results['accuracy'])]):
    seconds = results['seconds'][t]
    lines.append(
        f"| {t} | {len(classes)} | {table_cell(results['accuracy'][t])} | "
        f"{table_cell(results['old_accuracy'][t])} | {table_cell(results['new_accuracy'][t])} | "
        f"{table_cell(stage_one_seconds(seconds))} | {table_cell(stage_two_seconds(seconds))} | "
        f"{table_cell(results['throughput'][t].get('train_images_per_second'))} |")
  lines += ['', 'Accuracy matrix (row: after task t; column: task j):', '',
            '| after \\ on | ' + ' | '.join(str(j) for j in range(len(results['accuracy']))) + ' |',
            '|---' * (len(results['accuracy']) + 1) + '|']
  for t, row in enumerate(results['accuracy_matrix']):
    cells = [table_cell(a) for a in row] + [''] * (len(results['accuracy']) - len(row))
    lines.append(f'| {t} | ' + ' | '.join(cells) + ' |')
  lines += ['', f"- average incremental accuracy: {table_cell(results.get('average_incremental_accuracy'))}",
            f"- last accuracy: {table_cell(results.get('last_accuracy'))}",
            f"- forgetting: {table_cell(results.get('forgetting'))}",
            '', results['metric_definitions'], '']
  return '\n'.join(lines)


def outputs(results: dict) -> dict[str, str]:
  """The text of results.json and report.md, by file name."""
  return {FILE_NAME: files.json_text(results), 'report.md': run_report(results)}


def write_outputs(folder: pathlib.Path, results: dict) -> None:
  """Writes results.json and report.md into `folder`."""
  for name, text in outputs(results).items():
    files.write_atomic(folder / name, text)
