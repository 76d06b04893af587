"""lwf: (1 - lambda) cut CE + lambda KD of the old logits, lambda = C_old / C,
by hand; plain CE at task 0."""

import types

import ml_collections
import pytest

from mfgr_jax.methods import get_method, lwf
from mfgr_jax.scenario import Task

import loss_references as ref


def _config(temperature: float, scale_by_t_squared: bool) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(distillation=dict(
      temperature=temperature, scale_by_t_squared=scale_by_t_squared)))


@pytest.mark.parametrize('temperature,scale', [(2.0, False), (3.0, True)])
def test_loss_weights_cut_ce_and_distillation_by_the_old_classes_share(temperature, scale):
  value, metrics = lwf.make_loss(ref.TASK, _config(temperature, scale))(
      ref.forward(ref.LOGITS), ref.LABELS, ref.forward(ref.TEACHER), None)
  ce = ref.cut_cross_entropy(ref.LOGITS, ref.LABELS, 2)
  kd = ref.distillation(ref.LOGITS[:, :2], ref.TEACHER, temperature, scale)
  assert float(value) == pytest.approx((2 / 3) * ce + (1 / 3) * kd, rel=1e-5)
  assert float(metrics['ce']) == pytest.approx(ce, rel=1e-5)
  assert float(metrics['kd']) == pytest.approx(kd, rel=1e-5)


def test_the_teacher_is_the_previous_tasks_model():
  experiment = types.SimpleNamespace(model=lambda num_classes: f'a model of {num_classes} outputs')
  method = get_method('lwf')
  assert method.teacher(experiment, Task(1, (2, 3), 2, 4)) == 'a model of 2 outputs'
  assert method.teacher(experiment, Task(0, (0, 1), 0, 2)) is None
