"""The small value checks every boundary uses: one wording for each kind of mistake.

Each raises `ConfigError` (a ValueError) as `field: must be ..., got value` and returns the
value normalised (an int, a float), so callers check and convert in one line.
"""

import math
import numbers

from trainer.base.errors import ConfigError


def integer(field, value, minimum=0, *, integral_floats=False):
  """`value` as an int >= `minimum`; bools never count, integral floats only if allowed."""
  kinds = numbers.Real if integral_floats else numbers.Integral
  if (isinstance(value, bool) or not isinstance(value, kinds)
      or not float(value).is_integer() or value < minimum):
    raise ConfigError(f"{field}: must be an integer >= {minimum}, got {value!r}")
  return int(value)


def number(field, value, minimum=0.0, *, positive=False):
  """`value` as a finite float >= `minimum` (> 0 with `positive`)."""
  bound = "> 0" if positive else f">= {minimum}"
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value < minimum or (positive and value <= 0)):
    raise ConfigError(f"{field}: must be a finite number {bound}, got {value!r}")
  return float(value)


def choice(field, value, allowed):
  """`value` if it is one of `allowed`."""
  if value not in allowed:
    raise ConfigError(f"{field}: unknown {value!r}; allowed: {', '.join(map(str, allowed))}")
  return value
