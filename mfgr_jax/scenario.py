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


def class_order(num_classes: int, spec: str, seed: int) -> list[int]:
  """Resolves a class-order spec.

  Args:
    num_classes: classes in the dataset.
    spec: 'identity' (the official MFGR code), 'seeded' (a permutation from
      `np.random.seed(seed)`; seed 1993 gives the iCaRL/PyCIL/FACIL order) or
      an explicit comma-separated list of label ids.
    seed: seed of the 'seeded' permutation.
  """
  if spec == 'identity':
    return list(range(num_classes))
  if spec == 'seeded':
    return [int(c) for c in np.random.RandomState(seed).permutation(num_classes)]
  try:
    order = [int(c) for c in spec.split(',')]
  except ValueError:
    raise UserError(f"scenario.class_order={spec!r} is not 'identity', 'seeded' or a "
                    'comma-separated list of label ids; fix --config.scenario.class_order') from None
  if sorted(order) != list(range(num_classes)):
    raise UserError(f'scenario.class_order lists {len(order)} labels but must be a permutation of '
                    f'0..{num_classes - 1}; list every class exactly once')
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
