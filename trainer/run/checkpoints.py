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
that fails (disk full, permissions) removes its partial files and raises `CheckpointError`
naming the checkpoint that is still the latest (the one this process restored or last
saved: the state file may be what failed) and advice that fits the error.

Housekeeping at restore (the chief, with the workdir locked): what interrupted writes left
(`checkpoints/checkpoint.tmp<hex>`, `ckpt-N_temp`, `config.json.tmp`, ...) is deleted, and
checkpoints the state file does not list (it was lost, garbage, or a sweep was interrupted)
are listed again, so `max_checkpoints` deletes them in turn instead of never.

A checkpoint that does not fit the model and optimizer the config builds (another model,
optimizer or precision: a resume under `--allow_config_change`, or a workdir without its
config.json) is a `ConfigError` naming it, before anything is written.
"""

import os
import time

import tensorflow as tf
from absl import logging

from trainer.base import preemption, testpoints
from trainer.base.errors import CheckpointError, ConfigError, first_line
from trainer.distribute import strategy as strategy_lib
from trainer.rundir import files as workdir_lib
from trainer.rundir import layout


class Checkpointer:
  """A `tf.train.CheckpointManager` numbered by global step.

  Args:
    workdir: the run's directory (local or gs://).
    strategy: the strategy the trackables were built under.
    max_to_keep: how many recent checkpoints to keep.
    **trackables: what to save, e.g. model=..., optimizer=...
  """

  def __init__(self, workdir, strategy, max_to_keep, **trackables):
    self.workdir = workdir
    self.directory = layout.checkpoint_dir(workdir)
    self._strategy = strategy
    self._chief = strategy_lib.is_chief(strategy)
    self._max_to_keep = max_to_keep
    self.checkpoint = tf.train.Checkpoint(**trackables)
    self._manager = self._make_manager()
    self.latest = None  # the checkpoint restored or last saved by this process

  def _make_manager(self):
    return tf.train.CheckpointManager(
        self.checkpoint, strategy_lib.write_dir(self.directory, self._strategy),
        self._max_to_keep)

  def restore_latest(self):
    """Restores the newest readable checkpoint in the chief's directory, if any.

    Returns:
      The restored checkpoint's path, or None for a fresh start.

    Raises:
      CheckpointError: checkpoints were written but none of them is readable.
      ConfigError: the newest readable checkpoint does not fit the model and optimizer.
    """
    with testpoints.point("restore"):
      if self._chief:
        workdir_lib.remove_stale_temporaries(self.workdir)
      path = self._restore_latest()
      self.latest = path
      if self._chief and path is not None:
        self._list_unlisted(path)
      return path

  def restore_for_reading(self, step=None, attempts=5):
    """Restores checkpoint `step` (None: the newest readable one) without changing anything
    in the workdir, for a reader beside a live run (`trainer.evaluate`). The run may delete
    the checkpoint being read (max_checkpoints): then the newest one is tried again, up to
    `attempts` times; a given `step` that disappears is one line.

    Returns:
      The restored checkpoint's path.

    Raises:
      ConfigError: no checkpoint yet, or checkpoint `step` was deleted while being read.
      CheckpointError: the checkpoint is unreadable (none of them is, without `step`).
    """
    error = None
    for attempt in range(attempts):
      path = None if step is None else layout.checkpoint_path(self.workdir, step)
      try:
        if path is None:
          path = self._restore_latest()
          if path is None:
            raise ConfigError(f"workdir: no checkpoint in {self.directory} yet; train first")
        else:
          problem = unreadable(path)
          if problem is not None and _present(path):
            raise CheckpointError(f"checkpoint: {path} is unreadable ({problem})")
          self._restore(path)  # NotFoundError if it was deleted
        self.latest = path
        return path
      except tf.errors.NotFoundError as e:
        if step is not None:
          raise ConfigError(f"checkpoint: {path} was deleted while it was being read (the run "
                            f"keeps only its latest max_checkpoints); evaluate a newer one"
                            ) from None
        error = e
      except CheckpointError as e:  # every candidate unreadable: deleted under us, or bad
        if step is not None or not layout.checkpoint_steps(self.workdir):
          raise
        error = e
      logging.info("A checkpoint being read was deleted (%s); reading the newest again.",
                   first_line(error))
      time.sleep(0.2 * (attempt + 1))
    if isinstance(error, CheckpointError):
      raise error
    raise CheckpointError(f"workdir: the checkpoints in {self.directory} kept being deleted "
                          f"while being read ({attempts} attempts); try again")

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
        self._restore(path)
        if problems:
          logging.warning("Resuming from %s, the newest readable checkpoint.", path)
        logging.info("Restored %s", path)
        return path
      problems.append(f"{os.path.basename(path)}: {problem}")
      logging.warning("Checkpoint %s is unreadable (%s); trying the previous one.", path,
                      problem)
    if committed is not None or problems:
      raise CheckpointError(
          f"workdir: no readable checkpoint in {self.directory} "
          f"({'; '.join(problems) or 'the state file lists ckpt-' + str(committed)}); "
          f"move that directory away to start again from step 0")
    return None

  def _restore(self, path):
    """Restores `path`; a checkpoint of another model or optimizer is a ConfigError."""
    try:
      self.checkpoint.restore(path).assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.InvalidArgumentError) as e:
      raise ConfigError(
          f"model: the checkpoint {path} does not fit the model and optimizer this config "
          f"builds ({first_line(e, 160)}); it was written under another model, dataset "
          f"shape, optimizer or precision, which --allow_config_change cannot change: resume "
          f"with the config it was written with, or give a new workdir") from None

  def _list_unlisted(self, restored):
    """Lists in the state file every checkpoint up to `restored` it does not list (a lost or
    garbage state file, an interrupted sweep), so max_checkpoints deletes them in turn."""
    state = _state(self.directory)
    listed = {layout.checkpoint_number(p) for p in ([*state.all_model_checkpoint_paths,
                                    state.model_checkpoint_path] if state else [])} - {None}
    upto = layout.checkpoint_number(restored)
    present = set(layout.checkpoint_steps(self.workdir))
    unlisted = {n for n in present if n <= upto} - listed
    if state is not None and not unlisted:
      return
    latest = layout.checkpoint_number(state.model_checkpoint_path) if state else upto
    numbers = sorted((listed | unlisted | {latest}) - {latest}) + [latest]
    logging.warning("The checkpoint state file in %s did not list %s; listing %s again so "
                    "max_checkpoints=%d applies to them.", self.directory,
                    "anything" if state is None else "all checkpoints",
                    ", ".join(f"ckpt-{n}" for n in sorted(unlisted)) or f"ckpt-{latest}",
                    self._max_to_keep)
    # With timestamps after last_preserved_timestamp: TF's manager treats listed checkpoints
    # without them as preserved for good (keep_checkpoint_every_n_hours) and never deletes them.
    now = time.time()
    tf.compat.v1.train.update_checkpoint_state(
        self.directory, f"ckpt-{latest}", [f"ckpt-{n}" for n in numbers],
        all_model_checkpoint_timestamps=[now - len(numbers) + i for i in range(len(numbers))],
        last_preserved_timestamp=now - len(numbers) - 1)
    self._manager = self._make_manager()

  def _candidates(self):
    """[(number, path)] newest first, and the number the state file commits (or None).

    Both what the state file lists (so a listed checkpoint whose files are gone is reported)
    and every `ckpt-N.index` present (so a lost state file loses nothing).
    """
    found = [layout.checkpoint_path(self.workdir, n)
             for n in layout.checkpoint_steps(self.workdir)]
    state = _state(self.directory)  # None if missing or unparsable
    listed = [os.path.join(self.directory, os.path.basename(p)) for p in (
        [*state.all_model_checkpoint_paths, state.model_checkpoint_path] if state else [])]
    numbers = {layout.checkpoint_number(p): p for p in listed + found}
    numbers.pop(None, None)
    committed = layout.checkpoint_number(state.model_checkpoint_path) if state else None
    return sorted(numbers.items(), reverse=True), committed

  def save(self, step):
    """Writes a checkpoint numbered `step` (global steps); returns its path on the chief.

    Raises:
      CheckpointError: the write failed (e.g. disk full); its partial files are removed
        and the previous checkpoint is still the latest.
    """
    try:
      with preemption.critical(), testpoints.point("save"):  # a stop at once waits for the commit
        path = self._manager.save(checkpoint_number=step)
    except (tf.errors.OpError, OSError) as e:
      raise self._write_failed(step, e) from e
    if not self._chief:
      tf.io.gfile.rmtree(self._manager.directory)
      return None
    self.latest = path
    return path

  def _write_failed(self, step, error):
    directory = self._manager.directory
    prefix = os.path.join(directory, f"ckpt-{step}")
    try:
      committed = tf.train.latest_checkpoint(directory)
    except (tf.errors.OpError, ValueError):
      committed = None
    # The state file is what may have failed: the latest is what this process restored or
    # saved, unless the failed save got as far as its commit.
    latest = prefix if committed == prefix else self.latest
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


def _state(directory):
  """The CheckpointState of `directory`, or None if missing or unusable."""
  try:
    return tf.train.get_checkpoint_state(directory)  # None if missing or unparsable
  except (ValueError, tf.errors.OpError):  # parsed, but lists nothing; or unreadable
    return None


def _present(prefix):
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
