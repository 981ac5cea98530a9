"""The variants of one model size, each built from the trainer's public builder.

Every variant trains the same model on the same data (digits, the default config's
augmentation) with the same AdamW and schedule, on /cpu:0. Model, optimizer and learner (the
task's step functions) always come from `trainer.step.build.build`; the "ours" variants are the
trainer itself (`build.make_runner(parts)`, timed as `Runner.train(n)` calls of
steps_per_loop steps, as the Controller calls it):

  ours_spl100            what the trainer runs by default on one replica (input_mode=auto):
                         device-resident batches, 100 steps per call, compiled as
                         `execution.choose` decides (the whole loop as one XLA program for
                         the mlp; for a CNN on the CPU only the batch draw)
  ours_const_lr_spl100   the same with a constant learning rate (the schedule's cost)
  ours_accum4_spl100     the same with grad_accum_steps=4 (the cost of accumulation)
  ours_spl1              the same, 1 step per call
  ours_tfdata_spl{100,1} the trainer with input_mode=tf.data
  device_loop_xla_spl100 (models whose loop ours does not compile whole) the trainer with a
                         forced Execution: the whole loop one XLA program regardless
  device_step_xla_spl100 device-resident batches, each step (draw included) its own XLA program
  orbit_spl100           Orbit's StandardTrainer pattern (tf.function + tf.range +
                         strategy.run, no XLA, tf.data): the trainer with a forced Execution
  fit_spe{1,100}         keras Model.fit of the builder's model and optimizer, jit_compile=True,
                         steps_per_execution 1 / 100, the trainer's batches as a tf.data.Dataset
  limit_step_xla         one in-memory batch; tf.range loop calling a jit_compile'd step
  limit_no_xla           one in-memory batch; tf.range loop, no XLA
  limit_loop_xla         one in-memory batch; the whole loop one XLA program
  input_device           breakdown: data.make_device_batch_fn alone in an XLA loop
  input_tfdata           breakdown: next() on data.make_train_dataset alone
"""

import dataclasses
import functools
import os
import statistics
import time

import tensorflow as tf

from benchmarks.harness import Variant, in_loops
from trainer.distribute import precision
from trainer.step import build
from trainer import data
from trainer.step import loop
from trainer import schedules
from trainer import config as config_lib
from trainer.base.compat import keras
from trainer.step.execution import Execution

LOOP = 100  # steps_per_loop / steps_per_execution of the multi-step variants
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Model sizes: (model name, global batch).
SIZES = {"mlp": ("mlp", 64), "small_cnn": ("small_cnn", 128)}
LIMITS = ("limit_step_xla", "limit_no_xla", "limit_loop_xla")

# Forced compile choices. On one replica `execution.choose` never compiles the gradients
# apart, so the builder's learner has a plain-TF train_step and the plan alone decides what
# XLA compiles.
WHOLE_LOOP_XLA = Execution(device_input=True, step=True, gradients=False, whole_loop=True,
                             draw=False)
TFDATA_NO_XLA = Execution(device_input=False, step=False, gradients=False, whole_loop=False,
                            draw=False)


class Bench:
  """The variants of one model size (`SIZES`), on the default config with its digits."""

  def __init__(self, size, data_dir):
    self.size = size
    self.model, self.batch = SIZES[size]
    base = config_lib.load(os.path.join(REPO, "configs", "default.py"))
    # More steps than any variant runs. The cost per step does not depend on the schedule's
    # phase: it is branch-free, every branch is computed at every step.
    self.config = config_lib.override(
        base, model=self.model, global_batch_size=self.batch, data_dir=data_dir,
        total_steps=10**7, steps_per_loop=LOOP, eval_every=0, checkpoint_every=0)
    self.info = data.get_dataset_info(self.config.dataset, self.config.data_dir)
    self.one = tf.distribute.OneDeviceStrategy("/cpu:0")
    self.ours_parts = None  # ours_spl100's Parts, once built (its schedule counts calls)

  def parts(self, config=None, strategy=None, lr="schedule"):
    """The trainer's parts of `config` on `strategy`, built as `train_and_evaluate` builds them.

    lr: 'schedule' (the plan's WarmupDecay), 'constant' (the plan's peak LR) or
    'counting' (the plan's schedule, counting its evaluations).
    """
    config, strategy = config or self.config, strategy or self.one
    spec = config_lib.resolve(config, strategy)
    schedule = None
    if lr == "constant":
      schedule = spec.plan.peak_lr
    elif lr == "counting":
      schedule = counting_schedule(spec.plan)
    with precision.global_policy(spec.policy):
      return build.build(spec, strategy, schedule=schedule)

  @functools.cached_property
  def default_plan(self):
    """The Execution the trainer chooses for this model on one replica."""
    return self.parts().execution

  def _plain_dataset(self):
    """The trainer's train batches (one pipeline, one replica) as a plain tf.data.Dataset."""
    c = self.config
    return data.train_dataset_fn(self.info, c.global_batch_size, c.seed, c.augment,
                                 jit=c.jit_compile)(tf.distribute.InputContext())

  def _one_batch(self):
    with tf.device("/cpu:0"):
      return tuple(tf.identity(t) for t in next(iter(self._plain_dataset())))

  def _batch_fn(self):
    c = self.config
    batch, device_data = data.make_device_batch_fn(self.info, self.one, c.global_batch_size,
                                                   c.seed, c.augment)
    return lambda step: batch(step, device_data)

  # -- variants -----------------------------------------------------------------------------

  def ours(self, spl, lr="schedule", input_mode="auto", forced_plan=None, grad_accum_steps=1):
    """The trainer: `build.make_runner` of the builder's parts, `Runner.train` per call."""
    def make():
      parts = self.parts(config_lib.override(self.config, input_mode=input_mode,
                                             grad_accum_steps=grad_accum_steps), lr=lr)
      if forced_plan is not None:
        parts = dataclasses.replace(parts, execution=forced_plan)
      if lr == "counting":
        self.ours_parts = parts
      runner = build.make_runner(parts)
      return in_loops(runner.train, spl), 1  # train() returns after a host read
    return make

  def device_step_xla(self, spl):
    """Device-resident batches, one XLA program per step (the batch draw inside it)."""
    def make():
      learner, batch_fn = self.parts().learner, self._batch_fn()
      step = tf.function(lambda s: learner.train_step(batch_fn(s)), jit_compile=True)
      # The "batch" handed to the step is the global step itself: the step draws its batch.
      run = loop.make_device_train_loop(self.one, step, lambda s: s,
                                        learner.optimizer.iterations, learner.train_sums,
                                        whole_loop_xla=False, jit_draw=False)
      return in_loops(lambda k: run(tf.constant(k)), spl, _sync(learner)), 1
    return make

  def fit(self, spe):
    def make():
      with tf.device("/cpu:0"):  # Model.fit's own placement, outside any strategy's scope
        parts = self.parts(strategy=tf.distribute.get_strategy())
        model = parts.model
        model.compile(optimizer=parts.optimizer,
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=[keras.metrics.SparseCategoricalAccuracy()],
                      jit_compile=True, steps_per_execution=spe)
      dataset = self._plain_dataset()
      timer = _epoch_timer()

      def run(n):
        with tf.device("/cpu:0"):
          model.fit(dataset, epochs=1, steps_per_epoch=n, verbose=0, callbacks=[timer])
        return timer.seconds
      return run, spe
    return make

  def limit(self, how):
    """One fixed in-memory batch: the step alone, compiled three ways."""
    def make():
      learner, batch = self.parts().learner, self._one_batch()
      step = (tf.function(learner.train_step, jit_compile=True) if how == "step_xla"
              else learner.train_step)
      run = loop.make_device_train_loop(self.one, step, lambda _: batch,
                                        learner.optimizer.iterations, learner.train_sums,
                                        whole_loop_xla=how == "loop_xla", jit_draw=False)
      return in_loops(lambda k: run(tf.constant(k)), LOOP, _sync(learner)), 1
    return make

  def input_only(self, mode):
    """Breakdown: the input alone, one batch per 'step', summed so nothing is skipped."""
    def make():
      def consume(b):
        return tf.reduce_sum(b[0]) + tf.cast(tf.reduce_sum(b[1]), tf.float32)
      out = [tf.constant(0.0)]
      if mode == "device":
        batch_fn = self._batch_fn()
        position = tf.Variable(0, dtype=tf.int64)

        @tf.function(jit_compile=True)
        def draws(num_steps):
          acc = tf.constant(0.0)
          for _ in tf.range(num_steps):
            acc += consume(batch_fn(position.read_value()))
            position.assign_add(1)
          return acc
        call = lambda k: out.__setitem__(0, draws(tf.constant(k)))  # noqa: E731
      else:
        c = self.config
        iterator = iter(data.make_train_dataset(self.info, self.one, c.global_batch_size,
                                                c.seed, c.augment, jit=c.jit_compile))

        @tf.function
        def pull(iterator, num_steps):
          acc = tf.constant(0.0)
          for _ in tf.range(num_steps):
            acc += consume(next(iterator))
          return acc
        call = lambda k: out.__setitem__(0, pull(iterator, tf.constant(k)))  # noqa: E731
      return in_loops(call, LOOP, lambda: float(out[0])), 1
    return make

  def variants(self):
    """All variants; the constant-LR twin sits next to the variant it is compared with."""
    whole_loop = self.default_plan.whole_loop
    ours_loop = [] if whole_loop else [Variant(
        "device_loop_xla_spl100", self.ours(LOOP, forced_plan=WHOLE_LOOP_XLA),
        "the trainer, device-resident, the whole loop one XLA program regardless of the "
        "model (a forced Execution)", LOOP)]
    return [
        Variant("ours_spl100", self.ours(LOOP, lr="counting"),
                "the trainer's default on one replica: device-resident input, 100 steps per "
                "call, " + ("the whole loop one XLA program" if whole_loop else
                            "batch draw XLA-compiled, step on TF kernels"), LOOP),
        Variant("ours_const_lr_spl100", self.ours(LOOP, lr="constant"),
                "ours_spl100 with a constant LR (the peak) instead of the schedule", LOOP),
        Variant("ours_accum4_spl100", self.ours(LOOP, grad_accum_steps=4),
                "ours_spl100 with grad_accum_steps=4: each update sums 4 micro-batches of a "
                "quarter of the batch (the cost of accumulation per example)", LOOP),
        Variant("ours_spl1", self.ours(1), "ours, 1 step per call"),
        Variant("ours_tfdata_spl100", self.ours(LOOP, input_mode="tf.data"),
                "the trainer with input_mode=tf.data: make_train_loop over "
                "make_train_dataset", LOOP),
        Variant("ours_tfdata_spl1", self.ours(1, input_mode="tf.data"),
                "tf.data, 1 step per call"),
        *ours_loop,
        Variant("device_step_xla_spl100", self.device_step_xla(LOOP),
                "device-resident batches, one XLA program per step, tf.range loop", LOOP),
        Variant("orbit_spl100", self.ours(LOOP, input_mode="tf.data",
                                          forced_plan=TFDATA_NO_XLA),
                "Orbit-style: tf.function + tf.range + strategy.run, no XLA, tf.data", LOOP),
        Variant("fit_spe1", self.fit(1), "Model.fit, jit_compile=True, steps_per_execution=1"),
        Variant("fit_spe100", self.fit(LOOP),
                "Model.fit, jit_compile=True, steps_per_execution=100", LOOP),
        Variant("limit_step_xla", self.limit("step_xla"),
                "one in-memory batch, tf.range loop over a jit_compile'd step", LOOP),
        Variant("limit_no_xla", self.limit("no_xla"), "one in-memory batch, no XLA", LOOP),
        Variant("limit_loop_xla", self.limit("loop_xla"),
                "one in-memory batch, the whole loop one XLA program", LOOP),
        Variant("input_device", self.input_only("device"),
                "breakdown: make_device_batch_fn alone in an XLA loop (no training)", LOOP),
        Variant("input_tfdata", self.input_only("tfdata"),
                "breakdown: next() on make_train_dataset in a tf.function loop", LOOP),
    ]


def counting_schedule(plan):
  """The plan's WarmupDecay, counting its calls: at trace time, the evaluations per step."""

  class Counting(schedules.WarmupDecay):
    calls = 0

    def __call__(self, step):
      Counting.calls += 1
      return super().__call__(step)
  return Counting(**plan.schedule_kwargs())


def schedule_cost_us(schedule, evaluations, xla, steps=5000):
  """Microseconds per step that `evaluations` evaluations of `schedule` add to a loop.

  The loop is compiled like the trainer's (whole-loop XLA, or TF ops) and reads a step
  variable that it increments, as the optimizer does; the difference against the same loop
  adding constants is the schedule's own cost, free of the step's run-to-run noise.
  """
  step = tf.Variable(0, dtype=tf.int64)

  def make(lr):
    @tf.function(jit_compile=xla)
    def evaluate(n):
      acc = tf.constant(0.0)
      for _ in tf.range(n):
        for _ in range(evaluations):
          acc += lr(step)
        step.assign_add(1)
      return acc
    return evaluate

  def per_step(evaluate):
    evaluate(tf.constant(100))
    times = []
    for _ in range(7):
      start = time.perf_counter()
      float(evaluate(tf.constant(steps)))
      times.append(time.perf_counter() - start)
    return statistics.median(times) / steps * 1e6
  return max(0.0, per_step(make(schedule)) - per_step(make(lambda _: tf.constant(1e-3))))


def _sync(learner):
  """Waits for the loop: a host read of the global step."""
  return lambda: int(learner.optimizer.iterations.numpy())


def _epoch_timer():
  """A Keras callback timing an epoch from its first batch: the fit loop proper.

  Not timed: fit's setup, compilation and the epoch's iterator creation (a fit call per repeat
  is a benchmark artefact; a real run calls fit once). Only begin hooks and the epoch end are
  used, so Keras still dispatches batch-end callbacks asynchronously as usual.
  """

  class EpochTimer(keras.callbacks.Callback):
    seconds = float("nan")
    _start = None

    def on_epoch_begin(self, epoch, logs=None):
      self._start = None

    def on_train_batch_begin(self, batch, logs=None):
      if self._start is None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
      self.seconds = time.perf_counter() - self._start

  return EpochTimer()
