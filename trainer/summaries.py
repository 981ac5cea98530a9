"""TensorBoard scalars, absl log lines, and a progress line on a terminal.

Everything here runs at loop boundaries, on values already read back to the host.
"""

import os
import sys

import tensorflow as tf
from absl import logging


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
