"""A report across runs of one setting (methods x seeds); one run's own report.md is
`results.run_report`'s.

  python -m mfgr_jax.report RUN_DIR... --out DIR [--groups NAME=IDS]... [--classes IDS]
      [--reference METHOD] [--title TITLE]

reads every run's `results.json` and writes DIR/report.md: the accuracy after each
task per method with the average incremental accuracy, forgetting and average
improvement (the layout of the paper's Tables 5-8), old/new and named groups of
classes after the last task with the wall time of each stage, per-class accuracy
(the paper's Table 1) and every run's own numbers; and the charts
DIR/accuracy_curves.png and DIR/old_new.png that it embeds.
"""

import pathlib
import shlex
import sys
from typing import Sequence

from absl import flags
import numpy as np

from mfgr_jax import command_line
from mfgr_jax import plots
from mfgr_jax.files import write_atomic, write_png
from mfgr_jax.results import FILE_NAME, read_results, stage_one_seconds, stage_two_seconds
from mfgr_jax.results import table_cell


# Across runs. `Runs` maps a run directory, as given on the command line, to its results.
Runs = dict[str, dict]
_SETTING = ('dataset', 'class_order', 'tasks')


def _error(message: str) -> SystemExit:
  return SystemExit(f'mfgr_jax.report: error: {message}')


def load_runs(dirs: Sequence[str]) -> Runs:
  """Reads each run's results; all must share the first run's dataset, class order and tasks."""
  runs = {}
  for run in dirs:
    runs[run] = read_results(run)
    if runs[run] is None:
      raise _error(f'{pathlib.Path(run) / FILE_NAME} is missing or unreadable; pass workdirs '
                   'of runs that finished at least one task')
  first = dirs[0]
  for run, results in runs.items():
    for key in _SETTING:
      if results[key] != runs[first][key]:
        raise _error(f'{run} and {first} differ in {key}; a report compares runs of one setting')
  return runs


def _setting_of(runs: Runs) -> dict:
  """The first run's results: their dataset, class order and tasks hold for every run."""
  return next(iter(runs.values()))


def _done(results: dict) -> int:
  return len(results['accuracy'])


def _finished(results: dict) -> bool:
  return _done(results) == len(results['tasks'])


def _by_method(runs: Runs) -> dict[str, list[dict]]:
  """The results of each method, methods in first-seen order."""
  methods = {}
  for results in runs.values():
    methods.setdefault(results['method'], []).append(results)
  return methods


def _finished_by_method(runs: Runs) -> dict[str, list[dict]]:
  # Numbers about the last task or the whole sequence would mix tasks if unfinished runs counted.
  return {method: [r for r in results if _finished(r)]
          for method, results in _by_method(runs).items()}


def _accuracies_at(results: list[dict], task: int) -> list[float]:
  """Accuracy after `task` of the runs that reached it."""
  return [r['accuracy'][task] for r in results if _done(r) > task]


def _mean(values: Sequence[float | None]) -> float | None:
  values = [v for v in values if v is not None]
  return float(np.mean(values)) if values else None


def _mean_std(values: Sequence[float | None]) -> str:
  values = [v for v in values if v is not None]
  if len(values) < 2:
    return table_cell(values[0] if values else None)
  return f'{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}'


def _task_means(results: list[dict], num_tasks: int) -> list[float | None]:
  return [_mean(_accuracies_at(results, t)) for t in range(num_tasks)]


def _improvement(reference: list[float | None], method: list[float | None]) -> float | None:
  """The paper's avg. improvement: mean over tasks 2..N of reference minus method."""
  return _mean([r - m for r, m in zip(reference[1:], method[1:])
                if r is not None and m is not None])


def group_accuracy(results: dict, labels: list[int], task: int = -1) -> float:
  """Top-1 (%) on the test images of `labels` (dataset ids) after `task`, from its confusion matrix.

  Rows and columns of the matrix are outputs, i.e. positions in the class order.
  """
  matrix = np.asarray(results['confusion_matrix'][task])
  outputs = [results['class_order'].index(label) for label in labels]
  return float(100.0 * matrix[outputs, outputs].sum() / matrix[outputs].sum())


def _row(cells: Sequence[str]) -> str:
  return '| ' + ' | '.join(cells) + ' |'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
  return [_row(header), '|' + '---|' * len(header), *map(_row, rows)]


def accuracy_table(runs: Runs, reference: str | None) -> list[str]:
  """Accuracy after each task per method (mean ± std over seeds), as the paper's Tables 5-8."""
  num_tasks = len(_setting_of(runs)['tasks'])
  methods, finished = _by_method(runs), _finished_by_method(runs)
  header = ['method', 'runs', *(f'Task {t + 1}' for t in range(num_tasks)),
            'avg. incremental', 'forgetting']
  if reference:
    header.append('avg. improvement')
  reference_means = _task_means(methods[reference], num_tasks) if reference else None
  rows = []
  for method, results in methods.items():
    row = [method, str(len(results)),
           *(_mean_std(_accuracies_at(results, t)) for t in range(num_tasks)),
           *(_mean_std([r[key] for r in finished[method]])
             for key in ('average_incremental_accuracy', 'forgetting'))]
    if reference:
      row.append('–' if method == reference else
                 table_cell(_improvement(reference_means, _task_means(results, num_tasks))))
    rows.append(row)
  return _table(header, rows)


def _last_task(results: dict, groups: dict[str, list[int]]) -> dict[str, float | None]:
  """One finished run's numbers after its last task, and its stage times."""
  seconds = results['seconds'][1:]  # task 0 trains the same way for every method
  summary = {'old': results['old_accuracy'][-1], 'new': results['new_accuracy'][-1]}
  summary.update({name: group_accuracy(results, labels) for name, labels in groups.items()})
  summary['stage I s'] = sum(stage_one_seconds(s) or 0.0 for s in seconds) or None
  summary['classifier s'] = sum(stage_two_seconds(s) for s in seconds) or None
  return summary


def last_task_table(runs: Runs, groups: dict[str, list[int]]) -> list[str]:
  """Old, new and group accuracy after the last task and stage times, mean ± std per method."""
  # The ids in the header also keep a group called "old" or "new" apart from those columns.
  groups = {f"{name} ({','.join(map(str, labels))})": labels for name, labels in groups.items()}
  summaries = {method: [_last_task(r, groups) for r in results]
               for method, results in _finished_by_method(runs).items()}
  columns = ['old', 'new', *groups, 'stage I s', 'classifier s']
  return _table(['method', 'finished runs', *columns],
                [[method, str(len(mine)), *(_mean_std([s[c] for s in mine]) for c in columns)]
                 for method, mine in summaries.items()])


def per_class_table(runs: Runs, classes: list[int]) -> list[str]:
  """Accuracy of `classes` (dataset ids) when learned and per method after the last task."""
  first = _setting_of(runs)
  learned = [next(t for t, task in enumerate(first['tasks']) if label in task) for label in classes]
  rows = [['when learned', *(
      table_cell(_mean([r['per_class_accuracy'][t][str(label)] for r in runs.values() if _done(r) > t]))
      for label, t in zip(classes, learned))]]
  rows += [[method, *(table_cell(_mean([r['per_class_accuracy'][-1][str(label)] for r in results]))
                      for label in classes)]
           for method, results in _finished_by_method(runs).items()]
  return _table(['', *(first['class_names'][label] for label in classes)], rows)


# The confusion table leaves out the classes that take less than this % for every method.
CONFUSION_SHARE_SHOWN = 1.0


def predicted_shares(results: dict, label: int) -> dict[int, float]:
  """Where the test images of `label` (a dataset id) went after the last task: % predicted
  as each seen class (dataset ids), from the confusion matrix (rows true, columns predicted)."""
  matrix = np.asarray(results['confusion_matrix'][-1], dtype=float)
  row = matrix[results['class_order'].index(label)]
  return {results['class_order'][o]: 100.0 * count / row.sum() for o, count in enumerate(row)}


def confusion_table(runs: Runs, label: int) -> list[str]:
  """Per method with finished runs (mean over them), the % of `label`'s test images predicted
  as each class after the last task: `label` itself, then the classes that take at least
  `CONFUSION_SHARE_SHOWN` % for some method."""
  names = _setting_of(runs)['class_names']
  means = {}
  for method, results in _finished_by_method(runs).items():
    shares = [predicted_shares(r, label) for r in results]
    if shares:
      means[method] = {c: _mean([s[c] for s in shares]) for c in shares[0]}
  shown = {c for row in means.values() for c, share in row.items()
           if share >= CONFUSION_SHARE_SHOWN or c == label}
  columns = sorted(shown, key=lambda c: (c != label, c))  # the class itself first
  header = [f'{names[label]} ({label}) predicted as', *(f'{names[c]} ({c})' for c in columns)]
  return _table(header, [[method, *(table_cell(row[c]) for c in columns)]
                         for method, row in means.items()])


def runs_table(runs: Runs) -> list[str]:
  """Every run's own row, in the order given."""
  return _table(['run', 'method', 'seed', 'tasks done', 'last accuracy', 'avg. incremental'],
                [[run, r['method'], str(r['seed']), f"{_done(r)}/{len(r['tasks'])}",
                  table_cell(r['last_accuracy']), table_cell(r['average_incremental_accuracy'])]
                 for run, r in runs.items()])


def accuracy_curves(runs: Runs) -> np.ndarray:
  """Accuracy against the number of classes seen, one line per method (mean over seeds)."""
  setting = _setting_of(runs)
  seen = np.cumsum([len(task) for task in setting['tasks']]).tolist()
  means = {method: _task_means(results, len(seen)) for method, results in _by_method(runs).items()}
  return plots.line_chart(
      seen, means, title=f"Accuracy on all seen classes ({setting['dataset']})",
      x_label='number of classes seen', y_label='accuracy (%)')


def old_new_bars(runs: Runs) -> np.ndarray:
  """Old and new accuracy after the last task per method (mean over finished runs)."""
  finished = _finished_by_method(runs)
  return plots.bar_chart(
      list(finished),
      {f'{kind} classes': [_mean([r[f'{kind}_accuracy'][-1] for r in results])
                           for results in finished.values()] for kind in ('old', 'new')},
      title=f"Old and new classes after the last task ({_setting_of(runs)['dataset']})",
      x_label='method', y_label='accuracy (%)')


def _setting_lines(runs: Runs) -> list[str]:
  setting = _setting_of(runs)
  names = setting['class_names']
  return [f"Dataset `{setting['dataset']}`, {len(setting['tasks'])} tasks "
          '(class, dataset label id):', '',
          *(f'- Task {t + 1}: ' + ', '.join(f'{names[label]} ({label})' for label in task)
            for t, task in enumerate(setting['tasks']))]


def _unfinished(runs: Runs) -> list[str]:
  unfinished = [f"{run} ({_done(r)} of {len(r['tasks'])} tasks)"
                for run, r in runs.items() if not _finished(r)]
  if not unfinished:
    return []
  return ['', 'Unfinished runs, counted in the task columns they reached and left out of the '
          'numbers about the whole sequence or the last task: ' + ', '.join(unfinished) + '.']


def report_markdown(runs: Runs, groups: dict[str, list[int]], classes: list[int],
                    reference: str | None, title: str, command: str,
                    confusion: Sequence[int] = ()) -> str:
  """The whole report.md; `command` is the command line that produced it."""
  improvement = (f" Avg. improvement: the mean over tasks 2..N of {reference}'s accuracy minus "
                 "the method's (both means over seeds)." if reference else '')
  lines = [
      f'# {title}', '', f'Generated by `{command}`.', '', *_setting_lines(runs), '',
      '## Accuracy after each task', '',
      'Top-1 (%) on the test images of all classes seen so far (argmax over all seen logits), '
      'mean ± sample std over the runs (seeds) of each method. Average incremental accuracy and '
      'forgetting as defined in the README.' + improvement, '',
      *accuracy_table(runs, reference), *_unfinished(runs), '',
      '![Accuracy after each task](accuracy_curves.png)', '',
      '## After the last task', '',
      "Old, new and the named groups of classes are top-1 (%) over those classes' test images "
      'with the argmax over all seen classes. Seconds: wall time of each stage summed over the '
      'incremental tasks (task 0 excluded; classifier: with a head phase, if the method has '
      'one). Mean ± sample std over finished runs.', '',
      *last_task_table(runs, groups), '', '![Old and new accuracy](old_new.png)', '']
  if classes:
    lines += ['## Per class', '',
              'Top-1 (%) of each class: right after the task that introduced it (mean over all '
              'runs), then after the last task (mean over the finished runs of each method).', '',
              *per_class_table(runs, classes), '']
  if confusion:
    lines += ['## Where the test images of a class go', '',
              'After the last task, the % of the class\'s test images predicted as each class '
              '(mean over the finished runs of each method; other classes that take under '
              f'{CONFUSION_SHARE_SHOWN:g} % for every method left out).', '']
    for label in confusion:
      lines += [*confusion_table(runs, label), '']
  lines += ['## Every run', '', *runs_table(runs)]
  return '\n'.join(lines) + '\n'


def _label_ids(text: str, flag: str) -> list[int]:
  try:
    return [int(i) for i in text.split(',')]
  except ValueError:
    raise _error(f'{flag} takes comma-separated dataset label ids, not {text!r}') from None


def _group(spec: str) -> tuple[str, list[int]]:
  name, equals, ids = spec.partition('=')
  if not equals:
    raise _error(f'--groups {spec!r} is not NAME=ID,ID,...')
  return name.strip(), _label_ids(ids, '--groups')


def _check_labels(runs: Runs, labels: list[int]) -> None:
  order = _setting_of(runs)['class_order']
  unknown = sorted(set(labels) - set(order))
  if unknown:
    raise _error(f'label ids {unknown} are not among the classes of the runs, {sorted(order)}')


def _reference(runs: Runs, requested: str | None) -> str | None:
  methods = _by_method(runs)
  if requested is None:
    return 'mfgr' if 'mfgr' in methods else None
  if requested not in methods:
    raise _error(f'--reference {requested!r} is none of the methods {list(methods)}')
  return requested


def _flag_values() -> flags.FlagValues:
  """The command line's flags (see `command_line`)."""
  values = flags.FlagValues()
  flags.DEFINE_string('out', None, 'folder to write report.md and the charts to',
                      flag_values=values)
  flags.DEFINE_multi_string('groups', [], 'a named group of dataset label ids, e.g. '
                            '"fine-grained=0,2,4,6" (repeatable)', flag_values=values)
  flags.DEFINE_string('classes', None, 'dataset label ids for the per-class table, e.g. 0,2,4',
                      flag_values=values)
  flags.DEFINE_string('confusion', None, 'dataset label ids whose test images to follow: '
                      'the % predicted as each class, per method, e.g. 7', flag_values=values)
  flags.DEFINE_string('reference', None, 'the method that avg. improvement compares with '
                      '(default: mfgr if present, else no such column)', flag_values=values)
  flags.DEFINE_string('title', 'Comparison of runs', 'the report\'s title', flag_values=values)
  return values


_USAGE = ('python -m mfgr_jax.report RUN_WORKDIR... --out DIR [--groups NAME=IDS]... '
          '[--classes IDS] [--confusion IDS] [--reference METHOD] [--title TEXT]: writes '
          'DIR/report.md and its charts from the results.json of several runs of one setting '
          '(methods x seeds).')


def _parse(argv: Sequence[str]) -> tuple[flags.FlagValues, list[str]]:
  """(the flags, the run workdirs) of the command line `argv`."""
  values = _flag_values()
  runs = command_line.parse('mfgr_jax.report', _USAGE, values, argv)
  if not runs:
    raise _error('name the workdirs of the runs to compare; see --help')
  if not values.out:
    raise _error('--out=DIR is required: the folder for report.md and its charts')
  return values, runs


def main(argv: Sequence[str]) -> None:
  args, run_dirs = _parse(argv)
  runs = load_runs(run_dirs)
  groups = dict(_group(spec) for spec in args.groups)
  classes = _label_ids(args.classes, '--classes') if args.classes else []
  confusion = _label_ids(args.confusion, '--confusion') if args.confusion else []
  _check_labels(runs, classes + confusion +
                [label for labels in groups.values() for label in labels])
  reference = _reference(runs, args.reference)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  write_png(out / 'accuracy_curves.png', accuracy_curves(runs))
  write_png(out / 'old_new.png', old_new_bars(runs))
  command = 'python -m mfgr_jax.report ' + shlex.join(argv)
  write_atomic(out / 'report.md',
               report_markdown(runs, groups, classes, reference, args.title, command,
                               confusion))
  print(f"mfgr_jax.report: wrote {out / 'report.md'}")


if __name__ == '__main__':
  main(sys.argv[1:])
