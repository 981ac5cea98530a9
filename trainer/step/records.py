"""What a train loop resets before its first step and reads back after its last, in the same
`tf.function` (one host round trip a loop): the train sums, the run state's counters and, for
a reader that needs every step (the LR range test), each step's loss.

All are sync-on-read variables with SUM aggregation where replicas contribute (a read in the
cross-replica context adds up every replica), so nothing is read inside the loop.
"""

import tensorflow as tf


def sum_variable(name, shape=()):
  """A float32 sum every replica adds to, read as the sum over replicas."""
  return tf.Variable(tf.zeros(shape, tf.float32), name=name, trainable=False,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.SUM)


class StepLosses:
  """Each step's loss sum and example count in a loop of up to `size` steps, at the step's
  place in its loop (its global step minus the loop's first). Build inside the strategy's
  scope."""

  def __init__(self, size):
    self.size = int(size)
    self._loss = sum_variable("step_loss", (self.size,))
    self._count = sum_variable("step_count", (self.size,))
    self._start = tf.Variable(tf.constant(0, tf.int64), name="loop_start", trainable=False)

  def reset(self, iterations):
    """Before a loop (cross-replica context): zero, and count places from `iterations`."""
    self._loss.assign(tf.zeros_like(self._loss))
    self._count.assign(tf.zeros_like(self._count))
    self._start.assign(tf.cast(iterations, tf.int64))

  def add(self, sums, step, weight=None):
    """Adds a step's sums (`Sums.of`) at the place of global `step` (replica context)."""
    place = tf.one_hot(tf.cast(step, tf.int64) - self._start, self.size)
    weight = 1.0 if weight is None else weight
    self._loss.assign_add(place * sums["loss"] * weight)
    self._count.assign_add(place * sums["count"] * weight)

  def read(self):
    return {"step_loss": self._loss.read_value(), "step_count": self._count.read_value()}


class LoopSums:
  """The loop's reads: `reset()` first, `read()` after its last step."""

  def __init__(self, sums, state, step_losses, iterations):
    self._sums, self._state = sums, state
    self._step_losses, self._iterations = step_losses, iterations

  def reset(self):
    self._sums.reset()
    if self._step_losses is not None:
      self._step_losses.reset(self._iterations)

  def read(self):
    out = {**self._sums.read()}
    if self._state is not None:
      out.update(self._state.counters())
    if self._step_losses is not None:
      out.update(self._step_losses.read())
    return out
