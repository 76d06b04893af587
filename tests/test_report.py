"""The report across runs (report.py): its tables, charts and command line, and that
reading kept runs needs none of the training stack."""

import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

from mfgr_jax import plots
from mfgr_jax import report

ORDER = [2, 0, 1]  # output i is dataset label ORDER[i]
TASKS = [[2], [0], [1]]
NAMES = ['zero', 'one', 'two']  # indexed by dataset label id


def _results(method, seed, accuracy=(100.0, 90.0, 80.0), diagonal=(10, 10, 10), generator=None,
             done=3):
  """A run of TASKS that finished `done` tasks.

  After the last task, `diagonal[i]` of output i's 10 test images are right and the
  others go to the next output; earlier tasks have fixed numbers.
  """
  d = diagonal
  stage = {'classifier': 5.0, 'eval': 1.0, **({'generator': generator} if generator else {})}
  per_task = {
      'accuracy': list(accuracy),
      'old_accuracy': [None, 90.0, 5.0 * (d[0] + d[1])],
      'new_accuracy': [100.0, 80.0, 10.0 * d[2]],
      'per_class_accuracy': [{'2': 100.0}, {'2': 90.0, '0': 80.0},
                             {str(label): 10.0 * right for label, right in zip(ORDER, d)}],
      'confusion_matrix': [[[10]], [[9, 1], [2, 8]],
                           [[d[0], 10 - d[0], 0], [0, d[1], 10 - d[1]], [10 - d[2], 0, d[2]]]],
      'seconds': [{'classifier': 1.0, 'eval': 1.0}, stage, stage],
  }
  return {'method': method, 'dataset': 'toy', 'seed': seed, 'class_order': ORDER,
          'class_names': NAMES, 'tasks': TASKS, **{k: v[:done] for k, v in per_task.items()},
          'average_incremental_accuracy': sum(accuracy[:done]) / done,
          'last_accuracy': accuracy[done - 1],
          'forgetting': accuracy[0] - accuracy[done - 1] if done > 1 else None}


def _write_runs(tmp_path, runs):
  """Writes each results dict as RUN/results.json; returns the run directories."""
  dirs = []
  for name, results in runs.items():
    (tmp_path / name).mkdir(parents=True)
    (tmp_path / name / 'results.json').write_text(json.dumps(results))
    dirs.append(str(tmp_path / name))
  return dirs


def _report(tmp_path, runs, *flags):
  out = tmp_path / 'report'
  report.main(_write_runs(tmp_path, runs) + ['--out', str(out), *flags])
  return (out / 'report.md').read_text()


def _section(text, heading):
  """The table rows under `## heading`."""
  section = text.split(f'## {heading}\n', 1)[1].split('\n## ', 1)[0]
  return [line for line in section.splitlines() if line.startswith('|')]


def _row(rows, first_cell):
  return next(row for row in rows if row.startswith(f'| {first_cell} |'))


def _one_line_error(argv, match):
  with pytest.raises(SystemExit, match=match) as error:
    report.main(argv)
  message = str(error.value)
  assert message.startswith('mfgr_jax.report: error: ') and '\n' not in message
  return message


def test_group_accuracy_uses_label_ids():
  results = _results('mfgr', 0, diagonal=(10, 5, 0))
  assert report.group_accuracy(results, [2]) == 100.0  # label 2 is output 0
  assert report.group_accuracy(results, [0, 1]) == 25.0


def test_paper_table_has_mean_std_and_avg_improvement(tmp_path):
  text = _report(tmp_path, {'a': _results('lwf', 0, accuracy=(100.0, 60.0, 40.0)),
                            'b': _results('lwf', 1, accuracy=(90.0, 70.0, 50.0)),
                            'c': _results('mfgr', 0, accuracy=(100.0, 80.0, 70.0))})
  rows = _section(text, 'Accuracy after each task')
  assert rows[0] == ('| method | runs | Task 1 | Task 2 | Task 3 | avg. incremental | forgetting | '
                     'avg. improvement |')
  # Sample std of two values 10 apart: 10 / sqrt(2). Avg. incremental: 66.67 and 70.00;
  # forgetting: 60 and 40. Improvement: mean(80 - 65, 70 - 45) over tasks 2 and 3.
  assert _row(rows, 'lwf') == ('| lwf | 2 | 95.00 ± 7.07 | 65.00 ± 7.07 | 45.00 ± 7.07 | '
                               '68.33 ± 2.36 | 50.00 ± 14.14 | 20.00 |')
  assert _row(rows, 'mfgr') == '| mfgr | 1 | 100.00 | 80.00 | 70.00 | 83.33 | 30.00 | – |'


def test_avg_improvement_follows_reference_and_is_absent_without_one(tmp_path):
  runs = {'a': _results('lwf', 0, accuracy=(100.0, 60.0, 40.0)),
          'b': _results('finetune', 0, accuracy=(100.0, 50.0, 20.0))}
  rows = _section(_report(tmp_path, runs, '--reference', 'lwf'), 'Accuracy after each task')
  assert _row(rows, 'finetune').endswith('| 15.00 |') and _row(rows, 'lwf').endswith('| – |')
  rows = _section(report.report_markdown(runs, {}, [], None, 'title', 'command'),
                  'Accuracy after each task')
  assert 'avg. improvement' not in rows[0]


def test_last_task_table_has_groups_by_label_id_and_stage_seconds(tmp_path):
  text = _report(tmp_path, {'a': _results('lwf', 0, diagonal=(10, 5, 0)),
                            'b': _results('lwf', 1, diagonal=(8, 5, 0)),
                            'c': _results('mfgr', 0, generator=15.0)},
                 '--groups', 'top=2', '--groups', 'new=0,1')
  rows = _section(text, 'After the last task')
  assert rows[0] == ('| method | finished runs | old | new | top (2) | new (0,1) | stage I s | '
                     'classifier s |')
  # lwf: old (outputs 0, 1) 75 and 65; group "top" (label 2 = output 0) 100 and 80;
  # labels 0, 1 = outputs 1, 2: 25 both. Seconds summed over tasks 2 and 3 only.
  assert _row(rows, 'lwf') == ('| lwf | 2 | 70.00 ± 7.07 | 0.00 ± 0.00 | 90.00 ± 14.14 | '
                               '25.00 ± 0.00 | – | 10.00 ± 0.00 |')
  assert _row(rows, 'mfgr') == '| mfgr | 1 | 100.00 | 100.00 | 100.00 | 100.00 | 30.00 | 10.00 |'


def test_per_class_table(tmp_path):
  text = _report(tmp_path, {'a': _results('lwf', 0, diagonal=(10, 5, 0)),
                            'b': _results('lwf', 1, diagonal=(8, 5, 0)),
                            'c': _results('mfgr', 0)},
                 '--classes', '2,1')
  rows = _section(text, 'Per class')
  assert rows[0] == '|  | two | one |'
  # Label 2 came with task 1 (100 in every run); label 1 with task 3: 0, 0 and 100.
  assert _row(rows, 'when learned') == '| when learned | 100.00 | 33.33 |'
  assert _row(rows, 'lwf') == '| lwf | 90.00 | 0.00 |'
  assert _row(rows, 'mfgr') == '| mfgr | 100.00 | 100.00 |'


def test_confusion_table_follows_a_class_s_test_images(tmp_path):
  # Label 0 is output 1: `diagonal[1]` of its 10 images stay, the rest go to output 2 (label 1).
  text = _report(tmp_path, {'a': _results('lwf', 0, diagonal=(10, 6, 0)),
                            'b': _results('lwf', 1, diagonal=(10, 8, 0)),
                            'c': _results('mfgr', 0, diagonal=(10, 10, 0)),
                            'd': _results('ewc', 0, done=2)},  # unfinished: no row
                 '--confusion', '0,1')
  zero, one = text.split('\n\n| one (1) predicted as')
  rows = _section(zero, 'Where the test images of a class go')
  # Label 2 takes none of them for any method: left out.
  assert rows[0] == '| zero (0) predicted as | zero (0) | one (1) |'
  assert _row(rows, 'lwf') == '| lwf | 70.00 | 30.00 |'
  assert _row(rows, 'mfgr') == '| mfgr | 100.00 | 0.00 |'
  assert len(rows) == 4  # header, rule, lwf, mfgr
  # Label 1 (output 2): all wrong for every method, yet its own column stays.
  assert one.splitlines()[:4] == [' | one (1) | two (2) |', '|---|---|---|',
                                  '| lwf | 0.00 | 100.00 |', '| mfgr | 0.00 | 100.00 |']
  (tmp_path / 'plain').mkdir()
  assert 'Where the test images' not in _report(tmp_path / 'plain', {'c': _results('mfgr', 0)})


def test_charts_are_written_and_embedded(tmp_path):
  text = _report(tmp_path, {'a': _results('lwf', 0, diagonal=(10, 5, 0)), 'b': _results('mfgr', 0)})
  for name in ('accuracy_curves.png', 'old_new.png'):
    assert f']({name})' in text
    image = np.asarray(PIL.Image.open(tmp_path / 'report' / name).convert('RGB'))
    assert image.shape == (560, 900, 3)
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 8


def colour_share(image: np.ndarray, colour: str) -> float:
  """The fraction of `image`'s pixels within a few levels of `colour` ('#rrggbb')."""
  rgb = np.asarray([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
  return float(np.mean(np.all(np.abs(image.astype(int) - rgb) < 12, axis=-1)))


# Matplotlib's first two cycle colours: the first and the second series.
FIRST, SECOND = '#1f77b4', '#ff7f0e'


def test_line_chart_draws_each_series_and_leaves_out_missing_points():
  both = plots.line_chart([1, 2, 3], {'a': [50.0, None, None], 'b': [10.0, 20.0, 30.0]},
                          'title', 'x', 'y', size=(400, 300))
  assert both.shape == (300, 400, 3) and both.dtype == np.uint8
  one_point, line = colour_share(both, FIRST), colour_share(both, SECOND)
  assert 0 < one_point < line  # a's single marker, b's line and markers
  without_a = plots.line_chart([1, 2, 3], {'a': [None, None, None], 'b': [10.0, 20.0, 30.0]},
                               'title', 'x', 'y', size=(400, 300))
  assert colour_share(without_a, FIRST) < 0.8 * one_point  # only its legend entry is left


def test_bar_chart_bars_grow_with_their_values():
  low = plots.bar_chart(['lwf', 'mfgr'], {'old': [10.0, 10.0], 'new': [20.0, None]}, 't', 'x',
                        'y', size=(400, 300))
  high = plots.bar_chart(['lwf', 'mfgr'], {'old': [80.0, 80.0], 'new': [20.0, None]}, 't', 'x',
                         'y', size=(400, 300))
  assert colour_share(high, FIRST) > 4 * colour_share(low, FIRST) > 0
  assert colour_share(high, SECOND) == pytest.approx(colour_share(low, SECOND), rel=0.05)


def test_unfinished_run_is_reported(tmp_path):
  text = _report(tmp_path, {'a': _results('lwf', 0, accuracy=(100.0, 60.0), done=2),
                            'b': _results('lwf', 1, accuracy=(90.0, 70.0, 50.0)),
                            'c': _results('mfgr', 0, done=1)}, '--classes', '1')
  rows = _section(text, 'Accuracy after each task')
  # Task columns average the runs that reached the task; the rest only finished runs.
  assert _row(rows, 'lwf') == '| lwf | 2 | 95.00 ± 7.07 | 65.00 ± 7.07 | 50.00 | 70.00 | 40.00 | – |'
  assert _row(rows, 'mfgr') == '| mfgr | 1 | 100.00 | – | – | – | – | – |'
  assert f"{tmp_path / 'a'} (2 of 3 tasks)" in text
  assert _row(_section(text, 'After the last task'), 'mfgr').startswith('| mfgr | 0 | – |')
  assert _row(_section(text, 'Every run'), str(tmp_path / 'c')).startswith(
      f"| {tmp_path / 'c'} | mfgr | 0 | 1/3 | 100.00 |")


def test_different_class_orders_refuse_in_one_line(tmp_path):
  other = {**_results('lwf', 0), 'class_order': [0, 1, 2]}
  dirs = _write_runs(tmp_path, {'a': _results('mfgr', 0), 'b': other})
  message = _one_line_error(dirs + ['--out', str(tmp_path / 'out')], 'differ in class_order')
  assert dirs[0] in message and dirs[1] in message


def test_missing_results_is_one_line(tmp_path):
  _one_line_error([str(tmp_path), '--out', str(tmp_path / 'out')],
                  'results.json is missing or unreadable')


def test_half_written_results_is_one_line(tmp_path):
  (tmp_path / 'results.json').write_text('{"method": "mfgr", "accur')  # a copy cut short
  _one_line_error([str(tmp_path), '--out', str(tmp_path / 'out')],
                  'results.json is missing or unreadable')


def _study(tmp_path):
  """A study's KEEP folder: runs in no helpful name order, a task-0 model, a run without
  results.json and a stray file; returns its path."""
  _write_runs(tmp_path, {'keep/mfgr-seed10': _results('mfgr', 10),
                         'keep/mfgr-seed2': _results('mfgr', 2),
                         'keep/lwf-seed0': _results('lwf', 0),
                         'keep/task0-seed0': _results('finetune', 0, done=1)})
  (tmp_path / 'keep' / 'abd-seed0').mkdir()
  (tmp_path / 'keep' / 'notes.txt').write_text('not a run')
  return tmp_path / 'keep'


def test_a_folder_of_runs_gives_its_runs_in_natural_order_without_task0_models(tmp_path):
  keep = _study(tmp_path)
  assert report.run_dirs([str(keep)]) == [
      str(keep / 'lwf-seed0'), str(keep / 'mfgr-seed2'), str(keep / 'mfgr-seed10')]
  out = tmp_path / 'out'
  report.main([str(keep), '--out', str(out)])
  text = (out / 'report.md').read_text()
  # The command line is recorded as given: the folder, not the runs it holds.
  assert f'Generated by `python -m mfgr_jax.report {keep} --out {out}`.' in text
  assert [row.split(' | ')[0] for row in _section(text, 'Every run')[2:]] == [
      f'| {keep / run}' for run in ('lwf-seed0', 'mfgr-seed2', 'mfgr-seed10')]
  assert [row.split(' | ')[0] for row in _section(text, 'Accuracy after each task')[2:]] == [
      '| lwf', '| mfgr']


def test_patterns_keep_their_order_each_run_once_and_are_recorded_unexpanded(tmp_path):
  keep = _study(tmp_path)
  patterns = [f'{keep}/mfgr-seed*', f'{keep}/*-seed[0-9]', str(keep / 'mfgr-seed2')]
  # Methods in the order of the patterns; a task-0 model matched by a pattern is left out;
  # a run already named is not repeated.
  assert report.run_dirs(patterns) == [
      str(keep / 'mfgr-seed2'), str(keep / 'mfgr-seed10'), str(keep / 'lwf-seed0')]
  out = tmp_path / 'out'
  report.main([*patterns, '--out', str(out)])
  text = (out / 'report.md').read_text()
  assert f"report '{keep}/mfgr-seed*' '{keep}/*-seed[0-9]' {keep / 'mfgr-seed2'} --out" in text
  assert [row.split(' | ')[0] for row in _section(text, 'Accuracy after each task')[2:]] == [
      '| mfgr', '| lwf']


def test_a_task0_model_named_on_its_own_is_read(tmp_path):
  keep = _study(tmp_path)
  assert report.run_dirs([str(keep / 'task0-seed0')]) == [str(keep / 'task0-seed0')]


def test_a_pattern_or_folder_without_runs_is_one_line(tmp_path):
  keep = _study(tmp_path)
  message = _one_line_error([f'{keep}/icarl-seed*', '--out', str(tmp_path / 'out')],
                            'matches no run')
  assert f'{keep}/icarl-seed*' in message
  # Only a task-0 model matches: still no run to compare.
  _one_line_error([f'{keep}/task0-*', '--out', str(tmp_path / 'out')], 'matches no run')
  _one_line_error([str(keep / 'abd-seed0'), '--out', str(tmp_path / 'out')],
                  'abd-seed0/results.json is missing or unreadable')


def test_unknown_label_id_is_one_line(tmp_path):
  dirs = _write_runs(tmp_path, {'a': _results('mfgr', 0)})
  _one_line_error(dirs + ['--classes', '0,7', '--out', str(tmp_path / 'out')], r'\[7\]')
  _one_line_error(dirs + ['--confusion', '9', '--out', str(tmp_path / 'out')], r'\[9\]')


def test_the_report_imports_none_of_the_training_stack():
  """`python -m mfgr_jax.report` only reads JSON and draws: no jax, flax, optax, orbax,
  clu or TensorFlow (each costs seconds to import)."""
  process = subprocess.run(
      [sys.executable, '-c', 'import sys, mfgr_jax.report; print(" ".join(sys.modules))'],
      capture_output=True, text=True, timeout=120, check=True)
  heavy = {'jax', 'jaxlib', 'flax', 'optax', 'orbax', 'clu', 'tensorflow'}
  assert heavy & {name.split('.')[0] for name in process.stdout.split()} == set()


def test_labelled_runs_get_rows_of_their_own_instead_of_their_method_s(tmp_path):
  keep = _study(tmp_path)
  variant = tmp_path / 'variant'
  _write_runs(variant, {'mfgr-seed2': _results('mfgr', 2, accuracy=(100.0, 90.0, 40.0))})
  args = [f'mfgr, defaults={keep}/mfgr-seed*', f'mfgr, variant={variant}', f'{keep}/*-seed*']
  assert report.run_labels(args) == {
      str(keep / 'mfgr-seed2'): 'mfgr, defaults', str(keep / 'mfgr-seed10'): 'mfgr, defaults',
      str(variant / 'mfgr-seed2'): 'mfgr, variant', str(keep / 'lwf-seed0'): None}
  out = tmp_path / 'out'
  report.main([*args, '--out', str(out)])
  rows = _section((out / 'report.md').read_text(), 'Accuracy after each task')[2:]
  # Each label its own row, its runs only: the variant's one run is not averaged in.
  assert [row.split(' | ')[:2] for row in rows] == [
      ['| mfgr, defaults', '2'], ['| mfgr, variant', '1'], ['| lwf', '1']]
  assert _row(rows, 'mfgr, variant').startswith('| mfgr, variant | 1 | 100.00 | 90.00 | 40.00 |')
  # A path with '=' after a '/' is a path, not a label.
  odd = tmp_path / 'runs' / 'lr=0.1'
  _write_runs(odd.parent, {'lr=0.1': _results('lwf', 0)})
  assert report.run_labels([str(odd)]) == {str(odd): None}
