"""trainer.validate: the one wording of the small value checks, and what they accept."""

import math

import numpy as np
import pytest

from trainer.base import validate
from trainer.base.errors import ConfigError


@pytest.mark.parametrize("value", [True, False])
def test_bools_are_never_numbers(value):
  with pytest.raises(ConfigError, match=rf"^f: must be an integer >= 0, got {value}$"):
    validate.integer("f", value)
  with pytest.raises(ConfigError, match=rf"^f: must be an integer >= 0, got {value}$"):
    validate.integer("f", value, integral_floats=True)
  with pytest.raises(ConfigError, match=rf"^f: must be a finite number >= 0.0, got {value}$"):
    validate.number("f", value)


def test_integer_accepts_ints_at_or_above_the_minimum():
  assert validate.integer("steps", 0) == 0
  assert validate.integer("steps", 5, minimum=5) == 5
  value = validate.integer("steps", np.int64(7))
  assert value == 7 and type(value) is int
  with pytest.raises(ConfigError, match=r"^steps: must be an integer >= 1, got 0$"):
    validate.integer("steps", 0, minimum=1)
  with pytest.raises(ConfigError, match=r"^steps: must be an integer >= 0, got -3$"):
    validate.integer("steps", -3)
  with pytest.raises(ConfigError, match=r"^steps: must be an integer >= 0, got '5'$"):
    validate.integer("steps", "5")


def test_integral_floats_only_when_allowed():
  with pytest.raises(ConfigError, match=r"^n: must be an integer >= 0, got 3.0$"):
    validate.integer("n", 3.0)
  value = validate.integer("n", 3.0, integral_floats=True)
  assert value == 3 and type(value) is int
  for bad in (3.5, math.inf, math.nan, -2.0):
    with pytest.raises(ConfigError, match=r"^n: must be an integer >= 0, got "):
      validate.integer("n", bad, integral_floats=True)


def test_number_is_a_finite_float_at_or_above_the_minimum():
  value = validate.number("lr", 2)
  assert value == 2.0 and type(value) is float
  assert validate.number("lr", 0.0) == 0.0
  assert validate.number("x", -1.5, minimum=-2.0) == -1.5
  for bad in (math.nan, math.inf, -math.inf, -0.1, "0.1", None):
    with pytest.raises(ConfigError, match=r"^lr: must be a finite number >= 0.0, got "):
      validate.number("lr", bad)


def test_positive_refuses_zero_with_its_own_bound():
  assert validate.number("lr", 1e-9, positive=True) == 1e-9
  with pytest.raises(ConfigError, match=r"^lr: must be a finite number > 0, got 0.0$"):
    validate.number("lr", 0.0, positive=True)


def test_choice_returns_the_value_or_lists_what_is_allowed():
  assert validate.choice("model", "mlp", ("small_cnn", "mlp")) == "mlp"
  with pytest.raises(ConfigError) as info:
    validate.choice("model", "vgg", ("small_cnn", "mlp"))
  assert str(info.value) == "model: unknown 'vgg'; allowed: small_cnn, mlp"
  with pytest.raises(ConfigError, match=r"^n: unknown 3; allowed: 1, 2$"):
    validate.choice("n", 3, (1, 2))


def test_messages_are_one_line_value_errors():
  with pytest.raises(ValueError) as info:
    validate.integer("a.b", "x\ny")
  assert "\n" not in str(info.value) and str(info.value).startswith("a.b: ")
