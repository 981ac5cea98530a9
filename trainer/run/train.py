"""`train_and_evaluate(config, workdir)`: one run, from a config to its final eval and export.

It reads top to bottom, and the order is the contract: the config is resolved (every check
that can fail on user input: `trainer.config.resolve`) and the workdir checked before
anything is written; the workdir's lock is taken (it leaves nothing behind when a user
mistake stops the run) before the resume check reads config.json; then the parts are built,
the latest checkpoint restored, `config.json` and `schedule.png` written, the `Controller`
trains, and a run that finished (or that an action stopped) ends with `workdir/export/`.
"""

import os
import time

from absl import logging

from trainer import config as config_lib
from trainer import schedules
from trainer.base import preemption
from trainer.base.errors import ConfigError
from trainer.data import folder
from trainer.distribute import strategy as strategy_lib
from trainer.distribute.precision import global_policy
from trainer.rundir import files, layout, lock, resume
from trainer.rundir.history import read_scalars
from trainer.run import actions as actions_lib
from trainer.run import best as best_lib
from trainer.run import checkpoints, console, controller, export, init, recovery, summaries
from trainer.schedules import picture
from trainer.step import build


def train_and_evaluate(config, workdir, strategy=None, allow_config_change=False,
                       force_unlock=False, train_actions=(), eval_actions=(), progress=True):
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and evaluates.

  Args:
    config: an ml_collections ConfigDict shaped like configs/default.py (settled here: of
      each duration group the member set to a value other than configs/default.py's wins,
      `trainer.config.settle`; use `trainer.config.override(...)` to say which field you
      gave last, as the command line does), or a `trainer.config.RunSpec` already resolved
      for `strategy` (as `trainer.main` passes).
    workdir: where checkpoints, TensorBoard events, config.json and schedule.png go (local
      or gs://). Only the chief writes there.
    strategy: a tf.distribute strategy; default `trainer.distribute.get_strategy('auto')`.
    allow_config_change: resume even if the config differs from workdir/config.json in
      fields that change the run (see `trainer.rundir.resume`).
    force_unlock: take over a gs:// workdir's lease that is not stale yet (its run is known
      to be dead; see `trainer.rundir.lock.Lock`).
    train_actions, eval_actions: called after each train loop / eval, after the run's own
      (`trainer.run.actions`); one may stop the run.
    progress: show the run as `python -m trainer.main` does, on stdout (the chief only): the
      set-up, a train line (redrawn in place on a terminal and in a Jupyter notebook, else
      at most every 30 s), each eval, and the same summary at the end. False: print nothing.
      Either way TF's harmless tf.data options warning is hidden during the call (the
      warning filters are put back after it).

  Returns:
    A dict with the final global `step`, the final eval metrics (`loss` and the task's:
    `accuracy`; `mse`, `mae`, `r2`), the mean `examples_per_sec` of the steps this call
    trained (0 if none), `steady_examples_per_sec`: the same over its loops after the first,
    which compiles the step (0 with fewer than two loops), `best`: (metric, step, value) of
    the task's best eval so far (None off the chief), and `stopped`: the reason an action
    stopped the run ('' if none).

  Raises:
    ConfigError: a bad config, before anything is written to `workdir`.
    NonFiniteLossError: the training loss became NaN or infinite; the last checkpoint
      written is the last good one.
    Preempted: SIGTERM arrived; a checkpoint of the current step was written.
    CheckpointError: a checkpoint could not be written or none can be read.
  """
  start = time.monotonic()
  strategy = strategy or strategy_lib.get_strategy("auto")
  with console.harmless_warnings_hidden():
    result = run(config, workdir, strategy, allow_config_change, force_unlock, train_actions,
                 eval_actions, lines="print" if progress else None)
  if progress and strategy_lib.is_chief(strategy):
    console.end_summary(result, workdir, time.monotonic() - start)
  return result


def run(config, workdir, strategy, allow_config_change=False, force_unlock=False,
        train_actions=(), eval_actions=(), lines="log"):
  """`train_and_evaluate` without its end summary (the command line prints it itself).
  `lines`: where the console's lines go off a terminal (`console.Console`: 'log' for the
  command line, 'print' for a Python caller) or None: no console (the set-up still goes to
  absl's INFO log)."""
  spec = (config if isinstance(config, config_lib.RunSpec)
          else config_lib.resolve(config_lib.settle(config), strategy))
  if folder.contains(spec.info.name, workdir):  # its files would join the data next time
    raise ConfigError(f"workdir: {workdir} is inside the directory of dataset "
                      f"{spec.info.name!r}, whose listing the run's files would break; give a "
                      f"workdir outside it")
  files.check_writable(workdir)
  chief = strategy_lib.is_chief(strategy)
  show = console.Console(spec.plan.total_steps, chief and lines is not None,
                         lines=lines or "log")
  # Short: the full record of the data and the plan is config.json.
  show.note(f"{strategy_lib.describe(strategy)}; {spec.info.summary()}; precision "
            f"{spec.policy}; {spec.plan.summary()}")

  # One run per workdir: the lock comes before anything of the workdir is read or written.
  with (lock.Lock(workdir, chief, force_unlock) as held, global_policy(spec.policy),
        preemption.Watcher(strategy) as watcher):
    # takes_over: this config takes over a workdir config.json says is another run's.
    decision = resume.check_resume(workdir, spec, allow_config_change)
    parts = build.build(spec, strategy)
    c = spec.config
    ckpt = checkpoints.Checkpointer(
        workdir, strategy, c.max_checkpoints, keep_every=c.keep_every,
        best_steps=lambda: [s for s, _ in parts.state.best()[:c.keep_best]],
        **parts.trackables())
    restored = ckpt.restore_latest()
    init.start(parts, restored)  # config.init_from, for a workdir without checkpoints
    fresh = restored is None
    start_step = int(parts.optimizer.iterations.numpy())
    runner = build.make_runner(parts, start_step=start_step)
    show.note(parts.execution.describe())
    if chief and not decision.takes_over:
      _write_run_files(workdir, spec, decision.schedules)
    if fresh and c.recovery_max_trials:
      ckpt.save(start_step)  # a rollback needs a checkpoint to go back to

    def first_loop_done():  # start-up is over; a config that took over is the run's now
      watcher.started()
      if chief and decision.takes_over:
        _write_run_files(workdir, spec, decision.schedules)

    writer = summaries.Summaries(workdir, chief, show, resume_step=start_step)
    control = _controller(spec, parts, runner, ckpt, writer, watcher, chief, train_actions,
                          eval_actions, guard=held.check, after_first_loop=first_loop_done)
    try:
      result = control.run()
    finally:
      writer.close()
    # Only a run that finished, or that an action stopped, gets here (preemption and a
    # divergence raise): its final checkpoint is written, so a signal from now on stops at
    # once (the same command again exports), and the model out.
    watcher.ended()
    held.check()
    _export(parts, ckpt, workdir, chief)
  best = _best(workdir, spec.task.best) if chief else None
  return {**result, "examples_per_sec": control.examples_per_sec,
          "steady_examples_per_sec": control.steady_examples_per_sec, "best": best,
          "stopped": control.stop_reason,
          "skipped_updates": int(parts.state.skipped_updates.numpy())}


def _controller(spec, parts, runner, ckpt, writer, watcher, chief, train_actions,
                eval_actions, **kwargs):
  """The run's controller: its cadence, and its own actions before the caller's."""
  c, state = spec.config, parts.state
  cadence = controller.Cadence(spec.plan.total_steps, c.steps_per_loop, c.eval_every,
                               c.checkpoint_every, c.keep_every)
  early_stop = best_lib.EarlyStop(state, c.early_stop_patience, c.early_stop_min_delta,
                              spec.task.best)
  divergence = recovery.Divergence(state, c.recovery_max_trials, c.recovery_lr_factor,
                                   c.loss_upper_bound, c.recovery_begin_steps,
                                   c.max_consecutive_skips)
  args = spec.schedule.args
  return controller.Controller(
      cadence, runner, ckpt, writer, watcher,
      lambda steps: schedules.formula.evaluate(steps, args) * float(state.lr_scale.numpy()),
      c.global_batch_size, train_actions=[divergence, *train_actions],
      eval_actions=[best_lib.KeepBest(state, c.keep_best, spec.task.best), early_stop,
                    actions_lib.WriteCurves(), *eval_actions],
      chief=chief, stopped_before=early_stop.already, **kwargs)


def _export(parts, ckpt, workdir, chief):
  """workdir/export/: the final weights, or with export_weights='best' the best eval's
  checkpoint (restored for it, on every worker)."""
  source = None
  if parts.config.export_weights == "best":
    kept = parts.state.best()
    if kept:
      step, value = kept[0]
      ckpt.restore_step(step)
      source = f"the best eval ({parts.task.best[0]} {value:.6g} at step {step})"
    else:
      logging.warning("export_weights='best': no eval has a best value yet; exporting the "
                      "final weights")
  export.write(parts, workdir, chief, source=source)


def _write_run_files(workdir, spec, schedules=None):
  """config.json (the config, its plan in global steps, the data's fingerprint if it has one
  and, after a change, every schedule the run used) and schedule.png (the LR curve)."""
  files.makedirs(workdir)
  extra = {"schedules": schedules} if schedules else {}
  if spec.info.fingerprint is not None:  # what a resume checks the data against
    extra["data"] = spec.info.fingerprint
  files.write_atomically(os.path.join(workdir, layout.CONFIG),
                         config_lib.to_json(spec.config, spec.plan, **extra))
  files.write_atomically(os.path.join(workdir, layout.SCHEDULE_PNG),
                         picture.render_png(picture.plot_args(spec.schedule.args)))


def _best(workdir, best):
  """(metric, step, value) of the best eval of the run's history (`Task.best`), or None."""
  metric, mode = best
  history = read_scalars(workdir, layout.EVAL, metric)
  if not history:
    return None
  step = (max if mode == "max" else min)(history, key=history.get)
  return metric, step, history[step]
