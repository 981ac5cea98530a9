"""Which checkpoints a run keeps: the `max_checkpoints` latest, the checkpoints of its
`keep_best` best evals, and every multiple of `keep_every`; the others are deleted after each
save (by the chief; TF's CheckpointManager keeps everything, `max_to_keep=None`).

The best evals are part of the run's state (`trainer.step.state.RunState`), saved inside each
checkpoint, so the list of what to keep commits with the checkpoint that changed it: a process
killed at any point never forgets or deletes the best one. Deleting comes after the commit,
one checkpoint at a time, the state file rewritten first: a kill in between leaves files the
next start lists again and deletes then (`Checkpointer._list_unlisted`), never a state file
that names a deleted checkpoint.
"""

import os
import time

from absl import logging
import tensorflow as tf

from trainer.base import testpoints
from trainer.rundir import layout


def kept(steps, latest, best_steps=(), keep_every=0):
  """The steps of `steps` to keep: the `latest` newest, the best ones, every multiple of
  `keep_every` (> 0)."""
  steps = sorted(steps)
  keep = set(steps[-latest:]) if latest else set()
  keep |= set(best_steps) & set(steps)
  if keep_every:
    keep |= {s for s in steps if s % keep_every == 0}
  return keep


def prune(workdir, latest, best_steps=(), keep_every=0):
  """Deletes the checkpoints of `workdir` that `kept` does not keep; returns their steps."""
  steps = layout.checkpoint_steps(workdir)
  keep = kept(steps, latest, best_steps, keep_every)
  drop = [s for s in steps if s not in keep]
  if not drop:
    return []
  directory = layout.checkpoint_dir(workdir)
  state = tf.train.get_checkpoint_state(directory)
  newest = layout.checkpoint_number(state.model_checkpoint_path) if state else max(keep)
  remaining = sorted(keep)
  now = time.time()
  # The state file first: it must never name a checkpoint whose files are gone.
  tf.compat.v1.train.update_checkpoint_state(
      directory, f"ckpt-{newest}", [f"ckpt-{s}" for s in remaining],
      all_model_checkpoint_timestamps=[now - len(remaining) + i for i in range(len(remaining))],
      last_preserved_timestamp=now - len(remaining) - 1)
  for step in drop:
    with testpoints.point("sweep"):
      for path in tf.io.gfile.glob(layout.checkpoint_path(workdir, step) + ".*"):
        try:
          tf.io.gfile.remove(path)
        except (tf.errors.OpError, OSError) as e:  # best effort: listed again at next start
          logging.warning("Could not delete %s: %s", path, e)
  logging.info("Deleted checkpoints %s of %s (kept %s).", ", ".join(map(str, drop)),
               os.path.basename(os.path.normpath(workdir)) or workdir,
               ", ".join(map(str, remaining)))
  return drop
