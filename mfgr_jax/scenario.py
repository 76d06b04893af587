"""Class-incremental scenarios: class orders and the split into tasks.

The model's output index of a class is its position in the class order, so
task t owns a contiguous block of outputs [num_old, num_seen).
"""

import dataclasses

import numpy as np

from mfgr_jax.errors import UserError


@dataclasses.dataclass(frozen=True)
class Task:
  index: int
  classes: tuple[int, ...]  # dataset label ids, in class-order order
  num_old: int  # outputs that belong to earlier tasks
  num_seen: int  # outputs after this task: num_old + len(classes)

  @property
  def num_new(self) -> int:
    return self.num_seen - self.num_old


def listed_classes(spec: str) -> list[int] | None:
  """The label ids of an explicit class-order spec; None for 'identity' and 'seeded'."""
  if spec in ('identity', 'seeded'):
    return None
  try:
    order = [int(c) for c in spec.split(',')]
  except ValueError:
    raise UserError(f"scenario.class_order={spec!r} is not 'identity', 'seeded' or a "
                    'comma-separated list of label ids; fix --config.scenario.class_order') from None
  if len(set(order)) != len(order):
    repeated = sorted({c for c in order if order.count(c) > 1})
    raise UserError(f'scenario.class_order lists label(s) {repeated} more than once; list each '
                    'class once')
  return order


def class_order(num_classes: int, spec: str, seed: int) -> list[int]:
  """Resolves a class-order spec.

  Args:
    num_classes: classes in the dataset.
    spec: 'identity' (the official MFGR code), 'seeded' (a permutation from
      `np.random.seed(seed)`; seed 1993 gives the iCaRL/PyCIL/FACIL order) or
      an explicit comma-separated list of label ids: all of the dataset's
      classes, or the subset the scenario uses (e.g. 20 of CUB's 200).
    seed: seed of the 'seeded' permutation.
  """
  if spec == 'identity':
    return list(range(num_classes))
  if spec == 'seeded':
    return [int(c) for c in np.random.RandomState(seed).permutation(num_classes)]
  order = listed_classes(spec)
  outside = [c for c in order if not 0 <= c < num_classes]
  if outside:
    raise UserError(f'scenario.class_order has label(s) {outside[:5]} outside 0..{num_classes - 1}'
                    ' of the dataset; fix --config.scenario.class_order')
  return order


def make_tasks(order: list[int], base_classes: int, increment: int) -> list[Task]:
  """Splits `order` into a base task of `base_classes` and tasks of `increment`.

  `base_classes=0` means the first task also has `increment` classes (B0 IncN).
  """
  num_classes = len(order)
  first = base_classes or increment
  if increment <= 0 or base_classes < 0:
    raise UserError(f'scenario needs increment > 0 and base_classes >= 0 (got base_classes='
                    f'{base_classes}, increment={increment})')
  if first > num_classes or (num_classes - first) % increment:
    raise UserError(
        f'cannot split {num_classes} classes into a base task of {first} and tasks of '
        f'{increment}: {num_classes} - {first} is not a multiple of {increment}; change '
        'scenario.base_classes or scenario.increment')
  sizes = [first] + [increment] * ((num_classes - first) // increment)
  tasks, start = [], 0
  for index, size in enumerate(sizes):
    tasks.append(Task(index, tuple(order[start:start + size]), start, start + size))
    start += size
  return tasks
