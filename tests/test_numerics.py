"""numerics.py: a non-finite update is never applied (the end-to-end faults are
in end_to_end/test_reliability.py)."""

import jax.numpy as jnp
import numpy as np

from mfgr_jax import numerics
from mfgr_jax.inversion import GeneratorState


def test_a_non_finite_update_is_not_applied_but_the_step_counts():
  old = GeneratorState(step=jnp.array(3), params={'w': jnp.ones(2)}, opt_state=())
  new = GeneratorState(step=jnp.array(4), params={'w': jnp.array([jnp.inf, 1.0])}, opt_state=())
  finite = numerics.all_finite(new.params)
  kept, metrics = numerics.guard(finite, new, old, {'loss': jnp.array(1.0)})
  assert not finite and int(kept.step) == 4 and metrics[numerics.SKIPPED] == 1.0
  np.testing.assert_array_equal(kept.params['w'], [1.0, 1.0])
  kept, metrics = numerics.guard(jnp.array(True), new, old, {'loss': jnp.array(1.0)})
  assert metrics[numerics.SKIPPED] == 0.0 and np.isinf(kept.params['w'][0])
