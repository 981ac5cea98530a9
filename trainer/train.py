"""`train_and_evaluate(config, workdir)`: one run, from a config to its final eval.

The order is the contract: every check that can fail on user input (config, dataset, plan,
workdir, resume) runs before anything is written; then the parts are built
(`trainer.build`), the latest checkpoint restored, `config.json` and `schedule.png` written,
and the `Controller` trains.
"""

import os

from absl import logging
import tensorflow as tf

from trainer import build, checkpoints, console, data, models, plot, preemption, resume
from trainer import summaries
from trainer import config as config_lib
from trainer import controller as controller_lib
from trainer import strategy as strategy_lib
from trainer import workdir as workdir_lib


def train_and_evaluate(config, workdir, strategy=None, allow_config_change=False):
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

  Returns:
    A dict with the final global `step`, the final eval `loss` and `accuracy`, and the mean
    `examples_per_sec` of the steps this call trained (0 if none).

  Raises:
    ConfigError: a bad config, before anything is written to `workdir`.
    NonFiniteLossError: the training loss became NaN or infinite; the last checkpoint
      written is the last good one.
    Preempted: SIGTERM arrived; a checkpoint of the current step was written.
    CheckpointError: a checkpoint could not be written or none can be read.
  """
  config = config_lib.settle(config)  # the duration groups' precedence rule
  config_lib.check(config)  # cheap field checks before the dataset is even looked at
  models.check_name(config.model)
  strategy = strategy or strategy_lib.get_strategy("auto")
  info = data.get_dataset_info(config.dataset, config.data_dir)
  plan = config_lib.resolve(config, info.num_train_examples, strategy.num_replicas_in_sync)
  workdir_lib.check(workdir)
  resume.check(workdir, config, plan, allow_config_change)
  chief = strategy_lib.is_chief(strategy)
  policy = build.precision_policy(config.mixed_precision, strategy)
  logging.info("%s; %s; precision %s; plan %s", strategy_lib.describe(strategy), info, policy,
               plan)

  with build.global_policy(policy), preemption.Watcher(strategy) as watcher:
    parts = build.build(config, strategy, info, plan, policy)
    ckpt = checkpoints.Checkpointer(workdir, strategy, config.max_checkpoints,
                                    model=parts.model, optimizer=parts.optimizer)
    ckpt.restore_latest()
    trainer = build.make_trainer(parts, start_step=int(parts.optimizer.iterations.numpy()))
    logging.info("%s", parts.compile_plan.describe())
    if chief:
      _write_run_files(workdir, config, plan)
    writer = summaries.Summaries(workdir, chief, console.Console(plan.total_steps, chief),
                                 after_eval=lambda: _write_curves(workdir))
    cadence = controller_lib.Cadence(plan.total_steps, config.steps_per_loop,
                                     config.eval_every, config.checkpoint_every)
    controller = controller_lib.Controller(cadence, trainer, ckpt, writer, watcher,
                                           parts.schedule, config.global_batch_size)
    try:
      result = controller.run()
    finally:
      writer.close()
  return {**result, "examples_per_sec": controller.examples_per_sec}


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
