"""The compiled inner loops, and the `Runner` that runs them (it owns `strategy.run`).

`make_train_loop(...)(iterator, num_steps)` runs `num_steps` global steps in one
`tf.function`: a `tf.range` loop around `strategy.run(step)`, so Python runs once per call, not
per step, and the learning-rate schedule, evaluated inside the optimizer at
`optimizer.iterations`, still moves every step. `num_steps` is a tensor, so a loop cut short
reuses the same trace. Nothing in a loop reads a value back to the host: each loop resets the
train sums first and returns them after its last step, in the same `tf.function`, so a call
costs one host round trip (measured: docs/benchmarks.md).
"""

from absl import logging
import numpy as np
import tensorflow as tf

from trainer.base import testpoints
from trainer.base.errors import ConfigError


def make_train_loop(strategy, step_fn, jit_step, sums):
  """Returns `loop(iterator, num_steps)`, running `step_fn(batch)` on every replica.

  Args:
    strategy: the tf.distribute strategy the iterator and the variables belong to.
    step_fn: one replica's share of a global step; takes one per-replica batch.
    jit_step: XLA-compile `step_fn` as one cluster, optimizer update included
      (`Execution.step`).
    sums: what the steps add to (`Learner.loop_sums`): reset first, `read()` returned.
  """
  step = _jit(step_fn) if jit_step else step_fn

  @tf.function
  def loop(iterator, num_steps):
    sums.reset()
    for _ in tf.range(num_steps):
      strategy.run(step, args=(next(iterator),))
    return sums.read()

  return loop


def _jit(fn):
  """`fn` as one XLA program per replica. Wrapped in a Python function: MirroredStrategy.run
  given a jit_compile tf.function itself lifts all replicas into one XLA program, which fails
  on CPU devices (XLA:CPU has no collectives) and is not what is meant anyway."""
  compiled = tf.function(fn, jit_compile=True)
  return lambda *args: compiled(*args)


def make_device_train_loop(strategy, step_fn, batch_fn, global_step, sums, whole_loop_xla=True,
                           jit_draw=True):
  """Returns `loop(num_steps)` over device-resident data, for one replica.

  Each step draws its batch on the device with `batch_fn(global_step)` (global_step is the
  optimizer's `iterations`, read after the previous step's update) instead of from a tf.data
  iterator, which XLA cannot compile.

  Args:
    strategy: a one-replica strategy.
    step_fn: one global step; takes a batch.
    batch_fn: global step (int64) -> batch, XLA-compilable (`data.make_device_batch_fn`).
    global_step: the variable counting global steps (`optimizer.iterations`).
    sums: what the steps add to (`Learner.loop_sums`): reset first, `read()` returned.
    whole_loop_xla: compile all `num_steps` steps, batch draws included, as one XLA program
      (`Execution.whole_loop`). If False, `step_fn` runs as the caller made it, in a
      `tf.range` loop.
    jit_draw: without `whole_loop_xla`, XLA-compile `batch_fn` (`Execution.draw`).
  """
  if whole_loop_xla:
    @tf.function(jit_compile=True)
    def steps(num_steps):
      # An explicit while_loop, not `for _ in tf.range(num_steps)`: XLA takes a Range's
      # length as a compile-time constant and would compile once per distinct loop length
      # (a loop cut short to land on an eval would compile the program again).
      def body(i):
        step_fn(batch_fn(tf.convert_to_tensor(global_step)))
        return (i + 1,)
      tf.while_loop(lambda i: i < num_steps, body, (tf.zeros_like(num_steps),))

    @tf.function
    def loop(num_steps):
      sums.reset()
      strategy.run(steps, args=(num_steps,))
      return sums.read()

    return loop

  draw = tf.function(batch_fn, jit_compile=True) if jit_draw else batch_fn

  @tf.function
  def loop(num_steps):
    sums.reset()
    for _ in tf.range(num_steps):
      strategy.run(lambda: step_fn(draw(tf.convert_to_tensor(global_step))))
    return sums.read()

  return loop


def make_replica_train_loop(strategy, learner, batch_fn, jit):
  """Returns `loop(data, num_steps)`, num_steps >= 1: MirroredStrategy, device-resident data.

  Per replica and step one program (`Learner.replica_program`, one XLA program if `jit`):
  apply the previous step's all-reduced gradients to this replica's copies, draw this
  replica's slice of the global batch on its device, compute its flat gradients. Between two
  programs one all-reduce of that vector in the replica context, outside XLA (XLA:CPU has no
  collectives). The last step's update runs after the loop, so a call returns with every
  variable updated. No distributed iterator and no merge_call runs in the loop
  (measured: docs/benchmarks.md).

  Args:
    strategy: a MirroredStrategy (one worker).
    learner: the `learner.Learner`.
    batch_fn: `(global step, data) -> batch` of this replica, `data` the per-replica
      device-resident split (both from `data.make_device_batch_fn`).
    jit: XLA-compile each replica's program (`Execution.step`).
  """
  program = learner.replica_program(strategy, batch_fn, jit)

  def replica(reduced, d, apply, compute, reduce=True):
    flat = program(reduced, apply, compute, d)  # a Python call around it: see _jit
    if not reduce:
      return flat
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, flat)

  @tf.function
  def loop(d, num_steps):
    yes, no = tf.constant(True), tf.constant(False)
    learner.loop_sums.reset()
    first = tf.zeros([learner.flat_size()])
    reduced = strategy.run(lambda d: replica(first, d, no, yes), args=(d,))
    for _ in tf.range(num_steps - 1):
      reduced = strategy.run(lambda r, d: replica(r, d, yes, yes), args=(reduced, d))
    strategy.run(lambda r, d: replica(r, d, yes, no, reduce=False), args=(reduced, d))
    return learner.loop_sums.read()

  return loop


def make_eval_loop(strategy, step_fn, jit_step):
  """Returns `loop(dataset)`, running `step_fn(batch)` over one pass of a distributed dataset."""
  step = _jit(step_fn) if jit_step else step_fn

  @tf.function
  def loop(dataset):
    for batch in dataset:
      strategy.run(step, args=(batch,))

  return loop


class Runner:
  """Runs global steps and eval passes of a task, as its `Execution` says.

  Build it with `trainer.step.build.make_runner`. Every method is called at a loop boundary, in the
  cross-replica context.

  Args:
    strategy: the run's strategy.
    learner: a `learner.Learner` (`train_step`, `eval_step`, sums, `optimizer.iterations`).
    execution: a `trainer.step.execution.Execution`.
    eval_dataset: a distributed dataset, one pass of the held-out split.
    batch_fn: with device-resident input, `(global step, data) -> batch` of the calling
      replica (`data.make_device_batch_fn`).
    data: with device-resident input, the split on the device(s) that `batch_fn` reads.
    iterator: otherwise, the distributed training iterator.
    make_iterator: with an iterator, `start_step -> iterator` positioned at a global step (a
      rollback repositions the input there).
    eval_examples: the examples an eval pass must cover (a user's stream says so; fewer is
      one warning line), or None.
  """

  def __init__(self, strategy, learner, execution, eval_dataset, *, batch_fn=None,
               data=None, iterator=None, make_iterator=None, eval_examples=None):
    self.learner = learner
    self._eval_examples = eval_examples
    self._iterator = iterator
    self._make_iterator = make_iterator
    self._eval_dataset = eval_dataset
    sums = learner.loop_sums
    if execution.replica_update:
      draw = tf.function(batch_fn, jit_compile=True) if execution.draw else batch_fn
      loop = make_replica_train_loop(strategy, learner, draw, execution.step)
      self._run = lambda n: loop(data, tf.constant(n))
    elif execution.device_input:
      loop = make_device_train_loop(strategy, learner.train_step, lambda s: batch_fn(s, data),
                                    learner.optimizer.iterations, sums,
                                    whole_loop_xla=execution.whole_loop,
                                    jit_draw=execution.draw)
      self._run = lambda n: loop(tf.constant(n))
    else:
      loop = make_train_loop(strategy, learner.train_step, execution.step, sums)
      self._run = lambda n: loop(self._iterator, tf.constant(n))
    self._loop = loop
    self._eval_loop = make_eval_loop(strategy, learner.eval_step, execution.step)

  def tracing_count(self) -> int:
    """How often the training loop was traced: 1 however many loop lengths ran (tested)."""
    return self._loop.experimental_get_tracing_count()

  def global_step(self) -> int:
    return int(self.learner.optimizer.iterations.numpy())  # int() alone fails on mirrored vars

  def train(self, num_steps) -> dict:
    """Runs `num_steps` >= 1 global steps; returns their mean train metrics (a host read), the
    run state's counters `skipped_updates` and `consecutive_skips` if it has one, and
    `step_losses` (each step's loss) if the learner records them."""
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    with testpoints.point("loop"):
      try:
        values = self._run(num_steps)
      except tf.errors.OutOfRangeError:  # the trainer's own inputs are endless; a user's not
        raise ConfigError(
            f"dataset: the train input ended at global step {self.global_step()}; a train "
            f"function of yours must return an endless tf.data.Dataset (end it with "
            f".repeat())") from None
    counters = {k: int(values.pop(k)) for k in ("skipped_updates", "consecutive_skips")
                if k in values}
    if "step_loss" in values:  # each step's mean loss (NaN: its update was skipped)
      loss, count = (np.asarray(values.pop(k))[:num_steps] for k in ("step_loss", "step_count"))
      with np.errstate(invalid="ignore", divide="ignore"):
        counters["step_losses"] = np.where(count > 0, loss / count, np.nan)
    if not float(values["count"]):  # every update skipped: no loss or metric to report
      return counters
    return {**_floats(self.learner.train_sums.result(values)), **counters}

  def reposition(self, step):
    """Makes the next batch that of global step `step` (after a rollback); device-resident
    input draws by `iterations` anyway."""
    if self._make_iterator is not None:
      self._iterator = self._make_iterator(step)

  def evaluate(self) -> dict:
    """One pass over the eval split; returns its metrics. With a weight average, a second
    pass with the averaged weights adds them as `ema_<metric>`."""
    with testpoints.point("eval"):
      metrics = self._evaluate()
      if self.learner.ema is not None:
        with self.learner.ema.swapped():
          metrics.update({f"ema_{k}": v for k, v in self._evaluate().items()})
      return metrics

  def _evaluate(self):
    self.learner.eval_sums.reset()
    self._eval_loop(self._eval_dataset)
    sums = self.learner.eval_sums.result()
    seen = float(sums["examples"])
    if self._eval_examples and seen < self._eval_examples:
      logging.warning("eval: the eval input gave %d examples, fewer than its num_eval_examples "
                      "%d; the eval metrics are of those %d", seen, self._eval_examples, seen)
      self._eval_examples = None  # said once
    return _floats(sums)


def _floats(sums):
  return {k: float(v) for k, v in sums.items() if k != "examples"}
