"""The weight-gradient reformulations the convolution benchmark times are exact, the
step profile sorts convolutions by kind, and the PyTorch comparison copies every
weight of our models (its outputs-equal check against PyTorch itself runs in the
benchmark, where torch is installed)."""

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import flax

from benchmarks import step_profile, task_phases, vs_pytorch
from benchmarks.conv_weight_gradient import conv, im2col, shifted_matmuls
from configs import smoke
from mfgr_jax import stage_runner, train
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.pretrained import torch_key_place
from mfgr_jax.models.resnet import resnet


@pytest.mark.parametrize('stride', [1, 2])
@pytest.mark.parametrize('formulation', [shifted_matmuls, im2col])
def test_weight_gradient_reformulations_match_xla(formulation, stride):
  keys = jax.random.split(jax.random.PRNGKey(0), 3)
  x = jax.random.normal(keys[0], (4, 8, 8, 3))
  w = jax.random.normal(keys[1], (3, 3, 3, 5))
  dy = jax.random.normal(keys[2], conv(x, w, stride).shape)
  expected = jax.vjp(lambda w_: conv(x, w_, stride), w)[1](dy)[0]
  np.testing.assert_allclose(formulation(x, dy, stride), expected, rtol=1e-5, atol=1e-5)


def test_the_profile_tells_forward_input_and_weight_gradient_convolutions_apart():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 8, 8, 3))
  w1, w2 = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 3, 6)), jnp.ones((3, 3, 6, 5))
  loss = lambda w1, w2, x: jnp.sum(conv(jax.nn.relu(conv(x, w1, 1)), w2, 1) ** 2)
  hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(w1, w2, x).compile().as_text()
  kinds = step_profile.instruction_kinds(hlo, {tuple(sorted(w.shape)) for w in (w1, w2)})
  counts = collections.Counter(kinds.values())
  assert counts['convolution: forward'] == 2  # both layers
  assert counts['convolution: weight gradient'] == 2  # both kernels
  assert counts['convolution: input gradient'] == 1  # into the first layer's output only


@pytest.mark.parametrize('depth', [18, 34])
def test_torchvision_keys_take_every_resnet_weight_once(depth):
  variables = jax.tree.map(np.asarray, resnet(depth, 10, 4).init(
      jax.random.PRNGKey(0), np.zeros((1, 16, 16, 3)), train=False))
  keys = vs_pytorch.torchvision_keys(depth)
  places = [torch_key_place(key) for key in keys if not key.startswith('fc.')]
  ours = [(collection, path) for collection in ('params', 'batch_stats')
          for path, _ in flax.traverse_util.flatten_dict(variables[collection]).items()
          if path[0] != 'head']
  assert sorted(places) == sorted(ours)  # each of our weights from exactly one key
  state = vs_pytorch._resnet_state_dict(variables, keys)
  assert state['conv1.weight'].shape == (4, 3, 3, 3)  # OIHW
  assert state['fc.weight'].shape == (10, 32)  # (out, in)


def test_generator_weights_keep_the_channel_order_of_the_first_map():
  generator = Generator(16, 1, latent_dim=3, hidden=8)
  params = jax.tree.map(np.asarray, generator.init(jax.random.PRNGKey(0), np.zeros((2, 3))))
  state = vs_pytorch._generator_state_dict(params['params'], 4)
  assert sum(x.size for x in state.values()) == sum(x.size for x in jax.tree.leaves(params))
  # PyTorch's linear output viewed as (c, h, w) is ours reshaped as (h, w, c).
  z = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
  dense = params['params']['Linear_0']['dense']
  ours = (z @ dense['kernel'] + dense['bias']).reshape(2, 4, 4, 8)
  theirs = (z @ state['linear.weight'].T + state['linear.bias']).reshape(2, 8, 4, 4)
  np.testing.assert_allclose(theirs, ours.transpose(0, 3, 1, 2), rtol=1e-6)


def test_phase_clock_excludes_inner_phases_and_merges_overlapping_compiles(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(task_phases.time, 'time', lambda: now[0])
  clock = task_phases.PhaseClock()
  trace, backend = task_phases.COMPILE_EVENTS[0], task_phases.COMPILE_EVENTS[2]
  with clock.phase('setup'):
    now[0] += 2.0
    with clock.phase('classifier'):
      clock.on_event_span(trace, 102.0, 103.0)
      clock.on_event_span(trace, 102.5, 103.5)  # nested in the one above: counted once
      clock.on_event_span(backend, 104.0, 106.0)
      clock.on_event_span('/jax/other_event', 102.0, 110.0)  # not a compilation
      now[0] += 10.0
      with clock.phase('checkpoints'):
        now[0] += 1.5
      now[0] += 3.0
    now[0] += 0.5
  assert clock.phases() == {'setup': {'seconds': 2.5, 'compiling': 0.0},
                            'classifier': {'seconds': 13.0, 'compiling': 3.5},
                            'checkpoints': {'seconds': 1.5, 'compiling': 0.0}}


def test_time_run_charges_each_phase_of_a_real_run(tmp_path):
  config = smoke.get_config()
  config.scenario.num_tasks = 1
  phases = task_phases.time_run(config, str(tmp_path))
  assert {'setup', 'classifier', 'checkpoints', 'evaluation', 'after task'} <= set(phases)
  assert phases['classifier']['compiling'] > 0  # the step compiled inside the stage
  assert all(0 <= p['compiling'] <= p['seconds'] for p in phases.values())
  whole = sum(p['seconds'] for p in phases.values())
  assert (tmp_path / 'results.json').exists() and whole > phases['classifier']['seconds']
  # The loop's functions are themselves again.
  runner = stage_runner.StageRunner
  for function in (runner.run, runner.save, train.save_task, train.evaluate, train.after_task):
    assert not hasattr(function, '__wrapped__'), function


def test_each_run_gets_the_command_line_without_the_benchmark_s_own_flags():
  argv = ['--config', 'c.py', '--config.method', 'mfgr', '--runs', '1', '--out=t.md',
          '--config.init_from=/x', '--out', 'u.md', '--child=w', '--config.seed', '3']
  assert task_phases._run_arguments(argv) == [
      '--config', 'c.py', '--config.method', 'mfgr', '--config.init_from=/x', '--config.seed', '3']
