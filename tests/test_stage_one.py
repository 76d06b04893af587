"""Stage I kinds (stage_one.py): what each records, through the narrow runner the
loop gives it (`StageIRunner`, faked here: the real one is tests/test_stage_runner.py,
whole runs are tests/end_to_end/), the replayed batch size, the kinds' checks; and
that the method interface (methods -> stage_one) does not import the loop.
Each kind's steps: tests/test_inversion.py."""

import subprocess
import sys

import jax
import numpy as np
import pytest

from mfgr_jax import parallel
from mfgr_jax import stage_one
from mfgr_jax.errors import UserError
from mfgr_jax.experiment import build_experiment
from mfgr_jax.methods.abd import ABD_TERMS
from mfgr_jax.methods.mfgr import MFGR_TERMS
from mfgr_jax.scenario import Task

from conftest import REPO


class RecordingRunner:
  """A `StageIRunner` that records what the kind asks and runs no step."""

  def __init__(self):
    self.runs, self.grids = [], []

  def run_to_end(self, stage, state, step, arguments, log_every):
    self.runs.append((stage, step, arguments, log_every))
    self.started_from = state
    return parallel.replicate(state), None

  def write_images(self, stage, grid):
    self.grids.append((stage, grid.shape))


@pytest.mark.parametrize('balance, task, expected', [
    ('fixed', Task(1, (4, 5), 4, 6), 32),  # replay.generated_batch_size
    ('per_class', Task(1, (4, 5), 4, 6), 64),  # 32 real / 2 new classes * 4 old
    ('per_class', Task(1, (3, 4, 5), 3, 6), 32),
])
def test_generated_batch_size(smoke_config, balance, task, expected):
  smoke_config.replay.balance = balance
  assert stage_one.generated_batch_size(smoke_config, task) == expected


def test_each_kind_names_its_stage_section_and_steps(smoke_config):
  generator = stage_one.generator(ABD_TERMS, loss_section='abd')
  assert (generator.stage, generator.section) == ('generator', 'generator')
  assert generator.steps(smoke_config) == smoke_config.generator.steps
  assert generator.record.args == (ABD_TERMS, 'abd')
  pool = stage_one.PIXEL_POOL
  assert (pool.stage, pool.section) == ('synthesis', 'deepinversion')
  assert pool.steps(smoke_config) == 2 * smoke_config.deepinversion.iterations  # 2 batches
  assert stage_one.NONE.steps(smoke_config) == 0 and stage_one.NONE.record is None


@pytest.mark.parametrize('kind, stage, log_every', [
    (stage_one.generator(MFGR_TERMS), 'generator', 'generator'),
    (stage_one.PIXEL_POOL, 'synthesis', 'deepinversion'),
])
def test_record_runs_its_stage_through_the_loop_s_runner(smoke_config, tmp_path, kind, stage,
                                                         log_every):
  experiment = build_experiment(smoke_config, tmp_path)
  runner = RecordingRunner()
  task = experiment.tasks[1]
  replay_arrays, throughput, carried = kind.record(experiment, task, 'old variables', runner,
                                                   None)
  assert carried is None  # neither carries anything by default
  [(ran, step, arguments, every)] = runner.runs
  assert ran == stage and callable(step) and every == smoke_config[log_every].log_every_steps
  assert arguments[0] == 'old variables'  # the frozen old model, then the stage's key
  assert runner.grids and runner.grids[0][0] == stage  # one sample grid, at the end
  like = kind.arrays_like(experiment)  # what a resumed stage II restores must match
  assert (jax.tree.structure(replay_arrays) == jax.tree.structure(like) and
          [x.shape for x in jax.tree.leaves(replay_arrays)] ==
          [x.shape for x in jax.tree.leaves(like)])
  assert list(throughput) == [f'{stage}_images_per_second'] and throughput[
      f'{stage}_images_per_second'] is None  # no step was timed


def test_a_warm_started_generator_goes_on_from_the_previous_task_s(smoke_config, tmp_path):
  smoke_config.generator.warm_start = True
  smoke_config.generator.sample_statistics = 'running'
  experiment = build_experiment(smoke_config, tmp_path)
  kind = stage_one.generator(ABD_TERMS, loss_section='abd')
  first, second = RecordingRunner(), RecordingRunner()
  _, _, carried = kind.record(experiment, experiment.tasks[1], None, first, None)
  like = kind.carried_like(experiment)  # the target that restores it from a checkpoint
  assert jax.tree.structure(carried) == jax.tree.structure(like)
  trained = jax.tree.map(lambda x: x + 1, carried)  # as if stage I had moved it
  trained['generator'] = trained['generator'].replace(step=np.int32(40))
  kind.record(experiment, experiment.tasks[2], None, second, trained)
  started = second.started_from
  assert int(started.step) == 0  # this task's steps; Adam's count in opt_state goes on
  for got, want in ((started.params, trained['generator'].params),
                    (started.opt_state, trained['generator'].opt_state),
                    (started.batch_stats, trained['generator'].batch_stats)):
    assert jax.tree.all(jax.tree.map(np.array_equal, got, want))
  smoke_config.generator.warm_start = False
  assert kind.carried_like(build_experiment(smoke_config, tmp_path)) is None


def test_the_generator_s_checks_are_one_line(smoke_config):
  smoke_config.generator.diversity_pairs = 20  # 40 images for a batch of 32
  with pytest.raises(UserError, match=r'diversity_pairs=20 needs generator.batch_size >= 40'):
    stage_one.generator(MFGR_TERMS).check_config(smoke_config)
  stage_one.generator(('one_hot',)).check_config(smoke_config)  # no diversity term: fine


def test_the_method_interface_imports_none_of_the_loop():
  loaded = subprocess.run(
      [sys.executable, '-c', 'import sys, mfgr_jax.methods; print(" ".join(sys.modules))'],
      cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
  assert 'mfgr_jax.stage_one' in loaded
  assert not {'mfgr_jax.train', 'mfgr_jax.stage_runner', 'mfgr_jax.checkpoints',
              'mfgr_jax.workdir', 'mfgr_jax.experiment', 'mfgr_jax.report', 'orbax.checkpoint',
              'clu'} & set(loaded)
