"""The outer loop: host calls of the compiled loop, and what happens between them.

The `Controller` owns the cadence (loops, evals, checkpoints, all in global steps), the NaN
guard, preemption and the summaries, and runs the actions after each loop and each eval
(`trainer.run.actions`); the `trainer.step.loop.Runner` it drives owns `strategy.run`. As in
Orbit, but loops are cut short to land exactly on the next eval, checkpoint or final step, and
an interval is due when a loop *crosses* one of its multiples, so any `steps_per_loop` on any
resume keeps the cadence.
"""

import dataclasses
import math
import time

from absl import logging

from trainer.base.errors import Interrupted, NonFiniteLossError, Preempted
from trainer.run import actions as actions_lib


@dataclasses.dataclass(frozen=True)
class Cadence:
  """When things happen, in global steps (0 = only at the end)."""

  total_steps: int
  steps_per_loop: int  # the longest host call
  eval_every: int
  checkpoint_every: int

  def next_stop(self, step):
    """Where the loop starting at `step` ends: at most steps_per_loop on, landing on the next
    multiple of eval_every or checkpoint_every, and never past total_steps."""
    stop = min(step + self.steps_per_loop, self.total_steps)
    for every in (self.eval_every, self.checkpoint_every):
      if every:
        stop = min(stop, (step // every + 1) * every)
    return stop


def crossed(before, after, every):
  """Whether going from step `before` to `after` reached a multiple of `every` (> 0)."""
  return bool(every) and after // every > before // every


class Controller:
  """Trains to `cadence.total_steps`, evaluating and checkpointing on the way.

  Args:
    cadence: a `Cadence`.
    runner: a `trainer.step.loop.Runner`.
    checkpointer: a `checkpoints.Checkpointer` of the runner's model and optimizer.
    summaries: a `summaries.Summaries`.
    watcher: a `preemption.Watcher` (entered).
    learning_rate: global step -> the learning rate the next update uses (for the logs).
    global_batch_size: examples per global step (for examples/s).
    train_actions, eval_actions: called after each train loop / eval (`trainer.run.actions`).
    chief: whether this process writes the workdir (what actions are told).
    guard: called before anything is written after a loop (raises to stop the run: a lost
      lease), or None.
    after_first_loop: called once, after the first loop of this process trained to a finite
      loss and before anything about it is written (the run has started: the watcher's
      start-up phase ends, a changed config.json may be written), or None.
  """

  def __init__(self, cadence, runner, checkpointer, summaries, watcher, learning_rate,
               global_batch_size, train_actions=(), eval_actions=(), chief=True, guard=None,
               after_first_loop=None):
    self.cadence = cadence
    self._runner = runner
    self._checkpointer = checkpointer
    self._summaries = summaries
    self._watcher = watcher
    self._learning_rate = learning_rate
    self._batch = global_batch_size
    self._train_actions = list(train_actions)
    self._eval_actions = list(eval_actions)
    self._chief = chief
    self._guard = guard or (lambda: None)
    self._after_first_loop = after_first_loop
    self._last_eval = None  # (step, metrics) of the latest eval
    self.trained_steps = 0  # by this process, and the seconds its loops took
    self.train_seconds = 0.0
    self.first_loop_time = None  # (steps, seconds) of this process's first loop: it compiles
    self.stop_reason = ""  # an action's, if one stopped the run

  @property
  def examples_per_sec(self):
    """Mean training throughput of this process's loops (compilation included)."""
    return self.trained_steps * self._batch / self.train_seconds if self.train_seconds else 0.0

  @property
  def steady_examples_per_sec(self):
    """Training throughput of this process's loops after its first, which compiles the step
    (0.0 with fewer than two loops): the rate the run settles at."""
    if self.first_loop_time is None:
      return 0.0
    steps = self.trained_steps - self.first_loop_time[0]
    seconds = self.train_seconds - self.first_loop_time[1]
    return steps * self._batch / seconds if steps and seconds > 0 else 0.0

  def run(self):
    """Trains (until total_steps, or until an action stops the run), then evaluates once
    more; returns {'step', **final eval metrics}.

    Raises:
      NonFiniteLossError: the loss became NaN/inf (nothing was checkpointed after it).
      Preempted: SIGTERM; a checkpoint of the step reached was written.
      Interrupted: Ctrl-C; a checkpoint of the step reached was written.
    """
    step, total = self._runner.global_step(), self.cadence.total_steps
    if step >= total:
      logging.info("Already at step %d of %d: nothing to train.", step, total)
    while step < total and not self.stop_reason:
      before, step = step, self._train_loop(step)
      if step < total and crossed(before, step, self.cadence.eval_every):  # final: below
        self._evaluate(step)
      signal = self._watcher.requested()
      if (signal or self.stop_reason or step == total
          or crossed(before, step, self.cadence.checkpoint_every)):
        self._guard()
        self._checkpointer.save(step)
      if signal:
        raise (Interrupted if signal == "SIGINT" else Preempted)(step)
    step = self._runner.global_step()
    if self._last_eval is not None and self._last_eval[0] == step:
      final = self._last_eval[1]  # an action stopped the run right after this eval
    else:
      final = self._evaluate(step, final=True)
    return {"step": step, **final}

  def _evaluate(self, step, final=False):
    metrics = self._runner.evaluate()
    self._guard()
    written = self._summaries.write("eval", step, metrics)
    self._last_eval = (step, metrics)
    self._act(self._eval_actions, "eval", step, metrics, written, final)
    return metrics

  def _act(self, actions, split, step, metrics, written=True, final=False):
    event = actions_lib.Event(split, step, metrics, self._checkpointer, self._chief, written,
                              final)
    reason = actions_lib.run_all(actions, event)
    if reason and not self.stop_reason:
      self.stop_reason = reason
      logging.info("stopping at step %d: %s", step, reason)

  def _train_loop(self, step):
    """One host call from `step` to `cadence.next_stop(step)`; returns the step reached."""
    n = self.cadence.next_stop(step) - step
    start = time.perf_counter()
    metrics = self._runner.train(n)
    seconds = time.perf_counter() - start  # the metric reads in train() waited for the loop
    step = self._runner.global_step()
    self.trained_steps += n
    self.train_seconds += seconds
    if self.first_loop_time is None:
      self.first_loop_time = (n, seconds)
    if not math.isfinite(metrics["loss"]):
      raise NonFiniteLossError(
          f"training loss is {metrics['loss']} in the {n} steps up to global step {step}; "
          f"stopped without checkpointing (lower schedule.target_lr or check the data)")
    self._guard()
    if self._after_first_loop:
      self._after_first_loop()
      self._after_first_loop = None
    self._summaries.write("train", step, {
        **metrics, "learning_rate": float(self._learning_rate(step)),
        "examples_per_sec": n * self._batch / seconds})
    self._act(self._train_actions, "train", step, metrics)
    return step
