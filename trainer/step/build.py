"""The public builder: a resolved run (`trainer.config.RunSpec`) in, the parts of a run out.

  spec = trainer.config.resolve(trainer.config.settle(config), strategy)
  with global_policy(spec.policy):
    parts = build(spec, strategy)
    ...restore a checkpoint of parts.trackables()...
    runner = make_runner(parts, start_step=int(parts.optimizer.iterations))
    runner.train(100)

`trainer.run.train` does exactly this (with checkpoints, summaries and the controller around
it), and so do `trainer.evaluate`, `trainer.lr_find` and `benchmarks/`: nothing else re-creates
the model, the optimizer or the loops.
"""

import dataclasses

from absl import logging
import tensorflow as tf

from trainer import data, models
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError
from trainer.distribute.precision import global_policy  # noqa: F401  (part of this API)
from trainer.step import ema, execution, loop
from trainer.step import state as state_lib
from trainer.step import learner as learner_lib
from trainer.step import optimizer as optimizer_lib


@dataclasses.dataclass(frozen=True)
class Parts:
  """Everything a run trains with, built inside the strategy's scope."""

  spec: object  # the trainer.config.RunSpec it was built from
  strategy: tf.distribute.Strategy
  execution: execution.Execution  # where batches come from, what XLA compiles
  learner: learner_lib.Learner  # the task on the model and optimizer: the step functions
  schedule: object  # the optimizer's learning rate: a schedule (or a float)
  rates: optimizer_lib.Rates = None  # each trainable variable's multiplier of the schedule

  config = property(lambda self: self.spec.config)
  info = property(lambda self: self.spec.info)
  plan = property(lambda self: self.spec.plan)
  policy = property(lambda self: self.spec.policy)
  task = property(lambda self: self.spec.task)
  model = property(lambda self: self.learner.model)
  optimizer = property(lambda self: self.learner.optimizer)

  state = property(lambda self: self.learner.state)

  def trackables(self):
    """What a checkpoint of the run holds: model, optimizer, the run's state and the weight
    average if any."""
    ema_ = {"ema": self.learner.ema} if self.learner.ema is not None else {}
    return {"model": self.model, "optimizer": self.optimizer, "run_state": self.state, **ema_}


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


def _check_clipnorm(clipnorm, num_replicas, plan):
  if clipnorm and num_replicas > 1 and not plan.replica_update and not LEGACY_KERAS:
    # Keras 3's optimizer.apply clips before _backend_update_step all-reduces the gradients
    # (keras/src/optimizers/base_optimizer.py, keras/src/backend/tensorflow/optimizer.py);
    # the replica-update path all-reduces first (trainer/step/local_update.py).
    raise ConfigError(f"optimizer.clipnorm: Keras 3 clips each replica's gradient before the "
                      f"all-reduce, not the global batch's, so {num_replicas} replicas on "
                      f"tf.data input would train another run than one; use clipnorm 0, one "
                      f"replica, or strategy mirrored with an in-memory split and input_mode "
                      f"auto or device")


def build(spec, strategy, schedule=None, record_steps=0) -> Parts:
  """Model, optimizer, learner and execution plan (the model inside the strategy's scope).

  Call it under `global_policy(spec.policy)`. Seeds Keras with `config.seed` first, so every
  strategy starts from the same initial weights. Variables `optimizer.lr_mults` freezes are
  non-trainable before the optimizer is built, and the others' updates scaled
  (`trainer.step.optimizer`).

  Args:
    spec: the run, resolved (`trainer.config.resolve`).
    strategy: the run's strategy.
    schedule: the optimizer's learning rate; default the spec's schedule.
    record_steps: > 0: the runner returns each step's loss of loops up to this long.
  """
  config, info = spec.config, spec.info
  num_outputs = spec.num_outputs
  keras.utils.set_random_seed(config.seed)
  schedule = spec.schedule if schedule is None else schedule
  with strategy.scope():
    model = models.build(config.model, info.input_shape, num_outputs, fn=spec.model_fn)
    state = state_lib.RunState()
    if config.recovery_max_trials:  # a rollback lowers the rate: schedule x state.lr_scale
      schedule = state_lib.ScaledSchedule(schedule, state.lr_scale)
    convolutions = models.has_convolutions(model)  # frozen ones still run on the CPU's kernels
    rates = optimizer_lib.Rates.of(model, config.optimizer)
    rates.freeze(model)
    if rates.given:
      logging.info("Learning rate multipliers (optimizer.lr_mults, layer_decay): %s",
                   rates.summary())
    optimizer = build_optimizer(config.optimizer, schedule)
    if spec.policy == "mixed_float16":
      optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)  # slots exist before a restore
    rates.attach(optimizer)
    plan = execution.choose(
        strategy, jit_compile=config.jit_compile,
        has_convolutions=convolutions, input_mode=config.input_mode,
        device_input_possible=data.device_possible(info, strategy),
        replica_update=data.replica_update(strategy))
    _check_clipnorm(config.optimizer.clipnorm, strategy.num_replicas_in_sync, plan)
    average = (ema.EMA(model, config.ema_decay, config.ema_warmup) if config.ema_decay
               else None)
    learner = learner_lib.Learner(model, optimizer, spec.task, config.global_batch_size,
                                  num_outputs, jit_gradients=plan.gradients,
                                  grad_accum_steps=config.grad_accum_steps, ema=average,
                                  state=state, skip_nonfinite=config.nonfinite == "skip",
                                  record_steps=record_steps)
  return Parts(spec, strategy, plan, learner, schedule, rates)


def make_eval_dataset(parts: Parts):
  """One pass of the run's held-out split, distributed over its strategy."""
  c = parts.config
  return data.make_eval_dataset(parts.info, parts.strategy, c.global_batch_size, c.seed)


def make_runner(parts: Parts, start_step: int = 0, train=True) -> loop.Runner:
  """The `loop.Runner` of `parts`, its training input starting at global step `start_step`.

  Make it after restoring a checkpoint: a tf.data input is positioned at `start_step` (the
  restored `optimizer.iterations`); device-resident input draws by `iterations` anyway.
  `train=False`: an eval-only runner (no training input is made).
  """
  c, strategy, info = parts.config, parts.strategy, parts.info
  batch_fn = device_data = iterator = make_iterator = None
  if not train:
    pass
  elif parts.execution.device_input:
    batch_fn, device_data = data.make_device_batch_fn(info, strategy, c.global_batch_size,
                                                      c.seed, c.augment)
  else:
    make_iterator = lambda step: iter(data.make_train_dataset(  # noqa: E731
        info, strategy, c.global_batch_size, c.seed, c.augment, jit=c.jit_compile,
        start_step=step))
    iterator = make_iterator(start_step)
  return loop.Runner(strategy, parts.learner, parts.execution, make_eval_dataset(parts),
                     batch_fn=batch_fn, data=device_data, iterator=iterator,
                     make_iterator=make_iterator,
                     eval_examples=info.num_eval_examples if info.streams else None)
