"""The public builder: a config and a strategy in, the parts of a run out.

  info = data.get_dataset_info(config.dataset, config.data_dir)
  plan = config_lib.resolve(config, info.num_train_examples, strategy.num_replicas_in_sync)
  policy = build.precision_policy(config.mixed_precision, strategy)
  with build.global_policy(policy):
    parts = build.build(config, strategy, info, plan, policy)
    ...restore a checkpoint of parts.model / parts.optimizer...
    trainer = build.make_trainer(parts, start_step=...)
    trainer.train(100)

`trainer.train.train_and_evaluate` does exactly this (with checkpoints, summaries and the
controller around it), and so does `benchmarks/`: nothing else re-creates the trainer.
"""

import contextlib
import dataclasses

import tensorflow as tf

from trainer import compile_plan as compile_plan_lib
from trainer import data, ema, loop, models, preflight, schedules
from trainer import config as config_lib
from trainer import learner as learner_lib
from trainer import task as task_lib
from trainer.compat import LEGACY_KERAS, keras
from trainer.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a run trains with, built inside the strategy's scope."""

  config: object  # the run's ConfigDict
  strategy: tf.distribute.Strategy
  info: data.DatasetInfo
  plan: object  # config.Plan: the run in global steps
  policy: str  # the Keras dtype policy the model was built under
  compile_plan: compile_plan_lib.CompilePlan
  task: task_lib.Task  # what the model is trained to do
  learner: learner_lib.Learner  # the task on the model and optimizer: the step functions
  schedule: object  # the optimizer's learning rate: a schedule (or a float)

  @property
  def model(self):
    return self.learner.model

  @property
  def optimizer(self):
    return self.learner.optimizer

  def trackables(self):
    """What a checkpoint of the run holds: model, optimizer and the weight average if any."""
    ema_ = {"ema": self.learner.ema} if self.learner.ema is not None else {}
    return {"model": self.model, "optimizer": self.optimizer, **ema_}


def resolve(config, strategy):
  """(info, plan, policy) of a settled config on `strategy`: every check that can fail on user
  input, in order, before anything is built or written (train_and_evaluate, trainer.evaluate).

  Raises:
    ConfigError: naming the field.
  """
  config_lib.check(config)  # cheap field checks before the dataset is even looked at
  models.check_name(config.model)  # imports a model function of yours, if named
  task_lib.get_task(config.task)
  preflight.check(config)  # seed range, dataset name, data_dir: one line, not a traceback
  with preflight.tfds_errors(config):
    info = data.get_dataset_info(config.dataset, config.data_dir, config.image_size,
                                 config.eval_fraction)
  plan = config_lib.resolve(config, info.num_train_examples, strategy.num_replicas_in_sync)
  preflight.check_fits(config, info)
  return info, plan, precision_policy(config.mixed_precision, strategy)


def precision_policy(name, strategy) -> str:
  """The Keras dtype policy for `config.mixed_precision` (`auto`: by the hardware)."""
  if name != "auto":
    return {"bfloat16": "mixed_bfloat16"}.get(name, name)
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "mixed_bfloat16"
  return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


@contextlib.contextmanager
def global_policy(policy):
  """Keras' dtype policy is process-global: set it for this run only."""
  previous = keras.mixed_precision.global_policy().name
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def build_optimizer(optimizer_config, learning_rate):
  """The optimizer `config.optimizer` names, driven by `learning_rate` (a schedule)."""
  o = optimizer_config
  # Decoupled weight decay (applied to the weights, not added to the loss) on all three.
  extra = {"weight_decay": o.weight_decay or None}
  if o.clipnorm:
    extra["clipnorm"] = o.clipnorm
  if o.name == "sgd":
    return keras.optimizers.SGD(learning_rate, momentum=o.momentum, **extra)
  cls = keras.optimizers.AdamW if o.name == "adamw" else keras.optimizers.Adam
  return cls(learning_rate, beta_1=o.beta_1, beta_2=o.beta_2, **extra)


def _check_clipnorm(clipnorm, num_replicas, compiled):
  if clipnorm and num_replicas > 1 and not compiled.replica_update and not LEGACY_KERAS:
    # Keras 3's optimizer.apply clips before _backend_update_step all-reduces the gradients
    # (keras/src/optimizers/base_optimizer.py, keras/src/backend/tensorflow/optimizer.py);
    # the replica-update path all-reduces first (trainer/local_update.py).
    raise ConfigError(f"optimizer.clipnorm: Keras 3 clips each replica's gradient before the "
                      f"all-reduce, not the global batch's, so {num_replicas} replicas on "
                      f"tf.data input would train another run than one; use clipnorm 0, one "
                      f"replica, or strategy mirrored with an in-memory split and input_mode "
                      f"auto or device")


def build(config, strategy, info, plan, policy, schedule=None) -> Parts:
  """Task, model, optimizer, learner and compile plan (the model inside the strategy's scope).

  Call it under `global_policy(policy)`. Seeds Keras with `config.seed` first, so every
  strategy starts from the same initial weights.

  Args:
    config: the run's checked ConfigDict.
    strategy: the run's strategy.
    info: `data.get_dataset_info(...)` of the config's dataset.
    plan: `config.resolve(...)` of the config.
    policy: `precision_policy(...)`.
    schedule: the optimizer's learning rate; default the plan's `WarmupCosineDecay`.
  """
  task = task_lib.get_task(config.task)
  task.check_data(info)
  if config.augment and not info.is_image:
    raise ConfigError(f"augment: dataset {info.name!r} has {info.input_dtype} inputs of shape "
                      f"{info.input_shape}, not uint8 images; set augment=False")
  num_outputs = task.num_outputs(info)
  keras.utils.set_random_seed(config.seed)
  with strategy.scope():
    model = models.build(config.model, info.input_shape, num_outputs)
    if schedule is None:
      schedule = schedules.WarmupCosineDecay(**plan.schedule_kwargs())
    optimizer = build_optimizer(config.optimizer, schedule)
    if policy == "mixed_float16":
      optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)  # slots exist before a restore
    compiled = compile_plan_lib.choose(
        strategy, jit_compile=config.jit_compile,
        has_convolutions=models.has_convolutions(model), input_mode=config.input_mode,
        device_input_possible=data.device_possible(info, strategy),
        replica_update=data.replica_update(strategy))
    _check_clipnorm(config.optimizer.clipnorm, strategy.num_replicas_in_sync, compiled)
    average = (ema.EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay
               else None)
    learner = learner_lib.Learner(model, optimizer, task, config.global_batch_size, num_outputs,
                                  jit_gradients=compiled.gradients,
                                  grad_accum_steps=config.grad_accum_steps, ema=average)
  return Parts(config, strategy, info, plan, policy, compiled, task, learner, schedule)


def make_trainer(parts: Parts, start_step: int = 0) -> loop.Trainer:
  """The `loop.Trainer` of `parts`, its training input starting at global step `start_step`.

  Make it after restoring a checkpoint: a tf.data input is positioned at `start_step` (the
  restored `optimizer.iterations`); device-resident input draws by `iterations` anyway.
  """
  c, strategy, info = parts.config, parts.strategy, parts.info
  batch_fn = device_data = iterator = None
  if parts.compile_plan.device_input:
    batch_fn, device_data = data.make_device_batch_fn(info, strategy, c.global_batch_size,
                                                      c.seed, c.augment)
  else:
    iterator = iter(data.make_train_dataset(info, strategy, c.global_batch_size, c.seed,
                                            c.augment, jit=c.jit_compile,
                                            start_step=start_step))
  eval_dataset = data.make_eval_dataset(info, strategy, c.global_batch_size, c.seed)
  return loop.Trainer(strategy, parts.learner, parts.compile_plan, eval_dataset,
                      batch_fn=batch_fn, data=device_data, iterator=iterator)
