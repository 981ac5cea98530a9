"""TensorBoard scalars, written at loop boundaries and shown on the console.

Writing runs on values already read back to the host. Reading a run's history back is
`trainer.rundir.history` (`read_scalars`, re-exported here).

After a resume. A run resumed from the checkpoint of step `s` trains (and logs) again the
steps after `s` that the killed process had logged. So that no reader sees those twice, or a
curve that jumps back (28, 20, 24, 28 ...), `Summaries(..., resume_step=s)` first rewrites
the history of each split as one event file holding every event up to step `s` (the last
write of each step) in place of the old files, so the new process's event file continues
it; steps up to `s` that are already recorded are not written again, so rerunning a finished
run adds no points. The rewrite is a new file renamed over the oldest one, then the other old
files deleted: a process killed in between leaves old files that a reader of the "last write
wins" rule (below) still reads right, and the next start rewrites again.

The last-write rule every reader applies is in `trainer.rundir.history`.
"""

import os

from tensorboard.plugins.scalar import metadata as scalar_metadata
import tensorflow as tf

from trainer.base import testpoints
from trainer.rundir import layout
from trainer.rundir.history import read_events, read_scalars, truncate_history  # noqa: F401


class Summaries:
  """`workdir/train` and `workdir/eval` event files, shown on the console as they are written.

  No-op writers (and a silent console) on non-chief workers.

  Args:
    workdir: the run's directory (local or gs://).
    chief: whether this process writes.
    console: a `console.Console` for the person watching, or None.
    resume_step: the global step this process starts from (the restored checkpoint's): the
      history is rewritten to end there (see the module docstring). None: left as it is.
  """

  SPLITS = (layout.TRAIN, layout.EVAL)

  def __init__(self, workdir, chief, console=None, resume_step=None):
    self._workdir = workdir
    self._chief = chief
    self._writers = {}  # made at the first write: a finished run's rerun adds no files
    self._series = {}  # split -> its writer's write_series function
    self._console = console
    # (tag, step) <= resume_step already on disk, per split
    self._recorded = {split: set() for split in self.SPLITS}
    self._resume_step = resume_step
    if chief and resume_step is not None:
      for split in self.SPLITS:
        self._recorded[split] = truncate_history(workdir, split, resume_step)

  def _writer(self, split):
    if split not in self._writers:
      self._writers[split] = (tf.summary.create_file_writer(os.path.join(self._workdir, split))
                              if self._chief else tf.summary.create_noop_writer())
    return self._writers[split]

  def write(self, split, step, scalars, shown=None):
    """Writes `scalars` (name -> float) at global `step` and shows them (with `shown`, values
    for the console only); returns whether anything was written.

    A value up to `resume_step` already in the history (the final eval of a finished run,
    rerun) is shown but not written again.
    """
    fresh = {k: v for k, v in scalars.items() if not self._again(split, k, step)}
    with testpoints.point("summary"):
      if fresh:
        writer = self._writer(split)
        with writer.as_default():
          for name, value in fresh.items():
            tf.summary.scalar(name, value, step=step)
        writer.flush()
    if self._console:
      (self._console.train if split == layout.TRAIN else self._console.eval)(
          step, {**scalars, **(shown or {})})
    return bool(fresh)

  def write_series(self, split, tag, steps, values):
    """Writes one scalar at many global steps (the learning rate of every step of a loop) in
    one call; not shown on the console."""
    points = [(int(s), float(v)) for s, v in zip(steps, values)
              if not self._again(split, tag, int(s))]
    if not points or not self._chief:
      return
    with testpoints.point("summary"):
      writer = self._writer(split)
      if split not in self._series:  # its own function: a traced function keeps its writer
        self._series[split] = _series_writer(writer)
      self._series[split](tag, tf.constant([s for s, _ in points], tf.int64),
                          tf.constant([v for _, v in points], tf.float32))
      writer.flush()

  def rolled_back(self, step, restored, reason):
    """A rollback from `step` to the checkpoint of `restored`: one line for the person
    watching, and a `rollback` point (its value: the step restored) that curves.png marks. The
    steps after `restored` are trained and written again (readers keep the last write)."""
    with testpoints.point("summary"):
      writer = self._writer(layout.TRAIN)
      with writer.as_default():
        tf.summary.scalar("rollback", float(restored), step=step)
      writer.flush()
    self._resume_step = None  # what is written from now on replaces what was written before
    if self._console:
      self._console.line(f"rollback at step {step} to step {restored}: {reason}")

  def _again(self, split, tag, step):
    return (self._resume_step is not None and step <= self._resume_step
            and (tag, step) in self._recorded[split])

  def close(self):
    if self._console:
      self._console.close()
    for w in self._writers.values():
      w.close()




_SCALAR = scalar_metadata.create_summary_metadata(display_name=None, description=None)


def _series_writer(writer):
  """`write(tag, steps, values)`: the points (steps[i], values[i]) of the scalar `tag` into
  `writer`, as one graph: a summary op per point costs ~25 us this way, ~375 us eagerly
  (measured on 2 cores)."""

  @tf.function
  def write(tag, steps, values):
    with writer.as_default():
      def body(i):  # tf.summary.write: the tag as given (scalar's would take the loop's scope)
        tf.summary.write(tag, values[i], step=steps[i], metadata=_SCALAR)
        return (i + 1,)
      tf.while_loop(lambda i: i < tf.shape(steps)[0], body, (tf.constant(0),))

  return write
