"""The compiled inner loops. They know a step function and a strategy, nothing else.

`train_loop(iterator, num_steps)` runs `num_steps` global steps in one `tf.function`: a
`tf.range` loop around `strategy.run(step)`, so Python runs once per call, not per step, and
the learning-rate schedule, evaluated inside the optimizer at `optimizer.iterations`, still
moves every step. Nothing in here reads a value back to the host.
"""

import tensorflow as tf


def make_train_loop(strategy, step_fn, jit_step):
  """Returns `loop(iterator, num_steps)`, running `step_fn(batch)` on every replica.

  Args:
    strategy: the tf.distribute strategy the iterator and the variables belong to.
    step_fn: one replica's share of a global step; takes one per-replica batch.
    jit_step: XLA-compile `step_fn` as one cluster (including the optimizer update).
      Pass False where the strategy's all-reduce cannot be compiled (see
      `trainer.strategy.jit_replica_step`).
  """
  step = tf.function(step_fn, jit_compile=True) if jit_step else step_fn

  @tf.function
  def loop(iterator, num_steps):
    # num_steps is a tensor, so a short last loop reuses the same trace.
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
      (for small models this removes the per-step dispatch that otherwise dominates). If
      False, only `batch_fn` is XLA-compiled and `step_fn` runs as the caller made it, in a
      `tf.range` loop: for convolutions on XLA:CPU, which are slow in a compiled loop (see
      `trainer.strategy.xla_scope`).
    jit_draw: without `whole_loop_xla`, XLA-compile `batch_fn` (False: no XLA at all).
  """
  if whole_loop_xla:
    @tf.function(jit_compile=True)
    def steps(num_steps):
      for _ in tf.range(num_steps):
        step_fn(batch_fn(tf.convert_to_tensor(global_step)))

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
