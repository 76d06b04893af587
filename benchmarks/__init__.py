"""Speed measurements (not tests): `python -m benchmarks.<name> --help`."""


def emit(table: str, out: str) -> None:
  """Prints a markdown table and, if `out` names a file, writes it there too."""
  print(table)
  if out:
    with open(out, 'w') as f:
      f.write(table)
