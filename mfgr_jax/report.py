"""Human-readable outputs of a run: `report.md` from the results dict."""

import json
import os
import pathlib
from typing import Any


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` so that a kill leaves the old file or the new one."""
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(text)
  os.replace(tmp, path)


def write_json(path: pathlib.Path, data: Any) -> None:
  write_atomic(path, json.dumps(data, indent=1) + '\n')


def _fmt(value: float | None) -> str:
  return '–' if value is None else f'{value:.2f}'


def results_markdown(results: dict) -> str:
  """A table of accuracy per task, the accuracy matrix and the summary metrics."""
  lines = [
      f"# {results['method']} on {results['dataset']}",
      '',
      f"Class order: {', '.join(map(str, results['class_order']))}",
      '',
      '| task | classes | accuracy (%) | old (%) | new (%) | train s | img/s |',
      '|---|---|---|---|---|---|---|',
  ]
  for t, classes in enumerate(results['tasks'][:len(results['accuracy'])]):
    seconds = results['seconds'][t]
    lines.append(
        f"| {t} | {len(classes)} | {_fmt(results['accuracy'][t])} | "
        f"{_fmt(results['old_accuracy'][t])} | {_fmt(results['new_accuracy'][t])} | "
        f"{seconds['train']:.0f} | {_fmt(results['train_images_per_second'][t])} |")
  lines += ['', 'Accuracy matrix (row: after task t; column: task j):', '',
            '| after \\ on | ' + ' | '.join(str(j) for j in range(len(results['accuracy']))) + ' |',
            '|---' * (len(results['accuracy']) + 1) + '|']
  for t, row in enumerate(results['accuracy_matrix']):
    cells = [_fmt(a) for a in row] + [''] * (len(results['accuracy']) - len(row))
    lines.append(f'| {t} | ' + ' | '.join(cells) + ' |')
  lines += ['', f"- average incremental accuracy: {_fmt(results.get('average_incremental_accuracy'))}",
            f"- last accuracy: {_fmt(results.get('last_accuracy'))}",
            f"- forgetting: {_fmt(results.get('forgetting'))}",
            '', results['metric_definitions'], '']
  return '\n'.join(lines)
