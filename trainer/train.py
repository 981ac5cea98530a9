"""train_and_evaluate: strategy, data, model and loop put together for one run."""

import contextlib
import math
import os
import time

import tensorflow as tf
from absl import logging

from trainer import checkpoints, data, models, plot, preemption, resume, schedules, summaries
from trainer import config as config_lib
from trainer import loop as loop_lib
from trainer import strategy as strategy_lib
from trainer import task as task_lib
from trainer.compat import keras
from trainer.errors import ConfigError, NonFiniteLossError


def _precision_policy(name, strategy):
  if name != "auto":
    return {"bfloat16": "mixed_bfloat16"}.get(name, name)
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "mixed_bfloat16"
  return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


@contextlib.contextmanager
def _global_policy(policy):
  """Keras' dtype policy is process-global: set it for this run only."""
  previous = keras.mixed_precision.global_policy().name
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def _check_workdir(workdir):
  if "://" in workdir:  # gs://, ram://, ...: only TF's filesystems can tell
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give a directory")
  parent = os.path.abspath(workdir)
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.access(parent, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir: {workdir!r} is not writable (no write access to {parent!r})")


def _write_atomically(path, content):
  tmp = path + ".tmp"
  with tf.io.gfile.GFile(tmp, "wb" if isinstance(content, bytes) else "w") as f:
    f.write(content)
  tf.io.gfile.rename(tmp, path, overwrite=True)


_XLA_WHAT = {"step": "the whole replica step", "gradients": "forward and backward",
             "none": "nothing (TF kernels: a convolutional model on the CPU, or jit_compile off)"}


def _build(config, plan, info, strategy, policy):
  """Model, optimizer and task, inside the strategy's scope."""
  keras.utils.set_random_seed(config.seed)  # the same initial weights on every strategy
  with strategy.scope():
    model = models.build_model(config.model, info.num_classes, info.image_shape)
    schedule = schedules.WarmupCosineDecay(**plan.schedule_kwargs())
    optimizer = task_lib.build_optimizer(config, schedule)
    if policy == "mixed_float16":
      optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)  # slots exist before a restore
    xla = strategy_lib.xla_scope(strategy, config.jit_compile, models.has_convolutions(model))
    task = task_lib.ClassificationTask(model, optimizer, config.global_batch_size,
                                       jit_gradients=xla == "gradients")
  return task, schedule, xla


def _evaluate(eval_loop, eval_dataset, task):
  task.eval_sums.reset()
  eval_loop(eval_dataset)
  return {k: float(v) for k, v in task.eval_sums.result().items() if k != "examples"}


def train_and_evaluate(config, workdir, strategy=None, allow_config_change=False):
  """Trains `config` in `workdir`, resuming from its latest checkpoint, and evaluates.

  Args:
    config: an ml_collections ConfigDict shaped like configs/default.py.
    workdir: where checkpoints, TensorBoard events, config.json and schedule.png go (local
      or gs://). Only the chief writes there.
    strategy: a tf.distribute strategy; default `trainer.strategy.get_strategy('auto')`.
    allow_config_change: resume even if the config differs from workdir/config.json in
      fields that change the run (see `trainer.resume`).

  Returns:
    A dict with the final global `step` and the final eval `loss` and `accuracy`.

  Raises:
    ConfigError: a bad config, before anything is written to `workdir`.
    NonFiniteLossError: the training loss became NaN or infinite; the last checkpoint
      written is the last good one.
    preemption.Preempted: SIGTERM arrived; a checkpoint of the current step was written.
  """
  config_lib.check(config)  # cheap field checks before the dataset is even looked at
  strategy = strategy or strategy_lib.get_strategy("auto")
  info = data.get_dataset_info(config)
  plan = config_lib.resolve(config, info.num_train_examples, strategy.num_replicas_in_sync)
  _check_workdir(workdir)
  resume.check(workdir, config, plan, allow_config_change)
  chief = strategy_lib.is_chief(strategy)
  policy = _precision_policy(config.mixed_precision, strategy)
  logging.info("%s; %s; precision %s; plan %s", strategy_lib.describe(strategy), info, policy,
               plan)

  with _global_policy(policy), preemption.Watcher(strategy) as watcher:
    task, schedule, xla = _build(config, plan, info, strategy, policy)
    ckpt = checkpoints.Checkpointer(workdir, strategy, config.max_checkpoints,
                                    model=task.model, optimizer=task.optimizer)
    ckpt.restore_latest()
    step = _global_step(task)
    run_steps, mode = _training_input(config, strategy, task, xla, step)
    eval_dataset = data.make_eval_dataset(config, strategy)
    logging.info("input mode %s; XLA compiles %s", mode, _XLA_WHAT[xla])
    if chief:
      tf.io.gfile.makedirs(workdir)
      _write_atomically(os.path.join(workdir, "config.json"), config_lib.to_json(config, plan))
      _write_atomically(os.path.join(workdir, "schedule.png"),
                        plot.render_png(plot.plot_schedule(**plan.schedule_kwargs())))
    eval_loop = loop_lib.make_eval_loop(strategy, task.eval_step, xla == "step")
    evaluate = lambda: _evaluate(eval_loop, eval_dataset, task)  # noqa: E731
    writer = summaries.Summaries(workdir, chief, plan.total_steps)
    try:
      if step >= plan.total_steps:
        logging.info("Already at step %d of %d: nothing to train.", step, plan.total_steps)
      else:
        _train(config, plan, task, schedule, ckpt, writer, watcher, run_steps, evaluate)
      final = evaluate()
      step = _global_step(task)
      writer.write("eval", step, final)
    finally:
      writer.close()
  return {"step": step, **final}


def _training_input(config, strategy, task, xla, step):
  """`run_steps(n)`, training n global steps from `step` on, and the input mode's name.

  auto = device-resident input wherever it applies (one replica, a train split that fits in
  memory), else tf.data. Measured on 2 CPU cores (docs/benchmarks.md): the tiny MLP trains
  ~8x faster as one XLA program per loop than with tf.data and a compiled step; the small CNN,
  run without XLA (see strategy.xla_scope), a few percent.
  """
  batch_fn = None
  if config.input_mode in ("auto", "device"):
    batch_fn = data.make_device_batch_fn(config, strategy)
  if config.input_mode == "device" and batch_fn is None:
    raise ConfigError("input_mode: 'device' needs one replica (strategy cpu or one_device) "
                      "and a train split that fits in memory; allowed here: auto, tf.data")
  if batch_fn:
    whole = xla == "step"
    loop = loop_lib.make_device_train_loop(strategy, task.train_step, batch_fn,
                                           task.optimizer.iterations, whole_loop_xla=whole,
                                           jit_draw=config.jit_compile)
    return (lambda n: loop(tf.constant(n))), "device (whole loop)" if whole else "device"
  iterator = iter(data.make_train_dataset(config, strategy, start_step=step))
  loop = loop_lib.make_train_loop(strategy, task.train_step, xla == "step")
  return (lambda n: loop(iterator, tf.constant(n))), "tf.data"


def _global_step(task):
  return int(task.optimizer.iterations.numpy())  # .numpy(): int() fails on mirrored vars


def _train(config, plan, task, schedule, ckpt, writer, watcher, run_steps, evaluate):
  """The outer loop: one host call (`run_steps(n)`) per `steps_per_loop` global steps."""
  step, total = _global_step(task), plan.total_steps
  while step < total:
    n = min(config.steps_per_loop, total - step)
    task.train_sums.reset()
    start = time.perf_counter()
    run_steps(n)
    metrics = {k: float(v) for k, v in task.train_sums.result().items() if k != "examples"}
    seconds = time.perf_counter() - start  # the float() reads above waited for the loop
    step = _global_step(task)
    if not math.isfinite(metrics["loss"]):
      raise NonFiniteLossError(
          f"training loss is {metrics['loss']} in the {n} steps up to global step {step}; "
          f"stopped without checkpointing (lower schedule.target_lr or check the data)")
    writer.write("train", step, {**metrics, "learning_rate": float(schedule(step)),
                                 "examples_per_sec": n * config.global_batch_size / seconds})
    if config.eval_every and step % config.eval_every == 0 and step < total:  # final: later
      writer.write("eval", step, evaluate())
    stop = watcher.requested()
    if stop or step == total or (config.checkpoint_every and
                                 step % config.checkpoint_every == 0):
      ckpt.save(step)
    if stop:
      raise preemption.Preempted(step)
