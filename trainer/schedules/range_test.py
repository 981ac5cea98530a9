"""The arithmetic of an LR range test (Smith 2017, "Cyclical Learning Rates", section 3.3; as
fastai's `lr_find` and Lightning's `Tuner.lr_find` run it): raise the learning rate
exponentially from `min_lr` to `max_lr`, one step at a time, record each step's loss, smooth
it, stop once it blows up, and read a peak learning rate off the curve.

  ExponentialRange(min_lr, max_lr, steps)      the rate of step s: min_lr * (max/min)**(s/(steps-1))
  smooth(losses)                               fastai's debiased moving average (beta 0.98)
  stop_at(smoothed)                            the first step past 4x the minimum, or not finite
  propose(lrs, smoothed)                       the proposal (`RULE`)
"""

import math

import numpy as np
import tensorflow as tf

from trainer.base.compat import keras

BETA = 0.98  # fastai's smoothing
BLOW_UP = 4.0  # stop once the smoothed loss exceeds this many times its minimum (fastai)
SKIP_START, SKIP_END = 10, 5  # points left out of the steepest-slope search (Lightning: 10, 1)
RULE = ("the learning rate where the smoothed loss falls fastest per decade of learning rate "
        "(the steepest negative slope of the smoothed loss against log10 lr, leaving out the "
        f"first {SKIP_START} and last {SKIP_END} points; Lightning's suggestion), capped at "
        "a tenth of the rate of the smoothed loss's minimum (fastai's lr_min)")


@keras.saving.register_keras_serializable(package="trainer")
class ExponentialRange(keras.optimizers.schedules.LearningRateSchedule):
  """min_lr * (max_lr / min_lr) ** (step / (steps - 1)): min_lr at step 0, max_lr at steps - 1."""

  def __init__(self, min_lr, max_lr, steps):
    super().__init__()
    self.min_lr, self.max_lr, self.steps = float(min_lr), float(max_lr), int(steps)

  def __call__(self, step):
    fraction = tf.cast(step, tf.float32) / float(max(self.steps - 1, 1))
    return self.min_lr * tf.pow(self.max_lr / self.min_lr, fraction)

  def rates(self, n):
    """The rates of steps 0..n-1, in float64."""
    return self.min_lr * (self.max_lr / self.min_lr) ** (np.arange(n) / max(self.steps - 1, 1))

  def get_config(self):
    return {"min_lr": self.min_lr, "max_lr": self.max_lr, "steps": self.steps}


def smooth(losses, beta=BETA):
  """fastai's debiased exponential moving average of `losses` (a NaN loss makes the rest
  NaN: the test stops there)."""
  out, avg = [], 0.0
  for i, loss in enumerate(losses):
    avg = beta * avg + (1 - beta) * float(loss)
    out.append(avg / (1 - beta ** (i + 1)))
  return np.array(out)


def stop_at(smoothed, blow_up=BLOW_UP):
  """The index of the first point that is not finite or above `blow_up` times the minimum so
  far, or None."""
  best = math.inf
  for i, value in enumerate(smoothed):
    if not math.isfinite(value) or value > blow_up * best:
      return i
    best = min(best, value)
  return None


def propose(lrs, smoothed):
  """The proposed peak learning rate of a range test (`RULE`), or None with too few points."""
  lrs, smoothed = np.asarray(lrs, np.float64), np.asarray(smoothed, np.float64)
  n = len(smoothed)
  if n < SKIP_START + SKIP_END + 3:
    return None
  minimum = lrs[int(np.argmin(smoothed))]
  window = slice(SKIP_START, n - SKIP_END)
  slopes = np.gradient(smoothed, np.log10(lrs))[window]
  steepest = lrs[window][int(np.argmin(slopes))]
  return float(min(steepest, minimum / 10))
