"""Checkpoints of model + optimizer (whose `iterations` is the global step).

Every worker takes part in a save (the variables are distributed), but only the chief's goes
to `workdir/checkpoints`; other workers write to a scratch directory that is deleted after
each save, as TF's multi-worker saving requires.
"""

import os

import tensorflow as tf
from absl import logging

from trainer import strategy as strategy_lib


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
    """Restores the newest checkpoint in the chief's directory, if any.

    Returns:
      The restored checkpoint's path, or None for a fresh start.
    """
    path = tf.train.latest_checkpoint(self.directory)
    if path:
      self.checkpoint.restore(path).assert_existing_objects_matched()
      logging.info("Restored %s", path)
    return path

  def save(self, step):
    """Writes a checkpoint numbered `step` (global steps); returns its path on the chief."""
    path = self._manager.save(checkpoint_number=step)
    if not self._chief:
      tf.io.gfile.rmtree(self._manager.directory)
      return None
    return path
