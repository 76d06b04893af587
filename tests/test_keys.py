"""Random streams (keys.py): every key comes from the config seed, the task and a
stream number; the numbers are a contract with every saved run (a renumbered
stream changes every result), so they are pinned here."""

import itertools

import jax
import numpy as np

from mfgr_jax import keys


def test_the_stream_numbers_never_change():
  assert {name: getattr(keys, name) for name in (
      'INIT', 'HEAD', 'ORDER', 'AUGMENT', 'GENERATOR_INIT', 'GENERATOR_STEPS', 'REPLAY', 'SAMPLES',
      'SIDE_HEADS', 'PIXEL_POOL', 'HEAD_PHASE_ORDER', 'HEAD_PHASE_AUGMENT', 'HEAD_PHASE_REPLAY',
      'LOSS_PARAMS_INIT', 'REPLAY_CLASS_COUNTS')} == dict(
          INIT=0, HEAD=1, ORDER=2, AUGMENT=3, GENERATOR_INIT=4, GENERATOR_STEPS=5, REPLAY=6,
          SAMPLES=7, SIDE_HEADS=8, PIXEL_POOL=9, HEAD_PHASE_ORDER=10, HEAD_PHASE_AUGMENT=11,
          HEAD_PHASE_REPLAY=12, LOSS_PARAMS_INIT=13, REPLAY_CLASS_COUNTS=14)


def test_a_key_is_fold_in_of_seed_task_and_stream_and_each_is_distinct():
  expected = jax.random.fold_in(jax.random.fold_in(jax.random.PRNGKey(3), 1), keys.REPLAY)
  np.testing.assert_array_equal(keys.task_key(3, 1, keys.REPLAY), expected)
  drawn = {tuple(np.asarray(jax.random.key_data(keys.task_key(seed, task, stream))).tolist())
           for seed, task, stream in itertools.product((0, 1), (0, 1, 2), range(15))}
  assert len(drawn) == 2 * 3 * 15
