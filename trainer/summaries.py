"""TensorBoard scalars: written at loop boundaries (and shown on the console), and read back.

Writing runs on values already read back to the host. `read_scalars` is the one reader of a
run's history: tests, the warmup experiment and `trainer.plot --workdir` use it.
"""

import os

import tensorflow as tf

from trainer import hooks


class Summaries:
  """`workdir/train` and `workdir/eval` event files, shown on the console as they are written.

  No-op writers (and a silent console) on non-chief workers.

  Args:
    workdir: the run's directory (local or gs://).
    chief: whether this process writes.
    console: a `console.Console` for the person watching, or None.
    after_eval: called after every eval write (the chief redraws curves.png there), or None.
  """

  def __init__(self, workdir, chief, console=None, after_eval=None):
    make = tf.summary.create_file_writer if chief else (lambda _: tf.summary.create_noop_writer())
    self._writers = {split: make(os.path.join(workdir, split)) for split in ("train", "eval")}
    self._console = console
    self._after_eval = after_eval if chief else None

  def write(self, split, step, scalars):
    """Writes `scalars` (name -> float) at global `step` and shows them."""
    with hooks.point("summary"):
      with self._writers[split].as_default():
        for name, value in scalars.items():
          tf.summary.scalar(name, value, step=step)
      self._writers[split].flush()
    if self._console:
      (self._console.train if split == "train" else self._console.eval)(step, scalars)
    if split == "eval" and self._after_eval:
      self._after_eval()

  def close(self):
    if self._console:
      self._console.close()
    for w in self._writers.values():
      w.close()


def read_events(workdir, split):
  """[(tag, global step, value)] of every scalar in `workdir/split`, in the order written.

  Event files are read oldest first; a record cut short by a killed process ends its file.
  """
  out = []
  paths = tf.io.gfile.glob(os.path.join(workdir, split, "events.*"))
  # events.out.tfevents.<unix time>.<host>.<pid>...: oldest first by the time in the name.
  for path in sorted(paths, key=lambda p: (int(os.path.basename(p).split(".")[3]), p)):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        out.extend((value.tag, event.step, float(tf.make_ndarray(value.tensor)))
                   for value in event.summary.value)
    except tf.errors.DataLossError:  # the record being written when the process died
      pass
  return out


def read_scalars(workdir, split, tag):
  """{global step: value} of one scalar, steps ascending; a step written twice keeps the last
  write (what TensorBoard shows)."""
  out = {}
  for name, step, value in read_events(workdir, split):
    if name == tag:
      out[step] = value
  return dict(sorted(out.items()))
