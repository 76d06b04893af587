import jax
import numpy as np
import pytest

from mfgr_jax import losses


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


LOGITS = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]], np.float32)
TEACHER = np.array([[1.0, -1.0], [0.0, 2.0]], np.float32)


def test_cross_entropy_by_hand():
  labels = np.array([0, 3])
  expected = -np.mean(_log_softmax(LOGITS)[[0, 1], labels])
  assert float(losses.cross_entropy(LOGITS, labels)) == pytest.approx(expected, rel=1e-6)


def test_cut_cross_entropy_uses_only_new_logits():
  # With 2 old classes, the softmax is over logits[:, 2:] and labels shift by 2.
  labels = np.array([2, 3])
  new = _log_softmax(LOGITS[:, 2:])
  expected = -np.mean([new[0, 0], new[1, 1]])
  assert float(losses.cut_cross_entropy(LOGITS, labels, 2)) == pytest.approx(expected, rel=1e-6)
  # Changing an old logit cannot change the loss.
  bumped = LOGITS.copy()
  bumped[:, 0] += 5.0
  assert float(losses.cut_cross_entropy(bumped, labels, 2)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('t2', [False, True])
def test_distillation_by_hand(t2):
  student = LOGITS[:, :2]
  teacher = np.exp(_log_softmax(TEACHER / 2.0))
  expected = -np.mean(np.sum(teacher * _log_softmax(student / 2.0), -1)) * (4.0 if t2 else 1.0)
  got = losses.distillation(student, TEACHER, temperature=2.0, scale_by_t_squared=t2)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_distillation_does_not_differentiate_teacher():
  grad = jax.grad(lambda t: losses.distillation(LOGITS[:, :2], t))(TEACHER)
  np.testing.assert_array_equal(grad, 0.0)
