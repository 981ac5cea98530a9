"""The learning rate at a global step: linear warmup, optional hold, a decay shape, a cooldown.

With s the global step (the optimizer's `iterations`), W warmup_steps, H hold, C cooldown,
T total_steps, a start_lr, b target_lr, f final_lr:

  s < W                lr = a + (b - a) * s / W                       linear warmup
  W <= s < W + H       lr = b                                         hold at the peak
  W + H <= s < T       lr = D(s) = f + (b - f) * m(s - W - H)         the decay shape m
  T - C <= s < T       lr = f + (D(s) - f) * g(q), q = (s - T + C)/C  the cooldown shape g
  s >= T               lr = f

The decay shapes m (cosine, linear, constant, rsqrt) and cooldown shapes g (linear, cosine,
1-sqrt) are `trainer.schedules.shapes`. `total_steps` counts warmup, hold and cooldown. A
global step is one optimizer update of the global batch, however many replicas share it and
however many steps run per host call, so 8 replicas do not warm up 8x faster. The update
that takes `iterations` from k to k + 1 uses lr(k).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from trainer.base import validate as validate_lib
from trainer.base.errors import ConfigError
from trainer.schedules import shapes as shapes_lib

MAX_STEPS = 2**62  # optimizer.iterations is an int64


def check_int(name, value, minimum):
  return validate_lib.integer(name, value, minimum, integral_floats=True)


def check_lr(name, value, positive):
  return validate_lib.number(name, value, 0, positive=positive)


@dataclasses.dataclass(frozen=True)
class Args:
  """A schedule's arguments, checked: durations in global steps, rates as floats."""

  total_steps: int
  warmup_steps: int = 0
  hold: int = 0
  start_lr: float = 0.0
  target_lr: float = 1e-3
  final_lr: float = 0.0
  decay: str = "cosine"
  cooldown_steps: int = 0
  cooldown_shape: str = "linear"
  rsqrt_timescale: int = 0  # 0: the warmup length, or 1 without warmup

  @property
  def timescale(self) -> int:
    """rsqrt's tau as used: rsqrt_timescale, else the warmup length, else 1."""
    return self.rsqrt_timescale or self.warmup_steps or 1

  def kwargs(self) -> dict:
    return dataclasses.asdict(self)


def check(total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3, final_lr=0.0,
          decay="cosine", cooldown_steps=0, cooldown_shape="linear", rsqrt_timescale=0) -> Args:
  """Checks a schedule's arguments once; returns them as `Args`.

  Raises:
    ConfigError: (a ValueError) naming the first bad argument and what is allowed.
  """
  w = check_int("warmup_steps", warmup_steps, 0)
  h = check_int("hold", hold, 0)
  t = check_int("total_steps", total_steps, 1)
  c = check_int("cooldown_steps", cooldown_steps, 0)
  validate_lib.choice("decay", decay, tuple(shapes_lib.DECAYS))
  validate_lib.choice("cooldown_shape", cooldown_shape, tuple(shapes_lib.COOLDOWNS))
  if w + h + c > t:
    raise ConfigError(
        f"total_steps: must be >= warmup_steps + hold + cooldown_steps (it counts all three), "
        f"got total_steps={t}, warmup_steps={w}, hold={h}, cooldown_steps={c}")
  return Args(t, w, h, check_lr("start_lr", start_lr, False),
              check_lr("target_lr", target_lr, True), check_lr("final_lr", final_lr, False),
              decay, c, cooldown_shape, check_int("rsqrt_timescale", rsqrt_timescale, 0))


def validate(warmup_steps, hold, total_steps, start_lr, target_lr, final_lr):
  """The warmup + cosine schedule's arguments checked, as (W, H, T, a, b, f) (kept for
  callers of the first version; `check` takes every argument)."""
  a = check(total_steps, warmup_steps, hold, start_lr, target_lr, final_lr)
  return a.warmup_steps, a.hold, a.total_steps, a.start_lr, a.target_lr, a.final_lr


class TF_OPS:  # pylint: disable=invalid-name  (a namespace like `np`)
  clip = staticmethod(tf.clip_by_value)
  cos = staticmethod(tf.cos)
  where = staticmethod(tf.where)
  sqrt = staticmethod(tf.sqrt)
  maximum = staticmethod(tf.maximum)
  ones_like = staticmethod(tf.ones_like)


# Branch-free Python: nothing for AutoGraph to convert (and it mis-converts calls between the
# shape functions when a schedule is called from user code inside a tf.function).
@tf.autograph.experimental.do_not_convert
def compute(s, args: Args, xp):
  """The schedule on an array `s` of float steps; `xp` is `np` or `TF_OPS`."""
  w, h, t, a, b, f = (args.warmup_steps, args.hold, args.total_steps, args.start_lr,
                      args.target_lr, args.final_lr)
  s = xp.clip(s, 0.0, float(t))
  warm = a + (b - a) * s / max(w, 1)
  m = shapes_lib.DECAYS[args.decay](s - (w + h), t - w - h, float(args.timescale), xp)
  main = f + (b - f) * m
  if args.cooldown_steps:  # a constant: without a cooldown the graph has no cooldown ops
    c = args.cooldown_steps
    q = xp.clip((s - (t - c)) / c, 0.0, 1.0)
    cooled = f + (main - f) * shapes_lib.COOLDOWNS[args.cooldown_shape](q, xp)
    main = xp.where(s >= t - c, cooled, main)
  # Branch-free: every branch is computed and selected, so XLA sees one static graph.
  return xp.where(s < w, warm, xp.where(s < w + h, b, xp.where(s >= t, f, main)))


def evaluate(step, args: Args):
  """`compute` on a Python number (-> float), a NumPy array (-> float64 array) or a TF tensor
  (-> float32 tensor)."""
  if tf.is_tensor(step):
    return compute(tf.cast(step, tf.float32), args, TF_OPS)
  lr = compute(np.asarray(step, dtype=np.float64), args, np)
  return float(lr) if np.ndim(lr) == 0 and not isinstance(step, np.ndarray) else lr


def learning_rate(step, *, total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
                  final_lr=0.0, decay="cosine", cooldown_steps=0, cooldown_shape="linear",
                  rsqrt_timescale=0):
  """The learning rate at global step(s) `step`, elementwise (see the module docstring).

  Args:
    step: a Python number, a NumPy array or a TF tensor (any int or float dtype); negative
      steps count as 0.
    total_steps: global steps of the whole schedule, counting warmup, hold and cooldown.
    warmup_steps: linear warmup from `start_lr` to `target_lr` (0 = start at the peak).
    hold: steps at `target_lr` after the warmup.
    start_lr, target_lr, final_lr: the rate at step 0, the peak, the rate from total_steps on.
    decay: the decay shape after warmup and hold: cosine, linear, constant, rsqrt (or one
      registered in `trainer.schedules.shapes`).
    cooldown_steps: the last steps, over which `cooldown_shape` (linear, cosine, 1-sqrt)
      takes the rate down to `final_lr` (0 = none). decay='constant' with a cooldown is
      warmup-stable-decay (WSD).
    rsqrt_timescale: tau of the rsqrt decay, f + (b - f) sqrt(tau / (tau + t)) t steps into it
      (0 = the warmup length, or 1 without warmup).

  Returns:
    A Python float for a Python number, a float64 NumPy array for NumPy input, a float32
    tensor for a TF tensor.

  Raises:
    ConfigError: (a ValueError) naming the first invalid argument.
  """
  return evaluate(step, check(total_steps, warmup_steps, hold, start_lr, target_lr, final_lr,
                              decay, cooldown_steps, cooldown_shape, rsqrt_timescale))


def lr_warmup_cosine_decay(global_step, warmup_steps, hold=0, total_steps=0, start_lr=0.0,
                           target_lr=1e-3, final_lr=0.0):
  """The warmup + cosine schedule (no cooldown) at `global_step`: `learning_rate(step,
  decay='cosine', ...)`, with the argument order of the well-known blog-post version."""
  return evaluate(global_step, check(total_steps, warmup_steps, hold, start_lr, target_lr,
                                     final_lr))


def phases(args: Args):
  """[(name, first step, end step)] of the schedule's non-empty phases, in order."""
  w, h, t, c = args.warmup_steps, args.hold, args.total_steps, args.cooldown_steps
  spans = (("warmup", 0, w), ("hold", w, w + h), (f"{args.decay} decay", w + h, t - c),
           (f"cooldown ({args.cooldown_shape})", t - c, t))
  return [(name, lo, hi) for name, lo, hi in spans if hi > lo]


def first_difference(old: Args, new: Args, steps: int, rtol=1e-6):
  """The first step in [0, steps) where `old` and `new` give different rates (beyond float
  rounding: `rtol`), as (step, old lr, new lr), or None. In chunks: `steps` may be large."""
  for start in range(0, max(int(steps), 0), 1 << 20):
    s = np.arange(start, min(int(steps), start + (1 << 20)), dtype=np.float64)
    a, b = compute(s, old, np), compute(s, new, np)
    differ = np.flatnonzero(~np.isclose(a, b, rtol=rtol, atol=0.0))
    if differ.size:
      i = int(differ[0])
      return start + i, float(a[i]), float(b[i])
  return None
