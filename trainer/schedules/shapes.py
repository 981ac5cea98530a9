"""The shapes a schedule can take after its warmup: small pure functions, joined by one rule.

A *decay shape* says how much of the way from the peak `b` down to the final rate `f` is
left, t steps into the decay phase of `length` steps: lr = f + (b - f) * m(t, length, tau).
A *cooldown shape* g(q) scales what is left over the last `cooldown_steps` (q from 0 to 1):
lr = f + (D(s) - f) * g(q). `trainer.schedules.formula` joins them with the warmup and hold.

Every shape is computed with `xp`, NumPy or TensorFlow's ops (`formula.TF_OPS`), elementwise
and branch-free, so the same function gives the Python numbers, the plots and the XLA step.
Add one by registering it; config checking, the Keras schedule, the fit callback, the plots
and the resume check all read this registry:

  from trainer.schedules import shapes

  @shapes.register_decay("step_half")          # --config.schedule.decay=step_half
  def step_half(t, length, timescale, xp):     # full rate for the first half, then half
    return xp.where(t < length / 2, 1.0, 0.5)

A shape must give 1 at t = 0 (the decay starts at the peak) for the schedule to be continuous;
the cosine, linear and 1-sqrt shapes reach 0 at the end (t = length, q = 1).
"""

import math

DECAYS = {}  # name -> m(t, length, timescale, xp), the fraction of (peak - final) left
COOLDOWNS = {}  # name -> g(q, xp), the fraction of (D(s) - final) left, q in [0, 1]


def register_decay(name):
  """Registers `fn(t, length, timescale, xp)` as the decay shape `name` (a decorator)."""
  return _register(DECAYS, "decay", name)


def register_cooldown(name):
  """Registers `fn(q, xp)` as the cooldown shape `name` (a decorator)."""
  return _register(COOLDOWNS, "cooldown", name)


def _same(a, b):
  """The same function defined again (a config file loaded twice registers it twice)."""
  return (getattr(a, "__module__", None), getattr(a, "__qualname__", None)) == (
      getattr(b, "__module__", None), getattr(b, "__qualname__", None))


def _register(registry, kind, name):
  if not isinstance(name, str) or not name:
    raise ValueError(f"cannot register the {kind} shape {name!r}: give a non-empty name")

  def decorate(fn):
    if name in registry and not _same(registry[name], fn):
      raise ValueError(f"cannot register the {kind} shape {name!r}: the name is taken "
                       f"(taken: {', '.join(registry)})")
    registry[name] = fn
    return fn

  return decorate


def progress(t, length, xp):
  """t / length clipped to [0, 1] (a zero length counts as 1 step: no division by zero)."""
  return xp.clip(t / max(length, 1), 0.0, 1.0)


def half_cosine(p, xp):
  """(1 + cos(pi p)) / 2: 1 at p = 0, 0 at p = 1."""
  return 0.5 * (1.0 + xp.cos(math.pi * p))


@register_decay("cosine")
def cosine(t, length, timescale, xp):
  del timescale
  return half_cosine(progress(t, length, xp), xp)


@register_decay("linear")
def linear(t, length, timescale, xp):
  del timescale
  return 1.0 - progress(t, length, xp)


@register_decay("constant")
def constant(t, length, timescale, xp):
  del length, timescale
  return xp.ones_like(t)


@register_decay("rsqrt")
def rsqrt(t, length, timescale, xp):
  """sqrt(tau / (tau + t)): inverse square root of the steps since the decay began."""
  del length
  return xp.sqrt(timescale / (timescale + xp.maximum(t, 0.0)))


register_cooldown("linear")(lambda q, xp: 1.0 - q)
register_cooldown("cosine")(half_cosine)
register_cooldown("1-sqrt")(lambda q, xp: 1.0 - xp.sqrt(q))
