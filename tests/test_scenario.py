import pytest

from mfgr_jax.errors import UserError
from mfgr_jax.scenario import class_order, listed_classes, make_tasks


def test_seeded_order_matches_icarl_pycil_facil():
  order = class_order(100, 'seeded', 1993)
  assert order[:19] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43]
  assert sorted(order) == list(range(100))


def test_identity_and_explicit_orders():
  assert class_order(4, 'identity', 0) == [0, 1, 2, 3]
  assert class_order(4, '2,0,3,1', 0) == [2, 0, 3, 1]


def test_explicit_order_may_use_a_subset_of_the_classes():
  assert class_order(200, '7,3', 0) == [7, 3]
  assert listed_classes('7,3') == [7, 3]
  assert listed_classes('identity') is None and listed_classes('seeded') is None


@pytest.mark.parametrize('spec', ['0,1,1,2', '0,1,4', '-1,2', 'random', '0,1,2,x'])
def test_bad_orders_are_rejected(spec):
  with pytest.raises(UserError, match='class_order'):
    class_order(4, spec, 0)


def test_b50_inc10():
  tasks = make_tasks(list(range(100)), 50, 10)
  assert len(tasks) == 6
  assert (tasks[0].num_old, tasks[0].num_seen) == (0, 50)
  assert (tasks[3].num_old, tasks[3].num_seen, tasks[3].num_new) == (70, 80, 10)
  assert tasks[5].classes == tuple(range(90, 100))


def test_b0_inc20_follows_the_order():
  order = class_order(100, 'seeded', 1993)
  tasks = make_tasks(order, 0, 20)
  assert len(tasks) == 5
  assert tasks[0].classes == tuple(order[:20])
  assert [t.index for t in tasks] == list(range(5))


@pytest.mark.parametrize('base,inc', [(0, 30), (50, 7), (110, 10), (0, 0), (-10, 10)])
def test_impossible_splits_are_rejected(base, inc):
  with pytest.raises(UserError, match='scenario'):
    make_tasks(list(range(100)), base, inc)
