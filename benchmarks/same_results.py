"""Do two versions of the code give the same results.json for every method?

    python -m benchmarks.same_results run OUT [--repo PATH] [--methods a,b] [--settings smoke]
    python -m benchmarks.same_results compare BEFORE AFTER [--methods a,b] [--settings smoke]
    python -m benchmarks.same_results handover OUT --old-repo PATH [--methods a,b]

`run` trains every method (or those named) on each setting with the
`python -m mfgr_jax.main` of the checkout at `--repo` (default: this one), one
workdir per run under OUT/<setting>/<method>/; a finished run (results.json
with every task) is skipped and an unfinished one starts over, so the command
resumes. `compare` prints, per setting and method, whether the two
results.json agree on every field except the wall-clock ones (`seconds`,
`throughput`) and whether every value logged to TensorBoard (each loss term
at each logged step, accuracies, sample grids, histograms) is bitwise the
same; it names the first difference and exits 1 if any differ or are missing.

`handover` checks that checkpoints written by another checkout (the old
code) resume here: for each method on `smoke`, the old code runs tasks 0-1
(`scenario.num_tasks=2`) into OUT/task_checkpoint/smoke/<method>, then this
checkout's main finishes the run there; and the old code is killed (SIGKILL)
at its first progress checkpoint inside task 2 in OUT/mid_task/smoke/<method>,
then this checkout finishes that run. `compare BEFORE OUT/task_checkpoint`
(and `OUT/mid_task`) then shows whether the handed-over runs equal the old
code's uninterrupted ones.

Settings: `smoke` (configs/smoke.py) and `finegrained` (configs/fashion_finegrained.py
shortened to minutes per run). A refactor that keeps behaviour must compare
equal on both (run once on the old commit, e.g. from a `git worktree`, once on
the new one, on the same machine).
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

from mfgr_jax.results import RUN_ENVIRONMENT

METHODS = ('finetune', 'lwf', 'oracle', 'ewc', 'mas', 'muc_mas', 'lwm', 'muc_lwf', 'icarl',
           'icarl_mfgr', 'mfgr', 'lwf_g_bn', 'g_bn', 'lwf_g_base', 'deepinversion', 'abd', 'rdfcil')
SETTINGS = {
    'smoke': ('configs/smoke.py', ()),
    'finegrained': ('configs/fashion_finegrained.py', (
        '--config.data.max_train_per_class=64', '--config.train.epochs=1',
        '--config.generator.steps=10', '--config.deepinversion.iterations=5',
        '--config.muc.side_epochs=2')),
}
# TensorBoard's wall-clock tags, like results.json's RUN_ENVIRONMENT fields, are the only
# ones allowed to differ between equal runs.
TIMING_TAGS = ('steps_per_sec', 'uptime')
REPO = pathlib.Path(__file__).resolve().parents[1]


def run(out: pathlib.Path, repo: pathlib.Path, methods: list[str], settings: list[str]) -> None:
  env = dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3')
  for setting in settings:
    config, overrides = SETTINGS[setting]
    for method in methods:
      workdir = (out / setting / method).absolute()
      if _finished(workdir):
        continue
      shutil.rmtree(workdir, ignore_errors=True)  # an unfinished run starts over
      start = time.time()
      done = subprocess.run(
          [sys.executable, '-m', 'mfgr_jax.main', f'--config={config}', f'--workdir={workdir}',
           f'--config.method={method}', *overrides],
          cwd=repo, env=env, capture_output=True, text=True, check=False)
      status = 'ok' if done.returncode == 0 else f'FAILED ({done.returncode}): {done.stderr[-500:]}'
      print(f'{setting} {method}: {status} in {time.time() - start:.0f} s', flush=True)


def _main(repo: pathlib.Path, config: str, workdir: pathlib.Path, method: str,
          *overrides: str) -> subprocess.Popen:
  return subprocess.Popen(
      [sys.executable, '-m', 'mfgr_jax.main', f'--config={config}', f'--workdir={workdir}',
       f'--config.method={method}', *overrides], cwd=repo,
      env=dict(os.environ, JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3'),
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _progress_steps(workdir: pathlib.Path) -> set[str]:
  folder = workdir / 'checkpoints' / 'progress'
  return {p.name for p in folder.iterdir() if p.name.isdigit()} if folder.exists() else set()


def _finished(workdir: pathlib.Path) -> bool:
  """Whether the run in `workdir` has results for every task of its scenario."""
  try:
    results = json.loads((workdir / 'results.json').read_text())
  except (FileNotFoundError, json.JSONDecodeError):
    return False
  return len(results['accuracy']) == len(results['tasks'])


def _tasks_done(workdir: pathlib.Path) -> int:
  try:
    return len(json.loads((workdir / 'results.json').read_text())['accuracy'])
  except (FileNotFoundError, json.JSONDecodeError):
    return 0


def _task_2_checkpoints(workdir: pathlib.Path) -> list[str]:
  """Complete progress checkpoints whose metadata says they are inside task 2 (the
  last one of task 1 may be finalised after task 1's results are written)."""
  found = []
  for step in _progress_steps(workdir):
    meta = workdir / 'checkpoints' / 'progress' / step / 'meta' / 'metadata'
    try:
      if json.loads(meta.read_text())['task'] == 2:
        found.append(step)
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
      continue
  return found


def _kill_inside_task_2(proc: subprocess.Popen, workdir: pathlib.Path) -> str:
  """SIGKILLs `proc` once it has saved a progress checkpoint inside task 2; says where."""
  while not _task_2_checkpoints(workdir):
    if proc.poll() is not None:
      return f'ended ({proc.returncode}) before a checkpoint inside task 2'
    time.sleep(0.01)
  proc.kill()
  proc.wait()
  steps = _task_2_checkpoints(workdir)
  stages = [json.loads((workdir / 'checkpoints' / 'progress' / s / 'meta' / 'metadata')
                       .read_text())['stage'] for s in steps]
  return f'killed at progress checkpoint {steps} (task 2 {", ".join(stages)})'


def handover(out: pathlib.Path, old_repo: pathlib.Path, methods: list[str]) -> None:
  config, overrides = SETTINGS['smoke']
  for method in methods:
    for kind in ('task_checkpoint', 'mid_task'):
      workdir = (out / kind / 'smoke' / method).absolute()
      if _finished(workdir):
        continue
      shutil.rmtree(workdir, ignore_errors=True)
      if kind == 'task_checkpoint':
        old = _main(old_repo, config, workdir, method, *overrides, '--config.scenario.num_tasks=2')
        old.wait()
        how = f'old code ran tasks 0-1 ({old.returncode})'
      else:
        how = 'old code ' + _kill_inside_task_2(_main(old_repo, config, workdir, method,
                                                       *overrides), workdir)
      new = _main(REPO, config, workdir, method, *overrides)
      _, stderr = new.communicate()
      status = 'ok' if new.returncode == 0 else f'FAILED ({new.returncode}): {stderr[-300:]}'
      print(f'{kind} {method}: {how}; this checkout finished it: {status}', flush=True)


def first_difference(before: dict, after: dict) -> str | None:
  """The first field (outside RUN_ENVIRONMENT) where the two results differ, or None."""
  for key in sorted(set(before) | set(after)):
    if key not in RUN_ENVIRONMENT and before.get(key) != after.get(key):
      return key
  return None


def logged_values(workdir: pathlib.Path) -> dict[str, dict[int, bytes]]:
  """Every value logged to TensorBoard in `workdir` (losses, accuracies, sample grids
  and histograms), by tag and step, except the wall-clock tags: bitwise evidence even
  where results.json's accuracies are at chance. A resumed run logs again the steps
  after its checkpoint; the last value logged for a step counts."""
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(str(workdir), size_guidance={'tensors': 0})
  events.Reload()
  return {tag: {event.step: event.tensor_proto.SerializeToString() for event in
                events.Tensors(tag)}
          for tag in events.Tags()['tensors'] if tag not in TIMING_TAGS}


def compare(before: pathlib.Path, after: pathlib.Path, methods: list[str],
            settings: list[str]) -> bool:
  same = True
  for setting in settings:
    for method in methods:
      paths = [root / setting / method / 'results.json' for root in (before, after)]
      if not all(p.exists() for p in paths):
        print(f'{setting:12} {method:14} MISSING {[str(p) for p in paths if not p.exists()]}')
        same = False
        continue
      results = [json.loads(p.read_text()) for p in paths]
      field = first_difference(*results)
      logged = [logged_values(p.parent) for p in paths]
      tags = sorted(tag for tag in set(logged[0]) | set(logged[1])
                    if logged[0].get(tag) != logged[1].get(tag))
      verdict = ('same' if field is None else f'DIFFERS in {field}') + (
          f', logged {len(logged[1])} tags same' if not tags else f', logged DIFFER in {tags[0]}')
      print(f'{setting:12} {method:14} {verdict:40} '
            f'accuracy {[round(a, 2) for a in results[1]["accuracy"]]}')
      same &= field is None and not tags
  return same


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  commands = parser.add_subparsers(dest='command', required=True)
  run_parser = commands.add_parser('run')
  run_parser.add_argument('out', type=pathlib.Path)
  run_parser.add_argument('--repo', type=pathlib.Path, default=REPO)
  run_parser.add_argument('--settings', default=','.join(SETTINGS))
  compare_parser = commands.add_parser('compare')
  compare_parser.add_argument('before', type=pathlib.Path)
  compare_parser.add_argument('after', type=pathlib.Path)
  handover_parser = commands.add_parser('handover')
  handover_parser.add_argument('out', type=pathlib.Path)
  handover_parser.add_argument('--old-repo', type=pathlib.Path, required=True)
  for sub in (run_parser, compare_parser, handover_parser):
    sub.add_argument('--methods', default=','.join(METHODS))
  compare_parser.add_argument('--settings', default=','.join(SETTINGS))
  args = parser.parse_args()
  if args.command == 'run':
    run(args.out, args.repo, args.methods.split(','), args.settings.split(','))
  elif args.command == 'handover':
    handover(args.out, args.old_repo, args.methods.split(','))
  elif not compare(args.before, args.after, args.methods.split(','), args.settings.split(',')):
    sys.exit(1)


if __name__ == '__main__':
  main()
