"""Class-incremental metrics, computed on host from predictions.

Definitions (documented in the README and in results.json):
- accuracy[t]: top-1 (%) over the test images of all classes seen after task t,
  argmax over all seen logits (single head, no task id).
- accuracy_matrix[t][j]: top-1 (%) on task j's test images after task t (j <= t).
- old/new accuracy[t]: top-1 on the test images of earlier tasks / of task t.
- average incremental accuracy: mean of accuracy[t] over all tasks, task 0 included.
- forgetting (Chaudhry et al. 2018, as FACIL): for each task j < T-1, the best
  accuracy on j after any task in [j, T-2] minus the accuracy on j after the
  last task, averaged over j. Avalanche uses first-seen instead of best.
"""

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
  """Top-1 in percent; NaN for an empty set."""
  return float(100.0 * np.mean(predictions == labels)) if labels.size else float('nan')


def task_accuracies(predictions: np.ndarray, labels: np.ndarray,
                    task_bounds: list[tuple[int, int]]) -> list[float]:
  """Accuracy on each task's classes; `task_bounds` are [start, stop) output indices."""
  return [accuracy(predictions[(labels >= a) & (labels < b)], labels[(labels >= a) & (labels < b)])
          for a, b in task_bounds]


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_seen: int) -> list[float]:
  return [accuracy(predictions[labels == c], labels[labels == c]) for c in range(num_seen)]


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_seen: int) -> np.ndarray:
  """Rows: true output index; columns: predicted. Row sums are the class sizes."""
  matrix = np.zeros((num_seen, num_seen), np.int64)
  np.add.at(matrix, (labels, predictions), 1)
  return matrix


def average_incremental_accuracy(accuracies: list[float]) -> float:
  return float(np.mean(accuracies))


def forgetting(accuracy_matrix: list[list[float]]) -> float | None:
  """Mean over tasks j < T-1 of max_{j<=t<T-1} A[t][j] - A[T-1][j]; None if T < 2."""
  last = len(accuracy_matrix) - 1
  if last < 1:
    return None
  drops = [max(accuracy_matrix[t][j] for t in range(j, last)) - accuracy_matrix[last][j]
           for j in range(last)]
  return float(np.mean(drops))


def task_metrics(predictions: np.ndarray, labels: np.ndarray, num_old: int, num_seen: int,
                 task_bounds: list[tuple[int, int]]) -> dict:
  """Every metric of one task's evaluation on the test images of the seen classes."""
  old = labels < num_old
  return {
      'accuracy': accuracy(predictions, labels),
      'task_accuracies': task_accuracies(predictions, labels, task_bounds),
      'old_accuracy': accuracy(predictions[old], labels[old]) if num_old else None,
      'new_accuracy': accuracy(predictions[~old], labels[~old]),
      'per_class_accuracy': per_class_accuracy(predictions, labels, num_seen),
      'confusion_matrix': confusion_matrix(predictions, labels, num_seen).tolist(),
  }
