"""losses.py against hand-computed values: the classifier's losses, stage I's terms
(MFGR's generator, DeepInversion's priors, ABD's inversion terms), LwM's attention
distillation, iCaRL's sigmoid distillation and ABD's stage II terms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mfgr_jax import losses
from mfgr_jax.models.layers import BN_INPUT_MOMENTS, bn_input_statistics
from mfgr_jax.models.resnet import resnet


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


LOGITS = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 0.3, 3.0]], np.float32)
TEACHER = np.array([[1.0, -1.0], [0.0, 2.0]], np.float32)


def test_cross_entropy_by_hand():
  labels = np.array([0, 3])
  expected = -np.mean(_log_softmax(LOGITS)[[0, 1], labels])
  assert float(losses.cross_entropy(LOGITS, labels)) == pytest.approx(expected, rel=1e-6)


def test_cut_cross_entropy_uses_only_new_logits():
  # With 2 old classes, the softmax is over logits[:, 2:] and labels shift by 2.
  labels = np.array([2, 3])
  new = _log_softmax(LOGITS[:, 2:])
  expected = -np.mean([new[0, 0], new[1, 1]])
  assert float(losses.cut_cross_entropy(LOGITS, labels, 2)) == pytest.approx(expected, rel=1e-6)
  # Changing an old logit cannot change the loss.
  bumped = LOGITS.copy()
  bumped[:, 0] += 5.0
  assert float(losses.cut_cross_entropy(bumped, labels, 2)) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize('t2', [False, True])
def test_distillation_by_hand(t2):
  student = LOGITS[:, :2]
  teacher = np.exp(_log_softmax(TEACHER / 2.0))
  expected = -np.mean(np.sum(teacher * _log_softmax(student / 2.0), -1)) * (4.0 if t2 else 1.0)
  got = losses.distillation(student, TEACHER, temperature=2.0, scale_by_t_squared=t2)
  assert float(got) == pytest.approx(expected, rel=1e-6)


def test_distillation_does_not_differentiate_teacher():
  grad = jax.grad(lambda t: losses.distillation(LOGITS[:, :2], t))(TEACHER)
  np.testing.assert_array_equal(grad, 0.0)


# Stage I: MFGR's generator terms.


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_one_hot_loss_is_ce_against_own_argmax():
  logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.5]], np.float32)
  expected = -np.mean(np.log([_softmax(logits[0])[0], _softmax(logits[1])[1]]))
  assert float(losses.one_hot_loss(logits)) == pytest.approx(expected, rel=1e-6)
  # The argmax target is not differentiated: the gradient is softmax - onehot.
  grad = jax.grad(losses.one_hot_loss)(jnp.asarray(logits))
  np.testing.assert_allclose(grad, (_softmax(logits) - np.eye(3)[[0, 1]]) / 2, rtol=1e-5)


def test_class_balance_loss_is_log10_and_minimal_when_balanced():
  p = np.array([0.5, 0.25, 0.25, 0.0])
  expected = 0.5 * np.log10(0.5) + 2 * 0.25 * np.log10(0.25)  # 0 log 0 = 0
  assert float(losses.class_balance_loss(p)) == pytest.approx(expected, rel=1e-6)
  assert float(losses.class_balance_loss(np.full(20, 0.05))) == pytest.approx(-np.log10(20), rel=1e-6)


def test_activation_loss():
  assert float(losses.activation_loss(np.array([[1.0, -3.0], [0.5, 0.5]]))) == pytest.approx(-1.25)


def test_signed_difference_loss_by_hand():
  image = np.array([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0], [2.0, 2.0, 0.0]], np.float32)
  x = image[None, :, :, None]
  h = np.mean(image[:, :-1] - image[:, 1:])
  v = np.mean(image[:-1] - image[1:])
  d1 = np.mean(image[1:, :-1] - image[:-1, 1:])
  d2 = np.mean(image[:-1, :-1] - image[1:, 1:])
  expected = (abs(h) + abs(v) + abs(d1) + abs(d2)) / 4
  assert float(losses.signed_difference_loss(x)) == pytest.approx(expected, rel=1e-6)


def test_bn_statistics_loss_by_hand_and_safe_at_zero():
  layers = [
      {'mean': jnp.array([1.0, 2.0]), 'var': jnp.array([1.0, 1.0]),
       'running_mean': jnp.array([1.0, 0.0]), 'running_var': jnp.array([4.0, 5.0])},
      {'mean': jnp.array([0.0]), 'var': jnp.array([2.0]),
       'running_mean': jnp.array([0.0]), 'running_var': jnp.array([2.0])},
  ]
  # layer 1: ||(-3, -4)|| + ||(0, 2)|| = 5 + 2; layer 2: 0. Mean over layers: 3.5.
  assert float(losses.bn_statistics_loss(layers)) == pytest.approx(3.5)
  grad = jax.grad(lambda m: losses.bn_statistics_loss([{**layers[1], 'mean': m}]))(jnp.array([0.0]))
  assert np.all(np.isfinite(grad))


def test_pixel_diversity_loss_is_minus_symmetric_kl():
  images = np.random.default_rng(0).normal(size=(2, 3, 3, 1)).astype(np.float32)
  p, q = _softmax(images[0].ravel()), _softmax(images[1].ravel())
  expected = -0.5 * (np.sum(p * np.log(p / q)) + np.sum(q * np.log(q / p)))
  got = losses.pixel_diversity_loss(images, jax.random.PRNGKey(0), num_pairs=1)
  assert float(got) == pytest.approx(expected, rel=1e-5)
  identical = np.repeat(images[:1], 4, axis=0)
  assert float(losses.pixel_diversity_loss(identical, jax.random.PRNGKey(0), 2)) == pytest.approx(0, abs=1e-6)
  with pytest.raises(ValueError, match='diversity pairs'):
    losses.pixel_diversity_loss(identical, jax.random.PRNGKey(0), 3)


def test_bn_statistics_loss_vanishes_when_batch_matches_running_statistics():
  model = resnet(18, 3, width=4)
  x = jax.random.normal(jax.random.PRNGKey(0), (16, 16, 16, 1))
  variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
  # Train mode normalises with the batch statistics; copy them into the running
  # statistics, and the eval-mode pass sees exactly the same BN inputs.
  _, state = model.apply(variables, x, train=True, mutable=['batch_stats', BN_INPUT_MOMENTS])
  layers = bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats'])
  running = jax.tree_util.tree_map(lambda a: a, variables['batch_stats'])
  from flax import traverse_util
  flat = traverse_util.flatten_dict(running)
  paths = sorted(p[:-1] for p in traverse_util.flatten_dict(state[BN_INPUT_MOMENTS]) if p[-1] == 'moments')
  assert len(paths) == len(layers) == 20
  for path, layer in zip(paths, layers):
    flat[path + ('bn', 'mean')], flat[path + ('bn', 'var')] = layer['mean'], layer['var']
  matched = {**variables, 'batch_stats': traverse_util.unflatten_dict(flat)}
  _, state = model.apply(matched, x, train=False, mutable=[BN_INPUT_MOMENTS])
  loss = losses.bn_statistics_loss(bn_input_statistics(state[BN_INPUT_MOMENTS], matched['batch_stats']))
  assert float(loss) < 1e-3
  _, state = model.apply(variables, x, train=False, mutable=[BN_INPUT_MOMENTS])
  assert float(losses.bn_statistics_loss(
      bn_input_statistics(state[BN_INPUT_MOMENTS], variables['batch_stats']))) > 0.1


def test_deepinversion_priors_against_hand_values():
  images = jnp.asarray([[[[1.0], [3.0]], [[0.0], [2.0]]]])  # one 2x2 image
  # Horizontal differences (-2, -2), vertical (1, 1), diagonals (3) and (-1).
  expected = np.sqrt(8) + np.sqrt(2) + 3 + 1
  np.testing.assert_allclose(losses.total_variation_l2_loss(images), expected, rtol=1e-6)
  np.testing.assert_allclose(losses.l2_prior_loss(images), np.sqrt(14), rtol=1e-6)


def test_attention_distillation_is_the_l1_distance_of_l2_normalised_maps():
  student = jnp.asarray([[[3.0, 0.0], [0.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]])
  teacher = jnp.asarray([[[1.0, 0.0], [0.0, 0.0]], [[0.0, 2.0], [0.0, 0.0]]])
  # Image 0: (0.6, 0, 0, 0.8) - (1, 0, 0, 0) -> 0.4 + 0.8; image 1: 0 - (0, 1, 0, 0) -> 1.
  np.testing.assert_allclose(losses.attention_distillation_loss(student, teacher),
                             (1.2 + 1.0) / 2, rtol=1e-6)


def test_icarl_loss_against_hand_values():
  logits = jnp.asarray([[0.0, 2.0, -1.0]])
  teacher = jnp.asarray([[1.0]])
  # Targets: sigmoid(1) on the old output 0, one-hot label 2 on the new outputs.
  p = 1 / (1 + np.exp(-1.0))
  bce = lambda z, t: -(t * np.log(1 / (1 + np.exp(-z))) + (1 - t) * np.log(1 - 1 / (1 + np.exp(-z))))
  expected = (bce(0.0, p) + bce(2.0, 0.0) + bce(-1.0, 1.0)) / 3  # mean over the 3 outputs
  np.testing.assert_allclose(losses.icarl_distillation_loss(logits, jnp.asarray([2]), teacher),
                             expected, rtol=1e-5)
  # A generated image (label -1) has all-zero new-class targets.
  expected_generated = (bce(0.0, p) + bce(2.0, 0.0) + bce(-1.0, 0.0)) / 3
  np.testing.assert_allclose(losses.icarl_distillation_loss(logits, jnp.asarray([-1]), teacher),
                             expected_generated, rtol=1e-5)


def test_abd_content_loss_is_tempered_ce_to_the_argmax():
  # CE([2, 0] / T, class 0) = log(1 + e^(-2 / T)).
  for temperature in (1.0, 1000.0):
    np.testing.assert_allclose(losses.content_loss(jnp.asarray([[2.0, 0.0]]), temperature),
                               np.log1p(np.exp(-2.0 / temperature)), rtol=1e-6)


@pytest.mark.parametrize('probabilities', [[0.5, 0.5], [1.0, 0.0], [0.75, 0.25], [0.5, 0.25, 0.25]])
def test_normalised_class_balance_is_one_minus_normalised_entropy(probabilities):
  p = np.asarray(probabilities)
  entropy = -sum(x * np.log(x) for x in p if x > 0)
  np.testing.assert_allclose(losses.normalised_class_balance_loss(jnp.asarray(p)),
                             1 - entropy / np.log(len(p)), atol=1e-6)


def test_normalised_class_balance_needs_two_classes():
  with pytest.raises(ValueError, match='2 or more classes'):
    losses.normalised_class_balance_loss(jnp.asarray([1.0]))


def _bn_layer(mean, var, running_mean, running_var):
  return {'mean': jnp.asarray(mean), 'var': jnp.asarray(var),
          'running_mean': jnp.asarray(running_mean), 'running_var': jnp.asarray(running_var)}


def test_bn_kl_is_the_gaussian_kl_per_channel_averaged():
  # KL(N(0, 1) || N(1, 1)) = 1/2; KL(N(0, 1) || N(0, 2)) = (ln 2 - 1/2) / 2; equal: 0.
  channels = _bn_layer([1.0, 0.0], [1.0, 2.0], [0.0, 0.0], [1.0, 1.0])
  equal = _bn_layer([0.3], [0.7], [0.3], [0.7])
  np.testing.assert_allclose(losses.bn_kl_loss([channels]), (0.5 + (np.log(2) - 0.5) / 2) / 2,
                             rtol=1e-5)
  np.testing.assert_allclose(losses.bn_kl_loss([channels, equal]),
                             (0.5 + (np.log(2) - 0.5) / 2) / 4, rtol=1e-5)


def _smoothed_reference(image):
  """ABD's smoothing of one HxW channel, written out: reflect padding, 5x5 taps."""
  taps = np.exp(-((np.arange(5) - 2) / 2.0) ** 2)
  kernel = np.outer(taps, taps) / taps.sum() ** 2
  padded = np.pad(image, 2, mode='reflect')
  return np.array([[np.sum(kernel * padded[i:i + 5, j:j + 5]) for j in range(image.shape[1])]
                   for i in range(image.shape[0])])


def test_smoothness_prior_is_the_squared_gap_to_the_smoothed_image():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(2, 6, 7, 3)).astype(np.float32)
  expected = np.mean([(images[n, :, :, c] - _smoothed_reference(images[n, :, :, c])) ** 2
                      for n in range(2) for c in range(3)])
  np.testing.assert_allclose(losses.smoothness_prior_loss(jnp.asarray(images)), expected,
                             rtol=1e-5)
  assert float(losses.smoothness_prior_loss(jnp.full((1, 6, 6, 1), 0.7))) == pytest.approx(0.0, abs=1e-9)


def test_abd_head_ce_weights_and_feature_distillation():
  # Old classes 0-2 of 4: weight 3/4 for an old label, 1/4 for a new one.
  np.testing.assert_allclose(losses.old_new_class_weights(jnp.asarray([0, 3]), 3, 4), [0.75, 0.25])
  # mean(w * CE): CE([2, 0], 0) = log(1 + e^-2), CE([0, 0], 1) = log 2, not divided by sum(w).
  expected = (1 * np.log1p(np.exp(-2.0)) + 3 * np.log(2.0)) / 2
  np.testing.assert_allclose(losses.weighted_cross_entropy(
      jnp.asarray([[2.0, 0.0], [0.0, 0.0]]), jnp.asarray([0, 1]), jnp.asarray([1.0, 3.0])),
      expected, rtol=1e-6)
  # Drift (1, 0) through the old head [[1, 2], [3, 4]] is (1, 2): mean of squares 2.5.
  np.testing.assert_allclose(losses.head_projected_feature_distillation(
      jnp.asarray([[1.0, 0.0], [5.0, 5.0]]), jnp.asarray([[0.0, 0.0], [5.0, 5.0]]),
      jnp.asarray([[1.0, 2.0], [3.0, 4.0]])), 2.5 / 2, rtol=1e-6)


# --- R-DFCIL --------------------------------------------------------------------


def test_normalised_weighted_cross_entropy_divides_by_the_total_weight():
  # PyTorch's cross_entropy(weight=w): (1 log(1 + e^-2) + 3 log 2) / (1 + 3) = 0.5515924.
  value = losses.weighted_cross_entropy(jnp.asarray([[2.0, 0.0], [0.0, 0.0]]), jnp.asarray([0, 1]),
                                        jnp.asarray([1.0, 3.0]), total_weight=4.0)
  np.testing.assert_allclose(value, 0.5515924, rtol=1e-6)


def test_inverse_frequency_weights_count_a_missing_class_as_one():
  np.testing.assert_allclose(losses.inverse_frequency_weights(jnp.asarray([10, 5, 0])),
                             [1.0, 2.0, 10.0])


def test_l1_logit_distillation_is_the_mean_absolute_gap_and_stops_at_the_teacher():
  student, teacher = jnp.asarray([[1.0, -1.0]]), jnp.asarray([[0.0, 1.0]])
  assert float(losses.l1_logit_distillation(student, teacher)) == pytest.approx(1.5)
  grad = jax.grad(losses.l1_logit_distillation, argnums=1)(student, teacher)
  assert np.all(np.asarray(grad) == 0)


def test_rkd_angle_loss_by_hand():
  teacher = jnp.asarray([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  student = jnp.asarray([[0.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
  # Only the angles at points 1 and 2 differ: twice |2/sqrt5 - 1/sqrt2| and twice
  # |1/sqrt5 - 1/sqrt2| (A_ijk = A_ikj), averaged over all 27 triples.
  expected = (2 * abs(2 / np.sqrt(5) - 1 / np.sqrt(2)) + 2 * abs(1 / np.sqrt(5) - 1 / np.sqrt(2))) / 27
  np.testing.assert_allclose(losses.rkd_angle_loss(student, teacher), expected, rtol=1e-6)
  np.testing.assert_allclose(expected, 0.0331269, rtol=1e-5)
  # Angles do not change under scaling and translation.
  assert float(losses.rkd_angle_loss(3 * teacher + 1, teacher)) == pytest.approx(0.0, abs=1e-6)


def test_rkd_angle_loss_has_finite_gradients_with_repeated_points():
  """e_i - e_i = 0 for every i (and for duplicated images): the safe norm keeps it finite."""
  embeddings = jnp.asarray([[0.1, 0.2], [2.0, 0.5], [2.0, 0.5], [0.3, 1.3]])
  grads = jax.grad(losses.rkd_angle_loss, argnums=(0, 1))(embeddings, embeddings[::-1])
  assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)


def test_rkd_angle_loss_gradient_matches_finite_differences():
  student = np.asarray([[0.1, 0.2], [2.0, 0.5], [0.3, 1.3]])
  teacher = np.asarray([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
  grad = np.asarray(jax.grad(losses.rkd_angle_loss)(jnp.asarray(student), jnp.asarray(teacher)))
  step = 1e-3
  for index in np.ndindex(student.shape):
    shift = np.zeros_like(student)
    shift[index] = step
    difference = (losses.rkd_angle_loss(jnp.asarray(student + shift), jnp.asarray(teacher))
                  - losses.rkd_angle_loss(jnp.asarray(student - shift), jnp.asarray(teacher)))
    np.testing.assert_allclose(grad[index], float(difference) / (2 * step), atol=2e-4)


@pytest.mark.parametrize('num_old, num_new, expected', [
    (10, 10, (0.6934264, 0.3877444, 1.2924813)), (20, 10, (0.4903265, 0.5483534, 1.8278445))])
def test_rdfcil_loss_factors(num_old, num_new, expected):
  np.testing.assert_allclose(losses.rdfcil_loss_factors(num_old, num_new, 0.5, 0.15, 0.5),
                             expected, rtol=1e-6)
