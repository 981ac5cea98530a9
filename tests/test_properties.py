"""Properties, on generated inputs: the schedule's shape and checks, and config resolution."""

import math

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import strategies as st

from tests.conftest import plan_of, default_config
from trainer import config as config_lib
from trainer.base import choices
from trainer import schedules
from trainer.base.errors import ConfigError

NAMES = ("warmup_steps", "hold", "total_steps", "start_lr", "target_lr", "final_lr")

lrs = st.floats(0.0, 10.0, allow_subnormal=False)


@st.composite
def valid_args(draw):
  """(W, H, T, a, b, f) that the schedule must accept."""
  total = draw(st.integers(1, 10**6))
  warmup = draw(st.integers(0, total))
  hold = draw(st.integers(0, total - warmup))
  return (warmup, hold, total, draw(lrs), draw(st.floats(1e-9, 10.0)), draw(lrs))


def lr(args, steps):
  return schedules.lr_warmup_cosine_decay(np.asarray(steps, np.float64), *args)


def _tolerance(args):
  return 1e-12 * max(args[3:]) + 1e-300


@hypothesis.given(valid_args(), st.lists(st.floats(-100.0, 3e6), min_size=1, max_size=50))
def test_any_valid_schedule_gives_finite_rates_between_its_ends(args, steps):
  w, h, t, a, b, f = args
  values = lr(args, steps)
  tol = _tolerance(args)
  assert np.all(np.isfinite(values))
  assert np.all(values >= min(a, b, f) - tol) and np.all(values <= max(a, b, f) + tol)
  assert lr(args, [0.0])[0] == pytest.approx(a if w else b, abs=tol)
  assert lr(args, [t + 1.0])[0] == f


@hypothesis.given(valid_args(),
                  st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=2, max_size=30))
def test_warmup_moves_monotonically_from_start_to_target(args, fractions):
  w, _, _, a, b, _ = args
  hypothesis.assume(w > 0)
  values = lr(args, sorted(x * w for x in fractions))
  steps = np.diff(values) * np.sign(b - a)
  assert np.all(steps >= -_tolerance(args))


@hypothesis.given(valid_args(), st.lists(st.floats(0.0, 1.0), min_size=2, max_size=30))
def test_decay_never_increases_when_final_is_at_most_target(args, fractions):
  w, h, t, _, b, f = args
  hypothesis.assume(f <= b and t > w + h)
  values = lr(args, sorted(w + h + x * (t - w - h) for x in fractions))
  assert np.all(np.diff(values) <= _tolerance(args))


@hypothesis.given(valid_args(), st.floats(1e-6, 1e-3))
def test_continuous_at_every_phase_boundary(args, delta):
  w, h, t, a, b, f = args
  slope = max(abs(b - a) / max(w, 1), math.pi / 2 * abs(b - f) / max(t - w - h, 1))
  # The phase ends; at T when there is no decay phase the rate jumps by design (below).
  boundaries = [x for x, phase_len in ((w, w), (w + h, h), (t, t - w - h))
                if phase_len > 0 and not (x == t == w + h)]
  for x in boundaries:
    left, right = lr(args, [x - delta, x + delta])
    assert abs(left - right) <= 2 * delta * slope * (1 + 1e-6) + 1e-9 * max(a, b, f)
  if t == w + h:  # no decay phase: the one jump, from the peak straight to final_lr at T
    assert lr(args, [float(t)])[0] == f


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(valid_args(), st.lists(st.integers(0, 10**6), min_size=1, max_size=20))
def test_tensor_and_numpy_paths_agree(args, steps):
  got = schedules.WarmupCosineDecay(*args[3:5], args[0], args[2], hold=args[1],
                                    final_lr=args[5])(tf.constant(steps, tf.int64)).numpy()
  np.testing.assert_allclose(got, lr(args, steps), rtol=2e-5, atol=1e-6 * max(args[3:]))


_BAD = {
    "warmup_steps": st.sampled_from([-1, -100, 2.5, float("nan"), True, "3", None]),
    "hold": st.sampled_from([-1, 0.5, float("inf"), False, "0"]),
    "total_steps": st.sampled_from([0, -5, 1.5, float("nan"), True, "10"]),
    "start_lr": st.sampled_from([-1e-3, float("nan"), float("inf"), -float("inf"), True, "0"]),
    "target_lr": st.sampled_from([0.0, -1.0, float("nan"), float("inf"), False, "1e-3"]),
    "final_lr": st.sampled_from([-1e-9, float("nan"), float("inf"), True, None]),
}


@hypothesis.given(valid_args(), st.sampled_from(NAMES + ("too long",)), st.data())
def test_any_invalid_argument_is_a_config_error_naming_it(args, name, data):
  args = list(args)
  if name == "too long":  # warmup + hold beyond total: total_steps is the one to fix
    args[1] = args[2] - args[0] + data.draw(st.integers(1, 10))
    name = "total_steps"
  else:
    args[NAMES.index(name)] = data.draw(_BAD[name])
  with pytest.raises(ConfigError) as info:
    schedules.lr_warmup_cosine_decay(0, *args)
  assert str(info.value).startswith(f"{name}: ") and "\n" not in str(info.value)
  with pytest.raises(ConfigError, match=f"^{name}: "):
    schedules.WarmupCosineDecay(args[3], args[4], args[0], args[2], hold=args[1],
                                final_lr=args[5])


# Config resolution.


def _fields(tree, prefix=""):
  for key, value in tree.items():
    if isinstance(value, dict):
      yield from _fields(value, f"{prefix}{key}.")
    else:
      yield prefix + key, value


FIELDS = dict(_fields(default_config().to_dict()))
CHOICES = {"model": ["small_cnn", "mlp", "resnet50", "vgg", ""],
           "mixed_precision": list(choices.PRECISIONS) + ["fp8"],
           "optimizer.name": list(choices.OPTIMIZERS) + ["lamb"],
           "input_mode": list(choices.INPUT_MODES) + ["gpu"],
           "dataset": ["digits", "mnist", "synthetic", ""]}


def _value_for(field):
  """Values of the field's own type (what --config.FIELD=VALUE can produce)."""
  kind = type(FIELDS[field])
  if field in CHOICES:
    return st.sampled_from(CHOICES[field])
  if kind is bool:
    return st.booleans()
  if kind is int:
    return st.one_of(st.integers(-3, 3), st.integers(-10**4, 10**6))
  if kind is float:
    return st.one_of(st.floats(-2.0, 2.0), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.0, 0.1, 1.0, 1e9]))
  return st.text(max_size=8)


mutations = st.dictionaries(st.sampled_from(sorted(FIELDS)), st.none(), min_size=1,
                            max_size=4).flatmap(
    lambda keys: st.fixed_dictionaries({k: _value_for(k) for k in keys}))


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(mutations, st.integers(1, 10**7), st.integers(1, 16))
def test_any_config_resolves_consistently_or_names_a_real_field(changes, examples, replicas):
  try:
    config = config_lib.override(default_config(), **changes)
    plan = plan_of(config, examples, replicas)
  except ConfigError as e:
    message = str(e)
    assert "\n" not in message
    assert message.split(":", 1)[0] in FIELDS, message
    return
  s = config.schedule
  assert plan.num_replicas * plan.per_replica_batch_size == config.global_batch_size
  assert plan.steps_per_epoch == max(1, examples // config.global_batch_size)
  assert plan.total_steps == (config.total_steps or
                              math.ceil(config.num_epochs * plan.steps_per_epoch))
  assert 0 <= plan.warmup_steps and 0 <= plan.hold == s.hold
  assert plan.warmup_steps + plan.hold + plan.cooldown_steps <= plan.total_steps
  expected_peak = s.target_lr * (config.global_batch_size / s.base_batch_size
                                 if s.base_batch_size else 1)
  assert plan.peak_lr == pytest.approx(expected_peak) and 0 < plan.peak_lr < math.inf
  assert math.isfinite(plan.start_lr) and math.isfinite(plan.final_lr)
  for group in config_lib.GROUPS:  # what was given last won: one member of each group left
    values = {f: config_lib.get(config, f) for f in group}
    assert sum(1 for v in values.values() if v) <= 1, values
    for field in group:
      if changes.get(field):
        assert values[field] == changes[field], (field, values)
  schedules.check(**plan.schedule_kwargs())  # the trainer can build this schedule


@pytest.mark.parametrize("changes", [
    {"total_steps": 0, "num_epochs": 1e308},
    {"schedule.warmup_fraction": 0.0, "schedule.warmup_epochs": 1e308},
])
def test_huge_epoch_counts_are_config_errors(changes):
  with pytest.raises(ConfigError, match=r"^(num_epochs|schedule\.warmup_epochs): .* steps$"):
    plan_of(config_lib.override(default_config(), **changes), 1437, 1)
