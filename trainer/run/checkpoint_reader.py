"""Reading checkpoints back: the newest readable one, verified before it is restored.

What a reader sees. TF writes a checkpoint's data and index first and then, atomically, the
`checkpoint` state file that lists it, so a process killed at any point leaves the listed
checkpoints complete; the state file is the commit point. Files can still go bad later (a
disk error, a power cut before the page cache reached the disk, a partial copy), so a
candidate has every tensor read (each one is checksummed) before it is restored, and a bad
one gives way to the previous one with a warning naming it. Files newer than the last
committed checkpoint are a save under way or an interrupted one and are ignored; without a
state file every `ckpt-N` is a candidate.

`Reader` changes nothing in the workdir: it creates no file or directory (it has no
`tf.train.CheckpointManager`, which only a writer needs), deletes nothing and rewrites no
state file, so it may read beside a live run (`trainer.evaluate`). The housekeeping a resume
does under the workdir's lock is `trainer.run.checkpoints.Checkpointer`'s.
"""

import os
import time

import tensorflow as tf
from absl import logging

from trainer.base.errors import CheckpointError, ConfigError, first_line
from trainer.rundir import layout


class Vanished(CheckpointError):
  """A checkpoint was deleted while it was being read (a live run's max_checkpoints)."""

  def __init__(self, path):
    super().__init__(f"checkpoint: {path} was deleted while it was being read (the run "
                     f"keeps only its latest max_checkpoints); evaluate a newer one")
    self.path = path


def restore_for_reading(workdir, build, step=None, attempts=5):
  """Restores checkpoint `step` (None: the newest readable one) of `workdir` beside a run
  that may be training: the run may delete the checkpoint being read (max_checkpoints), and
  then the newest one is tried again, up to `attempts` times; a given `step` that
  disappears is one line.

  Args:
    workdir: the run's directory.
    build: `() -> (value, trackables)`: the objects to restore into (a dict for
      `tf.train.Checkpoint`) and what to return with them, made afresh for each attempt. A
      restore cut short by a deletion leaves TF's deferred restorations in the objects it
      reached, which a second restore into them replays from the deleted files.
    step: a checkpoint's global step, or None.
    attempts: how many times to read the newest one.

  Returns:
    (value, the restored checkpoint's path).

  Raises:
    ConfigError: no checkpoint yet, or checkpoint `step` was deleted while being read.
    CheckpointError: the checkpoint is unreadable (none of them is, without `step`), or the
      checkpoints kept being deleted for `attempts` tries.
  """
  directory = layout.checkpoint_dir(workdir)
  if step is not None:
    value, trackables = build()
    return value, Reader(workdir, **trackables).restore_step(step)
  error = None
  for attempt in range(attempts):
    before = _listing(workdir)
    value, trackables = build()
    try:
      path = Reader(workdir, **trackables).restore_newest(beside_a_run=True)
      if path is None:
        raise ConfigError(f"workdir: no checkpoint in {directory} yet; train first")
      return value, path
    except CheckpointError as e:  # deleted under us, or unreadable: retried if the run moved
      if not isinstance(e, Vanished) and _listing(workdir) == before:
        raise
      error = e
    logging.info("The checkpoints changed while being read (%s); reading the newest again.",
                 first_line(error))
    time.sleep(0.2 * (attempt + 1))
  raise CheckpointError(f"workdir: the checkpoints in {directory} kept changing while being "
                        f"read ({attempts} attempts; last: {first_line(error)}); try again")


def _listing(workdir):
  """What says which checkpoints there are: the index files and the state file."""
  return layout.checkpoint_steps(workdir), listed_paths(layout.checkpoint_dir(workdir))


class Reader:
  """Restores checkpoints of `workdir` into `trackables` (e.g. model=..., optimizer=...)."""

  def __init__(self, workdir, **trackables):
    self.workdir = workdir
    self.directory = layout.checkpoint_dir(workdir)
    self._trackables = trackables
    self.checkpoint = tf.train.Checkpoint(**trackables)
    self.latest = None  # the checkpoint restored (or, by a writer, last saved)

  def restore_step(self, step):
    """Restores checkpoint `step`; its path. A checkpoint deleted while it is read is a
    ConfigError (the user's choice to make again), an unreadable one a CheckpointError."""
    path = layout.checkpoint_path(self.workdir, step)
    try:
      problem = unreadable(path)
      if problem is not None:
        if deleted(path):
          raise Vanished(path)
        raise CheckpointError(f"checkpoint: {path} is unreadable ({problem})")
      self.restore(path)
    except Vanished as e:
      raise ConfigError(str(e)) from None
    self.latest = path
    return path

  def restore_newest(self, beside_a_run=False):
    """Restores the newest readable committed checkpoint.

    Args:
      beside_a_run: the workdir may be written meanwhile (a reader beside a live run): a save
        under way and a checkpoint deleted meanwhile are normal, not worth a warning.

    Returns:
      The restored checkpoint's path, or None if there is no checkpoint at all.

    Raises:
      CheckpointError: checkpoints were written but none of them is readable (`Vanished`
        if the one chosen was deleted while it was restored).
      ConfigError: the newest readable checkpoint does not fit the model and optimizer.
    """
    candidates, committed = self._candidates()
    problems = []
    for number, path in candidates:
      if committed is not None and number > committed:
        (logging.info if beside_a_run else logging.warning)(
            "Ignoring %s: written after the last committed checkpoint (a save under way, or "
            "one that was interrupted); the next save of that step replaces it.", path)
        continue
      problem = unreadable(path)
      if problem is None:
        self.restore(path)
        if problems:
          logging.warning("Using %s, the newest readable checkpoint.", path)
        logging.info("Restored %s", path)
        self.latest = path
        return path
      if beside_a_run and deleted(path):
        logging.info("%s was deleted while being read; trying the previous one.", path)
        problems.append(f"{os.path.basename(path)}: deleted while being read")
        continue
      problems.append(f"{os.path.basename(path)}: {problem}")
      logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path,
                      problem)
    if committed is not None or problems:
      raise CheckpointError(
          f"workdir: no readable checkpoint in {self.directory} "
          f"({'; '.join(problems) or 'the state file lists ckpt-' + str(committed)}); "
          f"move that directory away to start again from step 0")
    return None

  def restore(self, path):
    """Restores `path`; a checkpoint of another model or optimizer is a ConfigError, one that
    was deleted meanwhile `Vanished`. One written before the run's state existed restores
    without it (the state starts fresh)."""
    status, checkpoint = None, self.checkpoint
    try:
      if "run_state" in self._trackables and not any(
          name.startswith("run_state/") for name, _ in tf.train.list_variables(path)):
        checkpoint = tf.train.Checkpoint(
            **{k: v for k, v in self._trackables.items() if k != "run_state"})
      status = checkpoint.restore(path)
      status.assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
      if status is not None:  # these objects are given up: no warnings about them at exit
        status.expect_partial()
      if deleted(path):
        raise Vanished(path) from None
      if isinstance(e, tf.errors.OpError) and not isinstance(e, tf.errors.InvalidArgumentError):
        raise CheckpointError(f"checkpoint: cannot restore {path} ({first_line(e)})") from None
      raise ConfigError(
          f"model: the checkpoint {path} does not fit the model and optimizer this config "
          f"builds ({first_line(e, 160)}); it was written under another model, dataset "
          f"shape, optimizer or precision, which --allow_config_change cannot change: resume "
          f"with the config it was written with, or give a new workdir") from None

  def _candidates(self):
    """[(number, path)] newest first, and the number the state file commits (or None).

    Both what the state file lists (so a listed checkpoint whose files are gone is reported)
    and every `ckpt-N.index` present (so a lost state file loses nothing).
    """
    found = [layout.checkpoint_path(self.workdir, n)
             for n in layout.checkpoint_steps(self.workdir)]
    listed = listed_paths(self.directory)
    numbers = {layout.checkpoint_number(p): p for p in listed + found}
    numbers.pop(None, None)
    checkpoint_state = state(self.directory)
    committed = (layout.checkpoint_number(checkpoint_state.model_checkpoint_path)
                 if checkpoint_state else None)
    return sorted(numbers.items(), reverse=True), committed


def state(directory):
  """The CheckpointState of `directory`, or None if missing or unusable."""
  try:
    return tf.train.get_checkpoint_state(directory)  # None if missing or unparsable
  except (ValueError, tf.errors.OpError):  # parsed, but lists nothing; or unreadable
    return None


def listed_paths(directory, checkpoint_state=None):
  """The checkpoints the state file lists, as paths in `directory` (the latest last)."""
  checkpoint_state = checkpoint_state or state(directory)
  if checkpoint_state is None:
    return []
  return [os.path.join(directory, os.path.basename(p)) for p in
          [*checkpoint_state.all_model_checkpoint_paths, checkpoint_state.model_checkpoint_path]]


def present(prefix):
  """Whether the checkpoint `prefix` still has its index file (it was not deleted)."""
  try:
    return tf.io.gfile.exists(prefix + ".index")
  except tf.errors.OpError:
    return True


def deleted(prefix):
  """Whether the checkpoint `prefix` is gone, or going: its index is missing now or half a
  second later (TF deletes a checkpoint's data files before its index). Called after a read
  failed, so the wait is spent only then."""
  if not present(prefix):
    return True
  time.sleep(0.5)
  return not present(prefix)


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
