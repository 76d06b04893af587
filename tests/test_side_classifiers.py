"""side_classifiers.py, MUC's side heads on frozen features: the discrepancy and
the heads' logits by hand, and training that fits and disagrees off-distribution."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mfgr_jax import side_classifiers


def test_classifier_discrepancy_and_side_heads_against_hand_values():
  probabilities = jnp.asarray([[[0.5, 0.5]], [[1.0, 0.0]], [[0.0, 1.0]]])  # 3 heads, 1 image
  # Pairs (0,1): mean |.| 0.5; (0,2): 0.5; (1,2): 1.0.
  np.testing.assert_allclose(side_classifiers.classifier_discrepancy(probabilities), 2.0)
  heads = {'kernel': jnp.asarray([[[1.0, 0.0], [0.0, 1.0]], [[2.0, 0.0], [0.0, 0.0]]]),
           'bias': jnp.asarray([[0.0, 1.0], [0.5, 0.0]])}
  np.testing.assert_allclose(side_classifiers.side_logits(heads, jnp.asarray([[3.0, 4.0]])),
                             [[[3.0, 5.0]], [[6.5, 0.0]]])


def test_side_heads_fit_their_labels_and_disagree_off_distribution():
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 40)
  centres = np.eye(3, 8) * 4.0
  features = (centres[labels] + rng.normal(0, 0.3, (120, 8))).astype(np.float32)
  auxiliary = rng.normal(0, 2.0, (200, 8)).astype(np.float32)
  config = ml_collections.ConfigDict(dict(side_heads=3, side_epochs=40, side_learning_rate=0.1,
                                          side_batch_size=32))
  heads, metrics = side_classifiers.train_side_heads(features, labels, auxiliary, config,
                                                     jax.random.PRNGKey(0))
  logits = side_classifiers.side_logits(heads, features)
  assert logits.shape == (3, 120, 3)
  assert all(float(jnp.mean(jnp.argmax(l, -1) == labels)) == 1.0 for l in logits)
  untrained = side_classifiers.init_side_heads(jax.random.PRNGKey(0), 3, 8, 3)
  before = side_classifiers.classifier_discrepancy(
      jax.nn.softmax(side_classifiers.side_logits(untrained, auxiliary)))
  assert metrics['discrepancy'] > float(before)
