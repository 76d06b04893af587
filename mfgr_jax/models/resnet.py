"""CIFAR-style ResNets (kuangliu / DAFL / MFGR `models/resnet.py`), in Flax linen.

3x3 stem without max-pool (or torchvision's ImageNet stem), four stages of
BasicBlocks, global average pool and a linear head. At 32x32 input the last map is 4x4, so the global pool equals the
code's `avg_pool2d(4)`; it also serves 28x28 (last map 4x4) and 64x64 inputs.

Mixed precision: with `dtype=jnp.bfloat16` convolutions, BatchNorm and the
head compute in bfloat16 while parameters, BatchNorm statistics and the
returned logits and features stay float32 (so every loss is float32).
"""

import functools
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mfgr_jax.models.layers import InputStatsBatchNorm, Linear, torch_kernel_init

# PyTorch pads 3x3 convs by 1 on each side for every stride; Flax's 'SAME' pads
# stride-2 convs asymmetrically (0, 1), which shifts the sampling grid.
_PAD1 = ((1, 1), (1, 1))

STAGE_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
STEMS = ('cifar', 'imagenet')
COMPUTE_DTYPES = ('float32', 'bfloat16')
INTERMEDIATES, FEATURE_MAP = 'intermediates', 'feature_map'


class BasicBlock(nn.Module):
  features: int
  strides: int
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(nn.Conv, use_bias=False, kernel_init=torch_kernel_init,
                             dtype=self.dtype)
    norm = functools.partial(InputStatsBatchNorm, axis_name=self.bn_axis_name, dtype=self.dtype)
    y = conv(self.features, (3, 3), (self.strides, self.strides), padding=_PAD1)(x)
    y = nn.relu(norm()(y, use_running_average=not train))
    y = conv(self.features, (3, 3), padding=_PAD1)(y)
    y = norm()(y, use_running_average=not train)
    shortcut = x
    if self.strides != 1 or x.shape[-1] != self.features:
      shortcut = conv(self.features, (1, 1), (self.strides, self.strides), padding='VALID',
                      name='shortcut_conv')(x)
      shortcut = norm(name='shortcut_bn')(shortcut, use_running_average=not train)
    return nn.relu(y + shortcut)


def global_pool(feature_map: jax.Array) -> jax.Array:
  return jnp.mean(feature_map, axis=(1, 2))


class Head(nn.Module):
  """The linear classifier over the pooled feature; widened between tasks."""
  num_classes: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array) -> jax.Array:
    return Linear(self.num_classes, dtype=self.dtype, name='linear')(features)


class ResNet(nn.Module):
  """Returns `(logits, features)`; `features` is the pooled penultimate vector."""
  num_classes: int
  stage_blocks: Sequence[int] = STAGE_BLOCKS[18]
  width: int = 64
  stem: str = 'cifar'
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32  # computation dtype (mixed precision: bfloat16)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> tuple[jax.Array, jax.Array]:
    if self.stem == 'cifar':
      x = nn.Conv(self.width, (3, 3), padding=_PAD1, use_bias=False,
                  kernel_init=torch_kernel_init, dtype=self.dtype, name='stem_conv')(x)
    else:
      x = nn.Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
                  kernel_init=torch_kernel_init, dtype=self.dtype, name='stem_conv')(x)
    x = InputStatsBatchNorm(axis_name=self.bn_axis_name, dtype=self.dtype, name='stem_bn')(
        x, use_running_average=not train)
    x = nn.relu(x)
    if self.stem == 'imagenet':
      # -inf padding, as PyTorch's MaxPool2d(3, 2, padding=1).
      x = nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))
    for stage, num_blocks in enumerate(self.stage_blocks):
      for block in range(num_blocks):
        strides = 2 if stage > 0 and block == 0 else 1
        x = BasicBlock(self.width * 2**stage, strides, self.bn_axis_name, self.dtype,
                       name=f'stage{stage + 1}_block{block + 1}')(x, train)
    x = x.astype(jnp.float32)
    # Grad-CAM (LwM) needs the last stage's map: `classify` reads it from here.
    self.sow(INTERMEDIATES, FEATURE_MAP, x)
    features = global_pool(x)
    logits = Head(self.num_classes, self.dtype, name='head')(features)
    return logits.astype(jnp.float32), features


def resnet(depth: int, num_classes: int, width: int = 64, stem: str = 'cifar',
           bn_axis_name: str | None = None, dtype: str = 'float32') -> ResNet:
  """ResNet-18 or ResNet-34 with base width `width` (64 in the paper).

  `stem`: 'cifar' (3x3 conv, no pooling; CIFAR and Tiny ImageNet) or
  'imagenet' (7x7 stride-2 conv and 3x3 stride-2 max-pool, torchvision's
  ResNet, which the paper's CUB/Caltech experiments use at 224x224).
  `dtype`: 'float32', or 'bfloat16' for mixed precision (module docstring).
  """
  if depth not in STAGE_BLOCKS:
    raise ValueError(f'depth must be one of {sorted(STAGE_BLOCKS)}, got {depth}')
  if stem not in STEMS:
    raise ValueError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")
  if dtype not in COMPUTE_DTYPES:
    raise ValueError(f"compute_dtype must be 'float32' or 'bfloat16', got {dtype!r}")
  return ResNet(num_classes=num_classes, stage_blocks=STAGE_BLOCKS[depth], width=width,
                stem=stem, bn_axis_name=bn_axis_name, dtype=jnp.dtype(dtype))


def widen_head(params: dict, num_classes: int, rng: jax.Array) -> dict:
  """Returns `params` with the head widened to `num_classes` outputs.

  Old rows (kernel columns and bias entries) are kept; the new ones get the
  same default initialisation a fresh head would get (`set_new_classifier`).
  """
  old = params['head']['linear']['dense']
  feature_dim, old_classes = old['kernel'].shape
  if num_classes < old_classes:
    raise ValueError(f'cannot shrink the head from {old_classes} to {num_classes} classes')
  fresh = Head(num_classes).init(rng, jnp.zeros((1, feature_dim), old['kernel'].dtype))
  fresh = fresh['params']['linear']['dense']
  widened = {
      'kernel': fresh['kernel'].at[:, :old_classes].set(old['kernel']),
      'bias': fresh['bias'].at[:old_classes].set(old['bias']),
  }
  return {**params, 'head': {'linear': {'dense': widened}}}


class Forward(NamedTuple):
  """A classifier's outputs on one batch, as a method's loss sees them."""
  logits: jax.Array
  features: jax.Array  # the pooled penultimate vector
  feature_map: jax.Array  # the last stage's output (NHWC), before pooling
  params: Any  # the parameters that made them (`logits_from_feature_map` needs the head)


# The key of the parameters a method's loss owns (e.g. R-DFCIL's projections) in
# the classifier's params: trained with the model, but not part of it.
LOSS_PARAMS = 'loss'


def classify(model: ResNet, variables: dict, images: jax.Array,
             train: bool) -> tuple[Forward, dict | None]:
  """Runs `model`; returns its `Forward` and, in train mode, the new batch statistics.

  `Forward.params` are all of `variables['params']`, the loss's own (`LOSS_PARAMS`)
  included; the model runs on the others.
  """
  mutable = [INTERMEDIATES, 'batch_stats'] if train else [INTERMEDIATES]
  model_params = {k: v for k, v in variables['params'].items() if k != LOSS_PARAMS}
  (logits, features), state = model.apply({**variables, 'params': model_params}, images,
                                          train=train, mutable=mutable)
  forward = Forward(logits, features, state[INTERMEDIATES][FEATURE_MAP][0], variables['params'])
  return forward, state.get('batch_stats')


def logits_from_feature_map(params: dict, feature_map: jax.Array) -> jax.Array:
  """The logits a ResNet with `params` computes from its last stage's `feature_map`."""
  num_classes = params['head']['linear']['dense']['kernel'].shape[-1]
  return Head(num_classes).apply({'params': params['head']}, global_pool(feature_map))
