"""The schedule as a Keras `LearningRateSchedule`: `WarmupDecay`, and `WarmupCosineDecay`.

Pass one as an optimizer's `learning_rate`; the optimizer evaluates it at its own `iterations`,
so the schedule advances once per global step on every strategy, continues where it stopped
when a checkpoint or a `.keras` file is restored, and compiles under XLA (it has no Python
branches on the step). Both are registered (`trainer>WarmupDecay`, `trainer>WarmupCosineDecay`),
so `keras.models.load_model(path)` needs no `custom_objects` once `trainer.schedules` is
imported; a `.keras` file saved with `WarmupCosineDecay` by an earlier version loads unchanged.

With Keras 3's `gradient_accumulation_steps=k` on the optimizer, give the schedule the same k:
`optimizer.iterations` then counts real updates, but the optimizer calls its schedule with the
raw micro-step counter `optimizer._iterations` (keras/src/optimizers/base_optimizer.py
`_get_current_learning_rate`; keras-team/keras PR 19998), so a plain schedule warms up k times
too fast. Real update u runs at micro step u * k + k - 1, so evaluating the formula at
floor(step / k) makes update u use lr(u): every duration then counts real updates, as
`optimizer.iterations` does.
"""

import tensorflow as tf

from trainer.base.compat import keras
from trainer.schedules import formula


@keras.saving.register_keras_serializable(package="trainer")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Warmup, hold, a decay shape and a cooldown (`trainer.schedules.learning_rate`), as a Keras
  learning-rate schedule. Every argument is a keyword.

  Args:
    total_steps, warmup_steps, hold, start_lr, target_lr, final_lr, decay, cooldown_steps,
      cooldown_shape, rsqrt_timescale: as in `trainer.schedules.learning_rate`.
    gradient_accumulation_steps: the optimizer's `gradient_accumulation_steps` (1 = none):
      the step this schedule is called with is divided by it, rounded down.
    name: optional name scope.
  """

  def __init__(self, *, total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
               final_lr=0.0, decay="cosine", cooldown_steps=0, cooldown_shape="linear",
               rsqrt_timescale=0, gradient_accumulation_steps=1, name=None):
    super().__init__()
    self.args = formula.check(total_steps, warmup_steps, hold, start_lr, target_lr, final_lr,
                              decay, cooldown_steps, cooldown_shape, rsqrt_timescale)
    for field, value in self.args.kwargs().items():  # schedule.total_steps, ...
      setattr(self, field, value)
    self.name = name
    self.gradient_accumulation_steps = formula.check_int(
        "gradient_accumulation_steps", gradient_accumulation_steps, 1)

  def __call__(self, step):
    with tf.name_scope(self.name or type(self).__name__):
      step = tf.convert_to_tensor(step)
      if self.gradient_accumulation_steps > 1:  # a constant: no branch on the step
        # Floor-divide before the cast: exact on int64 steps far beyond float32's 2**24.
        step = step // tf.cast(self.gradient_accumulation_steps, step.dtype)
      return formula.compute(tf.cast(step, tf.float32), self.args, formula.TF_OPS)

  def get_config(self):
    return {**self.args.kwargs(), "name": self.name,
            "gradient_accumulation_steps": self.gradient_accumulation_steps}


@keras.saving.register_keras_serializable(package="trainer")
class WarmupCosineDecay(WarmupDecay):
  """Linear warmup, optional hold, cosine decay: `WarmupDecay(decay='cosine')` without a
  cooldown, with the positional arguments of the first version. Its config is that
  version's, so files saved by either load in both.

  Args:
    start_lr: learning rate at step 0 (ints are accepted and computed in float).
    target_lr: peak learning rate, reached after `warmup_steps` global steps.
    warmup_steps: global steps of linear warmup (0 = start at `target_lr`).
    total_steps: global steps of the whole schedule, counting warmup and hold.
    hold: global steps at `target_lr` between warmup and decay.
    final_lr: learning rate at and after `total_steps`.
    name: optional name scope.
    gradient_accumulation_steps: as in `WarmupDecay`.
  """

  def __init__(self, start_lr, target_lr, warmup_steps, total_steps, hold=0, final_lr=0.0,
               name=None, gradient_accumulation_steps=1):
    super().__init__(total_steps=total_steps, warmup_steps=warmup_steps, hold=hold,
                     start_lr=start_lr, target_lr=target_lr, final_lr=final_lr, name=name,
                     gradient_accumulation_steps=gradient_accumulation_steps)

  def get_config(self):
    # A config saved before gradient_accumulation_steps existed loads with its default, 1.
    return {"start_lr": self.start_lr, "target_lr": self.target_lr,
            "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
            "hold": self.hold, "final_lr": self.final_lr, "name": self.name,
            "gradient_accumulation_steps": self.gradient_accumulation_steps}
