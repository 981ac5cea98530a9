"""The trainer's errors, each carrying the exit status `trainer.main` ends with.

  ConfigError          2  a user mistake: a bad flag or config value, an unknown strategy or
                          dataset, no TPU reachable, an incompatible resume. Raised before the
                          workdir is touched; the message names the field and what is allowed.
  NonFiniteLossError   3  the training loss became NaN or infinite; nothing was checkpointed
                          after it, so the last checkpoint is the last good one.
  Preempted            4  SIGTERM arrived; the current loop finished and was checkpointed (or,
                          during start-up, the run stopped at once with nothing to save).
  CheckpointError      5  storage failed (disk full, permissions, unreadable checkpoints); the
                          message says which checkpoint is intact.
  Interrupted        130  Ctrl-C (SIGINT): once, the current loop finished and was checkpointed;
                          twice (or during start-up), the run stopped at once.

Anything else is a bug and keeps its traceback, except running out of memory (`user_error`:
a global batch too large to allocate is a user mistake, exit 2) and a KeyboardInterrupt that
arrived before the trainer's own Ctrl-C handler was installed (exit 130, one line).
`exit_on_error` is the one place that turns these into one stderr line and an exit status.
"""

import re
import sys

EXIT_OK = 0
# TensorFlow's decorations of an op's error: `{{function_node __inference_...}}` and `[Op:Name]`.
_TF_NOISE = re.compile(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:[\w-]*\]\s*$")


def reason(error, limit=200) -> str:
  """An exception's reason on one line: its first paragraph (Keras wraps sentences over
  lines), lines joined, without TensorFlow's `{{function_node ...}}` / `[Op:...]` noise, cut
  at `limit` characters. '' for an exception without a message."""
  paragraph = str(error).strip().split("\n\n")[0]
  text = " ".join(line.strip() for line in paragraph.splitlines() if line.strip())
  return _TF_NOISE.sub("", text).strip()[:limit]


def first_line(error, limit=200) -> str:
  """`Type: reason` of an exception on one line (see `reason`)."""
  text = reason(error, limit)
  return f"{type(error).__name__}: {text}" if text else type(error).__name__


class TrainerError(Exception):
  """Base of the errors that end a run with one line instead of a traceback."""

  exit_code = 1
  prefix = "error: "
  # A Keras layer's call re-creates an exception raised inside it as `type(e)(message)` with
  # the call's arguments appended, unless this attribute is set (keras/src/utils/
  # traceback_utils.py, `inject_argument_info_in_traceback`; tf_keras has the same). A Ctrl-C
  # landing in a model call during the export came out as `Interrupted(step=<that text>)`, and
  # its last line read "  • training=False; run the same command again to resume".
  _keras_call_info_injected = True


class ConfigError(TrainerError, ValueError):
  """A user mistake. The message names the field and the allowed values."""

  exit_code = 2


class NonFiniteLossError(TrainerError, RuntimeError):
  """The training loss became NaN or infinite. No checkpoint was written after it."""

  exit_code = 3


class Stopped(TrainerError):
  """A run stopped by a signal: at a loop boundary after checkpointing global step `step`,
  or at once (`step=None`), with the latest checkpoint intact. Subclasses say which signal
  (`what`) and how an immediate stop is described (`at_once`)."""

  prefix = ""  # not a failure: rerun the same command to resume
  what, at_once = "stopped", "stopped at once"

  def __init__(self, step=None, at_once=None):
    """`at_once`: what follows `what` for a stop at once (default: the start-up wording)."""
    if step is None:
      message = self.what + (self.at_once if at_once is None else at_once)
    else:
      message = (f"{self.what}: checkpoint written at global step {step}; run the same "
                 f"command again to resume")
    super().__init__(message)
    self.step = step


class Preempted(Stopped):
  """Training stopped on SIGTERM after checkpointing global step `step`.

  `step=None`: SIGTERM arrived during start-up (strategy, data, build, restore, the first
  loop's compilation) and the run stopped at once; nothing of this process needed saving.
  """

  exit_code = 4  # a supervisor reruns the same command
  what = "preempted (SIGTERM)"
  at_once = (" during start-up: stopped at once, nothing trained since the latest "
             "checkpoint; run the same command again to resume")


class CheckpointError(TrainerError, RuntimeError):
  """A checkpoint could not be written (disk full, no permission) or none can be read."""

  exit_code = 5


class Interrupted(Stopped):
  """Ctrl-C (SIGINT). Once: the current loop finished and global step `step` was checkpointed.
  Twice, or during start-up (`step=None`): stopped at once, the latest checkpoint intact.

  Exit status 130 (128 + SIGINT), as a shell reports a process that Ctrl-C ended.
  """

  exit_code = 130  # the user asked for it
  what = "interrupted (Ctrl-C)"
  at_once = (": stopped at once, nothing written since the latest checkpoint; run the same "
             "command again to resume from it")


EXIT_CONFIG, EXIT_NONFINITE, EXIT_PREEMPTED, EXIT_CHECKPOINT, EXIT_INTERRUPTED = (
    ConfigError.exit_code, NonFiniteLossError.exit_code, Preempted.exit_code,
    CheckpointError.exit_code, Interrupted.exit_code)


def user_error(error):
  """`error` as the TrainerError it stands for, or None for a bug (keeps its traceback).

  Running out of memory (numpy's MemoryError, TF's ResourceExhaustedError "OOM when
  allocating") means the global batch, or the model at that batch, does not fit: a user
  mistake, reported as one line naming `global_batch_size`.
  """
  if isinstance(error, TrainerError):
    return error
  if isinstance(error, KeyboardInterrupt):  # before the trainer's handler was installed
    return Interrupted()
  stop = stop_in(error)
  if stop is not None:
    return stop
  oom = isinstance(error, MemoryError) or (
      type(error).__name__ == "ResourceExhaustedError" and "OOM" in str(error))
  if oom:
    return ConfigError(f"global_batch_size: out of memory ({first_line(error)}); "
                       f"the global batch (or the model at that batch) does not fit on this "
                       f"hardware: use a smaller global_batch_size")
  return None


def stop_in(error):
  """The stop by a signal (`Preempted`, `Interrupted`) that `error` is or carries, else None.

  A signal handler raises it wherever the main thread is, also inside a library that re-raises
  its own error (TF's tracing turns it into a StagingError, the original in __context__), or
  inside code of ours that catches `Exception` to carry on (the export): that code must let it
  through.
  """
  seen, inner = set(), error
  while inner is not None and id(inner) not in seen:
    if isinstance(inner, (Preempted, Interrupted)):
      return inner
    seen.add(id(inner))
    inner = inner.__cause__ or inner.__context__
  return None


def exit_with(error: TrainerError):
  """Writes `error` as one stderr line and exits with its status."""
  sys.stderr.write(f"{error.prefix}{error}\n")
  sys.exit(error.exit_code)


def exit_on_error(main):
  """Wraps an absl `main` so any TrainerError becomes one stderr line and its exit status."""

  def wrapped(argv):
    try:
      return main(argv)
    except BaseException as e:  # pylint: disable=broad-except
      error = user_error(e)
      if error is None:
        raise
      exit_with(error)

  return wrapped
