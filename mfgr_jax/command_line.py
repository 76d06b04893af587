"""The command lines of the sub-commands (`report`, `study`): absl flags, as `main`'s, but
in their own FlagValues (so that importing them adds nothing to a run's flags), with
--help and a one-line error for a bad flag."""

from typing import Sequence

from absl import flags


def parse(program: str, usage: str, values: flags.FlagValues, argv: Sequence[str]) -> list[str]:
  """Parses the command line `argv` (without the program's name) into `values`; returns
  its positional arguments. --help prints `usage` and the flags and exits 0; a bad flag
  exits with `PROGRAM: error: ...` on one line."""
  if {'-h', '--help', '--helpshort'} & set(argv):
    print(f'{usage}\n\n{values.get_help()}')
    raise SystemExit(0)
  try:
    return values([program, *argv])[1:]
  except flags.Error as e:
    raise SystemExit(f'{program}: error: {e}; see --help') from None
