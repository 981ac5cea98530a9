"""The schedule as a picture: `plot_schedule(...)` draws it with its phases shaded.

Figures are made with matplotlib's object API (`Figure` + the Agg canvas), so importing this
module never switches the plotting backend of the caller (a notebook, say).
"""

import io

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
import numpy as np
import tensorflow as tf

from trainer.schedules import formula

_PHASE_COLOURS = {"warmup": "#fde0c5", "hold": "#d7ecd9", "cooldown": "#f3d9e6"}
_DECAY_COLOUR = "#dbe4f3"


def figure(width, height):
  """A matplotlib Figure on its own Agg canvas (no global backend)."""
  fig = Figure(figsize=(width, height), dpi=100)
  FigureCanvasAgg(fig)
  return fig


def render_png(fig):
  """The figure as PNG bytes."""
  buf = io.BytesIO()
  fig.savefig(buf, format="png")
  return buf.getvalue()


def write_png(path, fig):
  """Writes the figure to `path` (any path tf.io.gfile can write: gs:// too)."""
  with tf.io.gfile.GFile(path, "wb") as f:
    f.write(render_png(fig))


def draw(ax, args: formula.Args, label="learning rate", shade=True, **line):
  """Draws the schedule `args` on the axes `ax` (its phases shaded unless not `shade`)."""
  t = args.total_steps
  edges = [hi for _, _, hi in formula.phases(args)]
  steps = np.unique(np.concatenate([np.linspace(0, t, 1000).round(), edges]))
  if shade:
    for name, lo, hi in formula.phases(args):
      colour = _PHASE_COLOURS.get(name.split(" ")[0], _DECAY_COLOUR)
      ax.axvspan(lo, hi, color=colour, label=f"{name} ({hi - lo} steps)")
  ax.plot(steps, formula.evaluate(steps, args), label=label, **line)


def plot_schedule(total_steps, warmup_steps=0, hold=0, start_lr=0.0, target_lr=1e-3,
                  final_lr=0.0, path=None, title=None, *, decay="cosine", cooldown_steps=0,
                  cooldown_shape="linear", rsqrt_timescale=0):
  """Draws the schedule over [0, total_steps] global steps, its phases shaded and its shape in
  the title.

  Args:
    total_steps, warmup_steps, hold, start_lr, target_lr, final_lr, decay, cooldown_steps,
      cooldown_shape, rsqrt_timescale: as in `trainer.schedules.learning_rate`.
    path: if given, the figure is written there as PNG (any path tf.io.gfile can write).
    title: optional title; by default the shape and its parameters.

  Returns:
    The matplotlib Figure.
  """
  return plot_args(formula.check(total_steps, warmup_steps, hold, start_lr, target_lr,
                                 final_lr, decay, cooldown_steps, cooldown_shape,
                                 rsqrt_timescale), path, title)


def plot_args(args: formula.Args, path=None, title=None):
  """`plot_schedule` of checked arguments (`trainer.schedules.check(...)`)."""
  a, b, f = args.start_lr, args.target_lr, args.final_lr
  fig = figure(8, 4)
  ax = fig.add_subplot()
  draw(ax, args, color="#1f4e9c", linewidth=2)
  ax.set_xlim(0, args.total_steps)
  ax.set_ylim(0, max(a, b, f) * 1.08)
  ax.set_xlabel("global step (optimizer.iterations)")
  ax.set_ylabel("learning rate")
  cooldown = (f", {args.cooldown_shape} cooldown {args.cooldown_steps}"
              if args.cooldown_steps else "")
  ax.set_title(title or f"{args.decay}: warmup {args.warmup_steps}, hold {args.hold}"
               f"{cooldown}, total {args.total_steps}: {a:g} -> {b:g} -> {f:g}")
  ax.grid(alpha=0.3)
  ax.legend(loc="upper right", fontsize="small")
  fig.tight_layout()
  if path:
    write_png(path, fig)
  return fig


def plot_shapes(schedules, path=None, title="Learning-rate schedules"):
  """Several schedules side by side on one axis: `schedules` maps a label to the keyword
  arguments of `learning_rate` (each with the same total_steps reads best)."""
  fig = figure(8, 4)
  ax = fig.add_subplot()
  for label, kwargs in schedules.items():
    draw(ax, formula.check(**kwargs), label=label, shade=False, linewidth=2)
  ax.set_xlabel("global step")
  ax.set_ylabel("learning rate")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize="small")
  fig.tight_layout()
  if path:
    write_png(path, fig)
  return fig
