"""What happens after a train loop or an eval: a list of small objects, not code in the loop.

As Orbit's `train_actions` / `eval_actions`: the `Controller` calls every train action after
each train loop (with that loop's mean metrics, before they are written: an action may
discard the loop) and every eval action after each eval (with its metrics, once they are
written), in order, on every worker. An action sees the step, the metrics, the checkpointer
and whether this process is the chief, and may ask the run to stop (`event.stop(reason)`:
the controller then checkpoints the step reached, runs the final eval and returns as a
finished run does, exit 0 and the export written), to checkpoint this step (`event.save()`),
or, after a train loop, to roll back to the last checkpoint (`event.roll_back(reason, then)`).
The run's own actions are here: `Divergence` (the NaN guard and rollbacks), `KeepBest`,
`EarlyStop` and `WriteCurves`.

  class StopAtAccuracy:
    def __init__(self, target):
      self.target = target

    def __call__(self, event):
      if event.metrics.get("accuracy", 0.0) >= self.target:
        event.stop(f"eval accuracy {event.metrics['accuracy']:.3f} >= {self.target}")

  train_and_evaluate(config, workdir, eval_actions=[StopAtAccuracy(0.97)])

Every worker runs the same actions on the same all-reduced metrics, so a decision made from
them is the same everywhere; write files on the chief only (`event.chief`).
"""

import dataclasses
import os

from trainer.rundir import files, layout


@dataclasses.dataclass
class Event:
  """What an action sees after a train loop (`split` 'train') or an eval ('eval')."""

  split: str
  step: int  # the global step reached
  metrics: dict  # the loop's mean train metrics, or the eval's
  checkpointer: object  # the run's `trainer.run.checkpoints.Checkpointer`
  chief: bool  # whether this process writes the workdir
  written: bool = True  # False: already in the history (a finished run's final eval, rerun)
  final: bool = False  # the eval at the end of the run
  stop_reason: str = ""
  save_requested: bool = False
  rollback_reason: str = ""
  after_rollback: object = None  # called once the last checkpoint is restored

  @property
  def workdir(self):
    return self.checkpointer.workdir

  def stop(self, reason):
    """Asks the run to stop after this loop or eval, as a finished run (the first reason
    given is kept)."""
    self.stop_reason = self.stop_reason or str(reason)

  def save(self):
    """Asks for a checkpoint of this step (e.g. the checkpoint of a new best eval)."""
    self.save_requested = True

  def roll_back(self, reason, then=None):
    """After a train loop: discard it and restore the last checkpoint, then call `then()`
    (e.g. to lower the learning rate; the restore has put the run's state back)."""
    self.rollback_reason = self.rollback_reason or str(reason)
    self.after_rollback = self.after_rollback or then


def run_all(actions, event):
  """Calls each action on `event`, in order; returns the stop reason asked for ('' = none)."""
  for action in actions:
    action(event)
  return event.stop_reason


class WriteCurves:
  """An eval action: redraws workdir/curves.png from the run's history (chief only)."""

  def __call__(self, event):
    if event.chief and event.written:
      from trainer.run import curves  # pylint: disable=g-import-not-at-top  (matplotlib)
      files.write_atomically(os.path.join(event.workdir, layout.CURVES_PNG),
                             curves.render_png(curves.plot_runs([event.workdir])))
