"""An exponential moving average of a model's weights, updated once per global step.

After the update that takes `iterations` to t (t >= 1), every averaged variable w has

  e = d_t * e + (1 - d_t) * w,   d_t = min(decay, (1 + t) / (10 + t))  with warmup, else decay

and e starts at the initial weights. The warmup of the decay (as in
`tf.train.ExponentialMovingAverage(num_updates=...)`) keeps a short run's average from being
mostly its random initialisation: 0.999**600 = 0.55 of the weight would still be on step 0.

Averaged: the trainable variables and the floating-point non-trainable ones (BatchNorm's
moving statistics), not integer state such as a dropout layer's seed. The averages are
sync-on-read variables with `ONLY_FIRST_REPLICA` aggregation: after the all-reduced update every
replica holds the same weights, so each replica updates its own copy with no cross-replica
call (which could not sit inside an XLA-compiled step) and a read or a checkpoint takes the
first replica's copy. Build it inside `strategy.scope()`, after the model.
"""

import contextlib

import tensorflow as tf


def averaged_variables(model):
  """The model variables an EMA averages: trainable ones, then float non-trainable ones."""
  extra = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
  return list(model.trainable_variables) + extra


class EMA(tf.Module):
  """The moving average of `model`'s weights (see the module docstring).

  Args:
    model: a built Keras model.
    decay: the average's decay, in (0, 1).
    warmup: use min(decay, (1 + t) / (10 + t)) at update t.
  """

  def __init__(self, model, decay, warmup=True):
    super().__init__(name="ema")
    self.decay = float(decay)
    self.warmup = bool(warmup)
    sources = averaged_variables(model)
    # Behind a function, not an attribute: a tf.Module attribute holding the model's variables
    # would be tracked, and checkpointed a second time under ema/.
    self._sources = lambda: sources
    # A list attribute is tracked, so tf.train.Checkpoint(ema=...) saves the averages.
    self.averages = [
        tf.Variable(tf.convert_to_tensor(v), name=f"ema_{i}", trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for i, v in enumerate(sources)]

  def decay_at(self, step):
    """d_t for the update that took `iterations` to `step` (a tensor)."""
    if not self.warmup:
      return tf.constant(self.decay, tf.float32)
    t = tf.cast(step, tf.float32)
    return tf.minimum(self.decay, (1.0 + t) / (10.0 + t))

  def update(self, step, applied=None):
    """Moves the averages towards the current weights. In the replica context, after the
    optimizer's update; `step` is its `iterations` after that update. `applied` (a bool
    tensor): False leaves the averages as they are (an update that was skipped)."""
    d = self.decay_at(step)
    if applied is not None:
      d = tf.where(applied, d, 1.0)
    for e, w in zip(self.averages, self._sources()):
      e.assign(tf.cast(d, e.dtype) * e + tf.cast(1.0 - d, e.dtype) * tf.cast(w, e.dtype))

  @tf.function
  def reset(self):
    """The averages start again at the model's current weights (a run that starts from
    another run's weights: `init_from`). In the cross-replica context."""
    for e, w in zip(self.averages, self._sources()):
      e.assign(tf.cast(tf.identity(w), e.dtype))

  @tf.function
  def _swap(self):
    for e, w in zip(self.averages, self._sources()):
      old = tf.identity(w)
      w.assign(e.read_value())
      e.assign(old)

  @contextlib.contextmanager
  def swapped(self):
    """The model holds the averages inside the block and its own weights again after it (an
    exact swap, so training resumes bit-identically). In the cross-replica context."""
    self._swap()
    try:
      yield
    finally:
      self._swap()
