"""Images per second of the train steps, on whatever backend JAX finds.

    python -m benchmarks.step_throughput [--settings default,cifar100_r34] [--steps 10]
        [--out docs/performance/cpu.md]

Measures, for each setting, the steps a run spends its time in: the
classifier step of finetune and of LwF (+ the frozen old model's forward),
MFGR's stage I generator step and stage II replay step (new + generated
images, both forwards). Batches are random images of the setting's shape
(throughput does not depend on their content). Prints and writes a markdown
table with the machine, the JAX version, the device count, XLA's FLOP count
of each compiled step and the fraction of the machine's measured matmul
rate it reaches. For N devices, run it with N devices visible (on CPU:
XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

import argparse
import platform
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import emit
from configs import cifar100_5phase, default, smoke
from mfgr_jax import classifier, inversion, parallel
from mfgr_jax.methods import get_method
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task

SETTINGS = {
    # name: (config, image shape, classes before / after the new task)
    'default': (default.get_config, (28, 28, 1), 2, 4),
    'cifar100_r34': (lambda: cifar100_5phase.get_config(''), (32, 32, 3), 20, 40),
    'smoke': (smoke.get_config, (16, 16, 1), 2, 4),  # for tests: seconds to compile
}
MEASURED = 'default,cifar100_r34'  # what the benchmarks measure unless told otherwise


def _time(step, state, arguments, steps: int) -> tuple[Any, float]:
  """Seconds per call of `state, _ = step(state, *arguments)`, the compiling call excluded."""
  state, _ = step(state, *arguments)
  jax.block_until_ready(state)
  start = time.perf_counter()
  for _ in range(steps):
    state, _ = step(state, *arguments)
  jax.block_until_ready(state)
  return state, (time.perf_counter() - start) / steps


def _flops(step, *arguments) -> float | None:
  """XLA's FLOP count of one call on all devices (it counts one device's share)."""
  cost = step.lower(*arguments).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return cost['flops'] * jax.device_count() if cost and 'flops' in cost else None


def peak_matmul_flops() -> float:
  """FLOP/s of a large float32 matmul on the first device: the machine's practical peak."""
  a = jnp.ones((2048, 2048), jnp.float32)
  matmul = jax.jit(jnp.matmul)
  jax.block_until_ready(matmul(a, a))
  start = time.perf_counter()
  for _ in range(5):
    jax.block_until_ready(matmul(a, a))
  return 5 * 2 * 2048**3 / (time.perf_counter() - start)


class Setting(NamedTuple):
  """The models of one setting, their variables, and its steps ready to call."""
  config: Any
  image_shape: tuple[int, int, int]
  task: Task
  augment: dict
  variables: dict  # host copies: 'student', 'teacher' ({params, batch_stats}), 'generator'
  steps: list[tuple[str, Any, Callable[[], Any], tuple, int]]  # name, step, fresh state, args, images


def build(setting: str, compute_dtype: str = 'float32') -> Setting:
  """The steps a run of SETTING spends its time in, on random batches of its shape:
  finetune's and LwF's classifier steps, MFGR's stage I generator step and stage
  II replay step, each with a function making a fresh (replicated) state."""
  get_config, shape, num_old, num_seen = SETTINGS[setting]
  config = get_config()
  task = Task(1, tuple(range(num_old, num_seen)), num_old, num_seen)
  batch_size = config.train.batch_size
  model = resnet(config.model.depth, num_seen, config.model.width, config.model.stem,
                 bn_axis_name=parallel.AXIS, dtype=compute_dtype)
  teacher = resnet(config.model.depth, num_old, config.model.width, config.model.stem,
                   bn_axis_name=parallel.AXIS, dtype=compute_dtype)
  image = jnp.zeros((1,) + shape)
  model_vars = parallel.to_host(model.init(jax.random.PRNGKey(0), image, train=False))
  teacher_host = parallel.to_host(teacher.init(jax.random.PRNGKey(1), image, train=False))
  teacher_vars = parallel.replicate(teacher_host)
  rng = np.random.default_rng(0)
  rows = parallel.local_rows(batch_size)
  batch = parallel.shard({
      'image': rng.integers(0, 256, (batch_size,) + shape, dtype=np.uint8)[rows],
      'label': rng.integers(num_old, num_seen, batch_size).astype(np.int32)[rows],
      'aug_key': np.asarray(jax.random.split(jax.random.PRNGKey(2), batch_size))[rows]})
  augment = dict(padding=config.data.crop_padding, flip=config.data.flip,
                 mean=(0.5,) * shape[-1], std=(0.25,) * shape[-1])
  tx = classifier.make_optimizer(config.train, 1000)

  def fresh_state():
    return parallel.replicate(classifier.init_train_state(
        model_vars['params'], model_vars['batch_stats'], tx))

  steps = []
  for method in ('finetune', 'lwf'):
    uses_teacher = method == 'lwf'  # finetune runs no teacher
    step = classifier.make_train_step(model, tx, get_method(method).make_loss(task, config),
                                      augment, teacher if uses_teacher else None)
    steps.append((method, step, fresh_state,
                  (batch, teacher_vars if uses_teacher else None, None), batch_size))

  generator_config = config.generator
  generator = Generator(shape[0], shape[-1], generator_config.latent_dim,
                        generator_config.hidden, generator_config.architecture,
                        axis_name=parallel.AXIS)
  generator_tx = inversion.make_optimizer(generator_config)
  generator_step = inversion.make_generator_step(generator, teacher, generator_tx,
                                                 generator_config, MFGR_TERMS)
  generator_state = parallel.to_host(
      inversion.init_state(generator, jax.random.PRNGKey(3), generator_tx))
  steps.append(('generator (stage I)', generator_step,
                lambda: parallel.replicate(generator_state),
                (teacher_vars, jax.random.PRNGKey(4)), generator_config.batch_size))

  generated = config.replay.generated_batch_size or batch_size
  replay_step = classifier.make_replay_step(
      model, tx, get_method('mfgr').make_loss(task, config), augment, teacher,
      classifier.generator_source(generator, generated), config.replay.single_pass)
  steps.append(('replay (stage II)', replay_step, fresh_state,
                (batch, teacher_vars, parallel.replicate(generator_state.params),
                 jax.random.PRNGKey(5)), batch_size))
  variables = {'student': model_vars, 'teacher': teacher_host,
               'generator': generator_state.params}
  return Setting(config, shape, task, augment, variables, steps)


def measure(setting: str, steps: int, compute_dtype: str) -> list[dict]:
  rows = []
  for name, step, fresh_state, arguments, images_per_step in build(setting, compute_dtype).steps:
    state = fresh_state()
    flops = _flops(step, state, *arguments)
    _, seconds = _time(step, state, arguments, steps)
    rows.append({'setting': setting, 'step': name, 'batch': images_per_step,
                 'images_per_second': images_per_step / seconds,
                 'milliseconds': 1000 * seconds, 'flops': flops})
  return rows


def machine_peak(peak_per_device: float) -> float:
  """Simulated CPU devices share the same cores, whose peak one device already reaches."""
  return peak_per_device * (1 if jax.default_backend() == 'cpu' else jax.device_count())


def markdown(rows: list[dict], peak: float, compute_dtype: str) -> str:
  device = jax.devices()[0]
  lines = [
      f'Machine: {platform.node()}, {platform.processor() or platform.machine()}, '
      f'{jax.device_count()} x {device.device_kind} ({jax.default_backend()}); '
      f'jax {jax.__version__}, compute dtype {compute_dtype}; measured matmul peak '
      f'{peak / 1e9:.0f} GFLOP/s per device, {machine_peak(peak) / 1e9:.0f} for the machine.', '',
      '| setting | step | images/step | ms/step | images/s | GFLOP/step | % of peak |',
      '|---|---|---|---|---|---|---|']
  for row in rows:
    flops = row['flops']
    share = (f"{100 * flops / (row['milliseconds'] / 1000) / machine_peak(peak):.0f}"
             if flops else 'n/a')
    lines.append(f"| {row['setting']} | {row['step']} | {row['batch']} | "
                 f"{row['milliseconds']:.0f} | {row['images_per_second']:.0f} | "
                 f"{flops / 1e9 if flops else float('nan'):.1f} | {share} |")
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--settings', default=MEASURED)
  parser.add_argument('--steps', type=int, default=10, help='timed steps per measurement')
  parser.add_argument('--compute_dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--out', default='', help='also write the table to this file')
  args = parser.parse_args()
  rows = []
  for setting in args.settings.split(','):
    if setting not in SETTINGS:
      parser.error(f'unknown setting {setting!r}; choose from {", ".join(SETTINGS)}')
    rows += measure(setting, args.steps, args.compute_dtype)
  table = markdown(rows, peak_matmul_flops(), args.compute_dtype)
  emit(table, args.out)


if __name__ == '__main__':
  main()
