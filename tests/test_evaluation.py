import numpy as np
import pytest

from mfgr_jax import evaluation


def test_accuracies_by_hand():
  labels = np.array([0, 0, 1, 1, 2, 3])
  predictions = np.array([0, 1, 1, 1, 3, 3])
  assert evaluation.accuracy(predictions, labels) == pytest.approx(100 * 4 / 6)
  assert evaluation.task_accuracies(predictions, labels, [(0, 2), (2, 4)]) == pytest.approx(
      [75.0, 50.0])
  assert evaluation.per_class_accuracy(predictions, labels, 4) == pytest.approx(
      [50.0, 100.0, 0.0, 100.0])
  matrix = evaluation.confusion_matrix(predictions, labels, 4)
  assert matrix.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]]


def test_average_incremental_accuracy_includes_task0():
  assert evaluation.average_incremental_accuracy([90.0, 60.0, 30.0]) == pytest.approx(60.0)


def test_forgetting_is_best_minus_last():
  matrix = [[90.0], [70.0, 80.0], [75.0, 60.0, 50.0]]
  # task 0: max(90, 70) - 75 = 15; task 1: 80 - 60 = 20.
  assert evaluation.forgetting(matrix) == pytest.approx(17.5)
  assert evaluation.forgetting([[90.0]]) is None


def test_task_metrics_by_hand():
  # After a task with 2 old and 2 new classes (tasks [0, 2) and [2, 4)).
  labels = np.array([0, 0, 1, 1, 2, 3, 3, 3])
  predictions = np.array([0, 2, 1, 1, 3, 3, 0, 3])
  metrics = evaluation.task_metrics(predictions, labels, 2, 4, [(0, 2), (2, 4)])
  assert metrics['accuracy'] == pytest.approx(100 * 5 / 8)
  assert metrics['task_accuracies'] == pytest.approx([75.0, 50.0])
  assert metrics['old_accuracy'] == pytest.approx(75.0)
  assert metrics['new_accuracy'] == pytest.approx(50.0)
  assert metrics['per_class_accuracy'] == pytest.approx([50.0, 100.0, 0.0, 100 * 2 / 3])
  assert metrics['confusion_matrix'] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 1], [1, 0, 0, 2]]
  # At task 0 nothing is old.
  first = evaluation.task_metrics(np.array([0, 1, 1]), np.array([0, 1, 0]), 0, 2, [(0, 2)])
  assert first['old_accuracy'] is None and first['new_accuracy'] == pytest.approx(100 * 2 / 3)
