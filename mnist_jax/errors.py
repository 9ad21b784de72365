"""The one exception type for user mistakes.

A `UserError` is something the user can fix (bad data, a bad config value, a
missing file). Entry points catch it and print its message as one line with a
non-zero exit; anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
  """A problem with the user's input, with a message that says how to fix it.

  `exit_status` is the command's exit status (1; predict exits 2 when it
  finds nothing to classify).
  """

  def __init__(self, message: str, exit_status: int = 1):
    super().__init__(message)
    self.exit_status = exit_status


class Interrupted(Exception):
  """The run was stopped by a signal after saving what it had; exit 128 + signum."""

  def __init__(self, message: str, signum: int):
    super().__init__(message)
    self.signum = signum


class SpecError(UserError):
  """A component spec (config.model, optimizer, loss, augment, tta) that names
  nothing usable, or a user's component that breaks its protocol: exit 2,
  as a command line's usage error."""

  def __init__(self, message: str):
    super().__init__(message, exit_status=2)
