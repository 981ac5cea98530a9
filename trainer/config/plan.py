"""The run in global steps: every duration converted once, up front (`plan_run` -> `Plan`).

A config may give its length in steps or epochs and its warmup and cooldown in steps, as a
fraction of the run, or in epochs; `plan_run` turns all of them into global steps and scales
the peak LR with the global batch if asked, so nothing downstream converts again.
"""

import contextlib
import dataclasses

from trainer import schedules
from trainer.base.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Plan:
  """The run in global steps. Written to workdir/config.json beside the config."""
  total_steps: int
  steps_per_epoch: int
  warmup_steps: int
  hold: int
  start_lr: float
  peak_lr: float  # target_lr after linear batch scaling
  final_lr: float
  num_replicas: int
  per_replica_batch_size: int  # examples per replica per global step
  grad_accum_steps: int = 1  # micro-batches per replica per global step
  micro_batch_size: int = 0  # examples per replica per micro-batch (one forward/backward)
  decay: str = "cosine"  # the decay shape after warmup and hold (trainer.schedules.shapes)
  cooldown_steps: int = 0  # the last steps, cooled down to final_lr
  cooldown_shape: str = "linear"
  rsqrt_timescale: int = 0  # as configured (0: the warmup length, or 1 without warmup)

  def schedule_kwargs(self):
    """Keyword arguments of `trainer.schedules.learning_rate` / `WarmupDecay`."""
    return dict(total_steps=self.total_steps, warmup_steps=self.warmup_steps, hold=self.hold,
                start_lr=self.start_lr, target_lr=self.peak_lr, final_lr=self.final_lr,
                decay=self.decay, cooldown_steps=self.cooldown_steps,
                cooldown_shape=self.cooldown_shape, rsqrt_timescale=self.rsqrt_timescale)

  def schedule_args(self) -> schedules.Args:
    """The schedule, checked (names the config's `schedule.` fields on a mistake)."""
    with schedule_fields():
      return schedules.check(**self.schedule_kwargs())

  def summary(self) -> str:
    """One short line for people, e.g. '600 steps of 128 (11 per epoch), warmup 60, lr 0.003
    cosine to 0' (every field is in config.json)."""
    batch = self.num_replicas * self.per_replica_batch_size
    parts = [f"{self.total_steps} steps of {batch} ({self.steps_per_epoch} per epoch)"]
    if self.grad_accum_steps > 1:
      parts.append(f"{self.grad_accum_steps} micro-batches of {self.micro_batch_size} per "
                   f"replica")
    if self.warmup_steps:
      parts.append(f"warmup {self.warmup_steps}")
    if self.hold:
      parts.append(f"hold {self.hold}")
    parts.append(f"lr {self.peak_lr:.3g} {self.decay} to {self.final_lr:.3g}")
    if self.cooldown_steps:
      parts.append(f"cooldown {self.cooldown_steps} {self.cooldown_shape}")
    return ", ".join(parts)

  @classmethod
  def from_record(cls, plan: dict):
    """The Plan of a config.json's "plan" (fields it predates at their defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in plan.items() if k in names})


def plan_run(config, num_train_examples, num_replicas) -> Plan:
  """Converts every duration of a checked config to global steps.

  Args:
    config: the run's settled ConfigDict (`check_fields` passed).
    num_train_examples: examples in the training split (for epochs -> steps).
    num_replicas: replicas in sync; the global batch must divide evenly among them.

  Raises:
    ConfigError: naming the first bad field.
  """
  gb = config.global_batch_size
  if gb % num_replicas:
    raise ConfigError(f"global_batch_size: {gb} does not divide evenly among {num_replicas} "
                      f"replicas; use a multiple of {num_replicas}")
  k = config.grad_accum_steps
  if (gb // num_replicas) % k:
    raise ConfigError(f"grad_accum_steps: {k} micro-batches do not divide the "
                      f"{gb // num_replicas} examples per replica (global_batch_size {gb} over "
                      f"{num_replicas} replicas); use a divisor of {gb // num_replicas}")
  spe = schedules.steps_per_epoch(num_train_examples, gb)
  total = config.total_steps or schedules.total_steps_from_epochs(config.num_epochs, spe)
  s = config.schedule
  with schedule_fields():
    warmup = schedules.resolve_steps("warmup", total, s.warmup_steps, s.warmup_fraction,
                                     s.warmup_epochs, spe)
    cooldown = schedules.resolve_steps("cooldown", total, s.cooldown_steps,
                                       s.cooldown_fraction, s.cooldown_epochs, spe)
    peak = schedules.scale_lr_by_batch(s.target_lr, gb, s.base_batch_size)
  return Plan(total, spe, warmup, s.hold, float(s.start_lr), peak, float(s.final_lr),
              num_replicas, gb // num_replicas, k, gb // num_replicas // k, s.decay, cooldown,
              s.cooldown_shape, s.rsqrt_timescale)


@contextlib.contextmanager
def schedule_fields():
  """Puts the config's `schedule.` prefix on errors about fields that live under it."""
  try:
    yield
  except ConfigError as e:
    field = str(e).split(":", 1)[0]
    if field in ("total_steps", "global_batch_size", "steps_per_epoch"):
      raise
    raise ConfigError(f"schedule.{e}") from None
