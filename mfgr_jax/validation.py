"""One-line checks of config values, shared by the experiment, the methods and stage I."""

import ml_collections

from mfgr_jax.errors import UserError


def check_positive(config: ml_collections.ConfigDict, fields: tuple[str, ...]) -> None:
  """One-line error for the first of the dotted `fields` of `config` that is not > 0."""
  for field in fields:
    value = config
    for name in field.split('.'):
      value = value[name]
    if not value > 0:
      raise UserError(f'{field}={value} must be positive; fix --config.{field}')


def check_choice(value: str, field: str, choices: tuple[str, ...]) -> None:
  """One-line error if `value` of `field` is not one of `choices`."""
  if value not in choices:
    allowed = ' or '.join(repr(c) for c in choices)
    raise UserError(f'{field}={value!r} must be {allowed}')
