"""PyTorch's 3x3 convolution timed as benchmarks/conv_weight_gradient.py times XLA's.

Imports only torch (not the project), so it runs under any interpreter that has it:

    python benchmarks/torch_conv.py THREADS '[[batch, size, in, out, stride], ...]'

Prints one JSON list: per shape, milliseconds per call of the forward, the input
gradient and the weight gradient (oneDNN's kernels, NCHW as PyTorch users train).
"""

import json
import sys
import time

import torch


def _milliseconds(fn, repeats: int = 5) -> float:
  fn()
  start = time.perf_counter()
  for _ in range(repeats):
    fn()
  return 1000 * (time.perf_counter() - start) / repeats


def measure(batch: int, size: int, c_in: int, c_out: int, stride: int) -> list[float]:
  generator = torch.Generator().manual_seed(0)
  x = torch.randn(batch, c_in, size, size, generator=generator)
  w = 0.1 * torch.randn(c_out, c_in, 3, 3, generator=generator)
  forward = lambda: torch.nn.functional.conv2d(x, w, stride=stride, padding=1)
  with torch.no_grad():
    dy = torch.randn(forward().shape, generator=generator)
  input_grad = lambda: torch.nn.grad.conv2d_input(x.shape, w, dy, stride=stride, padding=1)
  weight_grad = lambda: torch.nn.grad.conv2d_weight(x, w.shape, dy, stride=stride, padding=1)
  with torch.no_grad():
    return [_milliseconds(f) for f in (forward, input_grad, weight_grad)]


if __name__ == '__main__':
  torch.set_num_threads(int(sys.argv[1]))
  print(json.dumps([measure(*shape) for shape in json.loads(sys.argv[2])]))
