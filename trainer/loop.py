"""The compiled inner loops, and the `Trainer` that runs them (it owns `strategy.run`).

`make_train_loop(...)(iterator, num_steps)` runs `num_steps` global steps in one
`tf.function`: a `tf.range` loop around `strategy.run(step)`, so Python runs once per call, not
per step, and the learning-rate schedule, evaluated inside the optimizer at
`optimizer.iterations`, still moves every step. `num_steps` is a tensor, so a loop cut short
reuses the same trace. Nothing in a loop reads a value back to the host; `Trainer` reads the
metric sums once per call, after the loop.
"""

import tensorflow as tf

from trainer import hooks


def make_train_loop(strategy, step_fn, jit_step):
  """Returns `loop(iterator, num_steps)`, running `step_fn(batch)` on every replica.

  Args:
    strategy: the tf.distribute strategy the iterator and the variables belong to.
    step_fn: one replica's share of a global step; takes one per-replica batch.
    jit_step: XLA-compile `step_fn` as one cluster, optimizer update included
      (`CompilePlan.step`).
  """
  step = tf.function(step_fn, jit_compile=True) if jit_step else step_fn

  @tf.function
  def loop(iterator, num_steps):
    for _ in tf.range(num_steps):
      strategy.run(step, args=(next(iterator),))

  return loop


def make_device_train_loop(strategy, step_fn, batch_fn, global_step, whole_loop_xla=True,
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
    whole_loop_xla: compile all `num_steps` steps, batch draws included, as one XLA program
      (`CompilePlan.whole_loop`). If False, `step_fn` runs as the caller made it, in a
      `tf.range` loop.
    jit_draw: without `whole_loop_xla`, XLA-compile `batch_fn` (`CompilePlan.draw`).
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
      strategy.run(steps, args=(num_steps,))

    return loop

  draw = tf.function(batch_fn, jit_compile=True) if jit_draw else batch_fn

  @tf.function
  def loop(num_steps):
    for _ in tf.range(num_steps):
      strategy.run(lambda: step_fn(draw(tf.convert_to_tensor(global_step))))

  return loop


def make_eval_loop(strategy, step_fn, jit_step):
  """Returns `loop(dataset)`, running `step_fn(batch)` over one pass of a distributed dataset."""
  step = tf.function(step_fn, jit_compile=True) if jit_step else step_fn

  @tf.function
  def loop(dataset):
    for batch in dataset:
      strategy.run(step, args=(batch,))

  return loop


class Trainer:
  """Runs global steps and eval passes of a task, as its `CompilePlan` says.

  Build it with `trainer.build.make_trainer`. Every method is called at a loop boundary, in the
  cross-replica context.

  Args:
    strategy: the run's strategy.
    learner: a `learner.Learner` (`train_step`, `eval_step`, sums, `optimizer.iterations`).
    compile_plan: a `compile_plan.CompilePlan`.
    eval_dataset: a distributed dataset, one pass of the held-out split.
    batch_fn: with device-resident input, global step -> batch.
    iterator: otherwise, the distributed training iterator.
  """

  def __init__(self, strategy, learner, compile_plan, eval_dataset, *, batch_fn=None,
               iterator=None):
    self.learner = learner
    self._eval_dataset = eval_dataset
    if compile_plan.device_input:
      loop = make_device_train_loop(strategy, learner.train_step, batch_fn,
                                    learner.optimizer.iterations,
                                    whole_loop_xla=compile_plan.whole_loop,
                                    jit_draw=compile_plan.draw)
      self._run = lambda n: loop(tf.constant(n))
    else:
      loop = make_train_loop(strategy, learner.train_step, compile_plan.step)
      self._run = lambda n: loop(iterator, tf.constant(n))
    self._loop = loop
    self._eval_loop = make_eval_loop(strategy, learner.eval_step, compile_plan.step)

  def tracing_count(self) -> int:
    """How often the training loop was traced: 1 however many loop lengths ran (tested)."""
    return self._loop.experimental_get_tracing_count()

  def global_step(self) -> int:
    return int(self.learner.optimizer.iterations.numpy())  # int() alone fails on mirrored vars

  def train(self, num_steps) -> dict:
    """Runs `num_steps` global steps; returns their mean train metrics (a host read)."""
    self.learner.train_sums.reset()
    with hooks.point("loop"):
      self._run(num_steps)
    return _floats(self.learner.train_sums.result())

  def evaluate(self) -> dict:
    """One pass over the eval split; returns its metrics. With a weight average, a second
    pass with the averaged weights adds them as `ema_<metric>`."""
    with hooks.point("eval"):
      metrics = self._evaluate()
      if self.learner.ema is not None:
        with self.learner.ema.swapped():
          metrics.update({f"ema_{k}": v for k, v in self._evaluate().items()})
      return metrics

  def _evaluate(self):
    self.learner.eval_sums.reset()
    self._eval_loop(self._eval_dataset)
    return _floats(self.learner.eval_sums.result())


def _floats(sums):
  return {k: float(v) for k, v in sums.items() if k != "examples"}
