"""TensorBoard scalars, written (with absl log lines and a progress line on a terminal) and
read back.

Writing runs at loop boundaries, on values already read back to the host. `read_scalars` is the
one reader of a run's history: tests, the warmup experiment and `trainer.plot --workdir` use it.
"""

import os
import sys

import tensorflow as tf
from absl import logging

from trainer import hooks


class Summaries:
  """`workdir/train` and `workdir/eval` event files; no-op writers on non-chief workers.

  Args:
    workdir: the run's directory (local or gs://).
    chief: whether this process writes.
    total_steps: the run's length in global steps, for the progress line.
  """

  def __init__(self, workdir, chief, total_steps):
    make = tf.summary.create_file_writer if chief else (lambda _: tf.summary.create_noop_writer())
    self._writers = {split: make(os.path.join(workdir, split)) for split in ("train", "eval")}
    self._total = total_steps
    self._tty = chief and sys.stdout.isatty()

  def write(self, split, step, scalars):
    """Writes `scalars` (name -> float) at global `step` and logs them."""
    with hooks.point("summary"):
      self._write(split, step, scalars)

  def _write(self, split, step, scalars):
    with self._writers[split].as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, value, step=step)
    self._writers[split].flush()
    text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    if self._tty and split == "train":
      sys.stdout.write(f"\r[{_bar(step / self._total)}] step {step}/{self._total} {text}\033[K")
      sys.stdout.flush()
    else:
      if self._tty:
        sys.stdout.write("\n")
      logging.info("%s step %d/%d: %s", split, step, self._total, text)

  def close(self):
    if self._tty:
      sys.stdout.write("\n")
    for w in self._writers.values():
      w.close()


def _bar(fraction, width=20):
  done = int(round(max(0.0, min(1.0, fraction)) * width))
  return "#" * done + "." * (width - done)


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
