"""Checkpoints of model + optimizer (whose `iterations` is the global step).

Every worker takes part in a save (the variables are distributed), but only the chief's goes
to `workdir/checkpoints`; other workers write to a scratch directory that is deleted after
each save, as TF's multi-worker saving requires.

Reading checkpoints back (which one is the newest readable, verified before its restore) is
`trainer.run.checkpoint_reader`'s, which changes nothing in the workdir. A save that fails
(disk full, permissions) removes its partial files and raises `CheckpointError` naming the
checkpoint that is still the latest (the one this process restored or last saved: the state
file may be what failed) and advice that fits the error.

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
from trainer.base.errors import CheckpointError, first_line
from trainer.distribute import strategy as strategy_lib
from trainer.rundir import files as workdir_lib
from trainer.rundir import layout
from trainer.run import checkpoint_reader, retention
from trainer.run.checkpoint_reader import unreadable  # noqa: F401  (its old home)


class Checkpointer(checkpoint_reader.Reader):
  """A `tf.train.CheckpointManager` numbered by global step, for the run that owns the
  workdir (a reader beside it uses `checkpoint_reader.Reader`).

  Args:
    workdir: the run's directory (local or gs://).
    strategy: the strategy the trackables were built under.
    max_to_keep: how many recent checkpoints to keep (beside the best and every keep_every-th:
      `trainer.run.retention`).
    keep_every: keep every checkpoint of a multiple of this step for good (0: none).
    best_steps: () -> the steps of the best evals, whose checkpoints are kept (None: none).
    **trackables: what to save, e.g. model=..., optimizer=..., run_state=...
  """

  def __init__(self, workdir, strategy, max_to_keep, keep_every=0, best_steps=None,
               **trackables):
    super().__init__(workdir, **trackables)
    self._strategy = strategy
    self._chief = strategy_lib.is_chief(strategy)
    self._max_to_keep = max_to_keep
    self._keep_every = keep_every
    self._best_steps = best_steps or (lambda: ())
    self._manager = self._make_manager()

  def _make_manager(self):
    # Nothing deleted by TF: trainer.run.retention decides (latest, best, every N-th).
    return tf.train.CheckpointManager(
        self.checkpoint, strategy_lib.write_dir(self.directory, self._strategy), None)

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
      path = self.restore_newest()
      self.latest = path
      if self._chief and path is not None:
        self._list_unlisted(path)
      return path

  def _list_unlisted(self, restored):
    """Lists in the state file every checkpoint up to `restored` it does not list (a lost or
    garbage state file, an interrupted sweep), so max_checkpoints deletes them in turn."""
    state = checkpoint_reader.state(self.directory)
    listed = {layout.checkpoint_number(p)
              for p in checkpoint_reader.listed_paths(self.directory, state)} - {None}
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
    with preemption.critical():  # the state file is rewritten before files are deleted
      if retention.prune(self.workdir, self._max_to_keep, self._best_steps(), self._keep_every):
        self._manager = self._make_manager()  # TF's manager re-reads what is listed
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
