"""Image classification: loss, gradient step and metrics, per replica.

The task knows the model and the optimizer but not the loop: `train_step` and `eval_step` run
in a replica context (inside `strategy.run`), once per step, and only update variables.
Metrics are sums in sync-on-read variables, so reading them (at a loop boundary, in the
cross-replica context) adds up every replica, and nothing is read inside the loop.
"""

import tensorflow as tf



def _sum_variable(name):
  return tf.Variable(0.0, name=name, trainable=False, dtype=tf.float32,
                     synchronization=tf.VariableSynchronization.ON_READ,
                     aggregation=tf.VariableAggregation.SUM)


class _Sums:
  """Weighted loss sum, correct count and example count; read as mean loss and accuracy."""

  def __init__(self, prefix):
    self.loss, self.correct, self.count = (
        _sum_variable(f"{prefix}_{n}") for n in ("loss_sum", "correct", "count"))

  def update(self, per_example_loss, logits, labels, weights):
    hits = tf.cast(tf.equal(tf.argmax(logits, -1, output_type=tf.int32), labels), tf.float32)
    self.loss.assign_add(tf.reduce_sum(per_example_loss * weights))
    self.correct.assign_add(tf.reduce_sum(hits * weights))
    self.count.assign_add(tf.reduce_sum(weights))

  def reset(self):
    for v in (self.loss, self.correct, self.count):
      v.assign(0.0)

  def result(self):
    count = tf.maximum(self.count.read_value(), 1.0)
    return {"loss": self.loss.read_value() / count,
            "accuracy": self.correct.read_value() / count,
            "examples": self.count.read_value()}


class ClassificationTask:
  """Softmax cross-entropy on integer labels, mean over the *global* batch.

  Build it inside `strategy.scope()`.

  Args:
    model: a Keras model from images to float32 logits.
    optimizer: a Keras optimizer (optionally a LossScaleOptimizer for mixed_float16); its
      `iterations` is the global step.
    global_batch_size: examples per global step, summed over replicas. Each replica's loss is
      its sum divided by this, so the all-reduced gradient is the global-batch mean.
    jit_gradients: XLA-compile the forward and backward pass on its own. For strategies whose
      gradient all-reduce cannot sit inside an XLA cluster, the loop compiles only this part.
  """

  def __init__(self, model, optimizer, global_batch_size, jit_gradients=False):
    self.model = model
    self.optimizer = optimizer
    self.global_batch_size = global_batch_size
    self.train_sums = _Sums("train")
    self.eval_sums = _Sums("eval")
    self._gradients = (tf.function(self._compute_gradients, jit_compile=True)
                       if jit_gradients else self._compute_gradients)

  def _per_example_loss(self, labels, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(logits, tf.float32))

  def _compute_gradients(self, images, labels):
    variables = self.model.trainable_variables
    with tf.GradientTape() as tape:
      logits = self.model(images, training=True)
      per_example = self._per_example_loss(labels, logits)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=self.global_batch_size)
      if self.model.losses:
        loss += tf.nn.scale_regularization_loss(tf.add_n(self.model.losses))
      if hasattr(self.optimizer, "scale_loss"):  # Keras 3 LossScaleOptimizer (and no-op)
        loss = self.optimizer.scale_loss(loss)
      elif hasattr(self.optimizer, "get_scaled_loss"):  # tf_keras LossScaleOptimizer
        loss = self.optimizer.get_scaled_loss(loss)
    grads = tape.gradient(loss, variables)
    if hasattr(self.optimizer, "get_unscaled_gradients"):
      grads = self.optimizer.get_unscaled_gradients(grads)
    return grads, per_example, logits

  def train_step(self, batch):
    """One global step's share on this replica: gradients, update, metric sums."""
    images, labels = batch
    grads, per_example, logits = self._gradients(images, labels)
    self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
    self.train_sums.update(per_example, logits, labels, tf.ones_like(per_example))

  def eval_step(self, batch):
    """Adds one padded eval batch to the eval sums (padding has weight 0)."""
    images, labels, weights = batch
    logits = self.model(images, training=False)
    self.eval_sums.update(self._per_example_loss(labels, logits), logits, labels, weights)
