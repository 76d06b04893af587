"""Sizes a run cannot work with, refused in one line before any work.

Two kinds. Sizes the model cannot take: images smaller than the ResNet's total
stride (its last stage would see less than one pixel per position), and a crop
padding as large as the image (a random crop could hold no pixel of it). And
sizes whose arrays cannot fit in memory: the dataset's images in host memory,
and on each device the classifier's parameters with their gradients and
momentum, the generator's with Adam's two moments, and the activations that one
training step of the classifier or of stage I keeps for its backward pass
(and DeepInversion's pool of images in host memory).

Every figure is a lower bound: it counts only the largest arrays (each conv's
output once, uint8 images once), so a refused config could not have fit, and
one that passes may still run out of memory (`python -m mfgr_jax.plan` compiles
the steps and reports what they need).
"""

import functools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import inversion
from mfgr_jax import parallel
from mfgr_jax.data.loading import image_count, image_shape, num_classes
from mfgr_jax.errors import UserError
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import STAGE_BLOCKS, resnet

# Copies of the parameters a step holds: parameters, gradients, and SGD's
# momentum (classifier) or Adam's two moments (generator).
_CLASSIFIER_COPIES, _GENERATOR_COPIES = 3, 4
_FLOAT32 = 4


def stem_stride(stem: str) -> int:
  """How much the stem shrinks the image: none for the CIFAR stem, 4 for the
  ImageNet one (7x7 stride-2 conv and stride-2 max-pool)."""
  return 1 if stem == 'cifar' else 4


def min_image_size(depth: int, stem: str) -> int:
  """The smallest image whose last ResNet stage still sees one pixel per position."""
  return stem_stride(stem) * 2**(len(STAGE_BLOCKS[depth]) - 1)


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


def _gb(size: float) -> str:
  return f'{size / 2**30:.3g} GB'


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


@functools.lru_cache(maxsize=64)
def classifier_parameters(depth: int, width: int, stem: str, classes: int, channels: int) -> int:
  """The ResNet's parameter count (from the shapes alone: nothing is allocated)."""
  model = resnet(depth, classes, width, stem)
  size = min_image_size(depth, stem)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                             jnp.zeros((1, size, size, channels)), train=False))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes['params']))


@functools.lru_cache(maxsize=64)
def generator_parameters(architecture: str, hidden: int, latent_dim: int, image_size: int,
                         channels: int) -> int:
  """The generator's parameter count (from the shapes alone)."""
  model = Generator(image_size=image_size, channels=channels, latent_dim=latent_dim,
                    hidden=hidden, architecture=architecture)
  shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((2, latent_dim))))
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes['params']))


def _image_size_field(data: ml_collections.ConfigDict) -> str:
  if data.name == 'synthetic':
    return 'data.synthetic.image_size'
  return 'data.image_size'


def check_config(config: ml_collections.ConfigDict, stage_one_section: str) -> None:
  """Refuses, in one line naming the field, a size the model cannot take or whose
  arrays cannot fit (module docstring); `stage_one_section` is the config section
  of the method's stage I ('' for none)."""
  shape = image_shape(config.data)
  if shape is None:  # photographs of any size without data.image_size: refused with the data
    return
  height, width, channels = shape
  model = config.model
  smallest = min_image_size(model.depth, model.stem)
  if min(height, width) < smallest:
    raise UserError(f'{config.data.name} images of {height}x{width} are too small for the '
                    f"ResNet-{model.depth} with the '{model.stem}' stem (at least {smallest} "
                    f'pixels: it shrinks them {smallest}-fold); set '
                    f'--config.{_image_size_field(config.data)} to {smallest} or more')
  if config.data.crop_padding >= min(height, width):
    raise UserError(f'data.crop_padding={config.data.crop_padding} is as large as the '
                    f'{height}x{width} images: a random crop could hold no pixel of them; '
                    f'use less than {min(height, width)}')
  images = image_count(config.data) * height * width * channels
  if images > host_memory():
    largest = math.isqrt(host_memory() // (image_count(config.data) * channels))
    raise UserError(f'{config.data.name} at {height}x{width}x{channels} needs at least '
                    f'{_gb(images)} of host memory for its {image_count(config.data)} images '
                    f'(uint8), and this machine has {_gb(host_memory())}; set '
                    f'--config.{_image_size_field(config.data)} to at most {largest}'
                    f'{" or lower the images per class" if config.data.name == "synthetic" else ""}')
  if stage_one_section == 'deepinversion':
    pool = inversion.pool_size(config.deepinversion)
    if pool * height * width * channels * _FLOAT32 > host_memory():
      raise UserError(f'the deepinversion pool of {pool} images of {height}x{width}x{channels} '
                      f'needs at least {_gb(pool * height * width * channels * _FLOAT32)} '
                      f'(float32), and this machine has {_gb(host_memory())}; lower '
                      '--config.deepinversion.batches or .batch_size')
  memory, what = device_memory()
  bytes_per_value = 2 if model.compute_dtype == 'bfloat16' else _FLOAT32
  per_image = activation_elements(model.depth, model.width, model.stem, height) * bytes_per_value
  parameters = _CLASSIFIER_COPIES * _FLOAT32 * classifier_parameters(
      model.depth, model.width, model.stem, num_classes(config.data), channels)
  evaluated = evaluation_bytes(model.width, model.stem, height, channels, bytes_per_value)
  steps = [('train.batch_size', config.train.batch_size, per_image),
           ('eval_batch_size', config.eval_batch_size, evaluated)]
  if stage_one_section and 'batch_size' in config[stage_one_section]:
    steps.append((f'{stage_one_section}.batch_size', config[stage_one_section].batch_size,
                  per_image))
  if stage_one_section == 'generator':
    generator = config.generator
    parameters += _GENERATOR_COPIES * _FLOAT32 * generator_parameters(
        generator.architecture, generator.hidden, generator.latent_dim,
        generator.image_size or height, channels)
  for field, batch, per_image in steps:
    per_device = -(-batch // parallel.device_count())
    needed = parameters + per_device * per_image
    if needed > memory:
      fits = max(memory - parameters, 0) // per_image * parallel.device_count()
      room = (f'at most {fits} fit beside the parameters' if fits else
              'the parameters alone do not fit')
      raise UserError(
          f'a step with {field}={batch} of {height}x{width} images needs at least '
          f'{_gb(needed)} per device ({_gb(parameters)} of parameters with their gradients and '
          f'optimizer state, {_gb(per_device * per_image)} of activations for '
          f'{per_device} images), and a device has {_gb(memory)} of {what} ({room}); lower '
          f'--config.{field}, model.width or the image size')

