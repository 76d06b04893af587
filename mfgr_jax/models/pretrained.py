"""ImageNet-pretrained backbones: a torchvision/timm ResNet-18/34 state dict in a
`.safetensors` file, loaded into our ResNet (the paper's CUB/Caltech models).

timm publishes `resnet18.*`/`resnet34.*` weights as `model.safetensors`; a
torchvision checkpoint converts with `safetensors.torch.save_file(torch.load(...))`.
Key mapping (PyTorch -> ours; convolution kernels OIHW -> HWIO):

  conv1.weight                      stem_conv/kernel
  bn1.{weight, bias}                stem_bn/bn/{scale, bias}   (params)
  bn1.{running_mean, running_var}   stem_bn/bn/{mean, var}     (batch_stats)
  layer{s}.{b}.conv{k}.weight       stage{s}_block{b+1}/Conv_{k-1}/kernel
  layer{s}.{b}.bn{k}.*              stage{s}_block{b+1}/InputStatsBatchNorm_{k-1}/bn/*
  layer{s}.{b}.downsample.0.weight  stage{s}_block{b+1}/shortcut_conv/kernel
  layer{s}.{b}.downsample.1.*       stage{s}_block{b+1}/shortcut_bn/bn/*

`fc.*` (the ImageNet head) and `*.num_batches_tracked` are not used: the head
is the run's own. Every other weight of the model must be in the file with its
shape, and the file may hold nothing else; BatchNorm's epsilon is PyTorch's.
"""

import pathlib
import re
from typing import Any

import jax
import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from mfgr_jax.errors import UserError

_BLOCK = re.compile(r'layer(\d)\.(\d+)\.(.+)')
_BN_FIELDS = {'weight': ('params', 'scale'), 'bias': ('params', 'bias'),
              'running_mean': ('batch_stats', 'mean'), 'running_var': ('batch_stats', 'var')}
_UNUSED = re.compile(r'fc\..*|.*\.num_batches_tracked')


def torch_key_place(key: str) -> tuple[str, tuple[str, ...]] | None:
  """(collection, path) of a torchvision ResNet's state-dict key in our variables
  (the mapping above); None if it has none (the head, `num_batches_tracked`)."""
  module, _, field = key.rpartition('.')
  block = _BLOCK.fullmatch(module)
  if block:
    stage, index, layer = block.groups()
    prefix = (f'stage{stage}_block{int(index) + 1}',)
    names = {'conv1': 'Conv_0', 'conv2': 'Conv_1', 'bn1': 'InputStatsBatchNorm_0',
             'bn2': 'InputStatsBatchNorm_1', 'downsample.0': 'shortcut_conv',
             'downsample.1': 'shortcut_bn'}
    if layer not in names:
      return None
    module = names[layer]
  else:
    prefix = ()
    if module not in ('conv1', 'bn1'):
      return None
    module = {'conv1': 'stem_conv', 'bn1': 'stem_bn'}[module]
  if module.endswith('conv') or module.startswith('Conv'):
    return ('params', prefix + (module, 'kernel')) if field == 'weight' else None
  if field not in _BN_FIELDS:
    return None
  collection, name = _BN_FIELDS[field]
  return collection, prefix + (module, 'bn', name)


def _get(tree: dict, path: tuple[str, ...]) -> Any:
  for name in path:
    tree = tree[name]
  return tree


def _set(tree: dict, path: tuple[str, ...], value: np.ndarray) -> None:
  for name in path[:-1]:
    tree = tree[name]
  tree[path[-1]] = value


def load_torch_resnet(path: str, variables: dict) -> dict:
  """`variables` ({'params', 'batch_stats'} of our ResNet, the template) with every
  backbone weight replaced by the file's; the head is kept. Raises a one-line
  `UserError` for a file that cannot be read or does not fit the model."""
  where = f'model.init_weights={path}'
  try:
    weights = load_file(str(pathlib.Path(path).expanduser()))
  except (OSError, SafetensorError) as e:
    raise UserError(f'{where} cannot be read ({e}); give a .safetensors file of a '
                    'torchvision/timm ResNet-18 or ResNet-34') from None
  loaded = jax.tree.map(np.array, {'params': variables['params'],
                                   'batch_stats': variables['batch_stats']})
  filled = set()
  for key, value in weights.items():
    if _UNUSED.fullmatch(key):
      continue
    place = torch_key_place(key)
    if place is None:
      raise UserError(f'{where} holds {key}, which our ResNet has no place for (a ResNet-18/34 '
                      'of BasicBlocks is expected; see mfgr_jax/models/pretrained.py)')
    collection, target = place
    try:
      wanted = _get(loaded[collection], target).shape
    except KeyError:
      raise UserError(f'{where} holds {key}, but the model (model.depth, model.stem) has no '
                      f'{"/".join(target)}; use the depth and the imagenet stem of the '
                      'file') from None
    value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    if value.shape != wanted:
      raise UserError(f'{where}: {key} has shape {value.shape} (ours: HWIO) but the model needs '
                      f'{wanted}; set model.width (64 for ImageNet ResNets), model.depth and '
                      "model.stem='imagenet' to match the file")
    _set(loaded[collection], target, value.astype(np.float32))
    filled.add((collection, target))
  missing = [f'{c}/{"/".join(p)}' for c in ('params', 'batch_stats')
             for p in _paths(loaded[c]) if (c, p) not in filled and p[0] != 'head']
  if missing:
    raise UserError(f'{where} lacks {len(missing)} weight(s) of the model, e.g. {missing[0]}; '
                    'is it a ResNet of this depth?')
  return loaded


def _paths(tree: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
  if not isinstance(tree, dict):
    return [prefix]
  return [p for name, sub in tree.items() for p in _paths(sub, prefix + (name,))]
