"""The schedule family (warmup, a decay shape, a cooldown) against independent references,
computed here the way their libraries compute them: transformers' WSD lambdas, flax's WMT
rsqrt, big_vision's rsqrt with a timescale, optax's joined linear schedules and Keras'
CosineDecay with warmup. At the edges and on random steps, in NumPy, TF, XLA, the Keras
schedule (also after a .keras round trip) and the fit callback."""

import math

import numpy as np
import pytest
import tensorflow as tf

from trainer import schedules
from trainer.base.compat import keras
from trainer.schedules import callbacks


def hf_wsd(step, *, warmup, stable, decay, decay_type, min_lr_ratio):
  """transformers.optimization._get_wsd_scheduler_lambda (linear warmup, num_cycles=0.5)."""
  if step < warmup:
    factor = float(step) / float(max(1, warmup))
    return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
  if step < warmup + stable:
    return 1.0
  if step < warmup + stable + decay:
    progress = float(step - warmup - stable) / float(max(1, decay))
    if decay_type == "linear":
      factor = 1.0 - progress
    elif decay_type == "cosine":
      factor = 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress))
    else:  # "1-sqrt"
      factor = 1.0 - math.sqrt(progress)
    return max(0.0, factor * (1.0 - min_lr_ratio) + min_lr_ratio)
  return min_lr_ratio


def flax_wmt(step, *, base, warmup):
  """flax examples/wmt create_learning_rate_schedule('constant * linear_warmup * rsqrt_decay')."""
  ret = base
  ret *= min(1.0, step / warmup)
  return ret / math.sqrt(max(step, warmup))


def big_vision_rsqrt(step, *, peak, warmup, timescale):
  """big_vision's rsqrt decay after a linear warmup: peak * sqrt(timescale / (count + timescale))
  with count the steps since the warmup ended."""
  if step < warmup:
    return peak * step / warmup
  return peak / math.sqrt(1.0 + (step - warmup) / timescale)


def optax_linear(count, init_value, end_value, transition_steps, transition_begin=0):
  """optax.linear_schedule."""
  count = np.clip(count - transition_begin, 0, transition_steps)
  frac = 1 - count / transition_steps
  return (init_value - end_value) * (frac ** 1) + end_value


def optax_join(schedules_, boundaries, step):
  """optax.join_schedules: schedule i on [boundary i-1, boundary i), each from its own 0."""
  index = sum(step >= b for b in boundaries)
  start = boundaries[index - 1] if index else 0
  return schedules_[index](step - start)


def _edges(w, h, c, t):
  return sorted({s for s in (0, w - 1, w, w + h, t - c, t - c + 1, t - 1, t, t + 5) if s >= 0})


def _steps(w, h, c, t, seed=0):
  rng = np.random.default_rng(seed)
  return sorted(set(_edges(w, h, c, t)) | set(rng.integers(0, t + 10, 40).tolist()))


@pytest.mark.parametrize("shape", ["linear", "cosine", "1-sqrt"])
@pytest.mark.parametrize("w,stable,c,b,f", [(50, 300, 150, 3e-3, 0.0), (0, 10, 90, 0.1, 1e-3),
                                           (20, 0, 80, 1.0, 0.05)])
def test_constant_with_a_cooldown_is_transformers_wsd(shape, w, stable, c, b, f):
  t = w + stable + c
  kwargs = dict(total_steps=t, warmup_steps=w, start_lr=f, target_lr=b, final_lr=f,
                decay="constant", cooldown_steps=c, cooldown_shape=shape)
  for s in _steps(w, 0, c, t):
    want = b * hf_wsd(s, warmup=w, stable=stable, decay=c, decay_type=shape,
                      min_lr_ratio=f / b)
    assert schedules.learning_rate(s, **kwargs) == pytest.approx(want, rel=1e-12, abs=1e-15), s


def test_a_hold_is_the_stable_phase_too():
  a = schedules.learning_rate(np.arange(120), total_steps=100, warmup_steps=10, hold=30,
                              decay="constant", cooldown_steps=20)
  b = schedules.learning_rate(np.arange(120), total_steps=100, warmup_steps=10, hold=0,
                              decay="constant", cooldown_steps=20)
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("w", [1, 10, 400])
def test_rsqrt_is_flax_wmt(w):
  base = 0.5
  b = base / math.sqrt(w)  # WMT's peak, reached at the end of its warmup
  for s in _steps(w, 0, 0, 5000):
    got = schedules.learning_rate(s, total_steps=10**6, warmup_steps=w, target_lr=b,
                                  decay="rsqrt")
    assert got == pytest.approx(flax_wmt(s, base=base, warmup=w), rel=1e-12), s


@pytest.mark.parametrize("w,tau", [(100, 1000), (0, 1), (0, 50)])
def test_rsqrt_with_a_timescale_is_big_visions(w, tau):
  for s in _steps(w, 0, 0, 3000):
    got = schedules.learning_rate(s, total_steps=10**5, warmup_steps=w, target_lr=0.3,
                                  decay="rsqrt", rsqrt_timescale=tau)
    assert got == pytest.approx(big_vision_rsqrt(s, peak=0.3, warmup=w, timescale=tau),
                                rel=1e-12), s


def test_rsqrt_timescale_0_means_the_warmup_length_or_1():
  kw = dict(total_steps=1000, target_lr=1.0, decay="rsqrt")
  assert schedules.learning_rate(500, warmup_steps=100, **kw) == pytest.approx(
      schedules.learning_rate(500, warmup_steps=100, rsqrt_timescale=100, **kw))
  assert schedules.learning_rate(99, **kw) == pytest.approx(1 / math.sqrt(100))  # tau = 1


@pytest.mark.parametrize("w,h,t,a,b,f", [(10, 0, 100, 0.0, 1e-2, 1e-4), (0, 5, 60, 0.0, 1.0, 0.0),
                                        (30, 10, 50, 1e-3, 2e-2, 0.0)])
def test_linear_is_optaxs_joined_linear_schedules(w, h, t, a, b, f):
  warmup = lambda c: optax_linear(c, a, b, max(w, 1))  # noqa: E731
  hold = lambda c: b  # noqa: E731
  decay = lambda c: optax_linear(c, b, f, t - w - h)  # noqa: E731
  for s in _steps(w, h, 0, t):
    want = optax_join([warmup, hold, decay], [w, w + h], s) if s < t else f
    got = schedules.learning_rate(s, total_steps=t, warmup_steps=w, hold=h, start_lr=a,
                                  target_lr=b, final_lr=f, decay="linear")
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15), s


@pytest.mark.parametrize("w,t,a,b,f", [(10, 100, 0.0, 1e-3, 0.0), (0, 40, 0.0, 0.1, 0.01)])
def test_cosine_without_a_cooldown_is_keras_cosine_decay_with_warmup(w, t, a, b, f):
  keras_schedule = keras.optimizers.schedules.CosineDecay(
      a, t - w, alpha=f / b, warmup_target=b, warmup_steps=w)
  steps = np.array(_steps(w, 0, 0, t))
  np.testing.assert_allclose(
      schedules.learning_rate(steps, total_steps=t, warmup_steps=w, start_lr=a, target_lr=b,
                              final_lr=f),
      [float(keras_schedule(s)) for s in steps], rtol=1e-5, atol=1e-9)


FAMILY = [
    dict(total_steps=200, warmup_steps=20, decay="cosine", cooldown_steps=40,
         cooldown_shape="cosine", final_lr=1e-4),
    dict(total_steps=200, warmup_steps=20, hold=30, decay="linear", cooldown_steps=10),
    dict(total_steps=200, warmup_steps=20, decay="constant", cooldown_steps=50,
         cooldown_shape="1-sqrt"),
    dict(total_steps=200, warmup_steps=20, decay="rsqrt", rsqrt_timescale=30,
         cooldown_steps=30, final_lr=1e-5),
]


@pytest.mark.parametrize("kwargs", FAMILY)
def test_tf_xla_and_the_keras_schedule_agree_with_numpy(kwargs):
  steps = np.arange(0, kwargs["total_steps"] + 5)
  want = schedules.learning_rate(steps, target_lr=3e-3, **kwargs)
  sched = schedules.WarmupDecay(target_lr=3e-3, **kwargs)
  eager = schedules.learning_rate(tf.constant(steps), target_lr=3e-3, **kwargs).numpy()
  xla = tf.function(lambda s: tf.map_fn(sched, s, fn_output_signature=tf.float32),
                    jit_compile=True)(tf.constant(steps, tf.int64)).numpy()
  np.testing.assert_allclose(eager, want, rtol=1e-6, atol=1e-10)
  np.testing.assert_allclose(xla, want, rtol=1e-6, atol=1e-10)


@pytest.mark.parametrize("kwargs", FAMILY)
def test_config_and_keras_file_round_trips_keep_the_shape(kwargs, tmp_path):
  sched = schedules.WarmupDecay(target_lr=3e-3, **kwargs)
  again = schedules.WarmupDecay.from_config(sched.get_config())
  assert again.args == sched.args and again.get_config() == sched.get_config()
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
  model.compile(optimizer=keras.optimizers.AdamW(sched), loss="mse")
  path = str(tmp_path / "m.keras")
  model.save(path)
  loaded = keras.models.load_model(path)
  got = loaded.optimizer._learning_rate  # pylint: disable=protected-access
  assert isinstance(got, schedules.WarmupDecay) and got.args == sched.args
  for s in (0, 19, 20, 150, 199):
    assert float(got(s)) == pytest.approx(float(sched(s)), rel=1e-7)


@pytest.mark.parametrize("kwargs", FAMILY[:3])
def test_the_fit_callback_sets_the_same_rates(kwargs):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
  cb = callbacks.WarmupDecayCallback(target_lr=3e-3, **kwargs)
  x, y = np.ones((kwargs["total_steps"] * 4, 3), np.float32), np.ones((kwargs["total_steps"] * 4,))
  model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[cb])
  np.testing.assert_allclose(cb.lrs, schedules.learning_rate(
      np.arange(kwargs["total_steps"]), target_lr=3e-3, **kwargs), rtol=1e-6)


def test_every_argument_after_the_step_is_a_keyword():
  with pytest.raises(TypeError):
    schedules.learning_rate(3, 10)  # pylint: disable=too-many-function-args
  with pytest.raises(TypeError):
    schedules.WarmupDecay(0.0, 1e-3, 10, 100)  # pylint: disable=too-many-function-args
  with pytest.raises(TypeError):
    callbacks.WarmupDecayCallback(100, 10)  # pylint: disable=too-many-function-args


@pytest.mark.parametrize("kwargs,field", [
    (dict(warmup_steps=40, hold=40, cooldown_steps=30), "total_steps"),
    (dict(decay="exp"), "decay"),
    (dict(cooldown_shape="square"), "cooldown_shape"),
    (dict(cooldown_steps=-1), "cooldown_steps"),
    (dict(rsqrt_timescale=-3), "rsqrt_timescale"),
])
def test_a_bad_argument_is_one_line_naming_it(kwargs, field):
  with pytest.raises(ValueError) as e:
    schedules.learning_rate(0, total_steps=100, **kwargs)
  assert str(e.value).startswith(f"{field}: ") and "\n" not in str(e.value)


def test_the_first_versions_names_are_the_cosine_case():
  w, h, t, a, b, f = 10, 5, 100, 1e-4, 1e-2, 1e-5
  steps = np.arange(110)
  np.testing.assert_array_equal(
      schedules.lr_warmup_cosine_decay(steps, w, h, t, a, b, f),
      schedules.learning_rate(steps, total_steps=t, warmup_steps=w, hold=h, start_lr=a,
                              target_lr=b, final_lr=f))
  old = schedules.WarmupCosineDecay(a, b, w, t, h, f)
  assert old.get_config() == {"start_lr": a, "target_lr": b, "warmup_steps": w,
                              "total_steps": t, "hold": h, "final_lr": f, "name": None,
                              "gradient_accumulation_steps": 1}  # as saved before
  assert old.args == schedules.WarmupDecay(total_steps=t, warmup_steps=w, hold=h, start_lr=a,
                                           target_lr=b, final_lr=f).args
