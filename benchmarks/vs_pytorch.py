"""This project's train steps against the same steps in PyTorch, side by side.

    python -m benchmarks.vs_pytorch [--settings default,cifar100_r34] [--rounds 5]
        [--torch_python .torch-venv/bin/python] [--out docs/performance/vs_pytorch.md]

PyTorch is an optional benchmark dependency, not in requirements.txt. Give
`--torch_python` an interpreter that imports torch and numpy; on this project's
machines the CPU build of torch exists for Python 3.11 only:

    python3.11 -m venv .torch-venv && .torch-venv/bin/pip install torch numpy

For each setting (`benchmarks/step_throughput.py`: `default` = ResNet-18 width
16 at 28x28x1, `cifar100_r34` = ResNet-34 width 64 at 32x32x3) it builds the
JAX steps with the project's own step builders and starts
`benchmarks/torch_steps.py` (the same models and steps in PyTorch) in that
interpreter. Before timing, the architectures are checked equal: parameter
counts, and the classifiers' eval logits and the generator's samples with the
JAX weights copied into the PyTorch models (torchvision key names, mapped by
`models/pretrained.py`). Then each step runs once on each side (compiling,
warming up), and in each of `--rounds` rounds JAX and then PyTorch run it for
`--steps` steps, so both meet the same machine load; the table gives the median
images/s over the rounds and JAX/PyTorch. Both use every core (PyTorch:
`torch.set_num_threads`). Run it on an otherwise idle machine: other jobs slow
PyTorch's threads more than XLA's.
"""

import argparse
import ctypes
import json
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable

import jax
import numpy as np

from benchmarks import emit, step_throughput
from mfgr_jax.data.augment import normalize
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.pretrained import torch_key_place
from mfgr_jax.models.resnet import STAGE_BLOCKS, resnet

TORCH_STEPS = pathlib.Path(__file__).with_name('torch_steps.py')
# glibc keeps memory freed by a step (its mmap threshold grows), so each process would
# hold the peaks of all its earlier steps while the other runs (at the ResNet-34 replay
# step both together overflowed 24 GiB). So both sides give it back between steps,
# before the next step's warm-up. (A fixed, low mmap threshold, or giving it back after
# every round, made both sides fault the memory in again inside the timing: 1.3-3x slower.)
def release_freed_memory() -> None:
  """glibc's malloc_trim(0); a no-op where there is no glibc."""
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):
    pass
# Our step names -> the PyTorch worker's.
TORCH_NAMES = {'finetune': 'finetune', 'lwf': 'lwf', 'generator (stage I)': 'generator',
               'replay (stage II)': 'replay'}


class TorchWorker:
  """`benchmarks/torch_steps.py` in another interpreter, one JSON request per line."""

  def __init__(self, python: str, threads: int):
    try:
      self.process = subprocess.Popen([python, str(TORCH_STEPS), str(threads)],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    except OSError as e:
      sys.exit(f'vs_pytorch: cannot start {python} ({e}); see --help for installing PyTorch')

  def ask(self, **request) -> dict:
    try:
      self.process.stdin.write(json.dumps(request) + '\n')
      self.process.stdin.flush()
      line = self.process.stdout.readline()
    except BrokenPipeError:
      line = ''
    if not line:
      sys.exit('vs_pytorch: the PyTorch worker ended (its error is above); '
               'does --torch_python import torch and numpy? (see --help)')
    return json.loads(line)

  def close(self) -> None:
    self.process.stdin.close()
    self.process.wait()


def torch_setting(setting: step_throughput.Setting) -> dict:
  """What the PyTorch worker needs to build the same models, optimisers and batches."""
  config, task = setting.config, setting.task
  return dict(
      depth=config.model.depth, width=config.model.width, stem=config.model.stem,
      image_shape=setting.image_shape, num_old=task.num_old, num_seen=task.num_seen,
      batch_size=config.train.batch_size, learning_rate=config.train.learning_rate,
      momentum=config.train.momentum, weight_decay=config.train.weight_decay,
      padding=setting.augment['padding'], mean=setting.augment['mean'],
      std=setting.augment['std'], temperature=config.distillation.temperature,
      latent_dim=config.generator.latent_dim, hidden=config.generator.hidden,
      generator_batch_size=config.generator.batch_size,
      generator_learning_rate=config.generator.learning_rate,
      diversity_pairs=config.generator.diversity_pairs,
      generator_weights=config.generator.weights.to_dict(),
      generated_batch_size=config.replay.generated_batch_size or config.train.batch_size)


def _resnet_state_dict(variables: dict, keys: list[str]) -> dict:
  """Our ResNet `variables` under the torchvision keys `keys` (OIHW kernels)."""
  state = {}
  for key in keys:
    if key.startswith('fc.'):
      dense = variables['params']['head']['linear']['dense']
      state[key] = dense['kernel'].T if key.endswith('weight') else dense['bias']
      continue
    collection, path = torch_key_place(key)
    value = variables[collection]
    for name in path:
      value = value[name]
    state[key] = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value
  return state


def _generator_state_dict(params: dict, start: int) -> dict:
  """Our DAFL generator's `params` under torch_steps.Generator's keys."""
  kernel, bias = params['Linear_0']['dense']['kernel'], params['Linear_0']['dense']['bias']
  channels = kernel.shape[1] // start**2
  # Ours reshapes the linear output as (h, w, c), PyTorch's `view` as (c, h, w).
  state = {
      'linear.weight': kernel.reshape(-1, start, start, channels).transpose(3, 1, 2, 0).reshape(
          channels * start**2, -1),
      'linear.bias': bias.reshape(start, start, channels).transpose(2, 0, 1).reshape(-1)}
  for index, norm in ((0, 'BatchStatisticsNorm_0'), (3, 'BatchStatisticsNorm_1'),
                      (7, 'BatchStatisticsNorm_2')):
    state[f'layers.{index}.weight'] = params[norm]['scale']
    state[f'layers.{index}.bias'] = params[norm]['bias']
  for index, conv in ((2, 'Conv_0'), (6, 'Conv_1'), (9, 'Conv_2')):
    state[f'layers.{index}.weight'] = params[conv]['kernel'].transpose(3, 2, 0, 1)
    state[f'layers.{index}.bias'] = params[conv]['bias']
  return state


def torchvision_keys(depth: int) -> list[str]:
  """The state-dict keys of torchvision's BasicBlock ResNet of `depth` (weights and BN)."""
  bn = ('weight', 'bias', 'running_mean', 'running_var')
  keys = ['conv1.weight'] + [f'bn1.{f}' for f in bn]
  for stage, count in enumerate(STAGE_BLOCKS[depth]):
    for block in range(count):
      prefix = f'layer{stage + 1}.{block}.'
      keys += [prefix + 'conv1.weight'] + [prefix + f'bn1.{f}' for f in bn]
      keys += [prefix + 'conv2.weight'] + [prefix + f'bn2.{f}' for f in bn]
      if stage and not block:
        keys += [prefix + 'downsample.0.weight'] + [prefix + f'downsample.1.{f}' for f in bn]
  return keys + ['fc.weight', 'fc.bias']


def check_same_models(setting: step_throughput.Setting, worker: TorchWorker,
                      parameters: dict, folder: pathlib.Path) -> dict:
  """Parameter counts and outputs on copied weights agree; returns the largest gaps."""
  config, task, shape = setting.config, setting.task, setting.image_shape
  ours = {name: sum(x.size for x in jax.tree.leaves(
      variables['params'] if name != 'generator' else variables))
      for name, variables in setting.variables.items()}
  if ours != parameters:
    sys.exit(f'vs_pytorch: parameter counts differ: JAX {ours}, PyTorch {parameters}')
  host = jax.tree.map(np.asarray, setting.variables)
  keys = torchvision_keys(config.model.depth)
  arrays = {f'{name}/{key}': value for name in ('student', 'teacher')
            for key, value in _resnet_state_dict(host[name], keys).items()}
  arrays.update({f'generator/{key}': value for key, value in _generator_state_dict(
      host['generator'], shape[0] // 4).items()})
  np.savez(folder / 'weights.npz', **arrays)
  worker.ask(op='load', path=str(folder / 'weights.npz'))
  rng = np.random.default_rng(7)
  images = np.asarray(normalize(rng.integers(0, 256, (8,) + shape, np.uint8),
                                setting.augment['mean'], setting.augment['std']))
  z = rng.normal(size=(8, config.generator.latent_dim)).astype(np.float32)
  np.savez(folder / 'inputs.npz', images=images, z=z)
  worker.ask(op='outputs', path=str(folder / 'inputs.npz'), out=str(folder / 'outputs.npz'))
  theirs = np.load(folder / 'outputs.npz')
  student = resnet(config.model.depth, task.num_seen, config.model.width, config.model.stem)
  teacher = resnet(config.model.depth, task.num_old, config.model.width, config.model.stem)
  generator = Generator(shape[0], shape[-1], config.generator.latent_dim, config.generator.hidden)
  mine = {'student': student.apply(host['student'], images, train=False)[0],
          'teacher': teacher.apply(host['teacher'], images, train=False)[0],
          'generator': np.asarray(generator.apply({'params': host['generator']}, z)).transpose(
              0, 3, 1, 2)}
  gaps = {}
  for name, value in mine.items():
    gaps[name] = float(np.max(np.abs(np.asarray(value) - theirs[name])))
    scale = float(np.max(np.abs(theirs[name])))
    if not gaps[name] <= 1e-3 * max(scale, 1.0):  # (NaN fails too)
      sys.exit(f'vs_pytorch: the {name} computes differently in PyTorch (largest gap '
               f'{gaps[name]:.3g} at scale {scale:.3g}): the architectures are not the same')
  return gaps


def time_side_by_side(setting_name: str, worker: TorchWorker, rounds: int, steps: int,
                      folder: pathlib.Path, only: set[str],
                      done: Callable[[dict, dict], None]) -> None:
  """Times SETTING_NAME's steps (those in `only`, if given), calling `done(row, versions)`
  after each (versions: the PyTorch worker's)."""
  setting = step_throughput.build(setting_name)
  reply = worker.ask(op='build', setting=torch_setting(setting))
  gaps = check_same_models(setting, worker, reply['parameters'], folder)
  print(f'{setting_name}: same parameter counts {reply["parameters"]}; largest output gaps '
        f'{ {k: float(f"{v:.2g}") for k, v in gaps.items()} }', flush=True)
  for name, step, fresh_state, arguments, images in setting.steps:
    if only and TORCH_NAMES[name] not in only:
      continue
    state, _ = step(fresh_state(), *arguments)  # compiles
    jax.block_until_ready(state)
    worker.ask(op='run', step=TORCH_NAMES[name], steps=1)  # warms up
    rates = {'jax': [], 'torch': []}
    for _ in range(rounds):
      start = time.perf_counter()
      for _ in range(steps):
        state, _ = step(state, *arguments)
      jax.block_until_ready(state)
      rates['jax'].append(steps * images / (time.perf_counter() - start))
      seconds = worker.ask(op='run', step=TORCH_NAMES[name], steps=steps)['seconds']
      rates['torch'].append(steps * images / seconds)
    row = {'setting': setting_name, 'step': name, 'images': images,
           **{side: statistics.median(r) for side, r in rates.items()},
           **{f'{side}_range': (min(r), max(r)) for side, r in rates.items()}}
    print(f"  {name:20s} JAX {row['jax']:8.1f}  PyTorch {row['torch']:8.1f}  "
          f"ratio {row['jax'] / row['torch']:.2f}", flush=True)
    del state
    release_freed_memory()
    worker.ask(op='release')
    done(row, reply)


def markdown(rows: list[dict], versions: dict, rounds: int, steps: str) -> str:
  lines = [
      f'Machine: {platform.node()}, {os.cpu_count()} cores; jax {jax.__version__} '
      f'({jax.default_backend()}), torch {versions["torch"]} ({versions["threads"]} threads); '
      f'median over {rounds} interleaved rounds (steps per round: {steps}); images/s, min-max in '
      'brackets.',
      '', '| setting | step | images/step | JAX | PyTorch | JAX / PyTorch |',
      '|---|---|---|---|---|---|']
  for row in rows:
    jax_range, torch_range = row['jax_range'], row['torch_range']
    lines.append(
        f"| {row['setting']} | {row['step']} | {row['images']} | {row['jax']:.1f} "
        f"({jax_range[0]:.1f}-{jax_range[1]:.1f}) | {row['torch']:.1f} "
        f"({torch_range[0]:.1f}-{torch_range[1]:.1f}) | {row['jax'] / row['torch']:.2f} |")
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter,
                                   epilog=__doc__.split('\n\n', 1)[1])
  parser.add_argument('--settings', default=step_throughput.MEASURED)
  parser.add_argument('--rounds', type=int, default=5)
  parser.add_argument('--steps', default='default=3,cifar100_r34=1',
                      help='timed steps per round, per setting')
  parser.add_argument('--torch_python', default=sys.executable,
                      help='an interpreter that imports torch and numpy')
  parser.add_argument('--threads', type=int, default=os.cpu_count())
  parser.add_argument('--only', default='', help='these steps only: finetune,lwf,generator,replay')
  parser.add_argument('--out', default='', help='also write the table to this file')
  args = parser.parse_args()
  names = args.settings.split(',')
  for name in names:
    if name not in step_throughput.SETTINGS:
      parser.error(f'unknown setting {name!r}; choose from {", ".join(step_throughput.SETTINGS)}')
  steps = {}
  for item in args.steps.split(','):
    name, _, count = item.partition('=')
    if name not in step_throughput.SETTINGS or not count.isdigit() or int(count) < 1:
      parser.error(f'--steps: {item!r} is not SETTING=N with a known setting and N >= 1')
    steps[name] = int(count)
  if args.rounds < 1:
    parser.error('--rounds must be at least 1')
  only = set(filter(None, args.only.split(',')))
  if only - set(TORCH_NAMES.values()):
    parser.error(f'--only: unknown steps {sorted(only - set(TORCH_NAMES.values()))}')
  worker = TorchWorker(args.torch_python, args.threads)
  rows, versions = [], {}

  def done(row: dict, worker_versions: dict) -> None:  # the table so far: a failure keeps it
    rows.append(row)
    versions.update(worker_versions)
    if args.out:
      pathlib.Path(args.out).write_text(markdown(rows, versions, args.rounds, args.steps))

  with tempfile.TemporaryDirectory() as folder:
    for name in names:
      time_side_by_side(name, worker, args.rounds, steps.get(name, 1),
                        pathlib.Path(folder), only, done)
  worker.close()
  emit(markdown(rows, versions, args.rounds, args.steps), args.out)


if __name__ == '__main__':
  main()
