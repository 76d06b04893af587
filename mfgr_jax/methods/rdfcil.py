"""R-DFCIL, "Relation-Guided Representation Learning for Data-Free Class
Incremental Learning" (Gao et al., ECCV 2022), as its official code runs it.

Stage I is ABD's inversion (cl-lite's `GenerativeInversion`: tempered content
CE, normalised class balance, Gaussian KL to the BN statistics, smoothness
prior; `stage_one.generator(ABD_TERMS, 'rdfcil')`) with a fresh generator per
task. Stage II (module.py `training_step`) on real new-class images x and
generated old-class images x^, with task-dependent factors a = log2(C_new/2 + 1),
b = sqrt(C_old / C_new):

  L = l_ce (1 + 1/a) / b * CE(new logits of x)                       local CE
    + l_hkd a b * mean |old logits of x^ - old model's logits of x^|  HKD (L1)
    + l_rkd a b * RKD-angle(P_s f(x), P_t f_old(x))                  relational KD

where P_s, P_t are trainable linear projections of the pooled features to twice
their width, new each task (the loss owns them: `Method.loss_params`), and the
angle loss compares the angles of every triple of the batch's embeddings.
Then the head phase (mixin/finetuning.py; `HeadPhase`): the backbone frozen in
eval mode, every head row trained at 0.05 times the learning rate on

  0.5 * CE_w([x; x^], [y; argmax old(x^)]) + l_hkd a b * HKD,

CE_w normalised by the class weights w_c = max_c' n_c' / n_c, n_c the count of
class c among the labels the task's classifier stage saw. Task 0 is plain
cross-entropy, as for every method.

Departures from the code (docs/methods.md): the class counts are estimated,
not accumulated step by step (the real labels' shares of the task's images and
the old model's argmax over `class_count_batches` sampled generator batches,
times the stage's steps); the head phase has its own steps (`head_phase_fraction`
of the classifier stage's: the code's 40 after 160 epochs) and a new SGD, where
the code keeps the main phase's momentum; the schedule before it is the shared
cosine (the code: steps at 50 and 75% of the epochs); the generator's budget
and architecture are the shared `generator` section's, sampled with batch
statistics (the code: running statistics, 5000 Adam steps at lr 1e-3); the
classifier sees the generated batch before the real one (the code: real first).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from mfgr_jax import config_fields as F
from mfgr_jax import classifier, keys, losses, parallel, stage_one
from mfgr_jax.classifier import ReplayLoss
from mfgr_jax.methods import HeadPhase, Method, previous_model
from mfgr_jax.methods.abd import ABD_TERMS
from mfgr_jax.models.layers import torch_bias_init, torch_kernel_init
from mfgr_jax.models.resnet import LOSS_PARAMS, classify
from mfgr_jax.scenario import Task

if TYPE_CHECKING:
  from mfgr_jax.experiment import Experiment

# R-DFCIL (config/cifar100.yaml, module.py): generator_weights and
# content_temperature of its inversion (cl-lite's defaults, as ABD's); lambda_*
# of its local CE, HKD and RKD before the task-dependent factors; the head
# phase's length (a fraction of the classifier stage's steps), learning rate (a
# multiple of train.learning_rate: 0.005 / 0.1), CE weight; and how many
# generator batches estimate the replayed class counts.
CONFIG = {'rdfcil': dict(
    generator_weights={name: F.number(weight) for name, weight in dict(
        content=1.0, normalised_balance=1.0, bn_kl=50.0, smoothness=1e-3).items()},
    content_temperature=F.positive_number(1000.0), lambda_ce=F.number(0.5),
    lambda_hkd=F.number(0.15), lambda_rkd=F.number(0.5),
    head_phase_fraction=F.positive_number(0.25), head_learning_rate_scale=F.positive_number(0.05),
    head_ce_weight=F.number(0.5), class_count_batches=F.positive_integer(4))}


def _factors(task: Task, config: ml_collections.ConfigDict) -> tuple[float, float, float]:
  own = config.rdfcil
  return losses.rdfcil_loss_factors(task.num_old, task.num_new, own.lambda_ce, own.lambda_hkd,
                                    own.lambda_rkd)


def _hkd(generated, teacher_generated) -> jax.Array:
  """L1 between the old logits of the generated images and the old model's."""
  return losses.l1_logit_distillation(generated.logits[:, :teacher_generated.logits.shape[-1]],
                                      teacher_generated.logits)


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ReplayLoss:
  ce_factor, hkd_factor, rkd_factor = _factors(task, config)

  def loss(real, labels, teacher_real, generated, teacher_generated):
    projections = real.params[LOSS_PARAMS]
    project = lambda p, f: f @ p['kernel'] + p['bias']
    # The angles span the global batch: gather the embeddings from every device.
    rkd = parallel.per_device(losses.rkd_angle_loss(
        parallel.all_gather(project(projections['student'], real.features)),
        parallel.all_gather(project(projections['teacher'],
                                    jax.lax.stop_gradient(teacher_real.features)))))
    metrics = {'local_ce': losses.cut_cross_entropy(real.logits, labels, task.num_old),
               'hkd': _hkd(generated, teacher_generated), 'rkd': rkd}
    total = (ce_factor * metrics['local_ce'] + hkd_factor * metrics['hkd']
             + rkd_factor * metrics['rkd'])
    return total, metrics

  return loss


def projections(experiment: Experiment, task: Task, key: jax.Array) -> Any:
  """P_s and P_t (`projection_params`) of the model's pooled features, new each task t > 0."""
  return projection_params(experiment.feature_dim(), key) if task.num_old else None


def projection_params(width: int, key: jax.Array) -> dict:
  """Two linear maps, 'student' and 'teacher', from `width` to 2 x `width` features,
  with PyTorch's default initialisation (R-DFCIL's `Linear(d, 2d)`)."""
  kernel_keys = jax.random.split(key, 4)

  def linear(kernel_key, bias_key):
    return {'kernel': torch_kernel_init(kernel_key, (width, 2 * width)),
            'bias': torch_bias_init(width)(bias_key, (2 * width,))}

  return {'student': linear(*kernel_keys[:2]), 'teacher': linear(*kernel_keys[2:])}


# --- head phase ---------------------------------------------------------------


def replay_class_counts(experiment: Experiment, task: Task, replay_arrays: Any,
                        old_vars: Any) -> np.ndarray:
  """The expected count of each seen class among the labels of the classifier
  stage: its real images' labels and the old model's argmax on the replayed
  ones, over the stage's steps. The replayed share is estimated from
  `rdfcil.class_count_batches` batches of stage I's source."""
  config = experiment.config
  source = experiment.method.stage_one.source(experiment, task)
  teacher = experiment.model(task.num_old)

  def count(arrays, teacher_vars, inputs):
    forward, _ = classify(teacher, teacher_vars, source.render(arrays, inputs), train=False)
    one_hot = jax.nn.one_hot(jnp.argmax(forward.logits, -1), task.num_seen)
    return jax.lax.psum(jnp.sum(one_hot, axis=0), parallel.AXIS)

  mapped = parallel.data_parallel(count, in_specs=(
      parallel.REPLICATED, parallel.REPLICATED, parallel.SHARDED), out_specs=parallel.REPLICATED)
  draw = jax.jit(lambda arrays, teacher_vars, key: mapped(arrays, teacher_vars, source.draw(key)))
  arrays, base_key = parallel.replicate(replay_arrays), experiment.task_key(task,
                                                                        keys.REPLAY_CLASS_COUNTS)
  replayed = sum(parallel.to_host(draw(arrays, old_vars, jax.random.fold_in(base_key, i)))
                 for i in range(config.rdfcil.class_count_batches))
  real_labels = experiment.train_targets[experiment.method.train_images(experiment, task, None)]
  real = np.bincount(real_labels, minlength=task.num_seen)
  steps = experiment.total_steps(task)
  return (steps * config.train.batch_size * real / real.sum()
          + steps * stage_one.generated_batch_size(config, task) * replayed / replayed.sum())


def head_loss(task: Task, config: ml_collections.ConfigDict, class_weights: Any) -> ReplayLoss:
  """The head phase's loss: the CE of real and replayed images weighted by their
  classes' `class_weights` (normalised by the weights), plus HKD."""
  _, hkd_factor, _ = _factors(task, config)
  class_weights = jnp.asarray(class_weights, jnp.float32)

  def loss(real, labels, teacher_real, generated, teacher_generated):
    del teacher_real
    all_labels = jnp.concatenate([labels, jnp.argmax(teacher_generated.logits, axis=-1)])
    weights = class_weights[all_labels]
    metrics = {
        'balanced_ce': losses.weighted_cross_entropy(
            jnp.concatenate([real.logits, generated.logits]), all_labels, weights,
            total_weight=parallel.pmean(jnp.sum(weights))),
        'hkd': _hkd(generated, teacher_generated)}
    total = config.rdfcil.head_ce_weight * metrics['balanced_ce'] + hkd_factor * metrics['hkd']
    return total, metrics

  return loss


def make_head_loss(experiment: Experiment, task: Task, replay_arrays: Any,
                   old_vars: Any) -> ReplayLoss:
  """`head_loss` with the class weights max n / n of the estimated class counts."""
  counts = replay_class_counts(experiment, task, replay_arrays, old_vars)
  return head_loss(task, experiment.config, losses.inverse_frequency_weights(counts))


def head_steps(experiment: Experiment, task: Task) -> int:
  return max(1, round(experiment.config.rdfcil.head_phase_fraction * experiment.total_steps(task)))


def head_optimizer(config: ml_collections.ConfigDict, steps: int) -> optax.GradientTransformation:
  """SGD at a constant rdfcil.head_learning_rate_scale x train.learning_rate."""
  del steps
  train = config.train
  return classifier.sgd_with_weight_decay(
      config.rdfcil.head_learning_rate_scale * train.learning_rate, train.weight_decay,
      train.momentum)


METHODS = (Method('rdfcil', make_loss=make_loss, sections=('rdfcil',), teacher=previous_model,
                  stage_one=stage_one.generator(ABD_TERMS, loss_section='rdfcil'),
                  loss_params=projections,
                  head_phase=HeadPhase(steps=head_steps, make_loss=make_head_loss,
                                       optimizer=head_optimizer)),)
