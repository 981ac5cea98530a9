"""Durations in global steps: from epochs, warmup as a fraction of the run, and the linear
scaling rule for the peak learning rate. Converted once, up front (`trainer.config`)."""

import math
import warnings

import numpy as np

from trainer.base.errors import ConfigError
from trainer.schedules.formula import MAX_STEPS as _MAX_STEPS
from trainer.schedules.formula import check_int as _check_int
from trainer.schedules.formula import check_lr as _check_lr


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
  return resolve_steps("warmup", total_steps, steps, fraction, epochs, steps_per_epoch)


def resolve_steps(name, total_steps, steps=0, fraction=0.0, epochs=0.0, steps_per_epoch=0):
  """A phase's length in global steps (`name`: warmup, cooldown) from exactly one of
  `{name}_steps`, `{name}_fraction` of total_steps, or `{name}_epochs`; 0 when all are 0.

  Raises:
    ConfigError: naming the field, if more than one is set or one is out of range.
  """
  steps = _check_int(f"{name}_steps", steps, 0)
  given = [n for n, v in ((f"{name}_steps", steps), (f"{name}_fraction", fraction),
                          (f"{name}_epochs", epochs)) if v]
  if len(given) > 1:
    raise ConfigError(f"{given[1]}: set only one of {name}_steps, {name}_fraction, "
                      f"{name}_epochs (got {', '.join(given)})")
  if not (isinstance(fraction, (int, float)) and 0.0 <= fraction <= 1.0):
    raise ConfigError(f"{name}_fraction: must be in [0, 1], got {fraction!r}")
  if not (isinstance(epochs, (int, float)) and math.isfinite(epochs) and epochs >= 0):
    raise ConfigError(f"{name}_epochs: must be a finite number >= 0, got {epochs!r}")
  if fraction:
    return int(round(fraction * total_steps))
  if epochs:
    steps = epochs * _check_int("steps_per_epoch", steps_per_epoch, 1)
    if not steps < _MAX_STEPS:
      raise ConfigError(f"{name}_epochs: {epochs!r} epochs is more than {_MAX_STEPS} steps")
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
