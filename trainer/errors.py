"""The trainer's errors, each carrying the exit status `trainer.main` ends with.

  ConfigError          2  a user mistake: a bad flag or config value, an unknown strategy or
                          dataset, no TPU reachable, an incompatible resume. Raised before the
                          workdir is touched; the message names the field and what is allowed.
  NonFiniteLossError   3  the training loss became NaN or infinite; nothing was checkpointed
                          after it, so the last checkpoint is the last good one.
  Preempted            4  SIGTERM arrived; the current loop finished and was checkpointed.
  CheckpointError      5  storage failed (disk full, permissions, unreadable checkpoints); the
                          message says which checkpoint is intact.

Anything else is a bug and keeps its traceback. `exit_on_error` is the one place that turns
these into one stderr line and an exit status.
"""

import sys

EXIT_OK = 0


class TrainerError(Exception):
  """Base of the errors that end a run with one line instead of a traceback."""

  exit_code = 1
  prefix = "error: "


class ConfigError(TrainerError, ValueError):
  """A user mistake. The message names the field and the allowed values."""

  exit_code = 2


class NonFiniteLossError(TrainerError, RuntimeError):
  """The training loss became NaN or infinite. No checkpoint was written after it."""

  exit_code = 3


class Preempted(TrainerError):
  """Training stopped on SIGTERM after checkpointing global step `step`."""

  exit_code = 4
  prefix = ""  # not a failure: a supervisor reruns the same command

  def __init__(self, step):
    super().__init__(f"preempted (SIGTERM): checkpoint written at global step {step}; "
                     f"run the same command again to resume")
    self.step = step


class CheckpointError(TrainerError, RuntimeError):
  """A checkpoint could not be written (disk full, no permission) or none can be read."""

  exit_code = 5


EXIT_CONFIG, EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_CHECKPOINT = (
    ConfigError.exit_code, NonFiniteLossError.exit_code, Preempted.exit_code,
    CheckpointError.exit_code)


def exit_with(error: TrainerError):
  """Writes `error` as one stderr line and exits with its status."""
  sys.stderr.write(f"{error.prefix}{error}\n")
  sys.exit(error.exit_code)


def exit_on_error(main):
  """Wraps an absl `main` so any TrainerError becomes one stderr line and its exit status."""

  def wrapped(argv):
    try:
      return main(argv)
    except TrainerError as e:
      exit_with(e)

  return wrapped
