"""Tasks: what a model is trained to do. `config.task` names one.

A task is a small object (subclass `Task`; `config.task = 'package.module:MyTask'` for your
own) that says, for one batch on one replica:

  per_example_loss(labels, outputs) -> float32 [b]       the loss to minimise, per example
  metric_sums(labels, outputs, weights) -> {name: sum}    weighted sums over the batch, of the
                                                          shapes `sum_shapes` gives; they add
                                                          up across replicas and batches
  summarize(totals) -> {name: float}                      the eval/train metrics from the summed
                                                          totals (`loss` and `count` included)
  serving_outputs(outputs) -> tensor                      what the exported model returns,
                                                          under the key `serving_key`
  outputs_from_serving(served) -> outputs                 back to what the loss and metrics
                                                          take (`trainer.evaluate --export`)

and, about the data: `num_outputs(info)` (the model's output width) and `check_data(info)`
(a ConfigError if the dataset cannot be this task's). `best` names the eval metric the end
summary reports the best of. Everything runs inside the compiled step except `summarize`,
which runs on the host once per loop, so sums (not means) are what cross replicas.
"""

import tensorflow as tf

from trainer.base import plugins
from trainer.base.compat import keras
from trainer.base.errors import ConfigError

TASKS = ("classification", "regression")


class Task:
  """The interface. Subclasses override what differs; see the module docstring."""

  name = "task"
  best = ("loss", "min")  # (eval metric, 'max' | 'min') the end summary reports the best of
  serving_key = "outputs"  # the output name of the exported serving signature

  def num_outputs(self, info) -> int:
    raise NotImplementedError

  def check_data(self, info) -> None:
    """Raises ConfigError if `info` (a data.DatasetInfo) cannot be this task's data."""

  def sum_shapes(self, num_outputs) -> dict:
    """{name: shape} of the sums `metric_sums` returns (besides `loss` and `count`)."""
    return {}

  def per_example_loss(self, labels, outputs):
    raise NotImplementedError

  def metric_sums(self, labels, outputs, weights) -> dict:
    return {}

  def summarize(self, totals) -> dict:
    """Host side: {metric: float} from the summed totals (floats or NumPy arrays)."""
    return {"loss": totals["loss"] / max(totals["count"], 1.0)}

  def serving_outputs(self, outputs):
    return outputs

  def outputs_from_serving(self, served):
    """Outputs that give the same loss and metrics as those `serving_outputs` made `served`
    from (override it with `serving_outputs`)."""
    return served

  def keras_loss(self):
    """The same loss as a Keras loss, for `model.compile` of the exported model."""
    raise NotImplementedError


class Classification(Task):
  """Softmax cross-entropy on int32 class ids; reports loss and accuracy; exports probabilities."""

  name = "classification"
  best = ("accuracy", "max")
  serving_key = "probabilities"

  def num_outputs(self, info):
    return info.num_classes

  def check_data(self, info):
    if info.label_dtype != "int32" or info.label_shape or info.num_classes < 2:
      raise ConfigError(f"task: 'classification' needs int32 class labels and >= 2 classes; "
                        f"dataset {info.name!r} has {info.label_dtype} labels of shape "
                        f"{info.label_shape} and {info.num_classes} classes (try "
                        f"task=regression)")

  def sum_shapes(self, num_outputs):
    return {"correct": ()}

  def per_example_loss(self, labels, outputs):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels, tf.cast(outputs, tf.float32))

  def metric_sums(self, labels, outputs, weights):
    hits = tf.equal(tf.argmax(outputs, -1, output_type=tf.int32), labels)
    return {"correct": tf.reduce_sum(tf.cast(hits, tf.float32) * weights)}

  def summarize(self, totals):
    count = max(totals["count"], 1.0)
    return {"loss": totals["loss"] / count, "accuracy": totals["correct"] / count}

  def serving_outputs(self, outputs):
    return tf.nn.softmax(tf.cast(outputs, tf.float32), axis=-1)

  def outputs_from_serving(self, served):
    # log p as logits: softmax(log p) = p, so the loss is -log p[label] (p clamped at the
    # smallest normal float32, so a probability that underflowed to 0 costs 87.3, not inf).
    return tf.math.log(tf.maximum(tf.cast(served, tf.float32), 1.17549435e-38))

  def keras_loss(self):
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Regression(Task):
  """Mean squared error on float32 targets; reports MSE, MAE and R^2 (averaged over targets,
  as scikit-learn's r2_score); exports the predictions."""

  name = "regression"
  best = ("r2", "max")
  serving_key = "predictions"

  def num_outputs(self, info):
    return max(1, int(tf.TensorShape(info.label_shape).num_elements() or 1))

  def check_data(self, info):
    if info.label_dtype != "float32" or len(info.label_shape) > 1:
      raise ConfigError(f"task: 'regression' needs float32 targets of shape () or (k,); "
                        f"dataset {info.name!r} has {info.label_dtype} labels of shape "
                        f"{info.label_shape} (try task=classification)")

  def sum_shapes(self, num_outputs):
    return {name: (num_outputs,) for name in ("squared_error", "abs_error", "y", "y2")}

  def _targets(self, labels, outputs):
    outputs = tf.cast(outputs, tf.float32)
    return tf.reshape(tf.cast(labels, tf.float32), tf.shape(outputs)), outputs

  def per_example_loss(self, labels, outputs):
    y, p = self._targets(labels, outputs)
    return tf.reduce_mean(tf.square(p - y), axis=-1)

  def metric_sums(self, labels, outputs, weights):
    y, p = self._targets(labels, outputs)
    w = weights[:, None]
    return {"squared_error": tf.reduce_sum(tf.square(p - y) * w, 0),
            "abs_error": tf.reduce_sum(tf.abs(p - y) * w, 0),
            "y": tf.reduce_sum(y * w, 0), "y2": tf.reduce_sum(tf.square(y) * w, 0)}

  def summarize(self, totals):
    n = max(totals["count"], 1.0)
    sse, y, y2 = totals["squared_error"], totals["y"], totals["y2"]
    sst = y2 - y * y / n  # the targets' sum of squares about their mean
    r2 = [1.0 - e / t if t > 0 else 0.0 for e, t in zip(sse, sst)]
    return {"loss": totals["loss"] / n, "mse": float(sse.mean()) / n,
            "mae": float(totals["abs_error"].mean()) / n, "r2": sum(r2) / len(r2)}

  def keras_loss(self):
    return keras.losses.MeanSquaredError()


def get_task(name) -> Task:
  """The task `config.task` names: 'classification', 'regression' or package.module:Class."""
  if name == "classification":
    return Classification()
  if name == "regression":
    return Regression()
  if not plugins.is_import_path(name):
    raise ConfigError(f"task: unknown {name!r}; allowed: {', '.join(TASKS)}, or "
                      f"package.module:TaskClass")
  cls = plugins.load_function("task", name)
  task = cls()
  missing = [m for m in ("per_example_loss", "num_outputs")
             if getattr(type(task), m, None) is getattr(Task, m)]
  if not isinstance(task, Task) or missing:
    raise ConfigError(f"task: {name!r} must subclass trainer.task.Task and define "
                      f"per_example_loss and num_outputs (missing: {', '.join(missing) or '-'})")
  return task
