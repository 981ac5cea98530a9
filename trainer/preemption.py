"""Preemption: SIGTERM asks the run to checkpoint at the next loop boundary and stop.

Spot/preemptible VMs and Cloud TPU maintenance send SIGTERM with a grace period. The handler
only sets a flag; the outer loop checks it between host calls, saves a checkpoint, and the
run ends with `errors.Preempted` (exit status 4) so a supervisor knows to rerun (and resume).
On multi-worker runs the workers agree (any worker signalled stops all of them at the same step),
because a worker that stopped alone would leave the others waiting in a collective.
"""

import signal
import threading

import tensorflow as tf
from absl import logging


class Watcher:
  """A context manager that turns SIGTERM into a flag, read with `requested()`.

  Args:
    strategy: the run's strategy; on multi-worker runs `requested` is all-reduced.
  """

  def __init__(self, strategy):
    self._strategy = strategy
    self._flag = threading.Event()
    self._previous = None
    self._multi_worker = getattr(strategy.extended, "experimental_between_graph", False)
    if self._multi_worker:
      self._any = tf.function(lambda x: strategy.reduce(
          tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(x)), axis=None))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():  # signals need the main thread
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM: checkpointing at the end of this loop, then stopping.")
    self._flag.set()

  def requested(self):
    """Whether any process got SIGTERM. Call at a loop boundary, on every worker."""
    if not self._multi_worker:
      return self._flag.is_set()
    return float(self._any(tf.constant(float(self._flag.is_set())))) > 0
