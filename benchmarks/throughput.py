r"""Training throughput of the trainer's loop against its references, in one interleaved run.

  python -m benchmarks.throughput [--out_dir=runs/benchmarks] [--data_dir=DIR] [--quick]

For each model size (the overhead-bound `mlp` at global batch 64 and the default `small_cnn` at
128, both on the offline digits with the default config's augmentation, AdamW and
WarmupCosineDecay), every variant below trains the same model on the same data with the same
schedule, on /cpu:0. All variants are built and compiled first; then the timed repeats are
interleaved (variant order reversed on every other repeat, so the drift of a shared machine
hits all variants alike) and a variant's throughput is the median over its repeats.

  ours_spl100            what the trainer runs by default on one replica (input_mode=auto):
                         device-resident batches (data.make_device_batch_fn), 100 steps per
                         call, compiled as strategy.xla_scope decides: the whole loop as one
                         XLA program for the mlp; for the CNN on CPU only the batch draw, the
                         step on TF's kernels (make_device_train_loop)
  ours_const_lr_spl100   the same with a constant learning rate (the schedule's cost)
  ours_spl1              the same, 1 step per call
  ours_tfdata_spl{100,1} the trainer's tf.data path (input_mode=tf.data): make_train_loop over
                         data.make_train_dataset, same XLA choice for the step
  device_loop_xla_spl100 (CNN only) device-resident, the whole loop one XLA program regardless
  device_step_xla_spl100 device-resident batches, each step its own XLA program
  orbit_spl100           Orbit-style: tf.function + tf.range + strategy.run, no XLA, tf.data
  fit_spe{1,100}         keras Model.fit, jit_compile=True, steps_per_execution 1 / 100, the
                         same batches (data.train_dataset_fn) as a tf.data.Dataset
  limit_step_xla         one in-memory batch; tf.range loop calling a jit_compile'd step
  limit_no_xla           one in-memory batch; tf.range loop, no XLA
  limit_loop_xla         one in-memory batch; the whole loop one XLA program
  input_device           breakdown: data.make_device_batch_fn alone in an XLA loop
  input_tfdata           breakdown: next() on data.make_train_dataset alone

"limit" is the fastest of the three limit_* variants. ours_vs_limit is the median of
per-repeat speed ratios over the interleaved repeats and --pair_repeats more of ours, its
constant-LR twin and the limit alone (single repeats scatter by +-5-8% on a shared machine).

The schedule's cost: the optimizer evaluates the schedule E times per step (AdamW: once for
the update and once per decayed variable; counted at trace time); `schedule_cost_us` times E
evaluations in a loop compiled like ours against constants, and schedule_vs_constant =
1 - that / ours' time per step. The in-loop A/B of ours_spl100 and ours_const_lr_spl100 is
reported as schedule_vs_constant_in_loop: it cannot resolve 2% here.

Loops take their step count as a tensor,
so a call may run fewer steps than steps_per_loop with the same compiled program; repeats use
whole loops whenever a repeat is longer than one loop. Compile time is the first host call
(one step; steps_per_execution steps for fit) minus one step's steady-state time. Memory:
all variants share one process, so each reports the process RSS right after its first call,
the RSS growth over its build and first call, and the process peak RSS (ru_maxrss) by then:
cumulative, not isolated figures.

Replica scaling: each model on 1, 2 and 4 logical CPU devices (the host CPU is split into 4
before TensorFlow starts) with MirroredStrategy(ReductionToOneDevice) and the trainer's
mirrored path (tf.data; XLA as strategy.xla_scope decides: none for the CNN on CPU), next to
OneDeviceStrategy with tf.data; each first trains the same `check_steps` global steps from the
same initial weights and is compared with the 1-replica weights and loss (augmented as in the
default config; SGD: Adam would amplify the kernels' batch-size-dependent rounding in
near-zero gradients into full-sized steps).

Writes `<out_dir>/throughput.json` and `throughput.md` (the tables of docs/benchmarks.md)
and prints a table with PASS/FAIL per target.
"""

import functools
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # noqa: E402
import numpy as np  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402

from trainer import strategy as strategy_lib  # noqa: E402

NUM_CPU_DEVICES = 4
LOOP = 100  # steps_per_loop / steps_per_execution of the multi-step variants
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FLAGS = flags.FLAGS
flags.DEFINE_string("out_dir", "runs/benchmarks", "Where throughput.json goes.")
flags.DEFINE_string("data_dir", "", "TFDS data_dir for digits (prepared offline on first use); "
                    "default: <tempdir>/trainer_benchmarks/tfds.")
flags.DEFINE_bool("quick", False, "Smoke run for tests: mlp only, 1 repeat of a few steps, "
                  "scaling on 1 and 2 replicas with the mlp.")
flags.DEFINE_integer("repeats", 5, "Timed repeats per variant (the median is reported).")
flags.DEFINE_integer("pair_repeats", 16, "Extra repeats of ours, its constant-LR twin and the "
                     "limit alone, alternating, after the interleaved ones: the ratios the "
                     "targets check are medians of per-repeat ratios, and single repeats "
                     "scatter by +-5-8% on a shared machine.")
flags.DEFINE_float("seconds", 0.4, "Target seconds per timed repeat of each variant.")
flags.DEFINE_list("models", ["mlp", "small_cnn"], "Model sizes to measure.")
flags.DEFINE_list("replicas", ["1", "2", "4"], "Replica counts for the scaling section "
                  "('' to skip it).")
flags.DEFINE_list("scaling_models", ["mlp", "small_cnn"], "Model sizes of the scaling "
                  "section: the mlp shows the per-step overhead, the CNN the compute.")
flags.DEFINE_integer("check_steps", 20, "Global steps of the replica correctness check.")
flags.DEFINE_string("profile", "", "A variant name (e.g. ours_spl100): after timing, "
                    "trace one repeat of it with the TF profiler into <out_dir>/profile/<model>.")

# Model sizes: (model name, global batch).
SIZES = {"mlp": ("mlp", 64), "small_cnn": ("small_cnn", 128)}

# (model, ratio) -> minimum. Ratios of throughputs measured in the same run.
TARGETS = {
    ("mlp", "ours_vs_limit"): 0.5,
    ("mlp", "ours_vs_orbit"): 2.0,
    ("mlp", "ours_vs_fit_spe1"): 4.0,
    ("mlp", "schedule_vs_constant"): 0.98,
    ("small_cnn", "ours_vs_limit"): 0.95,
    ("small_cnn", "schedule_vs_constant"): 0.98,
}
# Replicas sum in another order than one device, and oneDNN's kernels round differently at
# other batch sizes: float32 rounding, which SGD keeps at that size.
WEIGHT_RTOL = 1e-3
LIMITS = ("limit_step_xla", "limit_no_xla", "limit_loop_xla")

def _peak_rss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mb():
  return psutil.Process().memory_info().rss / 2**20


class Variant:
  """One way to train. `build()` returns `(run, granularity)`.

  `run(n)` trains n global steps (a multiple of `granularity`), waits for them and returns
  the seconds they took.
  """

  def __init__(self, name, build, what, spl=1):
    self.name, self._build, self.what, self.spl = name, build, what, spl
    self.run, self.granularity = None, 1
    self.steps = 0  # per timed repeat, set by calibrate
    self.times = []  # seconds of each timed repeat
    self.info = {}

  def compile(self):
    rss0 = _rss_mb()
    start = time.perf_counter()
    self.run, self.granularity = self._build()
    first = self.run(self.granularity)
    self.info.update(first_call_s=first, build_and_first_call_s=time.perf_counter() - start,
                     rss_mb_after_first_call=_rss_mb(), rss_growth_mb=_rss_mb() - rss0,
                     process_peak_rss_mb=_peak_rss_mb())

  def _up(self, n, unit):
    return max(unit, int(math.ceil(n / unit)) * unit)

  def calibrate(self, seconds):
    """Picks the steps per repeat (about `seconds` long; 0: one call) and warms them up.

    The first call of a function after other programs were compiled is slow (~0.1 s), and a
    jit_compile'd loop compiles once per distinct step count (`tf.range(num_steps)` makes it
    a compile-time constant), so every call shape a repeat uses runs here first, untimed.
    Repeats of at least one loop use whole loops. When one loop takes longer than a repeat
    (the CNN), a repeat is one call of fewer steps of the same program: per-call overhead
    (well under 1 ms) is then negligible against steps of tens of milliseconds.
    """
    g = self.granularity
    self.run(g)
    if seconds <= 0:
      self.steps = g
      return
    t1 = self.run(g) if g > 1 else min(self.run(g) for _ in range(2))
    if seconds / t1 * g >= self.spl:
      n = self.spl
      self.run(n)
      dt = self.run(n)
      while dt < 0.05:  # too short to extrapolate from
        n *= 4
        dt = self.run(n)
      self.steps = self._up(seconds * n / dt, self.spl)
    else:
      self.steps = self._up(seconds / t1 * g, g)
    if self.steps != g:
      self.run(self.steps)

  def time_once(self):
    gc.collect()
    gc.disable()  # as timeit does: no collector pauses inside a timed repeat
    try:
      self.times.append(self.run(self.steps))
    finally:
      gc.enable()


def _loop_run(call, spl, sync):
  """run(n) for a loop taking its step count as a tensor: whole loops, then the rest."""
  def run(n):
    start = time.perf_counter()
    full, rest = divmod(n, spl)
    for _ in range(full):
      call(spl)
    if rest:
      call(rest)
    sync()
    return time.perf_counter() - start
  return run


class Bench:
  """The variants of one model size, built from the trainer's public pieces."""

  def __init__(self, size, data_dir):
    from trainer import config as config_lib, data
    self.size = size
    self.model, self.batch = SIZES[size]
    base = config_lib.load(os.path.join(REPO, "configs", "default.py"))
    # More steps than any variant runs. The cost per step does not depend on the schedule's
    # phase: it is branch-free, every branch is computed at every step.
    self.config = config_lib.override(
        base, model=self.model, global_batch_size=self.batch, data_dir=data_dir,
        total_steps=10**7, steps_per_loop=LOOP, eval_every=0, checkpoint_every=0)
    self.info = data.get_dataset_info(self.config)
    self.one = tf.distribute.OneDeviceStrategy("/cpu:0")

  def task(self, strategy=None, xla=None, constant_lr=False, config=None):
    """Model, optimizer and task as trainer.train builds them, and its XLA scope.

    `xla` None: what `strategy.xla_scope` picks (the trainer's choice); else forced
    ('step', 'gradients' or 'none').
    """
    from trainer import config as config_lib, models, schedules, task as task_lib
    from trainer.compat import keras
    config = config or self.config
    strategy = strategy or self.one
    plan = config_lib.resolve(config, self.info.num_train_examples,
                              strategy.num_replicas_in_sync)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
      model = models.build_model(config.model, self.info.num_classes, self.info.image_shape)
      lr = plan.peak_lr if constant_lr else _CountingSchedule(**plan.schedule_kwargs())
      optimizer = task_lib.build_optimizer(config, lr)
      optimizer.build(model.trainable_variables)
      xla = xla or strategy_lib.xla_scope(strategy, config.jit_compile,
                                          models.has_convolutions(model))
      task = task_lib.ClassificationTask(model, optimizer, config.global_batch_size,
                                         jit_gradients=xla == "gradients")
    return task, xla

  def _plain_dataset(self):
    """The trainer's train batches (one pipeline, one replica) as a plain tf.data.Dataset."""
    from trainer import data
    return data.train_dataset_fn(self.config)(tf.distribute.InputContext())

  def _one_batch(self):
    with tf.device("/cpu:0"):
      return tuple(tf.identity(t) for t in next(iter(self._plain_dataset())))

  # -- variants -----------------------------------------------------------------------------

  def ours_device(self, spl, constant_lr=False, xla=None):
    def build():
      from trainer import data, loop as loop_lib
      task, scope = self.task(constant_lr=constant_lr, xla=xla)
      if spl == LOOP and not constant_lr and xla is None:
        self.ours_task, self.ours_scope = task, scope
      batch_fn = data.make_device_batch_fn(self.config, self.one)
      assert batch_fn is not None, "device-resident mode does not apply"
      loop = loop_lib.make_device_train_loop(self.one, task.train_step, batch_fn,
                                             task.optimizer.iterations,
                                             whole_loop_xla=scope == "step")
      return _loop_run(lambda k: loop(tf.constant(k)), spl, lambda: _sync(task)), 1
    return build

  def ours_tfdata(self, spl):
    def build():
      from trainer import data, loop as loop_lib
      task, scope = self.task()
      iterator = iter(data.make_train_dataset(self.config, self.one))
      loop = loop_lib.make_train_loop(self.one, task.train_step, scope == "step")
      return _loop_run(lambda k: loop(iterator, tf.constant(k)), spl, lambda: _sync(task)), 1
    return build

  def device_step_xla(self, spl):
    """Device-resident batches, one XLA program per step (batch gather inside it)."""
    def build():
      from trainer import data
      task, _ = self.task(xla="none")
      batch_fn = data.make_device_batch_fn(self.config, self.one)
      step_counter, strategy = task.optimizer.iterations, self.one

      @tf.function(jit_compile=True)
      def step():
        task.train_step(batch_fn(tf.convert_to_tensor(step_counter)))

      @tf.function
      def loop(num_steps):
        for _ in tf.range(num_steps):
          strategy.run(step)
      return _loop_run(lambda k: loop(tf.constant(k)), spl, lambda: _sync(task)), 1
    return build

  def orbit(self, spl):
    """Orbit's StandardTrainer pattern (a tf.function around a tf.range loop), no XLA."""
    def build():
      from trainer import data
      task, _ = self.task(xla="none")
      strategy = self.one
      iterator = iter(data.make_train_dataset(self.config, strategy))

      @tf.function
      def train(iterator, num_steps):
        for _ in tf.range(num_steps):
          strategy.run(task.train_step, args=(next(iterator),))
      return _loop_run(lambda k: train(iterator, tf.constant(k)), spl, lambda: _sync(task)), 1
    return build

  def fit(self, spe):
    def build():
      from trainer import config as config_lib, models, schedules, task as task_lib
      from trainer.compat import keras
      c = self.config
      plan = config_lib.resolve(c, self.info.num_train_examples, 1)
      keras.utils.set_random_seed(c.seed)
      with tf.device("/cpu:0"):
        model = models.build_model(c.model, self.info.num_classes, self.info.image_shape)
        model.compile(
            optimizer=task_lib.build_optimizer(
                c, schedules.WarmupCosineDecay(**plan.schedule_kwargs())),
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
    return build

  def limit(self, how):
    def build():
      from trainer import loop as loop_lib
      task, _ = self.task(xla="none")
      batch, strategy = self._one_batch(), self.one
      if how == "loop_xla":
        loop = loop_lib.make_device_train_loop(strategy, task.train_step, lambda _: batch,
                                               task.optimizer.iterations)
      else:
        step = (tf.function(task.train_step, jit_compile=True) if how == "step_xla"
                else task.train_step)

        @tf.function
        def loop(num_steps):
          for _ in tf.range(num_steps):
            strategy.run(step, args=(batch,))
      return _loop_run(lambda k: loop(tf.constant(k)), LOOP, lambda: _sync(task)), 1
    return build

  def input_only(self, mode):
    """Breakdown: the input alone, one batch per 'step', summed so nothing is skipped."""
    def build():
      from trainer import data

      def consume(b):
        return tf.reduce_sum(b[0]) + tf.cast(tf.reduce_sum(b[1]), tf.float32)
      out = [tf.constant(0.0)]
      if mode == "device":
        batch_fn = data.make_device_batch_fn(self.config, self.one)
        position = tf.Variable(0, dtype=tf.int64)

        @tf.function(jit_compile=True)
        def loop(num_steps):
          acc = tf.constant(0.0)
          for _ in tf.range(num_steps):
            acc += consume(batch_fn(position.read_value()))
            position.assign_add(1)
          return acc
        call = lambda k: out.__setitem__(0, loop(tf.constant(k)))  # noqa: E731
      else:
        iterator = iter(data.make_train_dataset(self.config, self.one))

        @tf.function
        def pull(iterator, num_steps):
          acc = tf.constant(0.0)
          for _ in tf.range(num_steps):
            acc += consume(next(iterator))
          return acc
        call = lambda k: out.__setitem__(0, pull(iterator, tf.constant(k)))  # noqa: E731
      return _loop_run(call, LOOP, lambda: float(out[0])), 1
    return build

  def variants(self):
    """All variants; the constant-LR twin sits next to the variant it is compared with."""
    ours_loop = [] if self.whole_loop else [Variant(
        "device_loop_xla_spl100", self.ours_device(LOOP, xla="step"),
        "device-resident, the whole loop one XLA program regardless of the model", LOOP)]
    return [
        Variant("ours_spl100", self.ours_device(LOOP),
                "the trainer's default on one replica: device-resident input, 100 steps per "
                "call, " + ("the whole loop one XLA program" if self.whole_loop else
                            "batch draw XLA-compiled, step on TF kernels"), LOOP),
        Variant("ours_const_lr_spl100", self.ours_device(LOOP, constant_lr=True),
                "ours_spl100 with a constant LR (the peak) instead of the schedule", LOOP),
        Variant("ours_spl1", self.ours_device(1), "ours, 1 step per call"),
        Variant("ours_tfdata_spl100", self.ours_tfdata(LOOP),
                "the trainer's tf.data path: make_train_loop over make_train_dataset", LOOP),
        Variant("ours_tfdata_spl1", self.ours_tfdata(1), "tf.data, 1 step per call"),
        *ours_loop,
        Variant("device_step_xla_spl100", self.device_step_xla(LOOP),
                "device-resident batches, one XLA program per step, tf.range loop", LOOP),
        Variant("orbit_spl100", self.orbit(LOOP),
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

  @functools.cached_property
  def whole_loop(self):
    """Whether the trainer compiles this model's whole loop (strategy.xla_scope == 'step')."""
    from trainer import models
    return strategy_lib.xla_scope(self.one, self.config.jit_compile, models.has_convolutions(
        models.build_model(self.model, self.info.num_classes, self.info.image_shape))) == "step"


class _CountingSchedule:
  """WarmupCosineDecay counting its calls: at trace time, the evaluations per step."""

  def __new__(cls, **kwargs):
    from trainer import schedules

    class Counting(schedules.WarmupCosineDecay):
      calls = 0

      def __call__(self, step):
        Counting.calls += 1
        return super().__call__(step)
    return Counting(**kwargs)


def schedule_cost_us(schedule, evaluations, xla, steps=5000):
  """Microseconds per step that `evaluations` evaluations of `schedule` add to a loop.

  The loop is compiled like the trainer's (whole-loop XLA, or TF ops) and reads a step
  variable that it increments, as the optimizer does; the difference against the same loop
  adding constants is the schedule's own cost, free of the step's run-to-run noise.
  """
  step = tf.Variable(0, dtype=tf.int64)

  def make(lr):
    @tf.function(jit_compile=xla)
    def loop(n):
      acc = tf.constant(0.0)
      for _ in tf.range(n):
        for _ in range(evaluations):
          acc += lr(step)
        step.assign_add(1)
      return acc
    return loop

  def per_step(loop):
    loop(tf.constant(100))
    times = []
    for _ in range(7):
      start = time.perf_counter()
      float(loop(tf.constant(steps)))
      times.append(time.perf_counter() - start)
    return statistics.median(times) / steps * 1e6
  return max(0.0, per_step(make(schedule)) - per_step(make(lambda _: tf.constant(1e-3))))


def _sync(task):
  return int(task.optimizer.iterations.numpy())


def _epoch_timer():
  """A Keras callback timing an epoch from its first batch: the fit loop proper.

  Not timed: fit's setup, compilation and the epoch's iterator creation (a fit call per repeat
  is a benchmark artefact; a real run calls fit once). Only begin hooks and the epoch end are
  used, so Keras still dispatches batch-end callbacks asynchronously as usual.
  """
  from trainer.compat import keras

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


def _measure(variants, repeats, seconds, log, same_steps=()):
  for v in variants:
    v.compile()
    log(f"  compiled {v.name}: first call {v.info['first_call_s']:.2f} s, "
        f"RSS {v.info['rss_mb_after_first_call']:.0f} MB")
  by = {v.name: v for v in variants}
  for v in variants:
    v.calibrate(seconds)
  for follower, leader in same_steps:  # paired comparisons run equal step counts
    by[follower].steps = by[leader].steps
  for r in range(repeats):
    for v in (variants if r % 2 == 0 else variants[::-1]):
      v.time_once()
    log(f"  repeat {r + 1}/{repeats}")


def _summarise(v, batch):
  rates = [v.steps * batch / t for t in v.times]
  per_step = statistics.median(v.times) / v.steps
  return dict(v.info, what=v.what, steps_per_loop=v.spl, steps_per_repeat=v.steps,
              examples_per_sec=statistics.median(rates), us_per_step=1e6 * per_step,
              repeats=rates,
              compile_s=max(0.0, v.info["first_call_s"] - per_step * v.granularity))


def bench_model(size, data_dir, repeats, seconds, log, profile="", pair_repeats=0):
  bench = Bench(size, data_dir)
  variants = bench.variants()
  log(f"{size}: global batch {bench.batch}, {len(variants)} variants")
  _measure(variants, repeats, seconds, log, same_steps=[("ours_const_lr_spl100", "ours_spl100")])
  by = {v.name: v for v in variants}
  limit = min(LIMITS, key=lambda k: statistics.median(by[k].times) / by[k].steps)
  group = [by["ours_const_lr_spl100"], by["ours_spl100"], by[limit]]
  for r in range(pair_repeats):
    for v in (group if r % 2 == 0 else group[::-1]):
      v.time_once()
  if pair_repeats:
    log(f"  {pair_repeats} more repeats of " + ", ".join(v.name for v in group))
  res = {v.name: _summarise(v, bench.batch) for v in variants}
  eps = {k: r["examples_per_sec"] for k, r in res.items()}

  def speed_ratio(a, b):
    # Median over repeats of the per-repeat speed ratio of a to b: a repeat's two timings are
    # seconds apart, so the machine's slower drifts cancel.
    return statistics.median((tb / by[b].steps) / (ta / by[a].steps)
                             for ta, tb in zip(by[a].times, by[b].times))

  us_ours = res["ours_spl100"]["us_per_step"]
  lr = bench.ours_task.optimizer._learning_rate  # pylint: disable=protected-access
  evaluations = type(lr).calls
  schedule = {"evaluations_per_step": evaluations,
              "us_per_step": schedule_cost_us(lr, evaluations, bench.ours_scope == "step")}
  log(f"  schedule: {evaluations} evaluations per step cost {schedule['us_per_step']:.2f} us")
  ratios = {
      "ours_vs_limit": speed_ratio("ours_spl100", limit),
      "ours_vs_orbit": eps["ours_spl100"] / eps["orbit_spl100"],
      "ours_vs_fit_spe1": eps["ours_spl100"] / eps["fit_spe1"],
      "schedule_vs_constant": 1 - schedule["us_per_step"] / us_ours,
      "schedule_vs_constant_in_loop": speed_ratio("ours_spl100", "ours_const_lr_spl100"),
      "ours_vs_fit_spe100": eps["ours_spl100"] / eps["fit_spe100"],
      # limit_no_xla is the Orbit-style loop on one in-memory batch: no input cost at all.
      "ours_vs_orbit_on_one_batch": eps["ours_spl100"] / eps["limit_no_xla"],
      "ours_tfdata_spl100_vs_limit": eps["ours_tfdata_spl100"] / eps[limit],
  }
  us = {k: r["us_per_step"] for k, r in res.items()}
  breakdown = {
      "ours_us_per_step": us["ours_spl100"],
      "step_alone_whole_loop_xla_us": us["limit_loop_xla"],
      "step_alone_per_step_xla_us": us["limit_step_xla"],
      "device_input_alone_us": us["input_device"],
      "tfdata_input_alone_us": us["input_tfdata"],
      "ours_minus_limit_us": us["ours_spl100"] - us[limit],
  }
  if profile:
    logdir = os.path.join(FLAGS.out_dir, "profile", size)
    tf.io.gfile.makedirs(logdir)
    tf.profiler.experimental.start(logdir)
    try:
      by[profile].run(by[profile].steps)
    finally:
      tf.profiler.experimental.stop()
    log(f"  traced {profile} into {logdir}")
  return {"model": bench.model, "global_batch_size": bench.batch, "limit": limit,
          "whole_loop_xla": bench.whole_loop, "schedule": schedule, "variants": res,
          "ratios": ratios, "breakdown_us": breakdown}


def bench_scaling(size, data_dir, replica_counts, repeats, seconds, check_steps, log):
  """Throughput on 1/2/4 replicas, and the same weights as 1 replica after check_steps."""
  from trainer import config as config_lib, data, loop as loop_lib
  bench = Bench(size, data_dir)
  # The default schedule's shape (warmup over 10% of 600 steps) at an SGD-sized peak LR, so
  # the checked steps really move the weights.
  config = config_lib.override(bench.config, total_steps=600,
                               **{"optimizer.name": "sgd", "schedule.target_lr": 0.1})
  checks = {}

  def make(name, strategy):
    def build():
      task, scope = bench.task(strategy=strategy, config=config)
      iterator = iter(data.make_train_dataset(config, strategy))
      loop = loop_lib.make_train_loop(strategy, task.train_step, scope == "step")
      call = lambda k: loop(iterator, tf.constant(k))  # noqa: E731
      task.train_sums.reset()
      initial = [v.numpy() for v in task.model.trainable_variables]
      call(check_steps)  # first call: compilation, and the correctness check
      checks[name] = {"loss": float(task.train_sums.result()["loss"]),
                      "updates": [v.numpy() - w for v, w in
                                  zip(task.model.trainable_variables, initial)],
                      "replicas": strategy.num_replicas_in_sync,
                      "xla": scope}
      return _loop_run(call, LOOP, lambda: _sync(task)), 1
    return build

  variants = [Variant("one_device", make("one_device", bench.one),
                      "OneDeviceStrategy(/cpu:0), tf.data", LOOP)]
  for n in replica_counts:
    strategy = tf.distribute.MirroredStrategy(
        [f"/cpu:{i}" for i in range(n)], cross_device_ops=tf.distribute.ReductionToOneDevice())
    variants.append(Variant(f"mirrored_{n}", make(f"mirrored_{n}", strategy),
                            f"MirroredStrategy on {n} logical CPU device(s), tf.data", LOOP))
  log(f"scaling: {size} global batch {bench.batch}, replicas {replica_counts}")
  _measure(variants, repeats, seconds, log)
  ref_name = f"mirrored_{replica_counts[0]}"
  ref = checks[ref_name]
  out = {}
  for v in variants:
    c = checks[v.name]
    rel = max(float(np.linalg.norm(a - b) / np.linalg.norm(b))
              for a, b in zip(c["updates"], ref["updates"]))
    out[v.name] = dict(_summarise(v, bench.batch), replicas=c["replicas"], xla=c["xla"],
                       loss_after_check=c["loss"], max_rel_update_diff=rel,
                       weights_match=bool(rel <= WEIGHT_RTOL),
                       loss_rel_diff=abs(c["loss"] - ref["loss"]) / abs(ref["loss"]))
  return {"model": bench.model, "global_batch_size": bench.batch, "check_steps": check_steps,
          "augment": bool(config.augment), "reference": ref_name,
          "tolerance": f"|dw - dw_ref| / |dw_ref| <= {WEIGHT_RTOL} for every variable, "
                       f"dw = weights after check_steps - initial weights",
          "variants": out}


# -- report ---------------------------------------------------------------------------------


def machine():
  try:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    cpu = next(line.split(":", 1)[1].strip() for line in lscpu.splitlines()
               if line.startswith("Model name"))
  except (OSError, StopIteration):
    cpu = platform.processor()
  import keras  # pylint: disable=g-import-not-at-top
  return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
          "keras": keras.__version__, "python": platform.python_version(),
          "load_average_at_start": os.getloadavg()}


def targets(results):
  rows = []
  for (size, key), minimum in TARGETS.items():
    if size in results["models"]:
      ratios = results["models"][size]["ratios"]
      rows.append({"model": size, "ratio": key, "value": ratios[key], "minimum": minimum,
                   "pass": bool(ratios[key] >= minimum)})
  return rows


def format_table(results):
  lines = []
  settings = results["settings"]
  for size, m in results["models"].items():
    lines.append(f"\n{size} (global batch {m['global_batch_size']}): median of "
                 f"{settings['repeats']} interleaved repeats (ours, its twin and the limit: "
                 f"{settings['repeats'] + settings['pair_repeats']})")
    lines.append(f"  {'variant':24s} {'examples/s':>11s} {'us/step':>9s} {'compile s':>9s} "
                 f"{'RSS MB':>7s} {'+MB':>5s}")
    for k, v in m["variants"].items():
      lines.append(f"  {k:24s} {v['examples_per_sec']:11.4g} {v['us_per_step']:9.1f} "
                   f"{v['compile_s']:9.2f} {v['rss_mb_after_first_call']:7.0f} "
                   f"{v['rss_growth_mb']:5.0f}")
    lines.append(f"  limit = {m['limit']}; ours compiles the whole loop: {m['whole_loop_xla']}")
    lines.append("  " + ", ".join(f"{k} {v:.3g}" for k, v in m["ratios"].items()))
  for s in results.get("scaling", {}).values():
    lines.append(f"\nreplica scaling, {s['model']} global batch {s['global_batch_size']}, "
                 f"weights after {s['check_steps']} steps vs {s['reference']}")
    for k, v in s["variants"].items():
      lines.append(f"  {k:12s} {v['examples_per_sec']:11.4g} examples/s "
                   f"{v['us_per_step']:8.0f} us/step  XLA {v['xla']:9s} "
                   f"max |dw - dw_ref|/|dw_ref| {v['max_rel_update_diff']:.1e}  "
                   f"loss {v['loss_after_check']:.5f}  match {v['weights_match']}")
  lines.append("\ntargets (ours = the trainer's default: input_mode=auto, jit_compile=True)")
  for t in results["targets"]:
    lines.append(f"  {'PASS' if t['pass'] else 'FAIL'}  {t['model']:10s} {t['ratio']:21s} "
                 f"{t['value']:7.3f} >= {t['minimum']}")
  return "\n".join(lines)


def format_markdown(results):
  """The tables of docs/benchmarks.md."""
  m0 = results["machine"]
  lines = [f"Measured on {m0['cpu']}, {m0['cores']} cores, TensorFlow {m0['tensorflow']}, "
           f"Keras {m0['keras']}, Python {m0['python']}; load average at start "
           f"{m0['load_average_at_start'][0]:.2f}; `{results['settings']['command']}` "
           f"took {results['seconds_total']:.0f} s.", ""]
  for size, m in results["models"].items():
    lines.append(f"**{size}**, global batch {m['global_batch_size']}, median of "
                 f"{results['settings']['repeats']} interleaved repeats (limit = `{m['limit']}`)")
    lines += _md_table(
        ["variant", "examples/s", "us/step", "compile s", "RSS MB after first call"],
        [[f"`{k}`", f"{v['examples_per_sec']:,.0f}", f"{v['us_per_step']:,.1f}",
          f"{v['compile_s']:.2f}", f"{v['rss_mb_after_first_call']:.0f}"]
         for k, v in m["variants"].items()])
    lines += ["Ratios: " + ", ".join(f"{k} **{v:.3g}**" for k, v in m["ratios"].items()), ""]
  for s in results.get("scaling", {}).values():
    lines.append(f"**Replica scaling, {s['model']}**, global batch {s['global_batch_size']}, "
                 f"update after {s['check_steps']} steps vs `{s['reference']}`")
    lines += _md_table(
        ["strategy", "XLA", "examples/s", "us/step", "max rel. update diff", "same update"],
        [[f"`{k}`", v["xla"], f"{v['examples_per_sec']:,.0f}", f"{v['us_per_step']:,.0f}",
          f"{v['max_rel_update_diff']:.1e}", "yes" if v["weights_match"] else "NO"]
         for k, v in s["variants"].items()])
  lines += _md_table(["model", "target", "measured", "minimum", ""],
                     [[t["model"], t["ratio"], f"{t['value']:.3f}", str(t["minimum"]),
                       "PASS" if t["pass"] else "FAIL"] for t in results["targets"]])
  return "\n".join(lines)


def _md_table(header, rows):
  """Lines of a markdown table (a blank line before and after); columns 3+ right-aligned."""
  align = ["---" if i < 2 else "---:" for i in range(len(header))]
  return ["", *("| " + " | ".join(r) + " |" for r in (header, align, *rows)), ""]


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  strategy_lib.setup_cpu_devices(NUM_CPU_DEVICES)  # before any TF op
  data_dir = FLAGS.data_dir or os.path.join(tempfile.gettempdir(), "trainer_benchmarks", "tfds")
  quick = FLAGS.quick
  repeats = 1 if quick else FLAGS.repeats
  seconds = 0.0 if quick else FLAGS.seconds
  models = ["mlp"] if quick else FLAGS.models
  replicas = [1, 2] if quick else [int(n) for n in FLAGS.replicas if n]
  scaling_models = ["mlp"] if quick else FLAGS.scaling_models
  check_steps = 4 if quick else FLAGS.check_steps
  start = time.perf_counter()
  log = lambda s: print(f"[{time.perf_counter() - start:5.0f} s] {s}", flush=True)  # noqa
  results = {"machine": machine(),
             "settings": {"repeats": repeats, "seconds_per_repeat": seconds, "quick": quick,
                          "pair_repeats": 0 if quick else FLAGS.pair_repeats,
                          "steps_per_loop": LOOP, "cpu_devices": NUM_CPU_DEVICES,
                          "command": " ".join(["python -m benchmarks.throughput",
                                               *sys.argv[1:]])},
             "models": {}}
  for size in models:
    results["models"][size] = bench_model(size, data_dir, repeats, seconds, log, FLAGS.profile,
                                          0 if quick else FLAGS.pair_repeats)
  if replicas:
    results["scaling"] = {size: bench_scaling(size, data_dir, replicas, repeats, seconds,
                                              check_steps, log) for size in scaling_models}
  results["targets"] = targets(results)
  results["seconds_total"] = time.perf_counter() - start
  results["machine"]["load_average_at_end"] = os.getloadavg()
  os.makedirs(FLAGS.out_dir, exist_ok=True)
  path = os.path.join(FLAGS.out_dir, "throughput.json")
  with open(path, "w") as f:
    json.dump(results, f, indent=1)
  with open(os.path.join(FLAGS.out_dir, "throughput.md"), "w") as f:
    f.write(format_markdown(results))
  print(format_table(results))
  print(f"\nwrote {path} in {results['seconds_total']:.0f} s")


if __name__ == "__main__":
  logging.set_verbosity(logging.WARNING)
  app.run(main)
