"""Pure loss functions, one per term of the paper/code.

No state and no config objects: every function takes arrays and returns a
scalar (batch mean unless stated). Formulas follow docs `mfgr_spec.md`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """Mean softmax cross-entropy with integer labels over all given logits."""
  return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def cut_cross_entropy(logits: jax.Array, labels: jax.Array, num_old: int) -> jax.Array:
  """CE over the new-class logits only (the code's `set_targets_cut`).

  `labels` are in [num_old, C); the softmax runs over logits[:, num_old:].
  """
  return cross_entropy(logits[:, num_old:], labels - num_old)


def distillation(student_logits: jax.Array, teacher_logits: jax.Array,
                 temperature: float = 2.0, scale_by_t_squared: bool = False) -> jax.Array:
  """Soft-target cross-entropy at temperature T, batch mean (LwF's KD).

  The code uses soft CE (same gradient as KL), with no T^2 factor; Hinton's
  T^2 scaling is an option. The teacher is not differentiated.
  """
  teacher = jax.nn.softmax(jax.lax.stop_gradient(teacher_logits) / temperature, axis=-1)
  log_student = jax.nn.log_softmax(student_logits / temperature, axis=-1)
  loss = -jnp.mean(jnp.sum(teacher * log_student, axis=-1))
  return loss * temperature**2 if scale_by_t_squared else loss


def quadratic_penalty(params: Any, anchor: Any, importance: Any) -> jax.Array:
  """sum_i importance_i (params_i - anchor_i)^2 over the leaves of `importance` (EWC, MAS).

  The three trees share a structure; the anchor is not differentiated.
  """
  terms = jax.tree.map(lambda p, a, w: jnp.sum(w * jnp.square(p - jax.lax.stop_gradient(a))),
                       params, anchor, importance)
  return sum(jax.tree.leaves(terms), jnp.zeros(()))


# Stage I (knowledge recording): losses of the generator against the frozen
# old classifier, each on one generated batch (paper §5.2; xmengxin/MFGR
# `trainers/df_generator_trainer.py`, `train_df_generator`).


def one_hot_loss(logits: jax.Array) -> jax.Array:
  """CE of the logits against their own (non-differentiated) argmax: confident samples."""
  return cross_entropy(logits, jax.lax.stop_gradient(jnp.argmax(logits, axis=-1)))


def class_balance_loss(mean_probabilities: jax.Array) -> jax.Array:
  """sum_c p_c log10 p_c of the batch-mean softmax p: -entropy / ln 10, minimal when balanced.

  Takes the mean prediction (not logits) so that a data-parallel caller can
  average it over devices first. The code uses log10; `xlogy` makes 0 log 0 = 0
  where the code has no epsilon.
  """
  return jnp.sum(jax.scipy.special.xlogy(mean_probabilities, mean_probabilities)) / jnp.log(10.0)


def activation_loss(features: jax.Array) -> jax.Array:
  """DAFL's activation term: minus the mean absolute pooled feature."""
  return -jnp.mean(jnp.abs(features))


def _neighbour_differences(images: jax.Array) -> tuple[jax.Array, ...]:
  """Differences of NHWC images with their right, lower and two diagonal neighbours."""
  return (images[:, :, :-1] - images[:, :, 1:], images[:, :-1] - images[:, 1:],
          images[:, 1:, :-1] - images[:, :-1, 1:], images[:, :-1, :-1] - images[:, 1:, 1:])


def signed_difference_loss(images: jax.Array) -> jax.Array:
  """The code's "TV" term: mean of |mean signed neighbour difference| over 4 directions.

  Unlike a total-variation prior, the signed differences telescope, so this is
  nearly a border term; kept because the official code trains with it (x10).
  `images` is NHWC.
  """
  return sum(jnp.abs(jnp.mean(d)) for d in _neighbour_differences(images)) / 4.0


def _safe_norm(x: jax.Array) -> jax.Array:
  # The unsquared L2 norm has no gradient at 0; this one has gradient 0 there.
  squared = jnp.sum(jnp.square(x))
  safe = jnp.where(squared > 0, squared, 1.0)
  return jnp.where(squared > 0, jnp.sqrt(safe), 0.0)


def bn_statistics_loss(layers: list[dict[str, jax.Array]]) -> jax.Array:
  """Mean over BN layers of ||var - running_var||_2 + ||mean - running_mean||_2.

  `layers` is `models.layers.bn_input_statistics(...)`: the batch mean and
  biased variance of every BN input of the frozen old model, with its running
  statistics. Norms are not squared and layers are averaged, as the code.
  """
  return jnp.mean(jnp.stack([
      _safe_norm(layer['var'] - layer['running_var']) +
      _safe_norm(layer['mean'] - layer['running_mean']) for layer in layers]))


def total_variation_l2_loss(images: jax.Array) -> jax.Array:
  """DeepInversion's TV prior: the sum over 4 neighbour directions of the L2 norm
  of the whole batch's differences (NHWC; not a batch mean, as DeepInversion)."""
  return sum(_safe_norm(d) for d in _neighbour_differences(images))


def l2_prior_loss(images: jax.Array) -> jax.Array:
  """DeepInversion's image prior: the L2 norm of the whole batch."""
  return _safe_norm(images)


def pixel_diversity_loss(images: jax.Array, key: jax.Array, num_pairs: int = 200) -> jax.Array:
  """Minus the symmetric KL between pixel-softmaxes of random pairs of images.

  Pairs join `num_pairs` distinct images of the batch's first half with as
  many of its second half (the code's `random.sample`, here keyed). Each image
  becomes a distribution by a softmax over all its values; minimising this
  maximises the mean of KL(P||Q) + KL(Q||P), halved. Gradients flow into both.
  """
  half = images.shape[0] // 2
  if num_pairs > half:
    raise ValueError(f'{num_pairs} diversity pairs need a batch of at least {2 * num_pairs}, '
                     f'got {images.shape[0]}')
  first_key, second_key = jax.random.split(key)
  first = jax.random.choice(first_key, half, (num_pairs,), replace=False)
  second = half + jax.random.choice(second_key, images.shape[0] - half, (num_pairs,), replace=False)
  flat = images.reshape(images.shape[0], -1)
  log_p, log_q = jax.nn.log_softmax(flat[first], -1), jax.nn.log_softmax(flat[second], -1)
  kl_pq = jnp.sum(jnp.exp(log_p) * (log_p - log_q), -1)
  kl_qp = jnp.sum(jnp.exp(log_q) * (log_q - log_p), -1)
  return -0.5 * (jnp.mean(kl_pq) + jnp.mean(kl_qp))


# ABD's stage I (Smith et al. 2021, learners/datafree_helper.py; R-DFCIL's is the same):
# content, normalised class balance, a Gaussian KL to the BN statistics and a
# smoothness prior on the images.


def content_loss(logits: jax.Array, temperature: float) -> jax.Array:
  """CE of the logits divided by `temperature` against their own (non-differentiated)
  argmax (ABD: T = 1000, which keeps the term from saturating)."""
  return cross_entropy(logits / temperature, jax.lax.stop_gradient(jnp.argmax(logits, axis=-1)))


def normalised_class_balance_loss(mean_probabilities: jax.Array) -> jax.Array:
  """1 + sum_c p_c ln p_c / ln K of the batch-mean softmax p over K classes: 0 when
  balanced, 1 when one class takes all (ABD's entropy term, normalised to [0, 1])."""
  num_classes = mean_probabilities.shape[-1]
  if num_classes < 2:
    raise ValueError(f'the normalised class balance needs 2 or more classes, got {num_classes}')
  entropy = -jnp.sum(jax.scipy.special.xlogy(mean_probabilities, mean_probabilities))
  return 1.0 - entropy / jnp.log(num_classes)


def bn_kl_loss(layers: list[dict[str, jax.Array]], eps: float = 1e-8) -> jax.Array:
  """Mean over BN layers of the mean over channels of KL(N(running) || N(batch)).

  Per channel: 1/2 [ln(v / rv) + (rv + (rm - m)^2) / v - 1], with m, v the batch
  mean and biased variance of the layer's input and rm, rv its running
  statistics, both variances + `eps` (ABD's `DeepInversionFeatureHook`).
  `layers` is `models.layers.bn_input_statistics(...)`.
  """
  def layer_kl(layer):
    var, running_var = layer['var'] + eps, layer['running_var'] + eps
    mean_gap = jnp.square(layer['running_mean'] - layer['mean'])
    return jnp.mean(0.5 * (jnp.log(var / running_var) + (running_var + mean_gap) / var - 1.0))
  return jnp.mean(jnp.stack([layer_kl(layer) for layer in layers]))


def _abd_smoothing_kernel(size: int = 5, sigma: float = 1.0) -> jax.Array:
  """ABD's 5x5 smoothing kernel: outer product of taps exp(-((i - c) / (2 sigma))^2),
  normalised (the code's Gaussian has variance 2 sigma^2; kept as it is)."""
  offsets = jnp.arange(size) - (size - 1) / 2
  taps = jnp.exp(-jnp.square(offsets / (2 * sigma)))
  taps = taps / jnp.sum(taps)
  return jnp.outer(taps, taps)


def smoothness_prior_loss(images: jax.Array) -> jax.Array:
  """Mean squared difference of NHWC images and their 5x5 smoothed copies (reflect
  padding, each channel on its own): ABD's image prior."""
  kernel = _abd_smoothing_kernel()
  pad = kernel.shape[0] // 2
  channels = images.shape[-1]
  padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
  smoothed = jax.lax.conv_general_dilated(
      padded, jnp.tile(kernel[:, :, None, None], (1, 1, 1, channels)), (1, 1), 'VALID',
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'), feature_group_count=channels)
  return jnp.mean(jnp.square(images - smoothed))


def old_new_class_weights(labels: jax.Array, num_old: int, num_seen: int) -> jax.Array:
  """ABD's per-example weight: C_old / C for an old-class label, C_new / C for a new one."""
  return jnp.where(labels < num_old, num_old / num_seen, (num_seen - num_old) / num_seen)


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array,
                           total_weight: jax.Array | None = None) -> jax.Array:
  """The per-example weighted CE: mean_i w_i CE(logits_i, labels_i) (ABD's head CE,
  not normalised by the weights), or with `total_weight`, sum_i w_i CE_i / total_weight.

  Pass sum_i w_i as `total_weight` for PyTorch's `cross_entropy(weight=...)`
  (R-DFCIL); data-parallel, its mean over the devices (`parallel.pmean`), so that
  the device average is the global batch's normalised CE.
  """
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  if total_weight is None:
    return jnp.mean(weights * ce)
  return jnp.sum(weights * ce) / total_weight


def inverse_frequency_weights(counts: jax.Array) -> jax.Array:
  """R-DFCIL's class weights max_c n_c / n_c of class counts, each at least 1."""
  counts = jnp.maximum(counts, 1)
  return jnp.max(counts) / counts


def l1_logit_distillation(student_logits: jax.Array, teacher_logits: jax.Array) -> jax.Array:
  """mean |s - t| over images and classes (R-DFCIL's HKD); the teacher is not differentiated."""
  return jnp.mean(jnp.abs(student_logits - jax.lax.stop_gradient(teacher_logits)))


def rkd_angle_loss(student: jax.Array, teacher: jax.Array) -> jax.Array:
  """Relational KD's angle term as R-DFCIL's code has it: the mean over all (i, j, k)
  of |A^s_ijk - A^t_ijk|, A_ijk = <n(e_j - e_i), n(e_k - e_i)>, n(v) = v / |v| (0 for
  |v| <= 1e-12), for embeddings (N, D) of the same images.

  Both sides are differentiated (R-DFCIL trains a projection on each). A zero
  difference (i = j) normalises to 0 with gradient 0: dividing it by the floor
  1e-12 instead would scale its gradient by 1e12, which cancels exactly in
  theory (e_i - e_i) but leaves float32 rounding noise that buries the rest.
  """
  def angles(embeddings):
    differences = embeddings[None, :, :] - embeddings[:, None, :]  # [i, j] = e_j - e_i
    norms = jax.vmap(jax.vmap(_safe_norm))(differences)
    inverse = jnp.where(norms > 1e-12, 1.0 / jnp.maximum(norms, 1e-12), 0.0)
    unit = differences * inverse[..., None]
    return jnp.einsum('ijd,ikd->ijk', unit, unit)
  return jnp.mean(jnp.abs(angles(student) - angles(teacher)))


def rdfcil_loss_factors(num_old: int, num_new: int, lambda_ce: float, lambda_hkd: float,
                        lambda_rkd: float) -> tuple[float, float, float]:
  """R-DFCIL's task-dependent weights of its local CE, HKD and RKD terms (its
  `register_losses`): with a = log2(C_new / 2 + 1) and b = sqrt(C_old / C_new),
  (lambda_ce (1 + 1/a) / b, lambda_hkd a b, lambda_rkd a b)."""
  a = float(np.log2(num_new / 2 + 1))
  b = float(np.sqrt(num_old / num_new))
  return lambda_ce * (1 + 1 / a) / b, lambda_hkd * a * b, lambda_rkd * a * b


def head_projected_feature_distillation(features: jax.Array, teacher_features: jax.Array,
                                        old_kernel: jax.Array) -> jax.Array:
  """ABD's feature distillation: the mean over images and old classes of the squared
  drift of the features seen through the frozen old head, ((f - f_old) W_old)^2.

  `old_kernel` is the old head's (features, old classes) kernel; the bias cancels.
  The old model's features and head are not differentiated.
  """
  drift = features - jax.lax.stop_gradient(teacher_features)
  return jnp.mean(jnp.square(drift @ jax.lax.stop_gradient(old_kernel)))


def attention_distillation_loss(student_maps: jax.Array, teacher_maps: jax.Array) -> jax.Array:
  """LwM's L_AD: batch mean of || Q_s/||Q_s||_2 - Q_t/||Q_t||_2 ||_1 over vectorised maps.

  `*_maps` are (N, H, W) attention maps (Grad-CAM); the teacher's is not
  differentiated. An all-zero map stays zero (its normalised vector is 0).
  """
  def normalised(maps):
    flat = maps.reshape(maps.shape[0], -1)
    return flat / jnp.maximum(jax.vmap(_safe_norm)(flat)[:, None], 1e-12)
  difference = normalised(student_maps) - normalised(jax.lax.stop_gradient(teacher_maps))
  return jnp.mean(jnp.sum(jnp.abs(difference), axis=-1))


def icarl_distillation_loss(logits: jax.Array, targets: jax.Array,
                            teacher_logits: jax.Array | None) -> jax.Array:
  """iCaRL's sigmoid loss: binary CE of every seen logit, mean over images and classes
  (as the official code and FACIL).

  Targets are one-hot over the seen classes (`targets`: output index, or -1 for
  an image of no new class, e.g. a generated one), except that the old-class
  columns take the frozen old model's sigmoids (distillation) when
  `teacher_logits` is given.
  """
  labels = jax.nn.one_hot(targets, logits.shape[-1])  # all zero for -1
  if teacher_logits is not None:
    old = teacher_logits.shape[-1]
    labels = labels.at[:, :old].set(jax.nn.sigmoid(jax.lax.stop_gradient(teacher_logits)))
  return jnp.mean(optax.sigmoid_binary_cross_entropy(logits, labels))
