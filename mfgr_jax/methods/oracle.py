"""Oracle: warm-started training on every seen class's data (the code's upper bound).

Not joint training from scratch: each task continues from the previous model
with the widened head, as `--method oracle --dataloader_type oracle` does.
"""

from mfgr_jax.methods import Method
from mfgr_jax.methods.finetune import make_loss

METHODS = (Method('oracle', uses_teacher=False, trains_on_all_seen=True, make_loss=make_loss),)
