"""What the training loop costs per step beyond the step itself.

    python -m benchmarks.loop_overhead [--steps 600] [--out docs/performance/loop_overhead.md]

Runs task 0 of configs/smoke.py (2 classes, 192 images, 6 steps an epoch) with a
network so small that its step costs almost nothing (ResNet-18 width 1 on 16x16x1
images, batch 32), three ways:

- `train.run`: the whole loop (batch sampling and transfer, the step, progress,
  metrics every `log_every_steps`, preemption checks), read from results.json
  (steps/s after the compiling step);
- the sampler alone: `BatchSampler(step)` for every step (indices, images,
  augmentation keys, the transfer to the device);
- the step alone: the same jitted step called on one batch already on the
  device.

The loop's steps/s is the upper bound of any run's steps/s on this machine;
loop minus step is the per-step overhead that several steps per dispatch
(`lax.scan`) or a device-resident training set would remove.
"""

import argparse
import tempfile
import time

import jax
import numpy as np

from benchmarks import emit
from configs import smoke
from mfgr_jax import classifier, parallel, train
from mfgr_jax.data.sampler import BatchSampler
from mfgr_jax.methods import get_method
from mfgr_jax.models.resnet import resnet
from mfgr_jax.scenario import Task


# Smoke's task 0: classes 0 and 1, 96 images each, batch 32.
CLASSES, IMAGES = 2, 192
STEPS_PER_EPOCH = IMAGES // 32


def tiny_config(steps: int):
  config = smoke.get_config()
  config.scenario.num_tasks = 1
  config.model.width = 1
  config.log_every_steps = 50
  config.checkpoint_every_steps = 10**6
  config.train.epochs = -(-steps // STEPS_PER_EPOCH)
  return config


def per_step_seconds(call, steps: int) -> float:
  call(0)  # compiles, warms up
  start = time.perf_counter()
  for i in range(1, steps + 1):
    out = call(i)
  jax.block_until_ready(out)
  return (time.perf_counter() - start) / steps


def measure(steps: int) -> dict:
  config = tiny_config(steps)
  with tempfile.TemporaryDirectory() as workdir:
    results = train.run(config, workdir)
  loop_images_per_second = results['throughput'][0]['train_images_per_second']
  batch_size = config.train.batch_size

  data = np.random.default_rng(0).integers(0, 256, (IMAGES, 16, 16, 1), np.uint8)
  labels = np.repeat(np.arange(CLASSES), IMAGES // CLASSES).astype(np.int32)
  sampler = BatchSampler(data, labels, np.arange(IMAGES), batch_size, jax.random.PRNGKey(0),
                         jax.random.PRNGKey(1))
  sampler_seconds = per_step_seconds(lambda i: sampler(i)['image'], steps)

  task = Task(0, tuple(range(CLASSES)), 0, CLASSES)
  model = resnet(18, CLASSES, 1, bn_axis_name=parallel.AXIS)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 16, 16, 1)), train=False)
  tx = classifier.make_optimizer(config.train, steps)
  step = classifier.make_train_step(model, tx, get_method('finetune').make_loss(task, config),
                                    dict(padding=2, flip=True, mean=(0.5,), std=(0.25,)))
  state = [parallel.replicate(classifier.init_train_state(variables['params'],
                                                          variables['batch_stats'], tx))]
  batch = sampler(0)

  def call(_):
    state[0], metrics = step(state[0], batch, None, None)
    return metrics

  step_seconds = per_step_seconds(call, steps)
  return {'loop': batch_size / loop_images_per_second, 'sampler': sampler_seconds,
          'step': step_seconds}


def markdown(seconds: dict, steps: int) -> str:
  steps = -(-steps // STEPS_PER_EPOCH) * STEPS_PER_EPOCH  # whole epochs
  rows = [('the whole loop (`train.run`)', seconds['loop']),
          ('the sampler alone', seconds['sampler']),
          ('the jitted step alone (batch on the device)', seconds['step']),
          ('loop - step: overhead per step', seconds['loop'] - seconds['step'])]
  lines = [f'jax {jax.__version__} ({jax.default_backend()}), {steps} steps of ResNet-18 width 1, '
           '16x16x1, batch 32 (configs/smoke.py task 0).', '',
           '| what | ms/step | steps/s |', '|---|---|---|']
  lines += [f'| {name} | {1000 * s:.2f} | {1 / s:.0f} |' for name, s in rows]
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--steps', type=int, default=600)
  parser.add_argument('--out', default='', help='also write the table to this file')
  args = parser.parse_args()
  emit(markdown(measure(args.steps), args.steps), args.out)


if __name__ == '__main__':
  main()
