"""Where one train step's time goes, by kind of XLA operation.

    python -m benchmarks.step_profile [--setting default] [--step finetune] [--steps 5] [--out FILE]

Builds the step as `benchmarks/step_throughput.py` does (--step: finetune, lwf,
generator, replay), runs it --steps times under JAX's profiler, and sums the
time of each compiled operation (the trace's per-operation events on every XLA
thread; so CPU time over all threads, not wall time) by kind: convolutions split
into forward, input gradient and weight gradient (by their output's shape: a
kernel's shape is a weight gradient), transposes and copies, YNNPACK fusions
(dots), other fusions (elementwise, BatchNorm, reductions). Prints milliseconds
per step and shares, and the step's wall time.

What the trace cannot show: XLA's own convolution kernels (those not handed to
YNNPACK) hand their work to the thread pool, and the trace's event for such a
convolution covers only part of it, so their rows undercount them. The other
kinds run inside their events: their milliseconds are what they cost.
"""

import argparse
import collections
import gzip
import json
import pathlib
import re
import tempfile
import time

import jax

from benchmarks import emit, step_throughput

STEPS = {'finetune': 'finetune', 'lwf': 'lwf', 'generator': 'generator (stage I)',
         'replay': 'replay (stage II)'}
_INSTRUCTION = re.compile(r'^\s*(?:ROOT )?%?([\w.\-]+) = \w+\[([\d,]*)\][^ ]* (\w[\w\-]*)\(')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_COMPUTATION = re.compile(r'^(?:ENTRY )?%([\w.\-]+) ')
_CALLS = re.compile(r'calls=%([\w.\-]+)')


def instruction_kinds(hlo_text: str, kernel_shapes: set[tuple[int, ...]]) -> dict[str, str]:
  """Instruction name -> kind, for the instructions the executable runs (not those
  inside a fusion's body, which run as part of the fusion). A convolution, alone or
  as a fusion around one (XLA's `wrapped_convolution`, a YNNPACK fusion), whose output
  has a kernel's dimensions in any layout is a weight gradient (XLA leaves those
  without an op name); of the others, those of the backward pass (`transpose(` in
  the op name) are input gradients."""
  lines = hlo_text.splitlines()
  fusion_bodies = {body for line in lines if ' fusion(' in line for body in _CALLS.findall(line)}
  convolution_in, computation = {}, None
  for line in lines:  # the convolution inside each fusion body, if any
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
    elif ' convolution(' in line:
      convolution_in[computation] = line
  kinds, computation = {}, None
  for line in lines:
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
    match = _INSTRUCTION.match(line)
    if header or not match or computation in fusion_bodies:
      continue
    name, shape, opcode = match.groups()
    body = next(iter(_CALLS.findall(line)), None) if opcode == 'fusion' else None
    convolution = line if opcode == 'convolution' else convolution_in.get(body)
    dims = tuple(sorted(int(d) for d in shape.split(',') if d))
    if convolution:
      found = _OP_NAME.search(convolution)
      kind = ('convolution: weight gradient' if dims in kernel_shapes else
              'convolution: forward' if 'transpose(' not in (found.group(1) if found else '')
              else 'convolution: input gradient')
    elif opcode in ('transpose', 'copy') or name.startswith(('transpose', 'copy')):
      kind = 'transposes and copies'
    elif opcode == 'fusion' and 'kind=kCustom' in line and 'ynn' in name:
      kind = 'YNNPACK fusions (dots, reductions)'
    elif opcode in ('fusion', 'reduce', 'reduce-window', 'select-and-scatter'):
      kind = 'other fusions (elementwise, BatchNorm)'
    else:
      continue
    kinds[name] = kind
  return kinds


def _trace_events(folder: str) -> list[dict]:
  path = next(pathlib.Path(folder).glob('**/*.trace.json.gz'))
  trace = json.loads(gzip.open(path).read())
  return trace['traceEvents'] if isinstance(trace, dict) else trace


def profile(setting: str, step_name: str, steps: int) -> tuple[dict[str, float], float]:
  """(milliseconds per step by kind, summed over threads; wall milliseconds per step)."""
  for name, step, fresh_state, arguments, _ in step_throughput.build(setting).steps:
    if name == STEPS[step_name]:
      break
  state = fresh_state()
  kernels = {tuple(sorted(leaf.shape)) for leaf in jax.tree_util.tree_leaves(state.params)
             if leaf.ndim == 4}  # (h, w, in, out)
  kinds = instruction_kinds(step.lower(state, *arguments).compile().as_text(), kernels)
  state, _ = step(state, *arguments)
  jax.block_until_ready(state)
  folder = tempfile.mkdtemp(prefix='step_profile_')
  with jax.profiler.trace(folder, create_perfetto_trace=True):
    start = time.perf_counter()
    for _ in range(steps):
      state, _ = step(state, *arguments)
    jax.block_until_ready(state)
    wall = (time.perf_counter() - start) / steps
  totals = collections.Counter()
  for event in _trace_events(folder):
    kind = kinds.get(event.get('name', '')) if event.get('ph') == 'X' else None
    if kind:
      totals[kind] += event['dur'] / 1000 / steps  # microseconds -> ms per step
  return dict(totals), 1000 * wall


def markdown(setting: str, step_name: str, totals: dict[str, float], wall: float) -> str:
  busy = sum(totals.values())
  lines = [f'{setting}, {STEPS[step_name]}: {wall:.0f} ms per step (wall); operations '
           f'{busy:.0f} ms of CPU time per step over all threads (XLA\'s own convolutions '
           'are undercounted: they run on the thread pool outside their events)', '',
           '| operations | ms per step | share |', '|---|---|---|']
  for kind, milliseconds in sorted(totals.items(), key=lambda item: -item[1]):
    lines.append(f'| {kind} | {milliseconds:.1f} | {100 * milliseconds / busy:.0f} % |')
  return '\n'.join(lines) + '\n'


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--setting', default='default', choices=sorted(step_throughput.SETTINGS))
  parser.add_argument('--step', default='finetune', choices=sorted(STEPS))
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--out', default='', help='also write the table to this file')
  args = parser.parse_args()
  totals, wall = profile(args.setting, args.step, args.steps)
  emit(markdown(args.setting, args.step, totals, wall), args.out)


if __name__ == '__main__':
  main()
