"""A task applied to a model and an optimizer: the per-replica step functions and metric sums.

`train_step` and `eval_step` run in a replica context (inside `strategy.run`), once per step,
and only update variables. Metrics are sums in sync-on-read variables, so reading them (at a
loop boundary, in the cross-replica context) adds up every replica, and nothing is read inside
the loop. Build a `Learner` inside `strategy.scope()`.
"""

import numpy as np
import tensorflow as tf

from trainer.step import local_update, records, update


_sum_variable = records.sum_variable


class Sums:
  """Weighted loss sum, example count and the task's metric sums; `result()` its metrics.

  A step's sums are computed (`of`), then added (`add`), with a weight of 0 for an update
  that was skipped; the mirrored device path holds a step's sums (`hold`) until the next
  program knows whether its update was applied (`commit`).
  """

  def __init__(self, prefix, task, num_outputs):
    self._task = task
    shapes = {"loss": (), "count": (), **task.sum_shapes(num_outputs)}
    self._vars = {k: _sum_variable(f"{prefix}_{k}", s) for k, s in shapes.items()}
    self._held = {k: _sum_variable(f"{prefix}_{k}_held", s) for k, s in shapes.items()}

  def of(self, per_example_loss, outputs, labels, weights):
    """{name: tensor}: one batch's sums (not added yet)."""
    return {"loss": tf.reduce_sum(per_example_loss * weights), "count": tf.reduce_sum(weights),
            **self._task.metric_sums(labels, outputs, weights)}

  def add(self, values, weight=None):
    """Adds `values` (from `of`), times `weight` (0 or 1) if given."""
    for name, value in values.items():
      self._vars[name].assign_add(value if weight is None else value * weight)

  def update(self, per_example_loss, outputs, labels, weights):
    self.add(self.of(per_example_loss, outputs, labels, weights))

  def hold(self, values):
    """Keeps `values` until `commit` (a step whose update is decided in the next program)."""
    for name, value in values.items():
      self._held[name].assign(value)

  def held(self):
    """{name: tensor} of the values held."""
    return {k: v.read_value() for k, v in self._held.items()}

  def commit(self, weight):
    """Adds the values held (times `weight`)."""
    self.add(self.held(), weight)

  def zeros(self):
    """{name: zeros} shaped like the sums."""
    return {k: tf.zeros(v.shape, v.dtype) for k, v in self._vars.items()}

  def reset(self):
    for v in [*self._vars.values(), *self._held.values()]:
      v.assign(tf.zeros_like(v))

  def read(self):
    """{name: tensor}: the sums over every replica (read in the cross-replica context; inside
    a loop's tf.function, so a call's metrics come back with its last step)."""
    return {k: v.read_value() for k, v in self._vars.items()}

  def totals(self, values=None):
    """{name: float or NumPy array}: `values` from `read()`, else read now (a host read)."""
    out = {k: np.asarray(v) for k, v in (self.read() if values is None else values).items()}
    return {k: float(v) if v.ndim == 0 else v for k, v in out.items()}

  def result(self, values=None):
    """The task's metrics from the totals, plus `examples` (the count)."""
    totals = self.totals(values)
    return {**self._task.summarize(totals), "examples": totals["count"]}


class Learner:
  """`task` on `model` with `optimizer`: the loss is a sum over the replica's examples divided
  by the *global* batch, so the all-reduced gradient is the global-batch mean.

  Args:
    model: a Keras model from inputs to the task's outputs.
    optimizer: a Keras optimizer (optionally a LossScaleOptimizer); `iterations` is the global
      step.
    task: a `trainer.task.Task`.
    global_batch_size: examples per global step, summed over replicas.
    num_outputs: the model's output width (`task.num_outputs(info)`).
    jit_gradients: XLA-compile forward and backward on their own (`Execution.gradients`).
    grad_accum_steps: micro-batches per replica per global step; their gradients are summed
      into one update (`train_step`).
    ema: a `trainer.ema.EMA` of the model, updated after every update, or None.
    state: the run's `trainer.step.state.RunState` (its step counters), or None.
    skip_nonfinite: skip an update whose all-reduced gradients are not all finite
      (`trainer.step.update`; `config.nonfinite='skip'`), counted in `state`.
    record_steps: > 0: keep each step's loss of a loop of up to this many steps
      (`records.StepLosses`: the LR range test reads them).
  """

  def __init__(self, model, optimizer, task, global_batch_size, num_outputs,
               jit_gradients=False, grad_accum_steps=1, ema=None, state=None,
               skip_nonfinite=False, record_steps=0):
    self.model = model
    self.optimizer = optimizer
    self.task = task
    self.global_batch_size = global_batch_size
    self.grad_accum_steps = int(grad_accum_steps)
    self.ema = ema
    self.state = state
    self.skip_nonfinite = bool(skip_nonfinite) and state is not None
    self.train_sums = Sums("train", task, num_outputs)
    self.step_losses = records.StepLosses(record_steps) if record_steps else None
    self.loop_sums = records.LoopSums(self.train_sums, state, self.step_losses,
                                      optimizer.iterations)
    self.eval_sums = Sums("eval", task, num_outputs)
    self._gradients = (tf.function(self._compute_gradients, jit_compile=True)
                       if jit_gradients else self._compute_gradients)

  def _compute_gradients(self, inputs, labels):
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      outputs = self.model(inputs, training=True)
      per_example = self.task.per_example_loss(labels, outputs)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
      if self.model.losses:  # once per global step: a k-th in each of k micro-batches
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses)) / (
            self.grad_accum_steps)
      if hasattr(self.optimizer, "scale_loss"):  # Keras 3 LossScaleOptimizer (and no-op)
        loss = self.optimizer.scale_loss(loss)
      elif hasattr(self.optimizer, "get_scaled_loss"):  # tf_keras LossScaleOptimizer
        loss = self.optimizer.get_scaled_loss(loss)
    grads = tape.gradient(loss, variables)
    if hasattr(self.optimizer, "get_unscaled_gradients"):
      grads = self.optimizer.get_unscaled_gradients(grads)
    return grads, per_example, outputs

  def train_step(self, batch):
    """One global step's share on this replica: gradients, update (or a skipped one), EMA,
    metric sums (nothing from a skipped step)."""
    step = tf.identity(self.optimizer.iterations)  # before the update
    grads, sums = self._batch_gradients(*batch)
    variables = self.model.trainable_variables
    if not self.skip_nonfinite:
      self.optimizer.apply_gradients(zip(grads, variables))
      if self.ema is not None:
        self.ema.update(self.optimizer.iterations)
      self._add(sums, step, None)
      return
    finite = update.finite_everywhere(update.local_finite(grads))
    update.apply_or_skip(self.optimizer, grads, variables, self.ema, finite)
    update.count(self.state, finite)
    self._add(sums, step, tf.cast(finite, tf.float32))

  def _add(self, sums, step, weight):
    self.train_sums.add(sums, weight)
    if self.step_losses is not None:
      self.step_losses.add(sums, step, weight)

  def _batch_gradients(self, inputs, labels):
    """This replica's gradients of its batch and its metric sums, not added yet (k
    micro-batches, summed)."""
    if self.grad_accum_steps == 1:
      return self._micro_step(inputs, labels)
    return self._accumulated_gradients(inputs, labels)

  def _micro_step(self, inputs, labels):
    grads, per_example, outputs = self._gradients(inputs, labels)
    return grads, self.train_sums.of(per_example, outputs, labels, tf.ones_like(per_example))

  def _accumulated_gradients(self, inputs, labels):
    """The sum of the gradients of k equal slices of the replica's batch, one after another.

    Each slice's loss is already divided by the global batch, so the sum is the gradient of
    the whole global batch (as with k = 1, up to float rounding), while activations are held
    for one slice at a time. A `tf.while_loop`, so the model is traced once whatever k is.
    """
    k = self.grad_accum_steps
    split = lambda t: tf.reshape(t, tf.concat([[k, -1], tf.shape(t)[1:]], 0))
    inputs, labels = tf.nest.map_structure(split, (inputs, labels))
    variables = self.model.trainable_variables
    has_gradient = []  # filled while the body is traced: None stays None, as with k = 1

    def body(i, total, sums):
      micro = tf.nest.map_structure(lambda t: t[i], (inputs, labels))
      grads, micro_sums = self._micro_step(*micro)
      has_gradient[:] = [g is not None for g in grads]
      return (i + 1, [t if g is None else t + tf.convert_to_tensor(g)  # dense IndexedSlices
                      for t, g in zip(total, grads)],
              {n: sums[n] + micro_sums[n] for n in sums})

    zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
    no_sums = self.train_sums.zeros()
    _, total, sums = tf.while_loop(lambda i, *_: i < k, body, (tf.constant(0), zeros, no_sums))
    return [t if has else None for t, has in zip(total, has_gradient)], sums

  # The mirrored device-resident path (loop.make_replica_train_loop): the replica computes its
  # share of the gradients as one flat vector, the loop all-reduces it outside XLA, and the next
  # program applies it to this replica's copies only (trainer/local_update.py).

  def replica_program(self, strategy, batch_fn, jit):
    """`program(reduced, apply, compute, data)`: one replica's step, one XLA program if `jit`.

    First, if `apply`: the update with `reduced` (the previous step's all-reduced flat
    gradients) and the EMA; then, if `compute`: this replica's batch of global step
    `iterations` (read after that update) by `batch_fn(step, data)`, its flat gradients (the
    program's output, zeros if not `compute`) and the train sums. Both flags are tensors, so
    the first step (no update yet), the middle ones and the last update share one program.
    """
    variables = self.model.trainable_variables

    def program(reduced, apply, compute, data):
      # Traced first, called last: tracing it tells which variables have a gradient (None
      # stays None, as in apply_gradients), which the update, traced next, needs to know.
      has_gradient = []

      def gradients():
        grads, sums = self._batch_gradients(
            *batch_fn(tf.convert_to_tensor(self.optimizer.iterations), data))
        self.train_sums.hold(sums)  # added by the next program, once the update is decided
        has_gradient[:] = [g is not None for g in grads]
        return tf.concat([tf.reshape(tf.cast(tf.zeros_like(v) if g is None else g,
                                             tf.float32), [-1])
                          for g, v in zip(grads, variables)], 0)

      compute_gradients = tf.function(gradients).get_concrete_function()
      tf.cond(apply, lambda: self._apply_flat(strategy, reduced, has_gradient),
              lambda: tf.constant(False))
      return tf.cond(compute, compute_gradients, lambda: tf.zeros_like(reduced))

    return tf.function(program, jit_compile=True) if jit else program

  def flat_size(self):
    """Length of the flat gradient vector `replica_program` returns."""
    return sum(v.shape.num_elements() for v in self.model.trainable_variables)

  def _apply_flat(self, strategy, flat, has_gradient):
    variables = self.model.trainable_variables
    pieces = tf.split(flat, [v.shape.num_elements() for v in variables])
    pairs = [(tf.cast(tf.reshape(g, v.shape), v.dtype), v)
             for g, v, has in zip(pieces, variables, has_gradient) if has]
    grads, variables = [g for g, _ in pairs], [v for _, v in pairs]
    step = tf.identity(self.optimizer.iterations)  # the step these gradients are of
    if self.step_losses is not None:
      self.step_losses.add(self.train_sums.held(), step, None)
    with local_update.local_update(strategy, self.optimizer):
      if not self.skip_nonfinite:
        self.optimizer.apply(grads, variables)
        if self.ema is not None:
          self.ema.update(self.optimizer.iterations)
        self.train_sums.commit(1.0)
        return tf.constant(True)
      # The gradients are all-reduced: the same decision on every replica.
      finite = tf.reduce_all(tf.math.is_finite(flat))
      update.apply_or_skip(self.optimizer, grads, variables, self.ema, finite)
      update.count(self.state, finite)
    self.train_sums.commit(tf.cast(finite, tf.float32))
    return tf.constant(True)

  def eval_step(self, batch):
    """Adds one padded eval batch to the eval sums (padding has weight 0)."""
    inputs, labels, weights = batch
    outputs = self.model(inputs, training=False)
    self.eval_sums.update(self.task.per_example_loss(labels, outputs), outputs, labels, weights)
