"""Checkpoint files on disk: whether a checkpoint reads back, the state file, and what a
failed save says and leaves behind. Used by the Checkpointer (`trainer.run.checkpoints`)."""

import os

import tensorflow as tf

from trainer.base.errors import CheckpointError, first_line


def write_failed(directory, step, error, latest):
  """The CheckpointError of a failed save of `step` into `directory`; removes the save's
  partial files. The message names the checkpoint that is still the latest: `latest` (what
  this process restored or last saved: the state file may be what failed), unless the failed
  save got as far as its commit."""
  prefix = os.path.join(directory, f"ckpt-{step}")
  try:
    committed = tf.train.latest_checkpoint(directory)
  except (tf.errors.OpError, ValueError):
    committed = None
  latest = prefix if committed == prefix else latest
  if latest != prefix:  # not committed: nothing may point at these files
    for pattern in (prefix + ".index", prefix + ".data-*", prefix + "_temp*"):
      for name in tf.io.gfile.glob(pattern):
        try:
          if tf.io.gfile.isdir(name):
            tf.io.gfile.rmtree(name)
          else:
            tf.io.gfile.remove(name)
        except (tf.errors.OpError, OSError):
          pass  # best effort: an uncommitted leftover is ignored on restore anyway
  return CheckpointError(
      f"workdir: cannot write checkpoint {prefix} ({first_line(error)}); "
      f"the latest checkpoint is still {latest or 'none (no checkpoint yet)'}: "
      f"{_advice(error, directory)}, then run the same command again to resume")


def _advice(error, directory):
  """What to do about a failed write, by what the error says."""
  text = f"{type(error).__name__} {error}".lower()
  if any(k in text for k in ("no space", "resourceexhausted", "file too large", "quota",
                             "enospc", "efbig")):
    return "free space"
  if any(k in text for k in ("permission", "read-only", "eacces", "erofs")):
    return f"fix the permissions of {directory}"
  if any(k in text for k in ("not a directory", "is a directory", "failedprecondition")):
    return (f"fix {directory} (something there is a file where a directory belongs, or the "
            f"other way round)")
  return "free space or fix permissions"


def state(directory):
  """The CheckpointState of `directory`, or None if missing or unusable."""
  try:
    return tf.train.get_checkpoint_state(directory)  # None if missing or unparsable
  except (ValueError, tf.errors.OpError):  # parsed, but lists nothing; or unreadable
    return None


def present(prefix):
  """Whether the checkpoint `prefix` still has its index file (it was not deleted)."""
  try:
    return tf.io.gfile.exists(prefix + ".index")
  except tf.errors.OpError:
    return True


def unreadable(path):
  """Why the checkpoint at `path` cannot be read, or None if every tensor reads back.

  Reading a tensor verifies its checksum, so this catches truncated, missing and flipped
  bytes in the data files as well as a damaged index.
  """
  try:
    reader = tf.train.load_checkpoint(path)
    for key in reader.get_variable_to_dtype_map():
      reader.get_tensor(key)
  except Exception as e:  # pylint: disable=broad-except  (truncation raises IndexError)
    return first_line(e)
  return None
