"""The guard against divergence, as a train action: skip, roll back, or stop.

A loop has diverged when its loss is not finite, or above `loss_upper_bound` from
`recovery_begin_steps` on, or when more than `max_consecutive_skips` updates in a row were
skipped (`nonfinite='skip'` skips single bad steps inside the compiled step). Then, as Model
Garden's `RecoveryAction` does, the run rolls back to its last checkpoint with the learning
rate multiplied by `recovery_lr_factor`, up to `recovery_max_trials` times, and otherwise
stops with `NonFiniteLossError` (exit 3) before anything of the loop is written: the
checkpoints on disk stay as they were, the last good one the latest. The rollbacks so far and
the rate factor are the run's state (`RunState.recovery_trials`, `lr_scale`), checkpointed,
so a restart keeps them.
"""

import dataclasses
import math

from trainer.base.errors import NonFiniteLossError


@dataclasses.dataclass
class Divergence:
  """A train action (see the module docstring).

  Args:
    state: the run's `trainer.step.state.RunState`.
    max_trials, lr_factor, upper_bound, begin_steps, max_consecutive_skips: the config's
      recovery_max_trials, recovery_lr_factor, loss_upper_bound (0 = none),
      recovery_begin_steps and max_consecutive_skips.
  """

  state: object
  max_trials: int = 0
  lr_factor: float = 0.5
  upper_bound: float = 0.0
  begin_steps: int = 0
  max_consecutive_skips: int = 10

  def why(self, event):
    """Why the loop ending at event.step diverged, or ''."""
    loss = event.metrics.get("loss")
    skips = event.metrics.get("consecutive_skips", 0)
    if loss is not None and not math.isfinite(loss):
      return f"training loss is {loss} in the loop up to global step {event.step}"
    if (loss is not None and self.upper_bound and event.step >= self.begin_steps
        and loss > self.upper_bound):
      return (f"training loss {loss:.4g} is above loss_upper_bound {self.upper_bound:g} at "
              f"global step {event.step}")
    if skips > self.max_consecutive_skips:
      return (f"{skips} updates in a row up to global step {event.step} were skipped (their "
              f"gradients were not finite; max_consecutive_skips={self.max_consecutive_skips})")
    return ""

  def __call__(self, event):
    reason = self.why(event)
    if not reason:
      return
    trials = int(self.state.recovery_trials.numpy())
    if trials >= self.max_trials:
      tried = f" after {trials} rollbacks" if trials else ""
      raise NonFiniteLossError(
          f"{reason}; stopped{tried} without checkpointing (lower schedule.target_lr or check "
          f"the data; recovery_max_trials rolls back to the last checkpoint)")
    scale = float(self.state.lr_scale.numpy()) * self.lr_factor

    def lower_the_rate():  # after the restore, which put the checkpoint's state back
      self.state.recovery_trials.assign(trials + 1)
      self.state.lr_scale.assign(scale)

    event.roll_back(f"{reason}: rolling back to the last checkpoint with the learning rate "
                    f"x{scale:.4g} (rollback {trials + 1} of {self.max_trials})", lower_the_rate)
