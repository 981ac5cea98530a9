"""MirroredStrategy on device-resident data (loop.make_replica_train_loop).

Each replica draws its slice of the global batch on its own device, the loop all-reduces one
flat gradient vector, and each replica applies it to its own copies with an XLA-compiled Keras
update (trainer/local_update.py). It must train exactly the run one replica trains (as the
tf.data path did), keep every replica's copies identical, trace once, and leave TF's and
Keras' objects as it found them.
"""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import build_parts, cpu, mirrored, one_line_error, small_run
from trainer.distribute import precision
from trainer.step import build
from trainer.step import execution
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError

pytestmark = pytest.mark.skipif(LEGACY_KERAS, reason="tf_keras keeps the merge_call path")


class _Unused(keras.layers.Layer):
  """A Dense layer with a second kernel it never uses: its gradient is None."""

  def build(self, input_shape):
    self.kernel = self.add_weight(shape=(input_shape[-1], 10), initializer="glorot_uniform")
    self.unused = self.add_weight(shape=(3,), initializer="ones")

  def call(self, x):
    return tf.matmul(x, self.kernel)


def unused_weight_mlp(input_shape, num_outputs):
  """config.model plug-in: an MLP with a weight that gets no gradient (None stays None)."""
  inputs = keras.Input(input_shape)
  x = keras.layers.Dense(32, activation="relu")(keras.layers.Flatten()(inputs))
  return keras.Model(inputs, _Unused()(x))


def _train(strategy, info, steps=(3, 1, 4), **fields):
  config = small_run("", **{"model": "mlp", "global_batch_size": 32, **fields})
  with precision.global_policy("float32"):
    parts = build_parts(config, strategy, info=info)
    trainer = build.make_runner(parts)
    metrics = [trainer.train(n) for n in steps]
  return parts, trainer, metrics


def _values(variables):
  return [np.array(v.read_value() if hasattr(v, "read_value") else v) for v in variables]


RUNS = {
    "adamw": {"optimizer.weight_decay": 0.05},
    "sgd_clipnorm": {"optimizer.name": "sgd", "optimizer.momentum": 0.9,
                     "optimizer.clipnorm": 0.05},  # small enough to clip every step
    "accum_ema": {"grad_accum_steps": 2, "ema_decay": 0.9},
    "none_gradient": {"model": "tests.test_mirrored_device:unused_weight_mlp"},
}


@pytest.mark.parametrize("run,replicas", [
    ("adamw", 2), pytest.param("sgd_clipnorm", 2, marks=pytest.mark.slow),
    pytest.param("accum_ema", 4, marks=pytest.mark.slow), ("none_gradient", 2)])
def test_replicas_train_exactly_like_one(digits, run, replicas):
  one, _, one_metrics = _train(cpu(), digits, **RUNS[run])
  parts, trainer, metrics = _train(mirrored(replicas), digits, **RUNS[run])
  assert parts.execution.replica_update and parts.execution.step
  assert trainer.global_step() == 8 and trainer.tracing_count() == 1  # 3 lengths, 1 trace
  for a, b in zip(_values(one.model.weights), _values(parts.model.weights)):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
  for a, b in zip(_values(one.optimizer.variables), _values(parts.optimizer.variables)):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
  for a, b in zip(one_metrics, metrics):
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
  if parts.learner.ema is not None:
    for a, b in zip(_values(one.learner.ema.averages), _values(parts.learner.ema.averages)):
      np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)
  if run == "none_gradient":  # no update at all, not a zero-gradient one (weight decay, momentum)
    np.testing.assert_array_equal(_values([parts.model.layers[-1].unused])[0], np.ones(3))
  if run == "sgd_clipnorm":  # the control: the clip was active, so it clipped the global batch
    unclipped, _, _ = _train(cpu(), digits, **{**RUNS[run], "optimizer.clipnorm": 0.0})
    assert not np.allclose(_values(unclipped.model.weights)[0], _values(one.model.weights)[0],
                           rtol=1e-3)


def test_every_replica_keeps_identical_copies_and_the_hooks_are_undone(digits):
  strategy = mirrored(2)
  parts, _, _ = _train(strategy, digits, ema_decay=0.9)
  variables = parts.model.weights + parts.optimizer.variables
  for v in variables:
    copies = strategy.experimental_local_results(getattr(v, "value", v))
    assert len(copies) == 2 and np.array(copies[0]).tobytes() == np.array(copies[1]).tobytes()
  assert "_use_merge_call" not in vars(strategy.extended)
  assert "_all_reduce_sum_gradients" not in vars(parts.optimizer)
  assert (parts.optimizer.iterations.value.aggregation
          == tf.VariableAggregation.ONLY_FIRST_REPLICA)


def test_the_plan_per_input_mode_and_model():
  two = mirrored(2)
  plan = lambda **kw: execution.choose(  # noqa: E731
      two, **{"jit_compile": True, "has_convolutions": False, "input_mode": "auto",
              "device_input_possible": True, "replica_update": True, **kw})
  assert plan() == execution.Execution(device_input=True, step=True, gradients=False,
                                            whole_loop=False, draw=False, replica_update=True)
  assert "each replica's whole step" in plan().describe()
  convs = plan(has_convolutions=True)  # XLA:CPU convolutions are slow: only the draw compiles
  assert (convs.step, convs.draw, convs.replica_update) == (False, True, True)
  streamed = plan(input_mode="tf.data")
  assert (streamed.device_input, streamed.replica_update, streamed.gradients) == (
      False, False, True)


def test_clipnorm_on_tf_data_replicas_is_refused_under_keras_3(digits):
  """Keras 3 clips per replica before its all-reduce: only the replica-update path clips the
  global batch's gradient (above), so tf.data input on several replicas refuses clipnorm."""
  with pytest.raises(ConfigError) as e:
    _train(mirrored(2), digits, steps=(), input_mode="tf.data",
           **{"optimizer.clipnorm": 1.0})
  one_line_error(e, "optimizer.clipnorm", "all-reduce", "clipnorm 0")
  _train(cpu(), digits, steps=(1,), input_mode="tf.data", **{"optimizer.clipnorm": 1.0})
