"""Speed measurements (not tests): `python -m benchmarks.<name> --help`.

Every benchmark runs with the project's CPU flags (`mfgr_jax.cpu_flags`), set here,
before any of them starts JAX; `MFGR_JAX_CPU_FLAGS=off` measures without them.
"""

from mfgr_jax import cpu_flags

cpu_flags.use_project_flags()


def emit(table: str, out: str) -> None:
  """Prints a markdown table, followed by what it was measured on (backend, CPU kind,
  XLA flags), and, if `out` names a file, writes both there too."""
  table = f'{table.rstrip()}\n\nMeasured on: {cpu_flags.describe()}\n'
  print(table)
  if out:
    with open(out, 'w') as f:
      f.write(table)
