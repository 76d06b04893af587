"""Does every method finish configs/smoke.py with its own defaults?

    python -m benchmarks.every_method_smoke OUT [--methods a,b]

Trains task 0 once (the same for every method) into OUT/task0, then each
registered method (or those named) on the whole smoke scenario from that task-0
model (`init_from`) into OUT/<method>, with nothing else overridden, and prints
a row per method: finished or the one-line error, its accuracy after each task
and the updates skipped as non-finite. A finished method's workdir is reused, so
the command resumes. Exits 1 if any method did not finish. About a minute per
method on 2 CPU cores (mostly compiling). The same runs are a test:
tests/end_to_end/test_every_method.py.
"""

import argparse
import pathlib
import sys
import time

from configs import smoke
from mfgr_jax import train
from mfgr_jax.errors import UserError
from mfgr_jax.methods import all_methods


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m benchmarks.every_method_smoke')
  parser.add_argument('out', type=pathlib.Path)
  parser.add_argument('--methods', default='', help='comma-separated; default: every method')
  args = parser.parse_args(argv)
  names = args.methods.split(',') if args.methods else sorted(all_methods())
  task0 = smoke.get_config()
  task0.scenario.num_tasks = 1
  train.run(task0, str(args.out / 'task0'))
  failed = 0
  for name in names:
    config = smoke.get_config()
    config.method, config.init_from = name, str(args.out / 'task0')
    start = time.time()
    try:
      results = train.run(config, str(args.out / name))
      row = (f"finished  {' '.join(f'{a:6.2f}' for a in results['accuracy'])}  skipped "
             f"{sum(sum(s.values()) for s in results['skipped_steps'])}")
    except UserError as e:
      failed += 1
      row = f'FAILED    {e}'
    print(f'{name:14s} {time.time() - start:5.0f} s  {row}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
