"""The one error type for user mistakes.

A `ConfigError` means the user asked for something invalid (a bad config value, an
unknown strategy or dataset, no TPU reachable, an incompatible resume). `trainer.main`
prints its message as one line and exits with status 2, before touching the workdir.
Anything else is a bug and keeps its traceback.
"""

import sys


class ConfigError(ValueError):
  """A user mistake. The message names the field and the allowed values."""


class NonFiniteLossError(RuntimeError):
  """The training loss became NaN or infinite. No checkpoint was written after it."""


class CheckpointError(RuntimeError):
  """A checkpoint could not be written (disk full, no permission) or none can be read.

  Not a user mistake in the config: the workdir's storage failed. The message is one line
  that says which checkpoint is intact; `trainer.main` exits with status 5.
  """


def exit_on_config_error(main):
  """Wraps an absl `main` so a ConfigError becomes one stderr line and exit status 2."""

  def wrapped(argv):
    try:
      return main(argv)
    except ConfigError as e:
      sys.stderr.write(f"error: {e}\n")
      sys.exit(2)

  return wrapped
