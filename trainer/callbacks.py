"""The warmup + cosine schedule as a per-batch Keras callback, for `model.fit` users.

Prefer `trainer.schedules.WarmupCosineDecay` as the optimizer's learning rate: it is exact
inside compiled multi-step executions and costs nothing. Use this callback when something else
must change the learning rate too (`ReduceLROnPlateau` raises `TypeError` on an optimizer
that holds a schedule object); the optimizer then holds a plain float that this callback sets.
"""

import math

import numpy as np
from absl import logging

from trainer import schedules
from trainer.compat import keras
from trainer.errors import ConfigError


def _steps_per_execution(model):
  spe = getattr(model, "steps_per_execution", None)  # Keras 3
  if spe is None:
    spe = getattr(model, "_steps_per_execution", None)  # tf_keras: a tf.Variable
  return int(np.asarray(spe)) if spe is not None else 1


class WarmupCosineDecayCallback(keras.callbacks.Callback):
  """Sets the learning rate before every batch from the optimizer's own `iterations`.

  The step is read from `model.optimizer.iterations`, not counted here, so a second `fit`
  call or a model restored from a checkpoint continues the schedule instead of warming up
  again. If anything else changes the learning rate between batches (`ReduceLROnPlateau`),
  the change is kept as a factor: later rates are schedule(step) x the accumulated factor.
  The factor lives in this object; it is not saved with the model.

  Args:
    total_steps: global steps of the whole schedule, counting warmup and hold.
    warmup_steps: global steps of linear warmup from `start_lr` to `target_lr`.
    start_lr: learning rate at step 0.
    target_lr: peak learning rate.
    hold: global steps at `target_lr` after warmup.
    final_lr: learning rate at and after `total_steps`.

  Attributes:
    lrs: every learning rate this callback set, in order (one per batch).
  """

  def __init__(self, total_steps, warmup_steps=0, start_lr=0.0, target_lr=1e-3, hold=0,
               final_lr=0.0):
    super().__init__()
    # (W, H, T, a, b, f): the order lr_warmup_cosine_decay takes after the step.
    self.params_ = schedules.validate(warmup_steps, hold, total_steps, start_lr, target_lr,
                                      final_lr)
    self.lrs = []
    self.factor = 1.0
    self._last_set = None

  def on_train_begin(self, logs=None):
    optimizer = self.model.optimizer
    if isinstance(getattr(optimizer, "_learning_rate", None),
                  keras.optimizers.schedules.LearningRateSchedule):
      raise ConfigError(
          "learning_rate: the optimizer already holds a LearningRateSchedule; give it a float "
          "learning rate to use WarmupCosineDecayCallback, or drop the callback")
    spe = _steps_per_execution(self.model)
    if spe > 1:
      logging.warning(
          "WarmupCosineDecayCallback: steps_per_execution=%d, so batch hooks run once per %d "
          "steps and the learning rate only changes that often. Use "
          "trainer.schedules.WarmupCosineDecay as the optimizer's learning rate instead: it "
          "is evaluated at every step inside the compiled execution.", spe, spe)

  def on_train_batch_begin(self, batch, logs=None):
    optimizer = self.model.optimizer
    current = float(np.asarray(optimizer.learning_rate))
    last = self._last_set
    if last and not math.isclose(current, last, rel_tol=1e-5):
      self.factor *= current / last  # someone else (ReduceLROnPlateau) changed it
    step = int(np.asarray(optimizer.iterations))
    lr = schedules.lr_warmup_cosine_decay(step, *self.params_) * self.factor
    optimizer.learning_rate = lr
    self._last_set = float(np.float32(lr))
    self.lrs.append(lr)

