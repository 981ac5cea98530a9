"""Linear warmup, optional hold, then cosine decay, counted in global steps.

With s the global step (the optimizer's `iterations`), W warmup_steps, H hold, T total_steps,
a start_lr, b target_lr, f final_lr:

  s <  W           lr = a + (b - a) * s / W                              linear warmup
  W <= s < W + H   lr = b                                                hold at the peak
  W + H <= s <= T  lr = f + (b - f) * 0.5 * (1 + cos(pi * (s - W - H) / (T - W - H)))
  s >  T           lr = f                                                (also when T == W + H)

`total_steps` counts warmup and hold too. A global step is one optimizer update of the global
batch, however many replicas share it and however many steps run per host call, so 8 replicas
do not warm up 8x faster.

The update that takes `iterations` from k to k + 1 uses lr(k).
"""

import math
import warnings

import numpy as np
import tensorflow as tf

from trainer.compat import keras
from trainer import validate as validate_lib
from trainer.errors import ConfigError


_MAX_STEPS = 2**62  # optimizer.iterations is an int64


def _check_int(name, value, minimum):
  return validate_lib.integer(name, value, minimum, integral_floats=True)


def _check_lr(name, value, positive):
  return validate_lib.number(name, value, 0, positive=positive)


def validate(warmup_steps, hold, total_steps, start_lr, target_lr, final_lr):
  """Checks schedule arguments; returns them as (W, H, T, a, b, f) ints and floats.

  Raises:
    ConfigError: (a ValueError) naming the first bad argument and what is allowed.
  """
  w = _check_int("warmup_steps", warmup_steps, 0)
  h = _check_int("hold", hold, 0)
  t = _check_int("total_steps", total_steps, 1)
  if w + h > t:
    raise ConfigError(
        f"total_steps: must be >= warmup_steps + hold (it counts both), "
        f"got total_steps={t}, warmup_steps={w}, hold={h}")
  return (w, h, t, _check_lr("start_lr", start_lr, False),
          _check_lr("target_lr", target_lr, True), _check_lr("final_lr", final_lr, False))


def _formula(s, w, h, t, a, b, f, xp):
  """The schedule on an array `s` of float steps; xp is `np` or a tf-like namespace."""
  s = xp.clip(s, 0.0, float(t))
  warm = a + (b - a) * s / max(w, 1)
  decay_len = t - w - h
  progress = xp.clip((s - (w + h)) / max(decay_len, 1), 0.0, 1.0)
  cosine = f + (b - f) * 0.5 * (1.0 + xp.cos(math.pi * progress))
  # Branch-free: every branch is computed and selected, so XLA sees one static graph.
  return xp.where(s < w, warm, xp.where(s < w + h, b, xp.where(s >= t, f, cosine)))


class _TF:
  clip = staticmethod(tf.clip_by_value)
  cos = staticmethod(tf.cos)
  where = staticmethod(tf.where)


def lr_warmup_cosine_decay(global_step, warmup_steps, hold=0, total_steps=0,
                           start_lr=0.0, target_lr=1e-3, final_lr=0.0):
  """The learning rate at `global_step`, elementwise.

  Args:
    global_step: global step(s): a Python number, a NumPy array, or a TF tensor (any int or
      float dtype). Negative steps are treated as 0.
    warmup_steps: global steps of linear warmup from `start_lr` to `target_lr` (0 = none).
    hold: global steps to hold `target_lr` after warmup.
    total_steps: global steps of the whole schedule, including warmup and hold (>= 1).
    start_lr: learning rate at step 0.
    target_lr: peak learning rate, reached at step `warmup_steps`.
    final_lr: learning rate at and after `total_steps`.

  Returns:
    A Python float for a Python number, a float64 NumPy array for NumPy input, a float32
    tensor for a TF tensor.

  Raises:
    ConfigError: (a ValueError) if an argument is invalid.
  """
  w, h, t, a, b, f = validate(warmup_steps, hold, total_steps, start_lr, target_lr, final_lr)
  if tf.is_tensor(global_step):
    return _formula(tf.cast(global_step, tf.float32), w, h, t, a, b, f, _TF)
  lr = _formula(np.asarray(global_step, dtype=np.float64), w, h, t, a, b, f, np)
  return float(lr) if np.ndim(lr) == 0 and not isinstance(global_step, np.ndarray) else lr


@keras.saving.register_keras_serializable(package="trainer")
class WarmupCosineDecay(keras.optimizers.schedules.LearningRateSchedule):
  """Linear warmup, optional hold, cosine decay, as a Keras learning-rate schedule.

  Pass it as an optimizer's `learning_rate`; the optimizer evaluates it at its own
  `iterations`, so the schedule advances once per global step on every strategy, continues
  where it stopped when a checkpoint or a `.keras` file is restored, and compiles under XLA
  (it has no Python branches on the step). Registered as `trainer>WarmupCosineDecay`, so
  `keras.models.load_model(path)` needs no `custom_objects` once `trainer.schedules` is
  imported.

  With Keras 3's `gradient_accumulation_steps=k` on the optimizer, give the schedule the same
  k: `optimizer.iterations` then counts real updates, but the optimizer calls its schedule
  with the raw micro-step counter `optimizer._iterations` (keras/src/optimizers/
  base_optimizer.py `_get_current_learning_rate`; keras-team/keras PR 19998), so a plain
  schedule warms up k times too fast. Real update u runs at micro step u * k + k - 1, so
  evaluating the formula at floor(step / k) makes update u use lr(u): warmup_steps, hold and
  total_steps then count real updates, as `optimizer.iterations` does.

  Args:
    start_lr: learning rate at step 0 (ints are accepted and computed in float).
    target_lr: peak learning rate, reached after `warmup_steps` global steps.
    warmup_steps: global steps of linear warmup (0 = start at `target_lr`).
    total_steps: global steps of the whole schedule, counting warmup and hold.
    hold: global steps at `target_lr` between warmup and decay.
    final_lr: learning rate at and after `total_steps`.
    name: optional name scope.
    gradient_accumulation_steps: the optimizer's `gradient_accumulation_steps` (1 = none):
      the step this schedule is called with is divided by it, rounded down.
  """

  def __init__(self, start_lr, target_lr, warmup_steps, total_steps, hold=0, final_lr=0.0,
               name=None, gradient_accumulation_steps=1):
    super().__init__()
    (self.warmup_steps, self.hold, self.total_steps, self.start_lr, self.target_lr,
     self.final_lr) = validate(warmup_steps, hold, total_steps, start_lr, target_lr, final_lr)
    self.name = name
    self.gradient_accumulation_steps = _check_int(
        "gradient_accumulation_steps", gradient_accumulation_steps, 1)

  def __call__(self, step):
    with tf.name_scope(self.name or "WarmupCosineDecay"):
      step = tf.convert_to_tensor(step)
      if self.gradient_accumulation_steps > 1:  # a constant: no branch on the step
        # Floor-divide before the cast: exact on int64 steps far beyond float32's 2**24.
        step = step // tf.cast(self.gradient_accumulation_steps, step.dtype)
      return _formula(tf.cast(step, tf.float32), self.warmup_steps, self.hold,
                      self.total_steps, self.start_lr, self.target_lr, self.final_lr, _TF)

  def get_config(self):
    # A config saved before gradient_accumulation_steps existed loads with its default, 1.
    return {"start_lr": self.start_lr, "target_lr": self.target_lr,
            "warmup_steps": self.warmup_steps, "total_steps": self.total_steps,
            "hold": self.hold, "final_lr": self.final_lr, "name": self.name,
            "gradient_accumulation_steps": self.gradient_accumulation_steps}


def steps_per_epoch(num_examples, global_batch_size):
  """Global steps in one epoch with `drop_remainder=True` (at least 1).

  Args:
    num_examples: examples in the training split.
    global_batch_size: examples per global step, summed over all replicas.
  """
  n = _check_int("num_examples", num_examples, 1)
  return max(1, n // _check_int("global_batch_size", global_batch_size, 1))


def _renamed(steps_per_epoch, kwargs, function):
  """`steps_per_epoch_` (the old keyword, deprecated) still works, with a warning."""
  if "steps_per_epoch_" in kwargs:
    warnings.warn(f"{function}(steps_per_epoch_=...) is deprecated: use steps_per_epoch=",
                  DeprecationWarning, stacklevel=3)
    steps_per_epoch = kwargs.pop("steps_per_epoch_")
  if kwargs:
    raise TypeError(f"{function}() got unexpected keyword arguments {sorted(kwargs)}")
  return steps_per_epoch


def total_steps_from_epochs(num_epochs, steps_per_epoch=None, **kwargs):
  """Global steps for `num_epochs` (may be fractional) epochs, rounded up."""
  steps_per_epoch = _renamed(steps_per_epoch, kwargs, "total_steps_from_epochs")
  if not isinstance(num_epochs, (int, float, np.number)) or not num_epochs > 0:
    raise ConfigError(f"num_epochs: must be > 0 when total_steps is 0, got {num_epochs!r}")
  steps = num_epochs * _check_int("steps_per_epoch", steps_per_epoch, 1)
  if not steps < _MAX_STEPS:
    raise ConfigError(f"num_epochs: {num_epochs!r} epochs is more than {_MAX_STEPS} steps")
  return max(1, math.ceil(steps))


def resolve_warmup_steps(total_steps, steps=0, fraction=0.0, epochs=0.0, steps_per_epoch=0,
                         **kwargs):
  """Warmup length in global steps, from exactly one of steps, fraction of total, or epochs.

  Args:
    total_steps: global steps of the whole run.
    steps: warmup in global steps.
    fraction: warmup as a fraction of `total_steps`, in [0, 1].
    epochs: warmup in epochs; needs `steps_per_epoch`.
    steps_per_epoch: global steps per epoch (`steps_per_epoch_`, its old name, still works
      and warns).

  Returns:
    The warmup length in global steps (0 when all three are 0).

  Raises:
    ConfigError: if more than one is set, or one is out of range.
  """
  steps_per_epoch = _renamed(steps_per_epoch, kwargs, "resolve_warmup_steps")
  steps = _check_int("warmup_steps", steps, 0)
  given = [n for n, v in (("warmup_steps", steps), ("warmup_fraction", fraction),
                          ("warmup_epochs", epochs)) if v]
  if len(given) > 1:
    raise ConfigError(f"{given[1]}: set only one of warmup_steps, warmup_fraction, "
                      f"warmup_epochs (got {', '.join(given)})")
  if not 0.0 <= fraction <= 1.0:
    raise ConfigError(f"warmup_fraction: must be in [0, 1], got {fraction!r}")
  if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs >= 0):
    raise ConfigError(f"warmup_epochs: must be a finite number >= 0, got {epochs!r}")
  if fraction:
    return int(round(fraction * total_steps))
  if epochs:
    steps = epochs * _check_int("steps_per_epoch", steps_per_epoch, 1)
    if not steps < _MAX_STEPS:
      raise ConfigError(f"warmup_epochs: {epochs!r} epochs is more than {_MAX_STEPS} steps")
    return int(round(steps))
  return steps


def scale_lr_by_batch(base_lr, global_batch_size, base_batch_size):
  """Linear scaling rule (Goyal et al. 2017): base_lr * global_batch_size / base_batch_size.

  Args:
    base_lr: the peak learning rate tuned at `base_batch_size`.
    global_batch_size: examples per global step, summed over all replicas.
    base_batch_size: the global batch `base_lr` was tuned for; 0 means no scaling.
  """
  lr = _check_lr("target_lr", base_lr, True)
  if not base_batch_size:
    return lr
  return lr * _check_int("global_batch_size", global_batch_size, 1) / _check_int(
      "base_batch_size", base_batch_size, 1)
