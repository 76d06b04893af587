"""ABD, "Always Be Dreaming" (Smith et al., ICCV 2021), as its official code runs it.

Stage I (`stage_one.generator(ABD_TERMS, 'abd')`): a generator trained against
the frozen old model with ABD's inversion loss (learners/datafree_helper.py):

  content CE at temperature T (1000) + normalised class balance 1 + sum p ln p / ln K
  + 50 * mean over BN layers of KL(N(running) || N(batch)) + 1e-3 * smoothness prior.

Stage II (learners/datafree.py `AlwaysBeDreaming.update_model`) on real new-class
images x and generated old-class images x^ labelled by the old model's argmax:

  L = C_new/C * CE(new logits of x)                                    local CE
    + mean over x, x^ of w(y) CE(head(sg f), y), w = C_old/C or C_new/C  head CE
    + mu * mean over x, x^ and old classes of ((f - f_old) W_old)^2     feature KD

The head CE sees detached features, so it trains only the head: the code's
"linear head fine-tuning" runs at every step (the code has no separate phase),
and the weights calibrate old against new logits. W_old is the frozen old
head's kernel, so the feature drift is weighted by what it does to the old
logits ("importance-weighted" distillation; the code's per-example weights are
all 1). Task 0 is plain cross-entropy, as for every method.

Departures from the code (docs/methods.md): the generator's
architecture and budget are the shared `generator` section's (a fresh generator
per task, sampled with batch statistics; the code warm-starts one generator
across tasks, lr 1e-3, 10 000 steps, and samples it with running statistics);
the head CE's softmax covers the seen classes (the code's, all 100 outputs);
set `--config.replay.single_pass=True` for the code's one pass over real and
generated images, and `replay.generated_batch_size` to the real batch size.
"""

import jax
import jax.numpy as jnp
import ml_collections

from mfgr_jax import config_fields as F
from mfgr_jax import losses, stage_one
from mfgr_jax.classifier import ReplayLoss
from mfgr_jax.methods import Method, previous_model
from mfgr_jax.models.resnet import logits_from_feature_map
from mfgr_jax.scenario import Task

ABD_TERMS = ('content', 'normalised_balance', 'bn_kl', 'smoothness')

# ABD: generator_weights of its inversion terms and content_temperature (the
# code's --deep_inv_params 1e-3 5e1 1e-3 1e3 1: bn_kl 50, smoothness 1e-3, T 1000,
# content 1); feature_distillation_weight mu (--mu 0.1).
CONFIG = {'abd': dict(
    generator_weights={name: F.number(weight) for name, weight in dict(
        content=1.0, normalised_balance=1.0, bn_kl=50.0, smoothness=1e-3).items()},
    content_temperature=F.positive_number(1000.0), feature_distillation_weight=F.number(0.1))}


def make_loss(task: Task, config: ml_collections.ConfigDict) -> ReplayLoss:
  new_weight = task.num_new / task.num_seen
  mu = config.abd.feature_distillation_weight

  def loss(real, labels, teacher_real, generated, teacher_generated):
    both = lambda a, b: jnp.concatenate([a, b])
    all_labels = both(labels, jnp.argmax(teacher_generated.logits, axis=-1))
    # The student's head on its own detached features: only the head learns from it.
    head_logits = both(
        logits_from_feature_map(real.params, jax.lax.stop_gradient(real.feature_map)),
        logits_from_feature_map(generated.params, jax.lax.stop_gradient(generated.feature_map)))
    metrics = {
        'local_ce': losses.cut_cross_entropy(real.logits, labels, task.num_old),
        'head_ce': losses.weighted_cross_entropy(
            head_logits, all_labels,
            losses.old_new_class_weights(all_labels, task.num_old, task.num_seen)),
        'feature_kd': losses.head_projected_feature_distillation(
            both(real.features, generated.features),
            both(teacher_real.features, teacher_generated.features),
            teacher_real.params['head']['linear']['dense']['kernel'])}
    total = new_weight * metrics['local_ce'] + metrics['head_ce'] + mu * metrics['feature_kd']
    return total, metrics

  return loss


METHODS = (Method('abd', make_loss=make_loss, sections=('abd',), teacher=previous_model,
                  stage_one=stage_one.generator(ABD_TERMS, loss_section='abd')),)
