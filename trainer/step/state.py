"""What a run keeps beside the model, the optimizer and the weight average: `RunState`,
checkpointed under `run_state/`, so it commits with the weights (atomically, by TF's state
file) and a restart, a preemption or a rollback finds it as it was at that checkpoint.

  skipped_updates, consecutive_skips   updated inside the compiled step (`trainer.step.update`)
  lr_scale, recovery_trials            the rollbacks so far and the rate factor they left
  best_values, best_steps              the k best evals by the task's best metric
  patience_best, patience_step, bad_evals, stopped_at   early stopping

The step's counters are sync-on-read variables with `ONLY_FIRST_REPLICA` aggregation: every
replica makes the same decision (on all-reduced gradients) and updates its own copy, with no
cross-replica call, so they can live inside an XLA-compiled step. The others change only
between loops, in the cross-replica context, where an assignment sets every copy.
"""

import tensorflow as tf

from trainer.base.compat import keras

# The most best evals a run remembers: a fixed size, so keep_best may change on a resume.
BEST_CAPACITY = 32


def _per_replica(name, dtype):
  return tf.Variable(tf.zeros([], dtype), name=name, trainable=False,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)


class RunState(tf.Module):
  """The run's own state (see the module docstring). Build it inside `strategy.scope()`.

  The best evals are kept in slots of BEST_CAPACITY (step -1: empty).
  """

  def __init__(self):
    super().__init__(name="run_state")
    k = BEST_CAPACITY
    self.skipped_updates = _per_replica("skipped_updates", tf.int64)
    self.consecutive_skips = _per_replica("consecutive_skips", tf.int64)
    self.lr_scale = tf.Variable(1.0, name="lr_scale", trainable=False)
    self.recovery_trials = tf.Variable(0, dtype=tf.int64, name="recovery_trials",
                                       trainable=False)
    self.best_values = tf.Variable(tf.fill([k], float("nan")), name="best_values",
                                   trainable=False)
    self.best_steps = tf.Variable(tf.fill([k], tf.constant(-1, tf.int64)), name="best_steps",
                                  trainable=False)
    self.patience_best = tf.Variable(float("nan"), name="patience_best", trainable=False)
    self.patience_step = tf.Variable(-1, dtype=tf.int64, name="patience_step", trainable=False)
    self.bad_evals = tf.Variable(0, dtype=tf.int64, name="bad_evals", trainable=False)
    self.stopped_at = tf.Variable(-1, dtype=tf.int64, name="stopped_at", trainable=False)

  def counters(self):
    """{name: tensor} of the step's counters, read in the cross-replica context (a loop reads
    them with its metric sums: one host round trip)."""
    return {"skipped_updates": self.skipped_updates.read_value(),
            "consecutive_skips": self.consecutive_skips.read_value()}

  def best(self):
    """[(step, value)] of the best evals remembered, best first (none yet: [])."""
    pairs = zip(self.best_steps.numpy().tolist(), self.best_values.numpy().tolist())
    return [(int(s), float(v)) for s, v in pairs if s >= 0]


@keras.saving.register_keras_serializable(package="trainer")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
  """`schedule(step) * scale`, `scale` a variable (`RunState.lr_scale`: each rollback
  multiplies it by recovery_lr_factor) or, loaded from a file, the number it held.

  Args:
    schedule: a LearningRateSchedule (the run's `WarmupDecay`).
    scale: a scalar tf.Variable, or a float.
  """

  def __init__(self, schedule, scale=1.0):
    super().__init__()
    self.schedule = schedule
    self.scale = scale

  def __call__(self, step):
    return self.schedule(step) * tf.cast(self.scale, tf.float32)

  def get_config(self):
    return {"schedule": keras.saving.serialize_keras_object(self.schedule),
            "scale": float(self.scale.numpy() if hasattr(self.scale, "numpy") else self.scale)}

  @classmethod
  def from_config(cls, config):
    return cls(keras.saving.deserialize_keras_object(config["schedule"]), config["scale"])
