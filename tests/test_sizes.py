"""sizes.py: the figures behind the refusals are what the models have, and lower
bounds of what XLA needs (the refusals themselves: test_config_fields.py's rows
across fields and end_to_end/test_main.py's command lines)."""

import math

import jax
import jax.numpy as jnp
import optax
import pytest

from mfgr_jax import sizes
from mfgr_jax.models.generator import Generator
from mfgr_jax.models.resnet import FEATURE_MAP, INTERMEDIATES, resnet


def _count(tree) -> int:
  return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(tree))


@pytest.mark.parametrize('stem', ['cifar', 'imagenet'])
def test_the_resnet_takes_images_of_any_size(stem):
  """Why no smallest image size is refused: every stride-2 layer pads, so the last
  map is 1x1 at the least."""
  model = resnet(18, 5, 4, stem)
  images = jnp.zeros((1, 1, 1, 3))
  variables = model.init(jax.random.key(0), images, train=False)
  (logits, _), state = model.apply(variables, images, train=False, mutable=[INTERMEDIATES])
  assert state[INTERMEDIATES][FEATURE_MAP][0].shape[1:3] == (1, 1)
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_the_parameter_counts_are_those_of_the_initialised_models():
  model = resnet(18, 7, 8, 'cifar')
  variables = model.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), train=False)
  assert sizes.classifier_parameters(18, 8, 'cifar', 7, 3) == _count(variables['params'])
  generator = Generator(image_size=16, channels=1, latent_dim=10, hidden=8)
  variables = generator.init(jax.random.key(0), jnp.zeros((2, 10)))
  assert sizes.generator_parameters('dafl', 8, 10, 16, 1) == _count(variables['params'])


@pytest.mark.parametrize('stem,size', [('cifar', 16), ('cifar', 32), ('imagenet', 64)])
def test_the_activations_counted_are_at_most_what_a_compiled_training_step_needs(stem, size):
  """What the refusal counts must be a lower bound of XLA's own figure, so that a
  config is never refused that would have fit."""
  batch, width = 8, 8
  model = resnet(18, 10, width, stem)
  images = jnp.zeros((batch, size, size, 3))
  variables = model.init(jax.random.key(0), images, train=False)

  def loss(params, batch_stats):
    (logits, _), _ = model.apply({'params': params, 'batch_stats': batch_stats}, images,
                                 train=True, mutable=['batch_stats'])
    return optax.softmax_cross_entropy_with_integer_labels(
        logits, jnp.zeros((batch,), jnp.int32)).mean()

  compiled = jax.jit(jax.grad(loss)).lower(variables['params'],
                                          variables['batch_stats']).compile()
  needed = compiled.memory_analysis().temp_size_in_bytes
  counted = batch * 4 * sizes.activation_elements(18, width, stem, size)
  assert 0 < counted <= needed, (counted, needed)


@pytest.mark.parametrize('stem,size', [('cifar', 32), ('imagenet', 64)])
def test_the_evaluation_bytes_counted_are_at_most_what_a_compiled_prediction_needs(stem, size):
  batch, width = 16, 8
  model = resnet(18, 10, width, stem)
  images = jnp.zeros((batch, size, size, 3), jnp.uint8)
  variables = model.init(jax.random.key(0), images.astype(jnp.float32), train=False)
  predict = lambda variables, images: jnp.argmax(
      model.apply(variables, images.astype(jnp.float32), train=False)[0], -1)
  memory = jax.jit(predict).lower(variables, images).compile().memory_analysis()
  needed = memory.argument_size_in_bytes + memory.temp_size_in_bytes
  counted = batch * sizes.evaluation_bytes(width, stem, size, 3, 4)
  assert 0 < counted <= needed, (counted, needed)
