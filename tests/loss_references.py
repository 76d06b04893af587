"""For the methods' loss tests: the classifier losses in float64 numpy, written out
independently of mfgr_jax.losses, and the model outputs a method's loss receives.

Not a test module (no `test_` prefix); imported by name (see conftest).
"""

from typing import Any

import jax.numpy as jnp
import numpy as np

from mfgr_jax.models.resnet import Forward
from mfgr_jax.scenario import Task

# A task of 4 new classes after 2 old ones: lambda = C_old / C = 1/3, so a loss
# that swapped the weights of its terms would show. Two images, their logits
# over the 6 seen classes, the old model's 2 logits, new-class labels.
TASK = Task(1, (2, 3, 4, 5), 2, 6)
LOGITS = np.array([[2.0, 0.5, -1.0, 0.0, 1.0, -0.5], [0.1, 0.2, 0.3, 3.0, 0.2, 0.0]], np.float32)
TEACHER = np.array([[1.0, -1.0], [0.0, 2.0]], np.float32)
LABELS = np.array([4, 5], np.int32)
# Three replayed (generated) images: the new model's logits, the old model's.
GENERATED = np.array([[0.5, 1.5, -0.3, 0.0, 0.2, 0.1], [-1.0, 0.4, 0.0, 0.6, -0.2, 0.3],
                      [2.0, -2.0, 0.5, 0.5, 0.0, 1.0]], np.float32)
TEACHER_GENERATED = np.array([[0.2, 1.8], [-0.5, 0.5], [2.5, -1.5]], np.float32)


def forward(logits: np.ndarray, params: Any = None) -> Forward:
  """The outputs a loss sees; only the logits (and the parameters, for a penalty)."""
  return Forward(logits=jnp.asarray(logits), features=None, feature_map=None, params=params)


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float64)
  shifted = x - x.max(-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
  """Mean CE over every given logit."""
  return float(-np.mean(log_softmax(logits)[np.arange(len(labels)), labels]))


def cut_cross_entropy(logits: np.ndarray, labels: np.ndarray, num_old: int) -> float:
  """Mean CE over the new-class logits, labels shifted to them."""
  return cross_entropy(np.asarray(logits)[:, num_old:], np.asarray(labels) - num_old)


def distillation(student: np.ndarray, teacher: np.ndarray, temperature: float,
                 scale_by_t_squared: bool = False) -> float:
  """Mean soft-target CE at `temperature`, times T^2 if asked."""
  targets = np.exp(log_softmax(np.asarray(teacher) / temperature))
  value = float(-np.mean(np.sum(targets * log_softmax(np.asarray(student) / temperature), -1)))
  return value * temperature**2 if scale_by_t_squared else value
