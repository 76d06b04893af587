"""DeepInversion replay (Yin et al. 2020), the baseline of the paper's Table 4.

Stage I synthesises a fixed pool of old-class images by optimising pixels
from noise against the frozen old model (`inversion.make_pixel_step`: CE to
class-balanced targets, BN statistics, TV and L2 priors, jitter); stage II is
MFGR's (`mfgr.make_loss`: cut CE on real data, KD on the replayed images and
on real data), with replayed images drawn from the pool instead of sampled
from a generator. The paper's argument against it is cost: every image costs
`deepinversion.iterations` forward/backward passes of the old model, where a
trained generator makes a new batch in one forward pass.
"""

import functools

from mfgr_jax import stage_one
from mfgr_jax.methods import Method, mfgr, previous_model

METHODS = (Method('deepinversion', make_loss=functools.partial(mfgr.make_loss, distill_real=True),
                  sections=('distillation',), teacher=previous_model,
                  stage_one=stage_one.PIXEL_POOL),)
