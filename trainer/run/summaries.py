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
    self._console = console
    self._recorded = {split: set() for split in self.SPLITS}  # steps <= resume_step on disk
    self._resume_step = resume_step
    if chief and resume_step is not None:
      for split in self.SPLITS:
        self._recorded[split] = truncate_history(workdir, split, resume_step)

  def _writer(self, split):
    if split not in self._writers:
      self._writers[split] = (tf.summary.create_file_writer(os.path.join(self._workdir, split))
                              if self._chief else tf.summary.create_noop_writer())
    return self._writers[split]

  def write(self, split, step, scalars):
    """Writes `scalars` (name -> float) at global `step` and shows them; returns whether they
    were written.

    A step up to `resume_step` already in the history (the final eval of a finished run,
    rerun) is shown but not written again.
    """
    again = self._resume_step is not None and step <= self._resume_step and (
        step in self._recorded[split])
    with testpoints.point("summary"):
      if not again:
        writer = self._writer(split)
        with writer.as_default():
          for name, value in scalars.items():
            tf.summary.scalar(name, value, step=step)
        writer.flush()
    if self._console:
      (self._console.train if split == layout.TRAIN else self._console.eval)(step, scalars)
    return not again

  def close(self):
    if self._console:
      self._console.close()
    for w in self._writers.values():
      w.close()


