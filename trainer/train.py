"""`train_and_evaluate(config, workdir)`: one run, from a config to its final eval.

The order is the contract: every check that can fail on user input (config, dataset, plan,
workdir, resume) runs before anything is written, except the workdir's lock, which the resume
check needs (it reads config.json) and which leaves nothing behind when a user mistake stops
the run (`trainer.lock.Lock`); then the parts are built
(`trainer.build`), the latest checkpoint restored, `config.json` and `schedule.png` written,
and the `Controller` trains. A run that reaches total_steps ends with `workdir/export/`
(`trainer.export`).
"""

import os

from absl import logging
import tensorflow as tf

from trainer import build, checkpoints, console, plot, preemption, resume
from trainer import summaries
from trainer import config as config_lib
from trainer import controller as controller_lib
from trainer import lock as lock_lib
from trainer import export as export_lib
from trainer import strategy as strategy_lib
from trainer import workdir as workdir_lib


def train_and_evaluate(config, workdir, strategy=None, allow_config_change=False,
                       force_unlock=False):
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and evaluates.

  Args:
    config: an ml_collections ConfigDict shaped like configs/default.py. Of each duration
      group (`config.GROUPS`) the member set to a value other than configs/default.py's
      wins and the others are cleared (`config.settle`); use `config.override(...)` to say
      which field you gave last, as the command line does.
    workdir: where checkpoints, TensorBoard events, config.json and schedule.png go (local
      or gs://). Only the chief writes there.
    strategy: a tf.distribute strategy; default `trainer.strategy.get_strategy('auto')`.
    allow_config_change: resume even if the config differs from workdir/config.json in
      fields that change the run (see `trainer.resume`).
    force_unlock: take over a gs:// workdir's lease that is not stale yet (its run is known
      to be dead; see `trainer.lock.Lock`).

  Returns:
    A dict with the final global `step`, the final eval metrics (`loss` and the task's:
    `accuracy`; `mse`, `mae`, `r2`), the mean `examples_per_sec` of the steps this call
    trained (0 if none), and `best`: (metric, step, value) of the task's best eval so far
    (None off the chief).

  Raises:
    ConfigError: a bad config, before anything is written to `workdir`.
    NonFiniteLossError: the training loss became NaN or infinite; the last checkpoint
      written is the last good one.
    Preempted: SIGTERM arrived; a checkpoint of the current step was written.
    CheckpointError: a checkpoint could not be written or none can be read.
  """
  config = config_lib.settle(config)  # the duration groups' precedence rule
  strategy = strategy or strategy_lib.get_strategy("auto")
  info, plan, policy = build.resolve(config, strategy)
  workdir_lib.check(workdir)
  chief = strategy_lib.is_chief(strategy)
  logging.info("%s; %s; precision %s; plan %s", strategy_lib.describe(strategy), info, policy,
               plan)

  # One run per workdir: the lock comes before anything of the workdir is read or written.
  with (lock_lib.Lock(workdir, chief, force_unlock), build.global_policy(policy),
        preemption.Watcher(strategy) as watcher):
    # True: this config takes over a workdir config.json says is another run's (allowed).
    takes_over = resume.check(workdir, config, plan, allow_config_change)
    parts = build.build(config, strategy, info, plan, policy)
    ckpt = checkpoints.Checkpointer(workdir, strategy, config.max_checkpoints,
                                    **parts.trackables())
    ckpt.restore_latest()
    start_step = int(parts.optimizer.iterations.numpy())
    trainer = build.make_trainer(parts, start_step=start_step)
    logging.info("%s", parts.compile_plan.describe())
    if chief and not takes_over:
      _write_run_files(workdir, config, plan)

    def first_loop_done():  # start-up is over; a config that took over is the run's now
      watcher.started()
      if chief and takes_over:
        _write_run_files(workdir, config, plan)

    writer = summaries.Summaries(workdir, chief, console.Console(plan.total_steps, chief),
                                 after_eval=lambda: _write_curves(workdir),
                                 resume_step=start_step)
    cadence = controller_lib.Cadence(plan.total_steps, config.steps_per_loop,
                                     config.eval_every, config.checkpoint_every)
    controller = controller_lib.Controller(cadence, trainer, ckpt, writer, watcher,
                                           parts.schedule, config.global_batch_size,
                                           after_first_loop=first_loop_done)
    try:
      result = controller.run()
    finally:
      writer.close()
    # Only a run that reached total_steps gets here (preemption and NaN raise): the model out.
    export_lib.write(parts, workdir, chief)
  best = _best(workdir, parts.task.best) if chief else None
  return {**result, "examples_per_sec": controller.examples_per_sec, "best": best}


def _write_run_files(workdir, config, plan):
  """config.json (the config and its plan in global steps) and schedule.png (the LR curve)."""
  tf.io.gfile.makedirs(workdir)
  workdir_lib.write_atomically(os.path.join(workdir, "config.json"),
                               config_lib.to_json(config, plan))
  workdir_lib.write_atomically(os.path.join(workdir, "schedule.png"),
                               plot.render_png(plot.plot_schedule(**plan.schedule_kwargs())))


def _write_curves(workdir):
  """workdir/curves.png: the run's train/eval curves and learning rate, from its history."""
  workdir_lib.write_atomically(os.path.join(workdir, "curves.png"),
                               plot.render_png(plot.plot_runs([workdir])))


def _best(workdir, best):
  """(metric, step, value) of the best eval of the run's history (`Task.best`), or None."""
  metric, mode = best
  history = summaries.read_scalars(workdir, "eval", metric)
  if not history:
    return None
  step = (max if mode == "max" else min)(history, key=history.get)
  return metric, step, history[step]
