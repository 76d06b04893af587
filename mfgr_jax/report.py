"""Human-readable outputs of a run: `report.md` from the results dict."""

import json
import os
import pathlib
from typing import Any

import numpy as np
import PIL.Image


def write_atomic(path: pathlib.Path, text: str) -> None:
  """Writes `text` to `path` so that a kill leaves the old file or the new one."""
  tmp = path.with_name(f'.{path.name}.tmp')
  tmp.write_text(text)
  os.replace(tmp, path)


def write_json(path: pathlib.Path, data: Any) -> None:
  write_atomic(path, json.dumps(data, indent=1) + '\n')


def write_png(path: pathlib.Path, image: np.ndarray) -> None:
  """Writes a uint8 HxWxC (C = 1 or 3) image as PNG, atomically."""
  tmp = path.with_name(f'.{path.name}.tmp')
  PIL.Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(tmp, format='PNG')
  os.replace(tmp, path)


def _fmt(value: float | None) -> str:
  return '–' if value is None else f'{value:.2f}'


def results_markdown(results: dict) -> str:
  """A table of accuracy per task, the accuracy matrix and the summary metrics."""
  lines = [
      f"# {results['method']} on {results['dataset']}",
      '',
      f"Class order: {', '.join(map(str, results['class_order']))}",
      '',
      '| task | classes | accuracy (%) | old (%) | new (%) | generator s | classifier s | '
      'classifier img/s |',
      '|---|---|---|---|---|---|---|---|',
  ]
  for t, classes in enumerate(results['tasks'][:len(results['accuracy'])]):
    seconds = results['seconds'][t]
    lines.append(
        f"| {t} | {len(classes)} | {_fmt(results['accuracy'][t])} | "
        f"{_fmt(results['old_accuracy'][t])} | {_fmt(results['new_accuracy'][t])} | "
        f"{_fmt(seconds.get('generator'))} | {_fmt(seconds['classifier'])} | "
        f"{_fmt(results['throughput'][t].get('train_images_per_second'))} |")
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
