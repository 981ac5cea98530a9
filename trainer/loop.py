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


def make_device_train_loop(strategy, step_fn, batch_fn, global_step):
  """Returns `loop(num_steps)`: the whole loop as one XLA program, for one replica.

  Each step draws its batch on the device with `batch_fn(global_step)` (global_step is the
  optimizer's `iterations`, read after the previous step's update) instead of from a tf.data
  iterator, which XLA cannot compile; for small models this removes the per-step host
  dispatch that otherwise dominates.
  """

  @tf.function(jit_compile=True)
  def steps(num_steps):
    for _ in tf.range(num_steps):
      step_fn(batch_fn(tf.convert_to_tensor(global_step)))

  @tf.function
  def loop(num_steps):
    strategy.run(steps, args=(num_steps,))

  return loop


def make_eval_loop(strategy, step_fn, jit_step):
  """Returns `loop(dataset)`, running `step_fn(batch)` over one pass of a distributed dataset."""
  step = tf.function(step_fn, jit_compile=True) if jit_step else step_fn

  @tf.function
  def loop(dataset):
    for batch in dataset:
      strategy.run(step, args=(batch,))

  return loop
