"""The one exception type that the entry point turns into a one-line message."""


class UserError(Exception):
  """Bad input or environment: the message says what is wrong and how to fix it.

  `main` prints it on one line to stderr and exits with status 2, without a
  traceback. Raise it only for problems the user can act on.
  """
