"""Is XLA's weight gradient of a 3x3 convolution the slow part on this CPU?

    python -m benchmarks.conv_weight_gradient [--torch_python .torch-venv/bin/python] [--out FILE]

For the convolution shapes of the CIFAR ResNets and of the 28x28 generator
(batch 128), times the forward, XLA's input gradient and XLA's weight gradient,
and two reformulations of the weight gradient that a custom VJP could use
instead: `shifted matmuls` (one x_shifted^T @ dy per kernel tap, summed) and
`im2col` (all taps' patches, then one matmul). Each reformulation is checked
against XLA's gradient (max relative difference). With `--torch_python` (an
interpreter that imports torch; see benchmarks/vs_pytorch.py), PyTorch's
forward, input and weight gradient of the same shapes are timed too
(benchmarks/torch_conv.py, every core). Writes a markdown table.
"""

import argparse
import json
import os
import pathlib
import subprocess
import time

import jax
import jax.numpy as jnp
from jax import lax

from benchmarks import emit

SHAPES = [  # (batch, size, in channels, out channels, stride)
    (128, 32, 16, 16, 1), (128, 32, 64, 64, 1), (128, 32, 64, 128, 2),
    (128, 16, 128, 128, 1), (128, 8, 256, 256, 1), (128, 4, 512, 512, 1),
    (128, 14, 128, 128, 1), (128, 28, 128, 64, 1)]  # the last two: the 28x28 generator's
TORCH_CONV = pathlib.Path(__file__).with_name('torch_conv.py')
_NUMBERS = ('NHWC', 'HWIO', 'NHWC')


def conv(x: jax.Array, w: jax.Array, stride: int) -> jax.Array:
  return lax.conv_general_dilated(x, w, (stride, stride), ((1, 1), (1, 1)),
                                  dimension_numbers=_NUMBERS)


def _taps(x: jax.Array, dy: jax.Array, stride: int) -> list[jax.Array]:
  """The input window each 3x3 kernel tap sees, aligned with `dy`."""
  padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  n, height, width, _ = dy.shape
  return [lax.slice(padded, (0, i, j, 0),
                    (n, i + stride * (height - 1) + 1, j + stride * (width - 1) + 1, x.shape[-1]),
                    (1, stride, stride, 1)) for i in range(3) for j in range(3)]


def shifted_matmuls(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  contract = (((0, 1, 2), (0, 1, 2)), ((), ()))
  grads = [lax.dot_general(tap, dy, contract) for tap in _taps(x, dy, stride)]
  return jnp.stack(grads).reshape(3, 3, x.shape[-1], dy.shape[-1])


def im2col(x: jax.Array, dy: jax.Array, stride: int) -> jax.Array:
  patches = jnp.concatenate(_taps(x, dy, stride), axis=-1).reshape(-1, 9 * x.shape[-1])
  return (patches.T @ dy.reshape(-1, dy.shape[-1])).reshape(3, 3, x.shape[-1], dy.shape[-1])


def _seconds(fn, *arguments, repeats: int = 5) -> float:
  jax.block_until_ready(fn(*arguments))
  start = time.perf_counter()
  for _ in range(repeats):
    jax.block_until_ready(fn(*arguments))
  return (time.perf_counter() - start) / repeats


def _torch_milliseconds(python: str) -> list[list[float]]:
  """PyTorch's forward, input and weight gradient per shape of SHAPES (before JAX
  runs: the two would share the cores)."""
  proc = subprocess.run([python, str(TORCH_CONV), str(os.cpu_count()), json.dumps(SHAPES)],
                        capture_output=True, text=True, check=False)
  if proc.returncode:
    raise SystemExit(f'conv_weight_gradient: error: {python} {TORCH_CONV.name} failed: '
                     f'{(proc.stderr.strip().splitlines() or ["no output"])[-1]}')
  return json.loads(proc.stdout)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--torch_python', default='',
                      help='also time PyTorch in this interpreter (it must import torch)')
  parser.add_argument('--out', default='')
  args = parser.parse_args()
  torch_milliseconds = _torch_milliseconds(args.torch_python) if args.torch_python else None
  torch_columns = ' PyTorch forward | PyTorch input grad | PyTorch weight grad |'
  lines = [f'jax {jax.__version__} on {jax.devices()[0].device_kind}; milliseconds per call',
           '', '| batch, size, in, out, stride | forward | input grad | weight grad (XLA) |' +
           (torch_columns if torch_milliseconds else '') +
           ' shifted matmuls | im2col | max rel. difference |',
           '|---' * (7 + (3 if torch_milliseconds else 0)) + '|']
  for row, (batch, size, c_in, c_out, stride) in enumerate(SHAPES):
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(keys[0], (batch, size, size, c_in))
    w = 0.1 * jax.random.normal(keys[1], (3, 3, c_in, c_out))
    dy = jax.random.normal(keys[2], conv(x, w, stride).shape)
    forward = jax.jit(lambda x, w: conv(x, w, stride))
    input_grad = jax.jit(lambda w, dy: jax.vjp(lambda x_: conv(x_, w, stride), x)[1](dy)[0])
    weight_grad = jax.jit(lambda x, dy: jax.vjp(lambda w_: conv(x, w_, stride), w)[1](dy)[0])
    shifted = jax.jit(lambda x, dy: shifted_matmuls(x, dy, stride))
    patches = jax.jit(lambda x, dy: im2col(x, dy, stride))
    reference = weight_grad(x, dy)
    difference = max(float(jnp.max(jnp.abs(f(x, dy) - reference)) / jnp.max(jnp.abs(reference)))
                     for f in (shifted, patches))
    milliseconds = [1000 * _seconds(f, *a) for f, a in (
        (forward, (x, w)), (input_grad, (w, dy)), (weight_grad, (x, dy)))]
    milliseconds += torch_milliseconds[row] if torch_milliseconds else []
    milliseconds += [1000 * _seconds(f, x, dy) for f in (shifted, patches)]
    lines.append(f'| {batch}, {size}, {c_in}, {c_out}, {stride} | ' +
                 ' | '.join(f'{t:.1f}' for t in milliseconds) + f' | {difference:.1e} |')
  table = '\n'.join(lines) + '\n'
  emit(table, args.out)


if __name__ == '__main__':
  main()
