"""A run's picture: its train and eval curves and learning rate, from its TensorBoard history.

`plot_runs([workdir, ...])` draws one panel for the loss, one per metric the task reports and
one for the learning rate, every run in its own colour (the same in every panel), train solid
and eval dashed with dots. The chief redraws `workdir/curves.png` after every eval
(`trainer.run.actions.WriteCurves`).
"""

import os

from trainer.base.errors import ConfigError
from trainer.rundir import history, layout, record
from trainer.schedules.picture import figure, render_png, write_png  # noqa: F401  (render_png)


def _panels(workdir):
  """(title, [(split, tag), ...]) per panel: loss, each metric the task reports (accuracy;
  mse, mae, r2), the learning rate."""
  metrics = sorted({tag for tag, _, _ in history.read_events(workdir, layout.EVAL)} - {"loss"})
  return ([("loss", ((layout.TRAIN, "loss"), (layout.EVAL, "loss")))]
          + [(m, ((layout.TRAIN, m), (layout.EVAL, m))) for m in metrics]
          + [("learning rate", ((layout.TRAIN, "learning_rate"),))])


def plot_runs(workdirs, path=None, labels=None):
  """Draws the TensorBoard histories of one or more runs against global steps.

  Args:
    workdirs: run directories (local or gs://).
    path: if given, the figure is written there as PNG.
    labels: one legend name per workdir (default: the directory names).

  Returns:
    The matplotlib Figure: one panel each for the loss, the task's metrics (those of the
    first run) and the learning rate.

  Raises:
    ConfigError: a workdir has no TensorBoard history.
  """
  labels = labels or [os.path.basename(os.path.normpath(w)) for w in workdirs]
  panels = _panels(workdirs[0])
  fig = figure(4 * len(panels), 3.6)
  axes = fig.subplots(1, len(panels))
  single = len(workdirs) == 1
  for i, (workdir, label) in enumerate(zip(workdirs, labels)):
    if not history.read_scalars(workdir, layout.TRAIN, "loss"):
      raise ConfigError(f"workdir: {workdir!r} has no training history (no "
                        f"{os.path.join(workdir, layout.TRAIN)} events); give a run's workdir")
    colour = f"C{i % 10}"  # the run's colour in every panel
    for ax, (_, series) in zip(axes, panels):
      for split, tag in series:
        points = history.read_scalars(workdir, split, tag)
        if not points:
          continue
        name = split if single else (f"{label} {split}" if len(series) > 1 else label)
        ax.plot(list(points), list(points.values()), color=colour,
                marker="." if split == layout.EVAL else None,
                linestyle="--" if split == layout.EVAL else "-", label=name)
    _mark_schedule_changes(axes[-1], workdir, colour)
  for ax, (title, _) in zip(axes, panels):
    ax.set_title(title)
    ax.set_xlabel("global step")
    ax.set_ylabel(title)
    ax.grid(alpha=0.3)
    if len(ax.get_lines()) > 1 or (ax.get_lines() and not single):
      ax.legend(fontsize="small")
  if single:
    fig.suptitle(labels[0], fontsize="small")
  fig.tight_layout()
  if path:
    write_png(path, fig)
  return fig


def _mark_schedule_changes(ax, workdir, colour):
  """A dotted line where a new schedule took over on a resume (config.json's "schedules")."""
  try:
    changes = (record.read_config_json(workdir) or {}).get("schedules") or []
  except ValueError:
    return
  for change in changes:
    if change.get("step", 0) > 0:
      ax.axvline(change["step"], color=colour, linestyle=":", linewidth=1,
                 label=f"new schedule at step {change['step']}")
