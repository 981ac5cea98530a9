"""Keeping the best, and stopping when there is no better: two eval actions on the task's best
metric (`Task.best`: accuracy, r2, ...), their memory in the run's state, so it commits with
each checkpoint and survives a kill, a preemption or a rollback (Orbit's `NewBestMetric` keeps
its value in JSON for the same reason).

- `KeepBest`: the `keep_best` best evals and their steps; a new one asks for a checkpoint of
  its step, which `trainer.run.retention` then keeps beside the latest.
- `EarlyStop`: after `early_stop_patience` evals in a row without an improvement of more than
  `early_stop_min_delta`, the run stops as a finished one; started again, it trains nothing.
"""

import math

import numpy as np

from trainer.step.state import BEST_CAPACITY


def better(value, than, mode, delta=0.0):
  """Whether `value` beats `than` by more than `delta` (`mode`: 'max' or 'min'; NaN: none)."""
  if math.isnan(than):
    return True
  return value > than + delta if mode == "max" else value < than - delta


class KeepBest:
  """An eval action: remembers the `k` best evals (see the module docstring)."""

  def __init__(self, state, k, best):
    self.state, self.k = state, k
    self.metric, self.mode = best

  def __call__(self, event):
    value = event.metrics.get(self.metric)
    if not self.k or value is None or not math.isfinite(value):
      return
    value = float(np.float32(value))  # as the state holds it
    pairs = [p for p in self.state.best() if p[0] != event.step] + [(event.step, value)]
    pairs.sort(key=lambda p: (-p[1] if self.mode == "max" else p[1], p[0]))
    pairs = pairs[:self.k]
    if pairs == self.state.best():
      return
    steps = [s for s, _ in pairs] + [-1] * (BEST_CAPACITY - len(pairs))
    values = [v for _, v in pairs] + [float("nan")] * (BEST_CAPACITY - len(pairs))
    self.state.best_steps.assign(np.array(steps, np.int64))
    self.state.best_values.assign(np.array(values, np.float32))
    if any(s == event.step for s, _ in pairs):
      event.save()  # the checkpoint of a best eval: retention keeps it


class EarlyStop:
  """An eval action: stops the run after `patience` evals without an improvement of more
  than `min_delta` (see the module docstring)."""

  def __init__(self, state, patience, min_delta, best):
    self.state, self.patience, self.min_delta = state, patience, min_delta
    self.metric, self.mode = best

  def already(self):
    """The reason a run stopped early before (its state says so), or ''."""
    if not self.patience or int(self.state.stopped_at.numpy()) < 0:
      return ""
    return self._reason(int(self.state.stopped_at.numpy()))

  def _reason(self, step):
    best, at = float(self.state.patience_best.numpy()), int(self.state.patience_step.numpy())
    return (f"best {self.metric} {best:.4g} at step {at}; no improvement of more than "
            f"{self.min_delta:g} in {self.patience} evals (stopped at step {step})")

  def __call__(self, event):
    value = event.metrics.get(self.metric)
    if not self.patience or not event.written or value is None:
      return
    if math.isfinite(value) and better(value, float(self.state.patience_best.numpy()),
                                       self.mode, self.min_delta):
      self.state.patience_best.assign(value)
      self.state.patience_step.assign(event.step)
      self.state.bad_evals.assign(0)
      return
    self.state.bad_evals.assign_add(1)
    if int(self.state.bad_evals.numpy()) >= self.patience and not event.final:
      self.state.stopped_at.assign(event.step)
      event.stop(self._reason(event.step))


def best_step(workdir):
  """The step of the best eval a run's latest checkpoint records (`trainer.evaluate
  --checkpoint=best`).

  Raises:
    ConfigError: the run records no best eval (no eval yet, keep_best=0, or checkpoints
      written before the run's state existed).
  """
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  from trainer.base.errors import ConfigError
  from trainer.rundir import layout
  path = tf.train.latest_checkpoint(layout.checkpoint_dir(workdir))
  steps = []
  if path is not None:
    reader = tf.train.load_checkpoint(path)
    key = "run_state/best_steps/.ATTRIBUTES/VARIABLE_VALUE"
    if reader.has_tensor(key):
      steps = [int(s) for s in reader.get_tensor(key) if s >= 0]
  if not steps:
    raise ConfigError(f"checkpoint: {workdir} records no best eval (no eval yet, keep_best=0, "
                      f"or checkpoints older than the best-keeping); give --checkpoint=N")
  return steps[0]
