"""Exceptions that the entry point turns into one line on stderr and an exit status."""


class UserError(Exception):
  """Bad input or environment: the message says what is wrong and how to fix it.

  `main` prints it on one line to stderr and exits with `exit_status`, without
  a traceback. Raise it only for problems the user can act on.
  """
  exit_status = 2


class Interrupted(UserError):
  """SIGTERM/SIGINT: the run stopped; the same command continues it from its last checkpoint."""
  exit_status = 3


class NonFiniteLoss(UserError):
  """A loss or gradient was NaN/Inf (the update was not applied) and the config says stop."""
  exit_status = 4


def first_line(error: Exception) -> str:
  """`Type: first line of the message` of a library's exception, for a one-line error."""
  text = str(error).strip()
  return f'{type(error).__name__}: {text.splitlines()[0][:200] if text else ""}'.rstrip(': ')
