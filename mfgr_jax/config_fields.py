"""Config fields declared with their rules, and the check of a whole config.

Every field of a run's config is declared once, where it is defined
(run_config.py for the shared sections, each method's and stage I's
`CONFIG` for theirs), as a `Field`: its default and the values it allows.
`defaults` turns a tree of fields into the `ConfigDict` a config file starts
from; `check` holds a config against the tree before any data is loaded or
anything is compiled: a missing or unknown field, or a value a rule refuses,
is one `UserError` line naming the field, the value and what is allowed.
Rules across fields (splits, batch vs devices, sizes the models accept) live
with the code that needs them (`experiment.check_config` and the methods'
`check_config` hooks), and run right after this check.
"""

import dataclasses
import difflib
import math
from typing import Any, Callable, Mapping

import ml_collections

from mfgr_jax.errors import UserError

SEED_LIMIT = 2**32  # numpy's RandomState and JAX's PRNGKey take seeds in 0 .. 2**32 - 1


@dataclasses.dataclass(frozen=True)
class Field:
  """A leaf of the config: its default, and which values are allowed."""
  default: Any
  allowed: str  # what the rule allows, in words: 'an integer >= 1'
  accepts: Callable[[Any], bool]
  # Left out of checkpoint fingerprints while at its default (`added`).
  omitted_at_default: bool = False


# A section: names to fields or to sections.
Fields = Mapping[str, 'Field | Fields']


def _is_integer(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))


def integer(default: int, minimum: int = 0, maximum: int | None = None) -> Field:
  """An integer in minimum .. maximum (inclusive; no upper bound if None)."""
  allowed = (f'an integer >= {minimum}' if maximum is None else
             f'an integer in {minimum} .. {maximum}')
  return Field(default, allowed, lambda v: _is_integer(v) and minimum <= v and
               (maximum is None or v <= maximum))


def positive_integer(default: int) -> Field:
  return integer(default, minimum=1)


def seed(default: int) -> Field:
  return integer(default, 0, SEED_LIMIT - 1)


def number(default: float, minimum: float = 0.0, above: bool = False,
           below: float | None = None) -> Field:
  """A finite number >= minimum (> minimum if `above`), and < `below` if given."""
  allowed = f'a number {">" if above else ">="} {minimum:g}'
  if below is not None:
    allowed += f' and < {below:g}'
  return Field(default, allowed,
               lambda v: _is_number(v) and (v > minimum if above else v >= minimum)
               and (below is None or v < below))


def positive_number(default: float) -> Field:
  return number(default, above=True)


def boolean(default: bool) -> Field:
  return Field(default, 'True or False', lambda v: isinstance(v, bool))


def choice(default: Any, choices: tuple[Any, ...]) -> Field:
  return Field(default, 'one of ' + ', '.join(repr(c) for c in choices), lambda v: v in choices)


def text(default: str, allowed: str = 'a string',
         accepts: Callable[[str], bool] = lambda v: True) -> Field:
  """A string; `accepts` may restrict it further (say how in `allowed`)."""
  return Field(default, allowed, lambda v: isinstance(v, str) and accepts(v))


def added(field: Field) -> Field:
  """`field`, added to a fingerprinted section after runs were made without it, with
  a default that keeps their behaviour: at that default it is left out of the
  checkpoint fingerprint (`fingerprint`), so that their workdirs still resume."""
  return dataclasses.replace(field, omitted_at_default=True)


def fingerprint(values: Mapping[str, Any], fields: Fields) -> dict:
  """A section's `values` as checkpoints record them: without the `added` fields
  that are at their defaults."""
  kept = {}
  for name, value in values.items():
    field = fields.get(name)
    if isinstance(field, Field) and field.omitted_at_default and value == field.default:
      continue
    kept[name] = (fingerprint(value, field) if isinstance(value, Mapping) and
                  isinstance(field, Mapping) else value)
  return kept


def flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  """The leaves of a nested mapping by dotted path: {'train.epochs': 3, ...}."""
  flat = {}
  for name, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(flatten(value, f'{prefix}{name}.'))
    else:
      flat[prefix + name] = value
  return flat


def defaults(fields: Fields) -> ml_collections.ConfigDict:
  """The config of the fields' defaults."""
  return ml_collections.ConfigDict(
      {name: field.default if isinstance(field, Field) else defaults(field).to_dict()
       for name, field in fields.items()})


def leaves(fields: Fields, prefix: str = '') -> dict[str, Field]:
  """Every leaf field by its dotted path."""
  found = {}
  for name, field in fields.items():
    if isinstance(field, Field):
      found[prefix + name] = field
    else:
      found.update(leaves(field, f'{prefix}{name}.'))
  return found


def _problems(config: Any, fields: Fields, source: str, prefix: str = '') -> list[str]:
  problems = []
  for name, field in fields.items():
    path = prefix + name
    if name not in config:
      default = field.default if isinstance(field, Field) else 'a section'
      problems.append(f'{source} lacks the field {path} (default {default!r}); start from '
                      'mfgr_jax.run_config.get_config() and change what differs')
    elif isinstance(field, Field):
      value = config[name]
      if not field.accepts(value):
        shown = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
        problems.append(f'{path}={shown!r} is not allowed: it must be {field.allowed}; fix '
                        f'--config.{path}')
    elif not isinstance(config[name], (ml_collections.ConfigDict, dict)):
      problems.append(f'{path}={config[name]!r} must be a section with the fields '
                      f'{", ".join(field)}; fix {source}')
    else:
      problems.extend(_problems(config[name], field, source, path + '.'))
  for name in config.keys():
    if name not in fields:
      close = difflib.get_close_matches(name, list(fields), n=1)
      hint = f' (did you mean {prefix}{close[0]}?)' if close else ''
      problems.append(f'{source} has the unknown field {prefix}{name}{hint}; the fields are those '
                      'of mfgr_jax/run_config.py')
  return problems


def check(config: ml_collections.ConfigDict, fields: Fields, source: str = 'the config') -> None:
  """Raises one `UserError` line for the first problem of `config` against `fields`
  (naming how many more there are): a missing field, an unknown field, or a value
  a field's rule refuses. `source` names where the config came from."""
  problems = _problems(config, fields, source)
  if problems:
    more = f' (and {len(problems) - 1} more problem(s) after it)' if len(problems) > 1 else ''
    raise UserError(problems[0] + more)
