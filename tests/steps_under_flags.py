"""Runs one call of each train step kind and saves what it computed (a helper of
test_cpu_flags.py, run in a process of its own because XLA reads XLA_FLAGS once).

    python tests/steps_under_flags.py OUT.npz

For each step of `benchmarks.step_throughput`'s smoke setting (finetune, LwF,
stage I generator, stage II replay), from the same state and batch: the logged
loss terms, the optimiser state after the step (its first moments are the
gradients: SGD's momentum trace and Adam's mu start at zero) and the BatchNorm
statistics, plus the number of YNNPACK fusions in the compiled step.
"""

import sys

import jax
import numpy as np

from benchmarks import step_throughput


def main(out: str) -> None:
  arrays = {}
  for name, step, fresh_state, arguments, _ in step_throughput.build('smoke').steps:
    state = fresh_state()
    compiled = step.lower(state, *arguments).compile().as_text()
    arrays[f'{name}/ynn_fusions'] = np.asarray(compiled.count('"kind":"__ynn_fusion"'))
    new_state, metrics = step(state, *arguments)
    for key, value in metrics.items():
      arrays[f'{name}/metric/{key}'] = np.asarray(value)
    for part in ('opt_state', 'batch_stats'):
      leaves = jax.tree_util.tree_flatten_with_path(getattr(new_state, part, {}))[0]
      for path, leaf in leaves:
        arrays[f'{name}/{part}{jax.tree_util.keystr(path)}'] = np.asarray(leaf)
  np.savez(out, **arrays)


if __name__ == '__main__':
  main(sys.argv[1])
