"""finetune: cross-entropy over every seen logit, on the new classes' images only."""

import numpy as np
import pytest

from mfgr_jax import train
from mfgr_jax.methods import finetune

import loss_references as ref


def test_loss_is_cross_entropy_over_every_seen_logit():
  # Unlike LwF's cut CE, the old classes' logits are in the softmax: finetune
  # pushes them down, which is how it forgets.
  value, metrics = finetune.make_loss(ref.TASK, None)(
      ref.forward(ref.LOGITS), ref.LABELS, None, None)
  expected = ref.cross_entropy(ref.LOGITS, ref.LABELS)
  assert float(value) == pytest.approx(expected, rel=1e-6)
  assert float(metrics['ce']) == float(value) and set(metrics) == {'ce'}
  bumped = ref.LOGITS.copy()
  bumped[:, 0] += 5.0  # an old class's logit
  bumped_value, _ = finetune.make_loss(ref.TASK, None)(
      ref.forward(bumped), ref.LABELS, None, None)
  assert float(bumped_value) > float(value)


def test_finetune_runs(smoke_config, tmp_path):
  smoke_config.method = 'finetune'
  smoke_config.scenario.num_tasks = 2
  results = train.run(smoke_config, str(tmp_path))
  assert results['method'] == 'finetune' and len(results['accuracy']) == 2
  assert np.all(np.isfinite(results['accuracy']))
