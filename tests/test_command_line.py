"""The sub-commands' absl command line: positional arguments, --help, one-line errors."""

from absl import flags
import pytest

from mfgr_jax import command_line


def _values() -> flags.FlagValues:
  values = flags.FlagValues()
  flags.DEFINE_string('out', None, 'where to write', flag_values=values)
  flags.DEFINE_list('seeds', ['0'], 'the seeds', flag_values=values)
  return values


def test_parse_fills_the_flags_and_returns_the_positional_arguments():
  values = _values()
  positional = command_line.parse('prog', 'usage', values,
                                  ['run_a', '--out=/tmp/x', 'run_b', '--seeds', '1,2'])
  assert positional == ['run_a', 'run_b']
  assert values.out == '/tmp/x' and values.seeds == ['1', '2']


def test_parse_leaves_arguments_after_a_double_dash_alone():
  assert command_line.parse('prog', 'usage', _values(),
                            ['--', '--config.x=1']) == ['--config.x=1']


@pytest.mark.parametrize('help_flag', ['-h', '--help', '--helpshort'])
def test_help_prints_the_usage_and_the_flags_and_exits_0(help_flag, capsys):
  with pytest.raises(SystemExit) as exit_:
    command_line.parse('prog', 'prog RUN... --out DIR', _values(), ['run_a', help_flag])
  assert exit_.value.code == 0
  printed = capsys.readouterr().out
  assert printed.startswith('prog RUN... --out DIR\n') and '--out: where to write' in printed


@pytest.mark.parametrize('argv, wrong', [(['--outt=/tmp'], 'outt'), (['--out'], 'out')])
def test_a_bad_flag_exits_with_one_line_that_names_it(argv, wrong):
  with pytest.raises(SystemExit) as exit_:
    command_line.parse('prog', 'usage', _values(), argv)
  message = str(exit_.value.code)
  assert message.startswith('prog: error: ') and message.endswith('; see --help')
  assert wrong in message and '\n' not in message
