r"""Plot a warmup + cosine schedule, or a run's training curves, to a PNG.

  python -m trainer.plot --total_steps=10000 --warmup_steps=500 --hold=1000 \
      --target_lr=3e-3 --out=schedule.png
  python -m trainer.plot --config=configs/default.py --out=schedule.png
  python -m trainer.plot --workdir=runs/a --workdir=runs/b --out=curves.png

With --config, the schedule is the one that config trains with (durations resolved to global
steps exactly as trainer.main resolves them) and the explicit schedule flags are ignored.
With --workdir (repeatable), the runs' TensorBoard histories are drawn against global steps.

Figures are made with matplotlib's object API (`Figure` + the Agg canvas), so importing this
module never switches the plotting backend of the caller (a notebook, say).
"""

import io
import os

from absl import app, flags
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import tensorflow as tf

from trainer import schedules, summaries
from trainer.errors import ConfigError, exit_on_error

_PHASE_COLOURS = {"warmup": "#fde0c5", "hold": "#d7ecd9", "decay": "#dbe4f3"}


def _panels(workdir):
  """A run's picture: loss, then each metric its task reports (accuracy; mse, mae, r2), then
  the learning rate; each panel (title, [(split, tag), ...])."""
  metrics = sorted({tag for tag, _, _ in summaries.read_events(workdir, "eval")} - {"loss"})
  return ([("loss", (("train", "loss"), ("eval", "loss")))]
          + [(m, (("train", m), ("eval", m))) for m in metrics]
          + [("learning rate", (("train", "learning_rate"),))])


def _figure(width, height):
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def plot_schedule(total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
                  final_lr=0.0, path=None, title=None):
  """Draws the schedule over [0, total_steps] global steps with its phases shaded.

  Args:
    total_steps, warmup_steps, hold, start_lr, target_lr, final_lr: as in
      `trainer.schedules.lr_warmup_cosine_decay` (durations in global steps).
    path: if given, the figure is written there as PNG (any path tf.io.gfile can write).
    title: optional title; by default the parameters.

  Returns:
    The matplotlib Figure.
  """
  w, h, t, a, b, f = schedules.validate(warmup_steps, hold, total_steps, start_lr, target_lr,
                                        final_lr)
  steps = np.unique(np.concatenate([np.linspace(0, t, 1000).round(), [w, w + h, t]]))
  lrs = schedules.lr_warmup_cosine_decay(steps, w, h, t, a, b, f)
  fig = _figure(8, 4)
  ax = fig.add_subplot()
  for name, lo, hi in (("warmup", 0, w), ("hold", w, w + h), ("decay", w + h, t)):
    if hi > lo:
      ax.axvspan(lo, hi, color=_PHASE_COLOURS[name], label=f"{name} ({hi - lo} steps)")
  ax.plot(steps, lrs, color="#1f4e9c", linewidth=2, label="learning rate")
  ax.set_xlim(0, t)
  ax.set_ylim(0, max(a, b, f) * 1.08)
  ax.set_xlabel("global step (optimizer.iterations)")
  ax.set_ylabel("learning rate")
  ax.set_title(title or f"warmup {w}, hold {h}, total {t}: {a:g} -> {b:g} -> {f:g}")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right", fontsize="small")
  fig.tight_layout()
  if path:
    _write(path, fig)
  return fig


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
  fig = _figure(4 * len(panels), 3.6)
  axes = fig.subplots(1, len(panels))
  for workdir, label in zip(workdirs, labels):
    if not summaries.read_scalars(workdir, "train", "loss"):
      raise ConfigError(f"workdir: {workdir!r} has no training history (no "
                        f"{os.path.join(workdir, 'train')} events); give a run's workdir")
    for ax, (_, series) in zip(axes, panels):
      for split, tag in series:
        points = summaries.read_scalars(workdir, split, tag)
        if points:
          ax.plot(list(points), list(points.values()), marker="." if split == "eval" else None,
                  linestyle="--" if split == "eval" else "-",
                  label=f"{label} {split}" if len(series) > 1 else label)
  for ax, (title, _) in zip(axes, panels):
    ax.set_title(title)
    ax.set_xlabel("global step")
    ax.grid(alpha=0.3)
    if ax.get_lines():
      ax.legend(fontsize="small")
  fig.tight_layout()
  if path:
    _write(path, fig)
  return fig


def render_png(fig):
  """The figure as PNG bytes."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  return buf.getvalue()


def _write(path, fig):
  with tf.io.gfile.GFile(path, "wb") as f:  # gs:// too
    f.write(render_png(fig))


def _config_schedule(path):
  """The schedule a config trains with, resolved as trainer.train resolves it."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  config = config_lib.load(path)
  examples = 1  # only epoch-based durations need the dataset's size
  if not config.total_steps or config.schedule.warmup_epochs:
    from trainer import data  # pylint: disable=g-import-not-at-top
    examples = data.get_dataset_info(config.dataset, config.data_dir, config.image_size,
                                     config.eval_fraction).num_train_examples
  return config_lib.resolve(config, examples, num_replicas=1).schedule_kwargs()


FLAGS = flags.FLAGS


def _define_flags():
  """Only when run as a program: trainer.main imports this module and has flags of its own."""
  flags.DEFINE_integer("total_steps", 1000, "Global steps, counting warmup and hold.")
  flags.DEFINE_integer("warmup_steps", 100, "Global steps of linear warmup.")
  flags.DEFINE_integer("hold", 0, "Global steps at target_lr after warmup.")
  flags.DEFINE_float("start_lr", 0.0, "Learning rate at step 0.")
  flags.DEFINE_float("target_lr", 1e-3, "Peak learning rate.")
  flags.DEFINE_float("final_lr", 0.0, "Learning rate at and after total_steps.")
  flags.DEFINE_string("config", None, "A configs/*.py file; replaces the flags above.")
  flags.DEFINE_multi_string("workdir", [], "A run's workdir (repeat to overlay runs): draw "
                            "its training curves instead of a schedule.")
  flags.DEFINE_string("out", "schedule.png", "Where to write the PNG.")


def main(argv):
  del argv
  if FLAGS.workdir:
    plot_runs(FLAGS.workdir, path=FLAGS.out)
  else:
    kwargs = dict(total_steps=FLAGS.total_steps, warmup_steps=FLAGS.warmup_steps,
                  hold=FLAGS.hold, start_lr=FLAGS.start_lr, target_lr=FLAGS.target_lr,
                  final_lr=FLAGS.final_lr)
    if FLAGS.config:
      kwargs = _config_schedule(FLAGS.config)
    plot_schedule(**kwargs, path=FLAGS.out)
  print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
  _define_flags()
  app.run(exit_on_error(main))
