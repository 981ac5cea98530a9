"""Checkpoints of model + optimizer (whose `iterations` is the global step).

Every worker takes part in a save (the variables are distributed), but only the chief's goes
to `workdir/checkpoints`; other workers write to a scratch directory that is deleted after
each save, as TF's multi-worker saving requires.

What a reader sees. TF writes a checkpoint's data and index first and then, atomically, the
`checkpoint` state file that lists it, so a process killed at any point leaves the listed
checkpoints complete; the state file is the commit point. Files can still go bad later (a
disk error, a power cut before the page cache reached the disk, a partial copy), so
`restore_latest` reads every tensor of a candidate (each one is checksummed) before restoring
it, and falls back to the previous one with a warning naming the bad one. Files newer than
the last committed checkpoint are an interrupted save and are ignored (the next save of that
step overwrites them); without a state file every `ckpt-N` is a candidate. A save
that fails (disk full, permissions) removes its partial files and raises `CheckpointError`;
the previous checkpoint stays the latest.
"""

import os
import re

import tensorflow as tf
from absl import logging

from trainer import hooks
from trainer import strategy as strategy_lib
from trainer.errors import CheckpointError

_NUMBERED = re.compile(r"^ckpt-(\d+)$")


class Checkpointer:
  """A `tf.train.CheckpointManager` numbered by global step.

  Args:
    workdir: the run's directory (local or gs://).
    strategy: the strategy the trackables were built under.
    max_to_keep: how many recent checkpoints to keep.
    **trackables: what to save, e.g. model=..., optimizer=...
  """

  def __init__(self, workdir, strategy, max_to_keep, **trackables):
    self.directory = os.path.join(workdir, "checkpoints")
    self._strategy = strategy
    self._chief = strategy_lib.is_chief(strategy)
    self.checkpoint = tf.train.Checkpoint(**trackables)
    self._manager = tf.train.CheckpointManager(
        self.checkpoint, strategy_lib.write_dir(self.directory, strategy), max_to_keep)

  def restore_latest(self):
    """Restores the newest readable checkpoint in the chief's directory, if any.

    Returns:
      The restored checkpoint's path, or None for a fresh start.

    Raises:
      CheckpointError: checkpoints were committed but none of them is readable.
    """
    with hooks.point("restore"):
      return self._restore_latest()

  def _restore_latest(self):
    candidates, committed = self._candidates()
    problems = []
    for number, path in candidates:
      if committed is not None and number > committed:
        logging.warning("Ignoring %s: written after the last committed checkpoint (a save "
                        "that was interrupted); the next save of that step replaces it.", path)
        continue
      problem = unreadable(path)
      if problem is None:
        self.checkpoint.restore(path).assert_existing_objects_matched()
        if problems:
          logging.warning("Resuming from %s, the newest readable checkpoint.", path)
        logging.info("Restored %s", path)
        return path
      problems.append(f"{os.path.basename(path)}: {problem}")
      logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path,
                      problem)
    if committed is not None:
      raise CheckpointError(
          f"workdir: no readable checkpoint in {self.directory} "
          f"({'; '.join(problems) or 'the state file lists ckpt-' + str(committed)}); "
          f"move that directory away to start again from step 0")
    return None

  def _candidates(self):
    """[(number, path)] newest first, and the number the state file commits (or None).

    Both what the state file lists (so a listed checkpoint whose files are gone is reported)
    and every `ckpt-N.index` present (so a lost state file loses nothing).
    """
    found = [p[:-len(".index")]
             for p in tf.io.gfile.glob(os.path.join(self.directory, "ckpt-*.index"))]
    state = tf.train.get_checkpoint_state(self.directory)  # None if missing or unparsable
    listed = [os.path.join(self.directory, os.path.basename(p)) for p in (
        [*state.all_model_checkpoint_paths, state.model_checkpoint_path] if state else [])]
    numbers = {_number(p): p for p in listed + found if _number(p) is not None}
    committed = _number(state.model_checkpoint_path) if state else None
    return sorted(numbers.items(), reverse=True), committed

  def save(self, step):
    """Writes a checkpoint numbered `step` (global steps); returns its path on the chief.

    Raises:
      CheckpointError: the write failed (e.g. disk full); its partial files are removed
        and the previous checkpoint is still the latest.
    """
    try:
      with hooks.point("save"):
        path = self._manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      raise self._write_failed(step, e) from e
    if not self._chief:
      tf.io.gfile.rmtree(self._manager.directory)
      return None
    return path

  def _write_failed(self, step, error):
    directory = self._manager.directory
    prefix = os.path.join(directory, f"ckpt-{step}")
    latest = tf.train.latest_checkpoint(directory)
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
        f"workdir: cannot write checkpoint {prefix} ({_first_line(error)}); "
        f"the latest checkpoint is still {latest or 'none (no checkpoint yet)'}: free space "
        f"or fix permissions, then run the same command again to resume")


def _number(prefix):
  match = _NUMBERED.match(os.path.basename(prefix))
  return int(match.group(1)) if match else None


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
    return _first_line(e)
  return None


def _first_line(error):
  """`Type: reason` in one line, without TF's `{{function_node ...}}` and `[Op:...]` noise."""
  lines = [line for line in str(error).splitlines() if line.strip()]
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*|\s*\[Op:\w+\]\s*$", "",
                lines[0] if lines else "")
  return f"{type(error).__name__}: {text.rsplit('; ', 1)[-1].strip()[:200]}"
