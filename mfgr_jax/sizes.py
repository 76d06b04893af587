"""Sizes a run cannot work with, refused in one line before any work.

Two kinds. A crop padding as large as the image, whose random crops could hold no
pixel of it (`check_shapes`). And sizes whose arrays cannot fit in memory
(`check_memory`): the dataset's images and DeepInversion's pool in host memory,
and on each device what one step holds: its model's parameters (with gradients
and SGD's momentum, or Adam's two moments, for the model it trains) and the
activations it keeps for the backward pass.

Every figure is a lower bound: it counts only the largest arrays (each conv's
output once, uint8 images once, the old model and the generator only where they
are trained or run), so a refused config could not have fit, and one that
passes may still run out of memory. `python -m mfgr_jax.plan` compiles the steps
and reports what XLA needs; it checks the shapes only, since it plans for other
machines than the one it runs on. The ResNet takes images of any size (each
stride-2 layer pads, so its maps shrink to 1x1, never to nothing).
"""

import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import inversion
from mfgr_jax import parallel
from mfgr_jax.console import byte_size
from mfgr_jax.data.loading import image_count, image_shape, num_classes
from mfgr_jax.errors import UserError
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import STAGE_BLOCKS, resnet
from mfgr_jax.scenario import listed_classes

_FLOAT32 = 4
# Copies of a model's parameters while it is trained: the parameters, their
# gradients, and Adam's two moments (the generator's optimiser).
_ADAM_COPIES = 4


def host_memory() -> int:
  """This machine's physical memory in bytes."""
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')


def device_memory() -> tuple[int, str]:
  """(bytes one device can hold, what they are): an accelerator's own memory, or
  host memory shared by every CPU device."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'bytes_limit' in stats:
    return stats['bytes_limit'], f'{jax.local_devices()[0].device_kind} memory'
  return host_memory(), 'host memory'


def _stem_size(stem: str, image_size: int) -> int:
  """The side of the stem conv's output map."""
  return image_size if stem == 'cifar' else math.ceil(image_size / 2)


def activation_elements(depth: int, width: int, stem: str, image_size: int) -> int:
  """A lower bound on the activations one image keeps for the ResNet's backward
  pass: the output of every conv, once."""
  size = _stem_size(stem, image_size)
  elements = size * size * width  # the stem conv's output
  if stem == 'imagenet':
    size = math.ceil(size / 2)  # the max-pool
  for stage, blocks in enumerate(STAGE_BLOCKS[depth]):
    if stage:
      size = math.ceil(size / 2)
    elements += 2 * blocks * size * size * width * 2**stage  # two convs per block
  return elements


def evaluation_bytes(width: int, stem: str, image_size: int, channels: int,
                     bytes_per_value: int) -> int:
  """A lower bound on one image of an evaluation step, which keeps no activations
  for a backward pass: the image (uint8) and the stem conv's output."""
  return (image_size * image_size * channels +
          _stem_size(stem, image_size)**2 * width * bytes_per_value)


def _parameter_count(model: nn.Module, *inputs: jax.Array, **kwargs: Any) -> int:
  """The parameters `model.init` makes, from their shapes alone (nothing allocated)."""
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), *inputs, **kwargs))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes['params']))


@functools.lru_cache(maxsize=64)
def classifier_parameters(depth: int, width: int, stem: str, classes: int, channels: int) -> int:
  """The ResNet's parameter count; it does not depend on the image size (the ResNet
  pools globally)."""
  return _parameter_count(resnet(depth, classes, width, stem), jnp.zeros((1, 32, 32, channels)),
                          train=False)


@functools.lru_cache(maxsize=64)
def generator_parameters(architecture: str, hidden: int, latent_dim: int, image_size: int,
                         channels: int) -> int:
  """The generator's parameter count."""
  return _parameter_count(Generator(image_size=image_size, channels=channels,
                                    latent_dim=latent_dim, hidden=hidden,
                                    architecture=architecture), jnp.zeros((2, latent_dim)))


def _image_size_field(data: ml_collections.ConfigDict) -> str:
  if data.name == 'synthetic':
    return 'data.synthetic.image_size'
  return 'data.image_size'


def check_shapes(config: ml_collections.ConfigDict) -> None:
  """Refuses a crop padding as large as the images (after `check_one_image_size`)."""
  height, width, _ = image_shape(config.data)
  side = min(height, width)
  if config.data.crop_padding >= side:
    raise UserError(f'data.crop_padding={config.data.crop_padding} is as large as the '
                    f'{height}x{width} images: a random crop could hold no pixel of them; set '
                    f'--config.data.crop_padding below {side}, or '
                    f'--config.{_image_size_field(config.data)} above '
                    f'{config.data.crop_padding}')


def _classes_loaded(config: ml_collections.ConfigDict) -> int:
  """The classes whose images a run loads: those its class order lists, or all."""
  listed = listed_classes(config.scenario.class_order)
  return len(listed) if listed else num_classes(config.data)


def check_memory(config: ml_collections.ConfigDict, stage_one_section: str) -> None:
  """Refuses, in one line naming the field, sizes whose arrays cannot fit on this
  machine (module docstring); `stage_one_section` is the config section of the
  method's stage I ('' for none)."""
  height, width, channels = image_shape(config.data)
  model, host = config.model, host_memory()
  loaded = image_count(config.data) * _classes_loaded(config) // num_classes(config.data)
  dataset_bytes = loaded * height * width * channels  # uint8
  if dataset_bytes > host:
    largest = math.isqrt(host // (loaded * channels))
    fewer = ' or lower the images per class' if config.data.name == 'synthetic' else ''
    raise UserError(f'{config.data.name} at {height}x{width}x{channels} needs at least '
                    f'{byte_size(dataset_bytes)} of host memory for its {loaded} images '
                    f'(uint8), and this machine has {byte_size(host)}; set '
                    f'--config.{_image_size_field(config.data)} to at most {largest}{fewer}')
  if stage_one_section == 'deepinversion':
    pool = inversion.pool_size(config.deepinversion) * height * width * channels * _FLOAT32
    if pool > host:
      raise UserError(f'the deepinversion pool of {inversion.pool_size(config.deepinversion)} '
                      f'images of {height}x{width}x{channels} needs at least {byte_size(pool)} '
                      f'(float32), and this machine has {byte_size(host)}; lower '
                      '--config.deepinversion.batches or .batch_size')
  bytes_per_value = 2 if model.compute_dtype == 'bfloat16' else _FLOAT32
  per_image = activation_elements(model.depth, model.width, model.stem, height) * bytes_per_value
  classifier = _FLOAT32 * classifier_parameters(model.depth, model.width, model.stem,
                                                 _classes_loaded(config), channels)
  # SGD keeps a momentum trace only with momentum > 0.
  trained_classifier = classifier * (3 if config.train.momentum else 2)
  steps = [('train.batch_size', config.train.batch_size, trained_classifier, per_image),
           ('eval_batch_size', config.eval_batch_size, classifier,
            evaluation_bytes(model.width, model.stem, height, channels, bytes_per_value))]
  if stage_one_section == 'generator':
    generator = config.generator
    trained_generator = _ADAM_COPIES * _FLOAT32 * generator_parameters(
        generator.architecture, generator.hidden, generator.latent_dim,
        generator.image_size or height, channels)
    steps.append(('generator.batch_size', generator.batch_size, classifier + trained_generator,
                  per_image))
  elif stage_one_section == 'deepinversion':
    steps.append(('deepinversion.batch_size', config.deepinversion.batch_size, classifier,
                  per_image))
  memory, what = device_memory()
  for field, batch, parameters, image_bytes in steps:
    per_device = -(-batch // parallel.device_count())
    needed = parameters + per_device * image_bytes
    if needed <= memory:
      continue
    if parameters >= memory:
      widths = 'model.width' + (', generator.hidden or generator.latent_dim'
                                if field.startswith('generator') else '')
      room = f'the parameters alone do not fit); lower --config.{widths}'
    else:
      room = (f'at most {(memory - parameters) // image_bytes * parallel.device_count()} images '
              f'fit beside the parameters); lower --config.{field} or the image size')
    raise UserError(
        f'a step with {field}={batch} of {height}x{width} images needs at least '
        f'{byte_size(needed)} per device ({byte_size(parameters)} of parameters, with their '
        f'gradients and optimizer state where trained, {byte_size(per_device * image_bytes)} of '
        f'activations for {per_device} images), and a device has {byte_size(memory)} of {what} '
        f'({room}')
