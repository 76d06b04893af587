"""LwM, Learning without Memorizing (Dhar et al. 2019), single-head, with
FACIL's choices (mmasana/FACIL `src/approach/lwm.py`).

L = LwF's loss (the code's (1 - lambda) CE_cut + lambda KD_T, `lwf.py`)
    + gamma * L_AD(Grad-CAM of the model, Grad-CAM of the frozen old model),

with L_AD the L1 distance of the L2-normalised maps (`losses.
attention_distillation_loss`). Both maps are for the class the old model
predicts on the image, at the output of the last conv stage: Grad-CAM
weights each channel of that map by the spatial mean of the gradient of the
class's logit with respect to it (`jax.grad` through the pooling and the
head), sums over channels and applies a ReLU. As in the reference
implementations, the channel weights are constants for the loss (no
second-order gradient); the map itself is differentiated.
"""

import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import config_fields as F
from mfgr_jax import losses
from mfgr_jax.classifier import ClassifierLoss
from mfgr_jax.methods import Method, lwf, previous_model
from mfgr_jax.models.resnet import Forward, logits_from_feature_map
from mfgr_jax.scenario import Task

# LwM: LwF + attention_weight * L1 distance of normalised Grad-CAM maps (gamma; FACIL: 1).
CONFIG = {'lwm': dict(attention_weight=F.number(1.0))}


def grad_cam(forward: Forward, classes: jax.Array) -> jax.Array:
  """(N, H, W) Grad-CAM maps of `forward`'s last stage for the logit `classes[n]` of image n."""

  def chosen_logits(feature_map):
    logits = logits_from_feature_map(forward.params, feature_map)
    return jnp.sum(jnp.take_along_axis(logits, classes[:, None], axis=-1))

  # Images are independent, so the gradient of the sum is each image's own.
  gradients = jax.grad(chosen_logits)(forward.feature_map)
  channel_weights = jax.lax.stop_gradient(jnp.mean(gradients, axis=(1, 2), keepdims=True))
  return jax.nn.relu(jnp.sum(channel_weights * forward.feature_map, axis=-1))


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ClassifierLoss:
  lwf_loss = lwf.make_loss(task, config)

  def loss(out, labels, teacher, method_state):
    total, metrics = lwf_loss(out, labels, teacher, method_state)
    classes = jnp.argmax(teacher.logits, axis=-1)
    attention = losses.attention_distillation_loss(grad_cam(out, classes),
                                                   grad_cam(teacher, classes))
    return total + config.lwm.attention_weight * attention, {**metrics, 'attention': attention}

  return loss


METHODS = (Method('lwm', make_loss=make_loss, sections=('lwm', 'distillation'),
                  teacher=previous_model),)
