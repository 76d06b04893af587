"""The XLA flags this project's CPU runs use, chosen by measurement per kind of CPU.

jaxlib 0.12's CPU backend hands convolutions to YNNPACK (the `individual_convolution`
entry of `--xla_cpu_experimental_ynn_fusion_type`'s default list). On CPUs without
AVX-512 (AMD Zen 3) YNNPACK's weight gradient of a 3x3 convolution takes up to 12x its
forward (docs/performance.md), so every training step pays it; removing that one
entry sends convolutions back to XLA's own kernels, whose weight gradient is 2-8x
faster there, and the generator step 2.4x faster. The gradients agree to
float tolerance (tests/test_cpu_flags.py) but are not bitwise those of the default.

`use_project_flags()` runs first at every entry point (`mfgr_jax.main`,
`mfgr_jax.study`, the benchmarks, the tests), before JAX starts a backend: it appends
the flags measured for this CPU to `XLA_FLAGS`, keeping whatever the user's
`XLA_FLAGS` already says (a flag set there is never overridden), and does nothing
where JAX will run on a GPU or TPU, for a jaxlib the flags were not measured with,
or with `MFGR_JAX_CPU_FLAGS=off`. Each run records the flags in force and the CPU
kind per task in results.json (`machine`). This module imports no JAX.
"""

import importlib.metadata
import importlib.util
import os
import pathlib
import platform

# Measured with jaxlib 0.12.0.1 (docs/performance.md). Kinds without an entry were
# not measured to gain: on an AVX-512 CPU (Zen 4) YNNPACK's weight gradient is 3x
# its forward, and whether XLA's own kernels beat that is for a measurement there
# (`MFGR_JAX_CPU_FLAGS=off` against the flag, with benchmarks/vs_pytorch.py).
FLAGS_BY_CPU = {
    'avx2': ('--xla_cpu_experimental_ynn_fusion_type=-individual_convolution',),
}
MEASURED_JAXLIB = '0.12.'
OFF_VARIABLE = 'MFGR_JAX_CPU_FLAGS'
_ACCELERATOR_PLUGINS = ('jax_cuda12_plugin', 'jax_cuda13_plugin', 'jax_rocm60_plugin',
                        'jax_rocm7_plugin', 'libtpu')


def cpu_kind(cpuinfo: str | None = None) -> str:
  """'avx512', 'avx2' or 'other' (an x86 CPU without AVX2, or another architecture)."""
  if cpuinfo is None:
    try:
      cpuinfo = pathlib.Path('/proc/cpuinfo').read_text()
    except OSError:
      return 'other'
  flags = set(next((line.split(':', 1)[1].split() for line in cpuinfo.splitlines()
                    if line.startswith('flags')), []))
  if 'avx512f' in flags:
    return 'avx512'
  return 'avx2' if 'avx2' in flags else 'other'


def _runs_on_cpu(environ: dict) -> bool:
  """Whether JAX will compute on the CPU: JAX_PLATFORMS says so, or names nothing
  and no GPU or TPU plugin is installed (told without importing JAX)."""
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip().lower() == 'cpu'
  return not _accelerator_plugin_installed()


def _accelerator_plugin_installed() -> bool:
  return any(importlib.util.find_spec(name) for name in _ACCELERATOR_PLUGINS)


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version('jaxlib')
  except importlib.metadata.PackageNotFoundError:
    return ''


def project_flags(environ: dict | None = None, kind: str | None = None) -> tuple[str, ...]:
  """The flags this process should add to XLA_FLAGS: those measured for this CPU,
  less any whose name XLA_FLAGS sets already; none off the CPU or when turned off."""
  environ = os.environ if environ is None else environ
  if (environ.get(OFF_VARIABLE, '').lower() in ('off', '0', 'false') or
      not _runs_on_cpu(environ) or not _jaxlib_version().startswith(MEASURED_JAXLIB)):
    return ()
  user_set = {flag.split('=', 1)[0] for flag in environ.get('XLA_FLAGS', '').split()}
  return tuple(flag for flag in FLAGS_BY_CPU.get(kind or cpu_kind(), ())
               if flag.split('=', 1)[0] not in user_set)


def use_project_flags(environ: dict | None = None, kind: str | None = None) -> tuple[str, ...]:
  """Appends `project_flags()` to XLA_FLAGS in `environ` (default: this process's,
  which children inherit); returns what it added. Call before JAX starts a backend:
  XLA reads the variable once, when the first backend starts."""
  environ = os.environ if environ is None else environ
  added = project_flags(environ, kind)
  if added:
    environ['XLA_FLAGS'] = ' '.join([environ.get('XLA_FLAGS', ''), *added]).strip()
  return added


def machine() -> dict:
  """What a run or benchmark computed on: JAX's backend and devices, the CPU's kind
  and the XLA flags in force (recorded per task in results.json)."""
  import jax  # pylint: disable=import-outside-toplevel  (this module must not start JAX)
  return {'backend': jax.default_backend(), 'device_kind': jax.devices()[0].device_kind,
          'devices': jax.device_count(), 'cpu': cpu_kind(), 'processor': _processor_name(),
          'xla_flags': os.environ.get('XLA_FLAGS', '')}


def describe() -> str:
  """One line for a benchmark table's header."""
  info = machine()
  return (f"{info['backend']} x {info['devices']}, CPU {info['processor']} ({info['cpu']}), "
          f"XLA_FLAGS: {info['xla_flags'] or '(none)'}")


def _processor_name() -> str:
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()
