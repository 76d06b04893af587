"""On-device preprocessing: normalisation and the pad-crop-flip augmentation.

Runs inside the jitted train step on uint8 batches, so the host only gathers
indices. Each example has its own PRNG key (made from the step key and its
position in the global batch), which keeps the augmentation identical however
the batch is split across devices.
"""

import jax
import jax.numpy as jnp


def normalize(images: jax.Array, mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
  """uint8 NHWC -> float32, (x/255 - mean) / std per channel."""
  x = images.astype(jnp.float32) / 255.0
  return (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)


def random_crop_flip(image: jax.Array, key: jax.Array, padding: int, flip: bool) -> jax.Array:
  """Zero-pads one HWC image by `padding`, crops back at a random offset, maybe flips."""
  crop_key, flip_key = jax.random.split(key)
  height, width, _ = image.shape
  if padding:
    padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    offsets = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
    image = jax.lax.dynamic_slice(padded, (offsets[0], offsets[1], 0),
                                  (height, width, image.shape[-1]))
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  return image


def augment(images: jax.Array, keys: jax.Array, *, padding: int, flip: bool,
            mean: tuple[float, ...], std: tuple[float, ...]) -> jax.Array:
  """Pad-crop-flip each uint8 image with its own key, then normalise."""
  images = jax.vmap(random_crop_flip, in_axes=(0, 0, None, None))(images, keys, padding, flip)
  return normalize(images, mean, std)
