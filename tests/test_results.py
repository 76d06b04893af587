"""results.py: results.json's record of a run, task by task, and its summaries; the
run's report.md; both written together."""

import types

import numpy as np
import pytest

from mfgr_jax import evaluation
from mfgr_jax import results as results_module
from mfgr_jax.results import new_results, read_results, record_task

# Two tasks of two classes; output index c is label ORDER[c].
ORDER = [3, 1, 0, 2]
MACHINE = {'backend': 'cpu', 'cpu': 'avx2', 'xla_flags': '--xla_flag=1'}


def fake_experiment() -> types.SimpleNamespace:
  """What `new_results` reads of an experiment."""
  return types.SimpleNamespace(
      method=types.SimpleNamespace(name='lwf'),
      dataset=types.SimpleNamespace(name='synthetic', class_names=['a', 'b', 'c', 'd']),
      config=types.SimpleNamespace(seed=7), order=ORDER,
      tasks=[types.SimpleNamespace(classes=(3, 1)), types.SimpleNamespace(classes=(0, 2))])


def task_0_metrics() -> dict:
  # 10 test images per class; after task 0: 9/10 and 8/10 right.
  labels = np.repeat([0, 1], 10)
  predictions = labels.copy()
  predictions[[0, 10, 11]] = [1, 0, 0]
  return evaluation.task_metrics(predictions, labels, 0, 2, [(0, 2)])


def task_1_metrics() -> dict:
  # After task 1: task 0's classes 5/20 right, task 1's 18/20.
  labels = np.repeat([0, 1, 2, 3], 10)
  predictions = np.where(labels < 2, 2, labels)
  predictions[[0, 1, 10, 11, 12]] = [0, 0, 1, 1, 1]
  predictions[[20, 30]] = [3, 2]
  return evaluation.task_metrics(predictions, labels, 2, 4, [(0, 2), (2, 4)])


def test_a_new_record_names_the_run_and_has_no_summaries_yet():
  results = new_results(fake_experiment())
  assert (results['method'], results['dataset'], results['seed']) == ('lwf', 'synthetic', 7)
  assert results['class_order'] == ORDER and results['tasks'] == [[3, 1], [0, 2]]
  assert results['accuracy'] == [] and results['average_incremental_accuracy'] is None
  assert results['forgetting'] is None and results['last_accuracy'] is None
  assert 'forgetting' in results['metric_definitions']


def test_record_task_appends_each_task_and_refreshes_the_summaries():
  results = new_results(fake_experiment())
  skipped = {'classifier': 2}
  record_task(results, ORDER, task_0_metrics(), {'classifier': 1.5, 'eval': 0.1}, {}, skipped,
              MACHINE)
  skipped['classifier'] = 5  # the runner's dict goes on counting in the next task
  assert results['accuracy'] == [pytest.approx(85.0)]
  assert results['average_incremental_accuracy'] == pytest.approx(85.0)
  assert results['last_accuracy'] == pytest.approx(85.0)
  assert results['forgetting'] is None  # no task after task 0 yet
  assert results['skipped_steps'] == [{'classifier': 2}]

  record_task(results, ORDER, task_1_metrics(), {'classifier': 2.0, 'eval': 0.2},
              {'train_images_per_second': 10.0}, {}, MACHINE)
  assert results['accuracy'] == [pytest.approx(85.0), pytest.approx(57.5)]
  assert results['accuracy_matrix'] == [[pytest.approx(85.0)],
                                        [pytest.approx(25.0), pytest.approx(90.0)]]
  assert results['old_accuracy'] == [None, pytest.approx(25.0)]
  assert results['new_accuracy'] == [pytest.approx(85.0), pytest.approx(90.0)]
  assert results['average_incremental_accuracy'] == pytest.approx((85.0 + 57.5) / 2)
  assert results['last_accuracy'] == pytest.approx(57.5)
  assert results['forgetting'] == pytest.approx(85.0 - 25.0)
  # Per-class accuracies are keyed by label id, through the class order.
  assert results['per_class_accuracy'][1] == {'3': pytest.approx(20.0), '1': pytest.approx(30.0),
                                              '0': pytest.approx(90.0), '2': pytest.approx(90.0)}
  assert np.sum(results['confusion_matrix'][1]) == 40
  assert results['seconds'][1] == {'classifier': 2.0, 'eval': 0.2}
  assert results['throughput'] == [{}, {'train_images_per_second': 10.0}]
  assert results['skipped_steps'] == [{'classifier': 2}, {}]
  assert results['machine'] == [MACHINE, MACHINE]


def test_a_run_resumed_from_results_without_machines_records_none_for_its_earlier_tasks():
  results = new_results(fake_experiment())
  record_task(results, ORDER, task_0_metrics(), {}, {}, {}, MACHINE)
  del results['machine']  # as written before the field existed
  record_task(results, ORDER, task_1_metrics(), {}, {}, {}, MACHINE)
  assert results['machine'] == [None, MACHINE]


def test_read_results_is_none_unless_the_file_reads_whole(tmp_path):
  assert read_results(tmp_path) is None
  (tmp_path / 'results.json').write_text('{"accuracy": [90.0, 6')  # cut short by a kill
  assert read_results(tmp_path) is None
  (tmp_path / 'results.json').write_text('{"accuracy": [90.0, 60.0]}')
  assert read_results(str(tmp_path)) == {'accuracy': [90.0, 60.0]}


def test_stage_seconds_by_kind_and_a_head_phase_counted_as_classifier():
  stage_two = results_module.stage_two_seconds
  assert stage_two({'generator': 5.0, 'classifier': 2.0, 'head': 1.5}) == 3.5
  assert stage_two({'train': 4.0}) == 4.0  # results.json of before 2026-11
  assert results_module.stage_one_seconds({'generator': 5.0, 'classifier': 2.0}) == 5.0
  assert results_module.stage_one_seconds({'synthesis': 3.0, 'classifier': 2.0}) == 3.0
  assert results_module.stage_one_seconds({'classifier': 2.0}) is None


def test_results_and_report_are_written_together_and_read_back(tmp_path):
  results = new_results(fake_experiment())
  record_task(results, ORDER, task_0_metrics(), {'classifier': 2.0}, {}, {}, MACHINE)
  results_module.write_outputs(tmp_path, results)
  assert read_results(tmp_path) == results
  report = (tmp_path / 'report.md').read_text()
  assert report == results_module.run_report(results) and report.startswith('# lwf on synthetic')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['report.md', 'results.json']
