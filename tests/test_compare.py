import json

import pytest

from mfgr_jax import compare


def _results(method, seed, diagonal, seconds=10.0):
  # Output order [2, 0, 1]: output 0 is label 2. Rows: true output, columns: predicted.
  matrix = [[diagonal[0], 10 - diagonal[0], 0], [0, diagonal[1], 10 - diagonal[1]],
            [10 - diagonal[2], 0, diagonal[2]]]
  accuracy = 100 * sum(diagonal) / 30
  return {'method': method, 'seed': seed, 'class_order': [2, 0, 1],
          'confusion_matrix': [[[10]], matrix], 'accuracy': [100.0, accuracy],
          'old_accuracy': [None, 10.0 * diagonal[0]], 'new_accuracy': [100.0, 50.0],
          'average_incremental_accuracy': (100 + accuracy) / 2,
          'seconds': [{'classifier': 1.0}, {'generator': seconds, 'classifier': 5.0}]}


def test_group_accuracy_uses_label_ids():
  results = _results('mfgr', 0, [10, 5, 0])
  assert compare.group_accuracy(results, [2]) == 100.0  # label 2 is output 0
  assert compare.group_accuracy(results, [0, 1]) == 25.0


def test_table_has_mean_and_std_per_method(tmp_path):
  for name, results in {'a': _results('lwf', 0, [10, 5, 0]), 'b': _results('lwf', 1, [8, 5, 0]),
                        'c': _results('mfgr', 0, [10, 10, 10], 30.0)}.items():
    (tmp_path / name).mkdir()
    (tmp_path / name / 'results.json').write_text(json.dumps(results))
  out = tmp_path / 'table.md'
  compare.main([str(tmp_path / n) for n in 'abc'] + ['--groups', 'top=2', '--out', str(out)])
  text = out.read_text()
  # lwf's group "top" (label 2): 100 and 80 -> 90.00 ± 14.14 (sample std).
  lwf_row = next(l for l in text.splitlines() if l.startswith('| lwf | 2 |'))
  assert '90.00 ± 14.14' in lwf_row
  mfgr_row = next(l for l in text.splitlines() if l.startswith('| mfgr | 1 |'))
  assert '| 100.00 |' in mfgr_row and '| 30.00 |' in mfgr_row


def test_missing_results_is_one_line(tmp_path):
  with pytest.raises(SystemExit, match='results.json not found'):
    compare.main([str(tmp_path), '--out', str(tmp_path / 'x.md')])
