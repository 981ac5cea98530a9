"""Tests for trainer.step.execution: the rules choosing what XLA compiles, and the TF behaviour
they rest on (replicas aggregate gradients like one device on the full batch; merge_call cannot
be XLA-compiled under MirroredStrategy)."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import mirrored
from trainer.step import execution
from trainer.distribute import strategy as ts
from trainer.base.compat import keras
from trainer.base.errors import ConfigError


def _choose(strategy, jit=True, convs=False, mode="auto", possible=True):
  return execution.choose(strategy, jit_compile=jit, has_convolutions=convs,
                             input_mode=mode, device_input_possible=possible)


def test_jit_replica_step_by_strategy_kind():
  default = tf.distribute.get_strategy()
  assert execution.jit_replica_step(default)
  assert execution.jit_replica_step(ts.get_strategy("cpu"))
  assert not execution.jit_replica_step(ts.get_strategy("mirrored"))
  one_replica_mirrored = mirrored(1)
  assert not execution.jit_replica_step(one_replica_mirrored)  # merge_call, not the count


def test_convolutions_stay_off_xla_cpu():
  one, two = tf.distribute.OneDeviceStrategy("/cpu:0"), mirrored(2)
  assert execution.on_cpu(one) and execution.on_cpu(two)
  plan = _choose(one, possible=False)
  assert (plan.step, plan.gradients, plan.whole_loop, plan.draw) == (True, False, False, False)
  plan = _choose(two, possible=False)
  assert (plan.step, plan.gradients) == (False, True)
  for strategy in (one, two):
    for plan in (_choose(strategy, convs=True, possible=False),
                 _choose(strategy, jit=False, possible=False)):
      assert not (plan.step or plan.gradients or plan.whole_loop or plan.draw), plan


def test_device_input_rules():
  one = tf.distribute.OneDeviceStrategy("/cpu:0")
  whole = _choose(one)
  assert whole.device_input and whole.whole_loop and whole.step and not whole.draw
  assert whole.describe() == "input device; XLA compiles the whole loop (batch draws and steps)"
  conv = _choose(one, convs=True)  # the step on TF's kernels, only the draw compiled
  assert conv.device_input and conv.draw and not (conv.step or conv.whole_loop)
  assert conv.describe() == "input device; XLA compiles only the batch draw"
  plain = _choose(one, jit=False)
  assert plain.device_input and not (plain.draw or plain.step)
  assert plain.describe() == "input device; XLA compiles nothing"
  assert not _choose(one, mode="tf.data").device_input
  assert _choose(one, mode="tf.data").describe() == "input tf.data; XLA compiles the whole replica step"
  assert not _choose(one, possible=False).device_input  # auto falls back to tf.data
  with pytest.raises(ConfigError, match=r"^input_mode: 'device' needs one replica"):
    _choose(one, mode="device", possible=False)


def test_execution_is_frozen():
  plan = _choose(tf.distribute.OneDeviceStrategy("/cpu:0"))
  with pytest.raises(Exception):
    plan.step = False  # pylint: disable=assigning-non-slot



GLOBAL_BATCH = 8
STEPS = 4
_rng = np.random.default_rng(0)
_X = _rng.normal(size=(GLOBAL_BATCH * STEPS, 5)).astype("float32")
_Y = _rng.normal(size=(GLOBAL_BATCH * STEPS, 1)).astype("float32")
_INIT = [_rng.normal(size=(5, 3)).astype("float32"), np.zeros(3, "float32"),
         _rng.normal(size=(3, 1)).astype("float32"), np.full(1, 0.1, "float32")]


def _train(strategy, mode):
  """Trains STEPS SGD steps (two tf.function calls of two steps); returns weights, iterations.

  mode: "plain" (no XLA), "jit_grads" (XLA on forward+backward, apply_gradients outside),
  "jit_all" (XLA on the whole step including apply_gradients).
  """
  with strategy.scope():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3, activation="tanh"),
                              keras.layers.Dense(1)])
    model.set_weights(_INIT)
    optimizer = keras.optimizers.SGD(0.1, momentum=0.9)
    optimizer.build(model.trainable_variables)

  def grads_fn(x, y):
    with tf.GradientTape() as tape:
      per_example = tf.reduce_mean(tf.square(model(x, training=True) - y), axis=-1)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
    return loss, tape.gradient(loss, model.trainable_variables)

  def step_fn(x, y):  # only used jitted whole, by "jit_all"
    loss, grads = grads_fn(x, y)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  jitted_grads = tf.function(grads_fn, jit_compile=True)
  jitted_step = tf.function(step_fn, jit_compile=True)

  def replica_step(x, y):
    # A plain Python fn inside strategy.run, calling the jitted part: the loop's layout.
    if mode == "jit_all":
      return jitted_step(x, y)
    loss, grads = jitted_grads(x, y) if mode == "jit_grads" else grads_fn(x, y)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  dataset = tf.data.Dataset.from_tensor_slices((_X, _Y)).batch(GLOBAL_BATCH)
  iterator = iter(strategy.experimental_distribute_dataset(dataset))

  @tf.function
  def two_steps(iterator):
    for _ in tf.range(2):
      strategy.run(replica_step, args=next(iterator))

  for _ in range(STEPS // 2):
    two_steps(iterator)
  return [v.numpy() for v in model.trainable_variables], int(optimizer.iterations.numpy())


@pytest.fixture(scope="module")
def single_replica_result():
  return _train(ts.get_strategy("cpu"), "plain")


def test_single_replica_reference_moves_and_full_jit_matches(single_replica_result):
  weights, iterations = single_replica_result
  assert iterations == STEPS
  assert max(np.abs(w - w0).max() for w, w0 in zip(weights, _INIT)) > 1e-2
  jit_weights, jit_iterations = _train(ts.get_strategy("cpu"), "jit_all")
  assert jit_iterations == STEPS
  for got, want in zip(jit_weights, weights):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# (4, "jit_grads") also passes but costs 5-20 s on 2 cores (4 XLA compilations).
@pytest.mark.parametrize("replicas,mode", [(2, "plain"), (4, "plain"), (2, "jit_grads")])
def test_replicas_sum_gradients_once_and_step_once(single_replica_result, replicas, mode):
  strategy = mirrored(replicas)
  weights, iterations = _train(strategy, mode)
  assert iterations == STEPS  # once per strategy.run, not once per replica
  for got, want in zip(weights, single_replica_result[0]):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_mirrored_cannot_jit_apply_gradients():
  # Why execution.jit_replica_step(mirrored) is False; if Keras/TF lift this, revisit it.
  with pytest.raises(RuntimeError, match="`merge_call` called while defining a new graph"):
    _train(mirrored(2), "jit_all")
