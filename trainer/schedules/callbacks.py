"""The schedule as a per-batch Keras callback, for `model.fit` users.

Prefer `trainer.schedules.WarmupDecay` as the optimizer's learning rate: it is exact
inside compiled multi-step executions and costs nothing. Use this callback when something else
must change the learning rate too (`ReduceLROnPlateau` raises `TypeError` on an optimizer
that holds a schedule object); the optimizer then holds a plain float that this callback sets.
"""

import math

import numpy as np
from absl import logging

from trainer.base.compat import keras, unwrap_optimizer
from trainer.base.errors import ConfigError
from trainer.schedules import formula


def _steps_per_execution(model):
  spe = getattr(model, "steps_per_execution", None)  # Keras 3
  if spe is None:
    spe = getattr(model, "_steps_per_execution", None)  # tf_keras: a tf.Variable
  return int(np.asarray(spe)) if spe is not None else 1


def _last_set_step(optimizer):
  """The step the callback's last learning rate was computed for, or None before any batch.

  The rate for a batch is set from `iterations` before it runs and the batch then adds 1 to
  the raw counter, so the last one was set at micro step `_iterations - 1`. Under Keras 3
  `gradient_accumulation_steps=k`, `iterations` is `_iterations // k`, so that step is
  `(_iterations - 1) // k`, not `iterations - 1`.
  """
  inner = unwrap_optimizer(optimizer)
  counter = getattr(inner, "_iterations", None)  # the raw micro-step counter
  micro = int(np.asarray(inner.iterations if counter is None else counter))
  k = getattr(inner, "gradient_accumulation_steps", None) or 1
  return (micro - 1) // k if micro > 0 else None


class WarmupDecayCallback(keras.callbacks.Callback):
  """Sets the learning rate before every batch from the optimizer's own `iterations`.

  The step is read from `model.optimizer.iterations`, not counted here, so a second `fit`
  call or a model restored from a checkpoint continues the schedule instead of warming up
  again. Under Keras 3 `gradient_accumulation_steps=k`, `iterations` counts real updates (the
  raw micro-step counter divided by k), so real update u uses lr(u), as without accumulation.

  If anything else changes the learning rate between batches (`ReduceLROnPlateau`), the change
  is kept as a factor: later rates are schedule(step) x the accumulated factor. The factor
  survives a restart (`load_model`, `BackupAndRestore`, a checkpoint) with a new callback. It
  is no variable of its own: `load_model`/`load_weights` into a freshly built model would
  skip all the optimizer's saved state, iterations included, for an extra optimizer variable
  (Keras compares the count) and raise for an extra model variable. But the optimizer's
  saved learning rate is schedule(last step) x factor, so a fresh callback reads the factor
  back at its first batch. That assumes the saved rate was set by this callback with the
  same schedule arguments; a saved rate or schedule value of 0 tells nothing (0 x any factor
  is 0), so the factor is then 1.

  Args:
    total_steps, warmup_steps, hold, start_lr, target_lr, final_lr, decay, cooldown_steps,
      cooldown_shape, rsqrt_timescale: as in `trainer.schedules.learning_rate` (keywords
      after total_steps).

  Attributes:
    lrs: every learning rate this callback set, in order (one per batch).
    factor: the accumulated factor applied to the schedule.
  """

  def __init__(self, total_steps, *, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
               final_lr=0.0, decay="cosine", cooldown_steps=0, cooldown_shape="linear",
               rsqrt_timescale=0):
    super().__init__()
    self.args = formula.check(total_steps, warmup_steps, hold, start_lr, target_lr, final_lr,
                              decay, cooldown_steps, cooldown_shape, rsqrt_timescale)
    self.lrs = []
    self.factor = 1.0
    self._last_set = None

  def on_train_begin(self, logs=None):
    optimizer = self.model.optimizer
    if isinstance(getattr(optimizer, "_learning_rate", None),
                  keras.optimizers.schedules.LearningRateSchedule):
      raise ConfigError(
          f"learning_rate: the optimizer already holds a LearningRateSchedule; give it a float "
          f"learning rate to use {type(self).__name__}, or drop the callback")
    spe = _steps_per_execution(self.model)
    if spe > 1:
      logging.warning(
          "%s: steps_per_execution=%d, so batch hooks run once per %d steps and the learning "
          "rate only changes that often. Use trainer.schedules.WarmupDecay as the optimizer's "
          "learning rate instead: it is evaluated at every step inside the compiled "
          "execution.", type(self).__name__, spe, spe)

  def _saved_factor(self, optimizer, current):
    """The factor in a learning rate this callback did not set in this process."""
    step = _last_set_step(optimizer)
    if step is None:
      return 1.0  # nothing trained yet: the rate is the one the optimizer was built with
    scheduled = float(np.float32(formula.evaluate(step, self.args)))
    if current <= 0 or scheduled <= 0 or math.isclose(current, scheduled, rel_tol=1e-5):
      return 1.0  # 0 x any factor is 0: nothing to read back
    return current / scheduled

  def on_train_batch_begin(self, batch, logs=None):
    optimizer = self.model.optimizer
    current = float(np.asarray(optimizer.learning_rate))
    last = self._last_set
    if last is None:
      self.factor *= self._saved_factor(optimizer, current)  # a fresh callback: a restart?
    elif last and not math.isclose(current, last, rel_tol=1e-5):
      self.factor *= current / last  # someone else (ReduceLROnPlateau) changed it
    step = int(np.asarray(optimizer.iterations))
    lr = formula.evaluate(step, self.args) * self.factor
    optimizer.learning_rate = lr
    self._last_set = float(np.float32(lr))
    self.lrs.append(lr)


class WarmupCosineDecayCallback(WarmupDecayCallback):
  """`WarmupDecayCallback` with the cosine decay and no cooldown, with the positional
  arguments of the first version: (total_steps, warmup_steps, start_lr, target_lr, hold,
  final_lr)."""

  def __init__(self, total_steps, warmup_steps=0, start_lr=0.0, target_lr=1e-3, hold=0,
               final_lr=0.0):
    super().__init__(total_steps, warmup_steps=warmup_steps, hold=hold, start_lr=start_lr,
                     target_lr=target_lr, final_lr=final_lr)
