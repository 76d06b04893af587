"""MFGR's and ABD's stage I and stage II, each with the other's: the two off-diagonal
cells of the stage-swap study (docs/results.md, "Stage I or stage II?").

A research extension written from outside the library, as a user writes one: a
method plugin (examples/pyproject.toml declares it in the entry-point group
`mfgr_jax.methods`), installed with `pip install -e examples`, after which
`--config.method=NAME` and `python -m mfgr_jax.study --methods=NAME` find its
methods. Each method is an existing one with its stage I replaced:

| method                       | stage I (generator terms) | stage II (classifier loss)          |
|------------------------------|---------------------------|-------------------------------------|
| `mfgr`                       | MFGR's                    | MFGR's: cut CE + KD on real, generated |
| `mfgr_generator_abd_replay`  | MFGR's                    | ABD's: local CE + weighted head CE + feature KD |
| `abd_generator_mfgr_replay`  | ABD's                     | MFGR's                              |
| `abd`                        | ABD's                     | ABD's                               |

Everything else is the stage II method's: its loss, teacher and config sections (so
the study passes `--config.replay.single_pass=True` to the ABD-replay cells, as to
`abd`); the generator's architecture and budget are the shared `generator`
section's for all four. ABD's generator terms read their weights and temperature
from the `abd` section, so the MFGR-replay cell reads that section too.
"""

import dataclasses

from mfgr_jax import stage_one
from mfgr_jax.methods import abd, mfgr

# The methods' records, from their modules (the registry is being built while a plugin
# is imported, so `get_method` is for later).
_ABD_REPLAY, = abd.METHODS
_MFGR_REPLAY, = (method for method in mfgr.METHODS if method.name == 'mfgr')

METHODS = (
    dataclasses.replace(_ABD_REPLAY, name='mfgr_generator_abd_replay',
                        stage_one=stage_one.generator(mfgr.MFGR_TERMS)),
    dataclasses.replace(_MFGR_REPLAY, name='abd_generator_mfgr_replay',
                        sections=_MFGR_REPLAY.sections + ('abd',),
                        stage_one=stage_one.generator(abd.ABD_TERMS, loss_section='abd')),
)
