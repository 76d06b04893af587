"""What a run needs, known before it is launched.

  python -m mfgr_jax.plan --config configs/cifar100_5phase.py [--devices N]
      [--accelerator a100-40gb,tpu-v5e] [--utilisation 0.4] [--steps K]

Every step the config's method runs (stage I's generator or pixel step, the
classifier or replay step, the head phase, evaluation) is built as a run builds
it, on a stand-in dataset of the config's image shape, classes and image counts
(zero images that take no memory: nothing is loaded or downloaded), and
compiled ahead of time at the config's full shapes. XLA's own figures are
reported per device: the memory of the step's arguments, outputs and
temporaries (`memory_analysis`) and its FLOPs and bytes (`cost_analysis`); with
the steps of every task, the run's total FLOPs. Task 0 and the last task are
compiled; the tasks between share the last task's figures (the head grows, and
with `replay.balance='per_class'` the generated batch, so theirs are at most these).
It plans for one process: on a pod, run it on one host with that host's devices.
A method that needs more than the dataset (MUC's auxiliary images) loads that.

`--accelerator` (one or several) adds an estimated wall time at `--utilisation`
of each device's public peak (an estimate: the utilisation is assumed, not
measured) and refuses, in one line, a step that does not fit in its memory. `--steps K` also runs K real
steps of each kind on this machine and reports their time and the process's
memory peak, next to the compiled figures.
"""

import dataclasses
import math
import os
import pathlib
import resource
import sys
import time
from typing import Any, Callable, Sequence

from absl import flags
from absl import logging
import jax
import ml_collections
import numpy as np
from ml_collections import config_flags

from mfgr_jax import cpu_flags

cpu_flags.use_project_flags()  # as the runs it plans; before anything starts JAX

from mfgr_jax import classifier  # pylint: disable=g-import-not-at-top
from mfgr_jax import command_line
from mfgr_jax import console
from mfgr_jax import experiment as experiments
from mfgr_jax import learn
from mfgr_jax import parallel
from mfgr_jax import run_config
from mfgr_jax.data.loading import Dataset, image_shape, num_classes, split_sizes
from mfgr_jax.errors import UserError
from mfgr_jax.scenario import Task
from mfgr_jax.workdir import Carried


@dataclasses.dataclass(frozen=True)
class Accelerator:
  memory_gb: float  # per device
  float32_tflops: float  # dense; JAX's default precision (TF32 on A100/H100, bf16 passes on TPU)
  bfloat16_tflops: float  # dense; 0: it has no bfloat16


# Public peak figures of one device (vendor data sheets: dense, without sparsity).
ACCELERATORS = {
    'v100-16gb': Accelerator(16, 15.7, 0),  # no bfloat16
    'a100-40gb': Accelerator(40, 156, 312),
    'a100-80gb': Accelerator(80, 156, 312),
    'h100-80gb': Accelerator(80, 495, 989),  # SXM
    'tpu-v4': Accelerator(32, 275, 275),
    'tpu-v5e': Accelerator(16, 197, 197),
}


@dataclasses.dataclass
class StepPlan:
  """One step kind of one task, as compiled (per device) and, if run, as measured."""
  task: int
  stage: str
  steps: int  # in that task
  memory_bytes: int  # arguments + outputs + temporaries, less what is donated
  temp_bytes: int
  flops: float
  seconds_per_step: float | None = None
  peak_rss_bytes: int | None = None


def stand_in_dataset(data: ml_collections.ConfigDict) -> Dataset:
  """A dataset of `data`'s image shape, classes and per-class image counts (its
  train and test images spread evenly over the classes, at most `max_*_per_class`),
  whose images are one zero image broadcast: no memory, nothing loaded."""
  height, width, channels = image_shape(data)
  classes = num_classes(data)
  train, test = split_sizes(data)

  def split(total: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    per_class = min(total // classes, limit) if limit else total // classes
    labels = np.repeat(np.arange(classes, dtype=np.int32), per_class)
    images = np.broadcast_to(np.zeros((1, height, width, channels), np.uint8),
                             (len(labels), height, width, channels))
    return images, labels

  return Dataset(data.name, *split(train, data.max_train_per_class),
                 *split(test, data.max_test_per_class),
                 class_names=[f'class_{c}' for c in range(classes)],
                 mean=(0.5,) * channels, std=(0.25,) * channels)


def _plan_of(compiled: Any, task: Task, stage: str, steps: int) -> StepPlan:
  memory, cost = compiled.memory_analysis(), compiled.cost_analysis()
  return StepPlan(task.index, stage, steps,
                  memory.argument_size_in_bytes + memory.output_size_in_bytes +
                  memory.temp_size_in_bytes - memory.alias_size_in_bytes,
                  memory.temp_size_in_bytes, float(cost.get('flops', 0.0)))


class PlanRunner:
  """Stands in for the loop's `StageRunner`: compiles each step it is given (and
  runs `run_steps` of them) instead of running the stage."""

  def __init__(self, run_steps: int):
    self.run_steps = run_steps
    self.plans: list[StepPlan] = []

  def stage_one(self, task: Task, resume: dict | None, global_offset: int,
                total_steps: int) -> '_PlannedStageOne':
    del resume, global_offset
    return _PlannedStageOne(self, task, total_steps)

  def run(self, stage: str, task: Task, step: Callable[..., tuple[Any, dict]], state: Any,
          total_steps: int, global_offset: int, log_every: int, arguments: tuple = (),
          batches: Callable[[int], dict] | None = None,
          saved_with_state: dict | None = None) -> tuple[Any, None]:
    del global_offset, log_every, saved_with_state
    inputs = ((batches(0),) if batches is not None else ()) + tuple(arguments)
    return self.measure(stage, task, total_steps, step, (state,) + inputs, stateful=True), None

  def measure(self, stage: str, task: Task, total_steps: int, step: Callable,
              arguments: tuple, stateful: bool) -> Any:
    """Compiles `step(*arguments)` (and runs it `run_steps` times: a stateful step
    returns `(state, metrics)` and takes the state first); returns the state."""
    logging.info('plan: task %d %s: compiling the step', task.index, stage)
    compiled = step.lower(*arguments).compile()
    plan = _plan_of(compiled, task, stage, total_steps)
    if self.run_steps:
      logging.info('plan: task %d %s: running %d step(s)', task.index, stage, self.run_steps)
      start = time.perf_counter()
      for _ in range(self.run_steps):
        out = compiled(*arguments)
        if stateful:
          arguments = (out[0],) + arguments[1:]
      jax.block_until_ready(out)
      plan.seconds_per_step = (time.perf_counter() - start) / self.run_steps
      plan.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    self.plans.append(plan)
    return arguments[0]


@dataclasses.dataclass(frozen=True)
class _PlannedStageOne:
  """`stage_one.StageIRunner` for `PlanRunner`."""
  runner: PlanRunner
  task: Task
  total_steps: int

  def run_to_end(self, stage: str, state: Any, step: Callable, arguments: tuple,
                 log_every: int) -> tuple[Any, None]:
    del log_every
    return self.runner.measure(stage, self.task, self.total_steps, step,
                               (parallel.replicate(state),) + tuple(arguments), True), None

  def write_images(self, stage: str, grid: np.ndarray) -> None:
    del stage, grid


def plan_task(experiment: experiments.Experiment, task: Task, runner: PlanRunner) -> None:
  """Compiles (and runs) every step kind of `task`, from stand-ins of the model and
  the method's state that the task starts from."""
  method = experiment.method
  carried = Carried(None, None, None)
  if task.num_old:
    earlier = experiment.tasks[task.index - 1]
    carried = Carried(experiment.variables_like(task.num_old),
                      method.state_like(experiment, earlier),
                      method.stage_one.carried_like(experiment))
  variables, _, _ = learn.learn_task(experiment, task, carried, runner, None, 0)
  # Evaluation: the argmax of the logits (the default `Method.predict`).
  batch = experiment.config.eval_batch_size
  predict = classifier.make_predict_step(experiment.model(task.num_seen),
                                         experiment.dataset.mean, experiment.dataset.std)
  images = np.zeros((batch,) + experiment.dataset.image_shape, np.uint8)
  runner.measure('evaluation', task, _steps(experiment, task, 'evaluation'), predict,
                 (parallel.replicate(variables), parallel.shard(images)), stateful=False)


def plan_run(config: ml_collections.ConfigDict, run_steps: int = 0
             ) -> tuple[experiments.Experiment, list[StepPlan]]:
  """Every step kind of the run, compiled: task 0's and the last task's, with each
  task's step counts (the tasks between share the last task's figures)."""
  # Not whether it fits this machine: it plans for others (`check_fits`).
  method = experiments.check_config(config, memory=False)
  experiment = experiments.experiment_of(config, pathlib.Path('/nonexistent/plan'), method,
                                         stand_in_dataset(config.data))
  runner = PlanRunner(run_steps)
  tasks = experiment.tasks_to_run
  for task in dict.fromkeys([tasks[0], tasks[-1]]):
    plan_task(experiment, task, runner)
  compiled = {(p.task, p.stage): p for p in runner.plans}
  last = tasks[-1].index
  plans = []
  for task in tasks:
    for (index, stage), plan in compiled.items():
      if index == (0 if task.index == 0 else last):
        steps = _steps(experiment, task, stage)
        plans.append(dataclasses.replace(plan, task=task.index, steps=steps))
  return experiment, plans


def _steps(experiment: experiments.Experiment, task: Task, stage: str) -> int:
  if stage == 'classifier':
    return experiment.total_steps(task)
  if stage == 'head':
    return experiment.head_steps(task)
  if stage == 'evaluation':
    seen = (experiment.test_targets >= 0) & (experiment.test_targets < task.num_seen)
    return math.ceil(int(seen.sum()) / experiment.config.eval_batch_size)
  return experiment.stage_one_steps(task)


# ----------------------------------------------------------------------------
# The report.
# ----------------------------------------------------------------------------


def _duration(hours: float) -> str:
  return f'{hours:.3g} hours' if hours >= 1 else f'{hours * 60:.2g} minutes'


def _groups(plans: Sequence[StepPlan]) -> list[tuple[str, list[StepPlan]]]:
  """Rows of equal figures and step counts over consecutive tasks, by stage, each
  with its tasks ('2' or '1-4')."""
  rows: list[list[StepPlan]] = []
  for plan in plans:
    row = next((r for r in rows if r[-1].stage == plan.stage and r[-1].task == plan.task - 1
                and r[-1].steps == plan.steps and r[-1].memory_bytes == plan.memory_bytes), None)
    if row is None:
      rows.append([plan])
    else:
      row.append(plan)
  return [(f'{r[0].task}' if len(r) == 1 else f'{r[0].task}-{r[-1].task}', r) for r in rows]


def report(config_name: str, config: ml_collections.ConfigDict, plans: Sequence[StepPlan],
           devices: int, accelerators: Sequence[str], utilisation: float) -> str:
  """The plan as Markdown: a table of step kinds, the totals and (with an
  accelerator) the estimated times."""
  float32 = config.model.compute_dtype == 'float32'
  measured = any(p.seconds_per_step is not None for p in plans)
  lines = [f'Plan of `{config_name}` with `{config.method}` on {devices} device(s) '
           f'(compiled here by XLA for {jax.devices()[0].platform}: figures per device)', '',
           '| tasks | step | steps per task | memory | of it temporaries | GFLOP per step |'
           + (' measured s/step | process peak |' if measured else ''),
           '|---|---|---:|---:|---:|---:|' + ('---:|---:|' if measured else '')]
  for tasks, members in _groups(plans):
    first = members[0]
    row = (f'| {tasks} | {first.stage} | {first.steps} | '
           f'{console.byte_size(first.memory_bytes)} | {console.byte_size(first.temp_bytes)} | '
           f'{first.flops / 1e9:.3g} |')
    if measured:
      row += (f' {first.seconds_per_step:.3g} | {console.byte_size(first.peak_rss_bytes)} |'
              if first.seconds_per_step is not None else ' | |')
    lines.append(row)
  total_flops = sum(p.steps * p.flops for p in plans) * devices
  steps = sum(p.steps for p in plans if p.stage != 'evaluation')
  peak = max(plans, key=lambda p: p.memory_bytes)
  lines += ['', f'Training steps: {steps}; total work: {total_flops / 1e15:.3g} PFLOP '
            f'(XLA\'s count, every device); largest step: {peak.stage} of task {peak.task}, '
            f'{console.byte_size(peak.memory_bytes)} per device.']
  for accelerator in accelerators:
    device = ACCELERATORS[accelerator]
    peak_flops = (device.float32_tflops if float32 else device.bfloat16_tflops) * 1e12
    if not peak_flops:
      lines.append(f'No estimate on {accelerator}: it does not compute in bfloat16.')
      continue
    hours = sum(p.steps * p.flops for p in plans) / (peak_flops * utilisation) / 3600
    lines.append(f'Estimate on {devices} x {accelerator} ({device.memory_gb:g} GB, '
                 f'{peak_flops / 1e12:g} TFLOP/s {"float32" if float32 else "bfloat16"} peak) at '
                 f'{utilisation:.0%} of peak: about {_duration(hours)} (an estimate: the '
                 'utilisation is assumed, not measured).')
  return '\n'.join(lines)


def check_fits(plans: Sequence[StepPlan], memory_gb: float, where: str) -> None:
  """Refuses, in one line, a step that needs more than `memory_gb` per device."""
  worst = max(plans, key=lambda p: p.memory_bytes)
  if worst.memory_bytes > memory_gb * 2**30:
    raise UserError(f'the {worst.stage} step of task {worst.task} needs '
                    f'{console.byte_size(worst.memory_bytes)} per device and {where} has '
                    f'{memory_gb:g} GB; lower its batch size, '
                    'model.width or the image size, or use more devices (--devices)')


# ----------------------------------------------------------------------------
# The command line.
# ----------------------------------------------------------------------------

_USAGE = ('python -m mfgr_jax.plan --config C [--config.X=Y]... [--devices N] '
          '[--accelerator NAME]... [--memory_gb G] [--utilisation U] [--steps K]: what each '
          'step of the run needs, compiled at full size (module docstring of mfgr_jax/plan.py).')


def _flag_values() -> flags.FlagValues:
  """The command line's flags, in their own FlagValues (`command_line`)."""
  values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, 'the config file (with :ARG if it takes one)',
                                  flag_values=values, lock_config=False)
  flags.DEFINE_integer('devices', 0, 'plan for this many devices (0: those here); on CPU they '
                       "are made with XLA's host device count", flag_values=values)
  flags.DEFINE_multi_enum('accelerator', [], list(ACCELERATORS),
                          'estimate the time on this accelerator and refuse a step that does '
                          'not fit in its memory (repeatable)', flag_values=values)
  flags.DEFINE_float('memory_gb', 0.0, 'refuse a step that needs more memory per device than '
                     "this many GB (0: no limit but the accelerators')", flag_values=values)
  flags.DEFINE_float('utilisation', 0.4, 'the fraction of peak FLOP/s assumed for the estimate',
                     flag_values=values)
  flags.DEFINE_integer('steps', 0, 'also run this many real steps of each kind here',
                       flag_values=values)
  return values


def main(argv: Sequence[str]) -> None:
  values = _flag_values()
  extra = command_line.parse('mfgr_jax.plan', _USAGE, values, argv)
  if extra:
    _fail(f'unexpected argument(s) {" ".join(extra)}; see --help')
  if not values['config'].present:
    _fail('give a config: --config configs/<setting>.py')
  if not 0 < values.utilisation <= 1:
    _fail(f'--utilisation={values.utilisation} must be in (0, 1]')
  if values.devices:  # CPU devices; read when JAX starts its backend, which it has not yet
    os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                               f' --xla_force_host_platform_device_count={values.devices}')
  try:
    try:
      loaded = values.config
    except Exception as e:  # pylint: disable=broad-except  # the config file itself failed
      raise UserError(f'cannot load config file {values["config"].config_filename}: '
                      f'{type(e.__cause__ or e).__name__}: {e.__cause__ or e}') from None
    config, _ = run_config.with_method_settings(
        loaded, config_flags.get_override_values(values['config']))
    if values.devices and values.devices != jax.device_count():
      raise UserError(f'--devices={values.devices} but this machine has {jax.device_count()} '
                      f'{jax.devices()[0].platform} device(s); plan for those (leave out '
                      '--devices), or plan on a CPU host for another count')
    _, plans = plan_run(config, values.steps)
    print(report(values['config'].config_filename, config, plans, jax.device_count(),
                 values.accelerator, values.utilisation), flush=True)
    if values.memory_gb:
      check_fits(plans, values.memory_gb, f'--memory_gb={values.memory_gb:g}')
    for name in values.accelerator:
      check_fits(plans, ACCELERATORS[name].memory_gb, name)
  except UserError as e:
    _fail(str(e))


def _fail(message: str) -> None:
  print(f'mfgr_jax.plan: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)


if __name__ == '__main__':
  logging.use_absl_handler()  # (absl's app.run would; the flags here are our own)
  logging.set_verbosity(logging.INFO)
  console.install(verbose=False)
  main(sys.argv[1:])
