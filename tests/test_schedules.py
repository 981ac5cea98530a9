"""The schedule formula, its Keras object, serialisation and helpers."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import schedules
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError

needs_accumulation = pytest.mark.skipif(
    LEGACY_KERAS, reason="tf_keras optimizers have no gradient_accumulation_steps")


def reference(s, w, h, t, a, b, f):
  """DESIGN.md section 1, written as plainly as possible, one scalar step at a time."""
  s = max(s, 0)
  if s < w:
    return a + (b - a) * s / w
  if s < w + h:
    return b
  if s <= t and t > w + h:
    return f + (b - f) * 0.5 * (1 + math.cos(math.pi * (s - w - h) / (t - w - h)))
  return f


# (warmup_steps, hold, total_steps, start_lr, target_lr, final_lr)
CASES = [
    (10, 0, 50, 0.0, 1e-3, 0.0),  # the common case
    (10, 5, 50, 1e-4, 3e-3, 1e-5),  # hold, non-zero start and final
    (0, 0, 40, 0.0, 0.1, 0.0),  # no warmup: starts at target
    (0, 7, 40, 0.0, 0.1, 0.01),  # no warmup, hold
    (20, 0, 20, 0.0, 1.0, 0.0),  # warmup only, no decay phase
    (10, 10, 20, 0.5, 1.0, 0.2),  # warmup + hold only, no decay phase
    (5, 0, 6, 2.0, 1.0, 0.0),  # warmup *down* from a larger start
    (0, 0, 1, 0.0, 1.0, 0.0),  # shortest schedule
]


def expected(case, steps):
  return np.array([reference(int(s), *case) for s in steps])


@pytest.mark.parametrize("case", CASES)
def test_numpy_and_python_match_reference_at_every_step(case):
  w, h, t, a, b, f = case
  steps = np.arange(0, t + 5)
  got = schedules.lr_warmup_cosine_decay(steps, w, h, t, a, b, f)
  assert isinstance(got, np.ndarray) and got.shape == steps.shape
  np.testing.assert_allclose(got, expected(case, steps), rtol=1e-12, atol=1e-15)
  for s in (0, w, w + h, t, t + 3):
    one = schedules.lr_warmup_cosine_decay(s, w, h, t, a, b, f)
    assert isinstance(one, float)
    assert one == pytest.approx(reference(s, *case), abs=1e-15)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [tf.int32, tf.int64, tf.float32])
def test_tf_eager_and_xla_match_reference(case, dtype):
  w, h, t, a, b, f = case
  steps = tf.range(0, t + 5, dtype=tf.int64)
  want = expected(case, steps.numpy())
  sched = schedules.WarmupCosineDecay(a, b, w, t, hold=h, final_lr=f)
  fn = lambda s: schedules.lr_warmup_cosine_decay(s, w, h, t, a, b, f)  # noqa: E731
  for impl in (fn, sched):
    eager = impl(tf.cast(steps, dtype))
    assert eager.dtype == tf.float32
    np.testing.assert_allclose(eager.numpy(), want, rtol=1e-5, atol=1e-7)
    # A scalar step, as an optimizer calls it, inside one XLA program.
    xla = tf.function(lambda s, impl=impl: impl(s), jit_compile=True)
    got = np.array([xla(tf.constant(int(s), dtype)).numpy() for s in steps.numpy()])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_traces_once_for_every_step():
  """Branch-free: one trace serves every phase (no Python branch on the step)."""
  sched = schedules.WarmupCosineDecay(0.0, 1.0, 10, 100, hold=10)
  fn = tf.function(sched, jit_compile=True)
  values = [float(fn(tf.constant(s, tf.int64))) for s in (0, 5, 15, 50, 100, 1000)]
  assert fn.experimental_get_tracing_count() == 1
  assert values[0] == 0.0 and values[2] == 1.0 and values[-1] == 0.0


@pytest.mark.parametrize("w,t,a,b,f", [(10, 50, 0.0, 1e-3, 0.0), (0, 30, 0.0, 0.1, 0.01),
                                       (7, 8, 1e-4, 2e-3, 1e-5)])
def test_equals_keras_cosine_decay_with_warmup_when_no_hold(w, t, a, b, f):
  keras_sched = keras.optimizers.schedules.CosineDecay(
      initial_learning_rate=a, decay_steps=t - w, alpha=f / b, warmup_target=b,
      warmup_steps=w)
  ours = schedules.WarmupCosineDecay(a, b, w, t, final_lr=f)
  steps = tf.range(0, t + 10)
  want = np.array([float(keras_sched(s)) for s in steps])
  np.testing.assert_allclose(ours(steps).numpy(), want, rtol=1e-5, atol=1e-8)


def test_start_lr_is_honoured_and_no_warmup_does_not_divide_by_zero():
  # The widely copied blog version ignores start_lr and divides by warmup_steps.
  assert schedules.lr_warmup_cosine_decay(0, 10, 0, 100, start_lr=0.25, target_lr=1.0) == 0.25
  lr = schedules.WarmupCosineDecay(0.25, 1.0, 0, 100)(tf.range(0, 3)).numpy()
  assert np.all(np.isfinite(lr)) and lr[0] == 1.0


def test_huge_and_negative_steps():
  sched = schedules.WarmupCosineDecay(0.1, 1.0, 10, 100, final_lr=0.05)
  big = tf.constant([2**31 - 1, 2**40, 2**62], tf.int64)
  np.testing.assert_array_equal(sched(big).numpy(), np.float32(0.05))
  assert float(sched(tf.constant(-5))) == pytest.approx(0.1)
  assert schedules.lr_warmup_cosine_decay(10**18, 10, 0, 100, final_lr=0.05) == 0.05


def test_integer_learning_rates_are_computed_in_float():
  sched = schedules.WarmupCosineDecay(0, 1, 4, 8)  # Keras's CosineDecay raises on int LRs
  np.testing.assert_allclose(sched(tf.range(5)).numpy(), [0, 0.25, 0.5, 0.75, 1.0])


def test_fractional_steps_interpolate():
  assert schedules.lr_warmup_cosine_decay(2.5, 10, 0, 100, 0.0, 1.0) == pytest.approx(0.25)
  assert float(schedules.WarmupCosineDecay(0.0, 1.0, 10, 100)(2.5)) == pytest.approx(0.25)


BAD = [
    (dict(warmup_steps=-1), "warmup_steps"),
    (dict(warmup_steps=2.5), "warmup_steps"),
    (dict(warmup_steps=True), "warmup_steps"),
    (dict(hold=-3), "hold"),
    (dict(total_steps=0), "total_steps"),
    (dict(total_steps="100"), "total_steps"),
    (dict(warmup_steps=60, hold=50, total_steps=100), "total_steps"),
    (dict(start_lr=-1e-3), "start_lr"),
    (dict(start_lr=float("nan")), "start_lr"),
    (dict(target_lr=0.0), "target_lr"),
    (dict(target_lr=-1.0), "target_lr"),
    (dict(target_lr=float("inf")), "target_lr"),
    (dict(target_lr=None), "target_lr"),
    (dict(final_lr=-0.1), "final_lr"),
    (dict(final_lr=float("nan")), "final_lr"),
]


@pytest.mark.parametrize("override,field", BAD)
def test_every_invalid_argument_names_itself(override, field):
  kwargs = dict(warmup_steps=10, hold=0, total_steps=100, start_lr=0.0, target_lr=1e-3,
                final_lr=0.0)
  kwargs.update(override)
  for build in (lambda: schedules.WarmupCosineDecay(**kwargs),
                lambda: schedules.lr_warmup_cosine_decay(0, **kwargs)):
    with pytest.raises(ValueError, match=rf"^{field}: ") as info:
      build()
    assert isinstance(info.value, ConfigError)
    assert "\n" not in str(info.value)


def test_numpy_integer_arguments_are_accepted():
  sched = schedules.WarmupCosineDecay(np.float32(0), np.float64(1.0), np.int64(2), np.int32(4))
  assert (sched.warmup_steps, sched.total_steps) == (2, 4)
  assert isinstance(sched.warmup_steps, int)


def test_config_round_trip_and_keras_serialisation():
  sched = schedules.WarmupCosineDecay(1e-4, 3e-3, 10, 100, hold=5, final_lr=1e-5,
                                      gradient_accumulation_steps=3)
  assert sched.get_config()["gradient_accumulation_steps"] == 3
  clone = schedules.WarmupCosineDecay.from_config(sched.get_config())
  assert clone.gradient_accumulation_steps == 3
  steps = tf.range(0, 360)
  np.testing.assert_array_equal(clone(steps).numpy(), sched(steps).numpy())
  blob = keras.saving.serialize_keras_object(sched)
  # Found through the registry, not through custom_objects.
  again = keras.saving.deserialize_keras_object(blob)
  assert isinstance(again, schedules.WarmupCosineDecay)
  assert again.get_config() == sched.get_config()


def _tiny_model():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  sched = schedules.WarmupCosineDecay(0.0, 0.1, 4, 20, hold=2, final_lr=0.001)
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=sched), loss="mse")
  return model, sched


def test_keras_file_loads_without_custom_objects_and_resumes_the_schedule(tmp_path):
  model, sched = _tiny_model()
  x, y = np.ones((12, 3), "float32"), np.zeros((12, 2), "float32")
  model.fit(x, y, batch_size=2, epochs=1, verbose=0)  # 6 global steps
  path = str(tmp_path / "m.keras")
  model.save(path)

  loaded = keras.models.load_model(path)  # no custom_objects
  opt = loaded.optimizer
  assert int(opt.iterations) == 6
  assert isinstance(opt._learning_rate, schedules.WarmupCosineDecay)  # pylint: disable=protected-access
  assert opt._learning_rate.get_config() == sched.get_config()  # pylint: disable=protected-access
  lr_now = lambda: float(opt._learning_rate(opt.iterations))  # pylint: disable=protected-access
  assert lr_now() == pytest.approx(float(sched(6)))
  loaded.fit(x, y, batch_size=2, epochs=1, verbose=0)
  assert int(opt.iterations) == 12  # continued, not restarted
  assert lr_now() == pytest.approx(float(sched(12)))


def test_a_config_saved_before_gradient_accumulation_steps_still_loads():
  old = {"start_lr": 0.0, "target_lr": 0.1, "warmup_steps": 4, "total_steps": 20, "hold": 2,
         "final_lr": 0.001, "name": None}  # get_config() before the argument existed
  sched = schedules.WarmupCosineDecay.from_config(old)
  assert sched.gradient_accumulation_steps == 1
  assert sched.get_config() == dict(old, gradient_accumulation_steps=1)
  blob = keras.saving.serialize_keras_object(schedules.WarmupCosineDecay(**old))
  blob["config"].pop("gradient_accumulation_steps")
  again = keras.saving.deserialize_keras_object(blob)
  np.testing.assert_array_equal(again(tf.range(25)).numpy(), sched(tf.range(25)).numpy())


@pytest.mark.parametrize("k", [0, -1, 2.5, True, None, "4"])
def test_invalid_gradient_accumulation_steps_names_itself(k):
  with pytest.raises(ConfigError, match=r"^gradient_accumulation_steps: must be an integer >= 1"):
    schedules.WarmupCosineDecay(0.0, 0.1, 4, 20, gradient_accumulation_steps=k)


@pytest.mark.parametrize("dtype", [tf.int32, tf.int64, tf.float32])
def test_accumulation_evaluates_the_formula_at_the_floor_of_step_over_k(dtype):
  """Micro steps u*k .. u*k + k - 1 all give lr(u), eagerly and in one XLA trace."""
  k, case = 4, (6, 3, 30, 0.01, 0.5, 0.02)
  w, h, t, a, b, f = case
  sched = schedules.WarmupCosineDecay(a, b, w, t, hold=h, final_lr=f,
                                      gradient_accumulation_steps=k)
  micro = np.arange(0, (t + 3) * k)
  want = expected(case, micro // k)
  np.testing.assert_allclose(sched(tf.constant(micro, dtype)).numpy(), want, rtol=1e-5,
                             atol=1e-7)
  xla = tf.function(sched, jit_compile=True)
  got = [float(xla(tf.constant(m, dtype))) for m in micro]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert xla.experimental_get_tracing_count() == 1


def _constant_gradient_model(optimizer):
  """w starts at 0 and the loss is mean(x * w) on x = 1: every gradient is exactly 1."""
  model = keras.Sequential([keras.Input((1,)),
                            keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
  model.compile(optimizer, loss=lambda y_true, y_pred: tf.reduce_mean(y_pred))
  return model


class _Weights(keras.callbacks.Callback):
  """The weight after every micro batch."""

  def on_train_begin(self, logs=None):
    self.w = [float(self.model.layers[0].kernel.numpy().ravel()[0])]

  def on_train_batch_end(self, batch, logs=None):
    self.w.append(float(self.model.layers[0].kernel.numpy().ravel()[0]))


def applied_lrs(optimizer, k, updates):
  """The rate each real update applied, read from the weights: delta_w = -lr * mean_grad = -lr.

  Also checks that the weight moves only at the last micro step of each group of k.
  """
  model, weights = _constant_gradient_model(optimizer), _Weights()
  data = np.ones((k * updates, 1), "float32")
  model.fit(data, data, batch_size=1, epochs=1, shuffle=False, callbacks=[weights], verbose=0)
  assert int(model.optimizer.iterations) == updates
  delta = -np.diff(weights.w).reshape(updates, k)
  np.testing.assert_array_equal(delta[:, :-1], 0.0)  # accumulating, not updating
  return delta[:, -1]


ACC = dict(start_lr=0.01, target_lr=0.5, warmup_steps=6, total_steps=20, hold=2, final_lr=0.02)


@needs_accumulation
@pytest.mark.parametrize("make", [
    lambda lr: keras.optimizers.SGD(lr, gradient_accumulation_steps=4),
    lambda lr: keras.optimizers.AdamW(lr, weight_decay=0.0, epsilon=1e-12,
                                      gradient_accumulation_steps=4),
], ids=["sgd", "adamw"])
def test_under_keras_accumulation_real_update_u_applies_lr_u(make):
  """Adam's step is lr * m_hat / sqrt(v_hat) = lr for a constant gradient, like SGD's."""
  sched = schedules.WarmupCosineDecay(**ACC, gradient_accumulation_steps=4)
  got = applied_lrs(make(sched), 4, 24)
  want = schedules.lr_warmup_cosine_decay(np.arange(24), ACC["warmup_steps"], ACC["hold"],
                                          ACC["total_steps"], ACC["start_lr"],
                                          ACC["target_lr"], ACC["final_lr"])
  np.testing.assert_allclose(got, want, rtol=2e-5)


@needs_accumulation
def test_under_keras_accumulation_a_plain_keras_schedule_warms_up_k_times_too_fast():
  k, w, t, a, b = 4, 8, 24, 0.0, 0.5
  keras_sched = keras.optimizers.schedules.CosineDecay(a, t - w, warmup_target=b,
                                                       warmup_steps=w)
  got = applied_lrs(keras.optimizers.SGD(keras_sched, gradient_accumulation_steps=k), k, t)
  # Keras evaluates it at the micro step u*k + k - 1: warmup is over after 2 updates, not 8.
  micro = np.arange(t) * k + k - 1
  np.testing.assert_allclose(got, [float(keras_sched(m)) for m in micro], rtol=1e-5)
  assert got[w // k - 1] == pytest.approx(b * (w - 1) / w, rel=1e-5) and got[w // k] < b
  ours = schedules.WarmupCosineDecay(a, b, w, t, gradient_accumulation_steps=k)
  fixed = applied_lrs(keras.optimizers.SGD(ours, gradient_accumulation_steps=k), k, t)
  np.testing.assert_allclose(fixed, schedules.lr_warmup_cosine_decay(np.arange(t), w, 0, t, a, b),
                             rtol=1e-5, atol=1e-8)
  assert fixed[w // k] == pytest.approx(a + (b - a) * (w // k) / w, rel=1e-5)  # warming up


def test_keras_file_keeps_gradient_accumulation_steps(tmp_path):
  sched = schedules.WarmupCosineDecay(0.0, 0.1, 4, 20, gradient_accumulation_steps=4)
  extra = {} if LEGACY_KERAS else {"gradient_accumulation_steps": 4}
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(optimizer=keras.optimizers.Adam(learning_rate=sched, **extra), loss="mse")
  x, y = np.ones((12, 3), "float32"), np.zeros((12, 2), "float32")
  model.fit(x, y, batch_size=2, epochs=1, verbose=0)
  model.save(str(tmp_path / "m.keras"))
  opt = keras.models.load_model(str(tmp_path / "m.keras")).optimizer
  loaded = opt._learning_rate  # pylint: disable=protected-access
  assert isinstance(loaded, schedules.WarmupCosineDecay)
  assert loaded.gradient_accumulation_steps == 4 and loaded.get_config() == sched.get_config()
  if not LEGACY_KERAS:
    micro = int(opt._iterations)  # pylint: disable=protected-access
    assert opt.gradient_accumulation_steps == 4 and micro == 6
    assert float(opt.learning_rate) == pytest.approx(float(sched(6)))  # lr(6 // 4) = lr(1)


def test_the_old_steps_per_epoch_underscore_keyword_still_works_and_warns():
  with pytest.warns(DeprecationWarning, match="steps_per_epoch_=.* is deprecated"):
    assert schedules.resolve_warmup_steps(1000, epochs=2, steps_per_epoch_=11) == 22
  with pytest.warns(DeprecationWarning, match="use steps_per_epoch="):
    assert schedules.total_steps_from_epochs(2.5, steps_per_epoch_=11) == 28
  with pytest.raises(TypeError, match="unexpected keyword"):
    schedules.total_steps_from_epochs(2.5, steps_per_epch=11)


def test_helpers_convert_durations_to_global_steps():
  assert schedules.steps_per_epoch(1437, 128) == 11  # drop_remainder
  assert schedules.steps_per_epoch(10, 128) == 1
  assert schedules.total_steps_from_epochs(2.5, 11) == 28  # rounded up
  assert schedules.resolve_warmup_steps(1000, steps=30) == 30
  assert schedules.resolve_warmup_steps(1000, fraction=0.05) == 50
  assert schedules.resolve_warmup_steps(1000, epochs=2, steps_per_epoch=11) == 22
  assert schedules.total_steps_from_epochs(2.5, steps_per_epoch=11) == 28
  assert schedules.resolve_warmup_steps(1000) == 0
  assert schedules.scale_lr_by_batch(0.1, 1024, 256) == pytest.approx(0.4)
  assert schedules.scale_lr_by_batch(0.1, 1024, 0) == 0.1


@pytest.mark.parametrize("call,field", [
    (lambda: schedules.resolve_warmup_steps(100, steps=5, fraction=0.1), "warmup_fraction"),
    (lambda: schedules.resolve_warmup_steps(100, fraction=1.5), "warmup_fraction"),
    (lambda: schedules.resolve_warmup_steps(100, epochs=-1.0), "warmup_epochs"),
    (lambda: schedules.resolve_warmup_steps(100, epochs=1.0), "steps_per_epoch"),
    (lambda: schedules.total_steps_from_epochs(0, 10), "num_epochs"),
    (lambda: schedules.steps_per_epoch(100, 0), "global_batch_size"),
    (lambda: schedules.scale_lr_by_batch(0.1, 100, -2), "base_batch_size"),
])
def test_helper_errors_name_the_field(call, field):
  with pytest.raises(ConfigError, match=rf"^{field}: "):
    call()
