"""The outer loop: host calls of the compiled loop, and what happens between them.

The `Controller` owns the cadence (loops, evals, checkpoints, all in global steps),
preemption and the summaries, and runs the actions after each loop and each eval
(`trainer.run.actions`: the NaN guard and rollbacks, the best checkpoints, early stopping,
curves.png); the `trainer.step.loop.Runner` it drives owns `strategy.run`. As in
Orbit, but loops are cut short to land exactly on the next eval, checkpoint or final step, and
an interval is due when a loop *crosses* one of its multiples, so any `steps_per_loop` on any
resume keeps the cadence.
"""

import dataclasses
import time

from absl import logging
import numpy as np

from trainer.base.errors import Interrupted, NonFiniteLossError, Preempted
from trainer.run import actions as actions_lib


@dataclasses.dataclass(frozen=True)
class Cadence:
  """When things happen, in global steps (0 = only at the end)."""

  total_steps: int
  steps_per_loop: int  # the longest host call
  eval_every: int
  checkpoint_every: int
  keep_every: int = 0  # checkpoints kept for good: loops land on them too

  def next_stop(self, step):
    """Where the loop starting at `step` ends: at most steps_per_loop on, landing on the next
    multiple of eval_every, checkpoint_every or keep_every, and never past total_steps."""
    stop = min(step + self.steps_per_loop, self.total_steps)
    for every in (self.eval_every, self.checkpoint_every, self.keep_every):
      if every:
        stop = min(stop, (step // every + 1) * every)
    return stop

  def save_due(self, before, after):
    """Whether the loop from `before` to `after` owes a checkpoint."""
    return (after == self.total_steps or crossed(before, after, self.checkpoint_every)
            or crossed(before, after, self.keep_every))


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
    learning_rate: global steps (a NumPy array) -> the learning rate each step's update used
      (logged at every step, from the host: nothing is read back from the loop for it).
    global_batch_size: examples per global step (for examples/s).
    train_actions, eval_actions: called after each train loop / eval (`trainer.run.actions`).
    chief: whether this process writes the workdir (what actions are told).
    guard: called before anything is written after a loop (raises to stop the run: a lost
      lease), or None.
    stopped_before: () -> why an earlier process of this run stopped it early ('' = it did
      not): then nothing more is trained.
    after_first_loop: called once, after the first loop of this process passed the train
      actions and before anything about it is written (the run has started: the watcher's
      start-up phase ends, a changed config.json may be written), or None.
  """

  def __init__(self, cadence, runner, checkpointer, summaries, watcher, learning_rate,
               global_batch_size, train_actions=(), eval_actions=(), chief=True, guard=None,
               stopped_before=None, after_first_loop=None):
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
    self._stopped_before = stopped_before or (lambda: "")
    self._after_first_loop = after_first_loop
    self._last_eval = None  # (step, metrics) of the latest eval
    self._save_requested = False
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
    """Trains (until total_steps, or until an action stops the run), evaluates at the end;
    returns {'step', **final eval metrics}.

    Raises:
      NonFiniteLossError: the run diverged and could not roll back (nothing was checkpointed
        after it).
      Preempted: SIGTERM; a checkpoint of the step reached was written.
      Interrupted: Ctrl-C; a checkpoint of the step reached was written.
    """
    step, total = self._runner.global_step(), self.cadence.total_steps
    self.stop_reason = self._stopped_before()
    if self.stop_reason:
      logging.info("Stopped early before (%s): nothing to train.", self.stop_reason)
    elif step >= total:
      logging.info("Already at step %d of %d: nothing to train.", step, total)
    while step < total and not self.stop_reason:
      before, step = step, self._train_loop(step)
      if step < before:  # rolled back to the last checkpoint: train on from there
        continue
      end = step == total
      if end or crossed(before, step, self.cadence.eval_every):
        self._evaluate(step, final=end)
      signal = self._watcher.requested()
      if (signal or self.stop_reason or self._save_requested
          or self.cadence.save_due(before, step)):
        self._guard()
        self._checkpointer.save(step)
        self._save_requested = False
      if signal:
        raise (Interrupted if signal == "SIGINT" else Preempted)(step)
    step = self._runner.global_step()
    if self._last_eval is not None and self._last_eval[0] == step:
      final = self._last_eval[1]  # evaluated at this step already
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
    actions_lib.run_all(actions, event)
    if event.stop_reason and not self.stop_reason:
      self.stop_reason = event.stop_reason
      logging.info("stopping at step %d: %s", step, event.stop_reason)
    self._save_requested |= event.save_requested
    return event

  def _train_loop(self, step):
    """One host call from `step` to `cadence.next_stop(step)`; returns the step reached (or,
    after a rollback, the step of the checkpoint restored)."""
    n = self.cadence.next_stop(step) - step
    start = time.perf_counter()
    metrics = self._runner.train(n)
    seconds = time.perf_counter() - start  # the metric reads in train() waited for the loop
    step = self._runner.global_step()
    self.trained_steps += n
    self.train_seconds += seconds
    if self.first_loop_time is None:
      self.first_loop_time = (n, seconds)
    self._guard()
    event = self._act(self._train_actions, "train", step, metrics)
    if event.rollback_reason:
      return self._roll_back(step, event)
    if self._after_first_loop:
      self._after_first_loop()
      self._after_first_loop = None
    steps = np.arange(step - n, step + 1)
    rates = self._learning_rate(steps)  # the last: the rate of the next update, shown
    self._summaries.write_series("train", "learning_rate", steps[:-1], rates[:-1])
    logged = {k: v for k, v in metrics.items() if k != "consecutive_skips"}
    self._summaries.write("train", step, {
        **logged, "examples_per_sec": n * self._batch / seconds},
        shown={"learning_rate": float(rates[-1])})
    return step

  def _roll_back(self, step, event):
    """Restores the last checkpoint (every worker) and trains on from it."""
    if self._checkpointer.restore_latest() is None:
      raise NonFiniteLossError(f"{event.rollback_reason}; but there is no checkpoint yet")
    restored = self._runner.global_step()
    self._runner.reposition(restored)
    if event.after_rollback:
      event.after_rollback()
    # Every worker logs it (the console line below is the chief's): a multi-worker run's logs
    # show that each worker went back to the same checkpoint.
    logging.info("rolled back from global step %d to the checkpoint of step %d", step, restored)
    self._summaries.rolled_back(step, restored, event.rollback_reason)
    return restored
