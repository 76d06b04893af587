"""MUC's side classifiers (Liu et al. 2020): extra linear heads on the frozen
features of a finished task, trained to agree with its labels and to disagree
with each other on unlabelled auxiliary images (maximum classifier
discrepancy). At the next task their outputs on the old and new features are
distilled too (`methods/muc.py`).

Heads are stacked: kernel (K, D, n), bias (K, n). They train on precomputed
features, so this is a small linear problem: it runs jitted on one device.
"""

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import losses


def init_side_heads(key: jax.Array, num_heads: int, feature_dim: int,
                    num_classes: int) -> dict[str, jax.Array]:
  """PyTorch's default `nn.Linear` initialisation, U(-1/sqrt(D), 1/sqrt(D)), for each head."""
  bound = 1.0 / np.sqrt(feature_dim)
  kernel_key, bias_key = jax.random.split(key)
  return {'kernel': jax.random.uniform(kernel_key, (num_heads, feature_dim, num_classes),
                                       minval=-bound, maxval=bound),
          'bias': jax.random.uniform(bias_key, (num_heads, num_classes), minval=-bound,
                                     maxval=bound)}


def side_logits(heads: dict[str, jax.Array], features: jax.Array) -> jax.Array:
  """(K, N, n) logits of every head on (N, D) features."""
  return jnp.einsum('nd,kdc->knc', features, heads['kernel']) + heads['bias'][:, None]


def classifier_discrepancy(probabilities: jax.Array) -> jax.Array:
  """sum over head pairs k < k' of mean |p_k - p_k'| over images and classes; (K, N, n) input."""
  num_heads = probabilities.shape[0]
  return sum(jnp.mean(jnp.abs(probabilities[k] - probabilities[j]))
             for k in range(num_heads) for j in range(k + 1, num_heads))


def side_heads_loss(heads: dict[str, jax.Array], features: jax.Array, labels: jax.Array,
                    auxiliary_features: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """sum_k CE(head_k(features), labels) - discrepancy(softmax(heads(auxiliary_features)))."""
  ce = sum(losses.cross_entropy(logits, labels) for logits in side_logits(heads, features))
  discrepancy = classifier_discrepancy(jax.nn.softmax(side_logits(heads, auxiliary_features)))
  return ce - discrepancy, {'ce': ce, 'discrepancy': discrepancy}


def train_side_heads(features: np.ndarray, labels: np.ndarray, auxiliary_features: np.ndarray,
                     config: ml_collections.ConfigDict, key: jax.Array) -> tuple[dict, dict]:
  """Trains `config.side_heads` heads on (features, labels in [0, n)); returns them and
  the last step's metrics.

  MUC's recipe: SGD (momentum 0.9, weight decay 5e-4), `side_epochs` epochs
  with the learning rate divided by 10 at 1/2, 3/4 and 7/8 of them; each step
  pairs a labelled batch with as many auxiliary images drawn at random.
  """
  batch_size = min(config.side_batch_size, len(features))
  steps_per_epoch = len(features) // batch_size
  total = config.side_epochs * steps_per_epoch
  schedule = optax.piecewise_constant_schedule(
      config.side_learning_rate, {int(total * f): 0.1 for f in (0.5, 0.75, 0.875)})
  tx = optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(schedule, momentum=0.9))
  init_key, order_key, auxiliary_key = jax.random.split(key, 3)
  heads = init_side_heads(init_key, config.side_heads, features.shape[-1], int(labels.max()) + 1)
  opt_state = tx.init(heads)
  features, labels = jnp.asarray(features), jnp.asarray(labels)
  auxiliary_features = jnp.asarray(auxiliary_features)

  @jax.jit
  def step(heads: Any, opt_state: Any, order: jax.Array, step_index: jax.Array):
    # Batches and auxiliary draws are made on the device: no host work per step.
    position = step_index % steps_per_epoch
    indices = jax.lax.dynamic_slice_in_dim(order, position * batch_size, batch_size)
    auxiliary = jax.random.randint(jax.random.fold_in(auxiliary_key, step_index), (batch_size,),
                                   0, len(auxiliary_features))
    grads, metrics = jax.grad(side_heads_loss, has_aux=True)(
        heads, features[indices], labels[indices], auxiliary_features[auxiliary])
    updates, opt_state = tx.update(grads, opt_state, heads)
    return optax.apply_updates(heads, updates), opt_state, metrics

  metrics = {}
  for epoch in range(config.side_epochs):
    order = jax.random.permutation(jax.random.fold_in(order_key, epoch), len(features))
    for position in range(steps_per_epoch):
      heads, opt_state, metrics = step(heads, opt_state, order,
                                       jnp.asarray(epoch * steps_per_epoch + position))
  return jax.device_get(heads), {k: float(v) for k, v in metrics.items()}
