r"""Plot a schedule, or a run's training curves, to a PNG.

  python -m trainer.plot --total_steps=10000 --warmup_steps=500 --hold=1000 \
      --target_lr=3e-3 --out=schedule.png
  python -m trainer.plot --decay=constant --cooldown_steps=2000 --cooldown_shape=1-sqrt \
      --total_steps=10000 --warmup_steps=500 --out=wsd.png
  python -m trainer.plot --decay=rsqrt --total_steps=10000 --warmup_steps=500 --out=rsqrt.png
  python -m trainer.plot --shapes --out=shapes.png     # the shapes side by side
  python -m trainer.plot --config=configs/default.py --out=schedule.png
  python -m trainer.plot --workdir=runs/a --workdir=runs/b --out=curves.png

With --config, the schedule is the one that config trains with (durations resolved to global
steps exactly as trainer.main resolves them); the schedule flags may not be given with it.
With --workdir (repeatable), the runs' TensorBoard histories are drawn against global steps.

`plot_schedule` (trainer.schedules.picture) and `plot_runs` (trainer.run.curves) return the
matplotlib Figure; they draw through matplotlib's object API, so importing them never
changes the plotting backend of a notebook.
"""

import os

from absl import app, flags

from trainer.base import errors
from trainer.base.errors import ConfigError
from trainer.base.fs import is_remote
from trainer.run import cli, console

FLAGS = flags.FLAGS
_SCHEDULE_FLAGS = ("total_steps", "warmup_steps", "hold", "start_lr", "target_lr", "final_lr",
                   "decay", "cooldown_steps", "cooldown_shape", "rsqrt_timescale")


def __getattr__(name):  # plot_schedule, plot_runs: imported on first use (TensorFlow loads)
  if name in ("plot_schedule", "plot_shapes", "render_png"):
    from trainer.schedules import picture  # pylint: disable=g-import-not-at-top
    return getattr(picture, name)
  if name == "plot_runs":
    from trainer.run import curves  # pylint: disable=g-import-not-at-top
    return curves.plot_runs
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _define_flags():
  """Only when run as a program: trainer.main imports this module and has flags of its own."""
  flags.DEFINE_integer("total_steps", 1000, "Global steps, counting warmup, hold, cooldown.")
  flags.DEFINE_integer("warmup_steps", 100, "Global steps of linear warmup.")
  flags.DEFINE_integer("hold", 0, "Global steps at target_lr after warmup.")
  flags.DEFINE_float("start_lr", 0.0, "Learning rate at step 0.")
  flags.DEFINE_float("target_lr", 1e-3, "Peak learning rate.")
  flags.DEFINE_float("final_lr", 0.0, "Learning rate at and after total_steps.")
  flags.DEFINE_string("decay", "cosine", "The decay shape: cosine, linear, constant, rsqrt.")
  flags.DEFINE_integer("cooldown_steps", 0, "The last steps, cooled down to final_lr.")
  flags.DEFINE_string("cooldown_shape", "linear", "The cooldown: linear, cosine, 1-sqrt.")
  flags.DEFINE_integer("rsqrt_timescale", 0, "tau of the rsqrt decay (0: the warmup length).")
  flags.DEFINE_bool("shapes", False, "Draw the decay shapes side by side (the other schedule "
                    "flags set their common warmup, length and rates).")
  flags.DEFINE_string("config", None, "A configs/*.py file: draw the schedule it trains with.")
  flags.DEFINE_multi_string("workdir", [], "A run's workdir (repeat to overlay runs): draw "
                            "its training curves instead of a schedule.")
  flags.DEFINE_string("out", "schedule.png", "Where to write the PNG.")


def _config_schedule(path):
  """The schedule a config trains with, resolved as trainer.main resolves it."""
  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib
  from trainer import data
  config = config_lib.load(path)
  config_lib.check_fields(config)
  examples = 1  # only epoch-based durations need the dataset's size
  s = config.schedule
  if not config.total_steps or s.warmup_epochs or s.cooldown_epochs:
    examples = data.get_dataset_info(config.dataset, config.data_dir, config.image_size,
                                     config.eval_fraction).num_train_examples
  return config_lib.plan_run(config, examples, num_replicas=1).schedule_args()


def _check_out(out):
  if is_remote(out):
    return
  if os.path.isdir(out):
    raise ConfigError(f"out: {out!r} is a directory; give a file name such as "
                      f"{os.path.join(out, 'schedule.png')!r}")
  parent = os.path.dirname(os.path.abspath(out))
  if not os.path.isdir(parent):
    raise ConfigError(f"out: the directory {os.path.dirname(out) or '.'!r} does not exist; "
                      f"create it or give another path")


def _given(name):
  return FLAGS[name].present


def main(argv):
  cli.no_arguments(argv)
  verbose = FLAGS.verbosity >= 1
  cli.quiet(verbose)
  _check_out(FLAGS.out)
  schedule_flags = [f"--{n}" for n in _SCHEDULE_FLAGS if _given(n)]
  if FLAGS.workdir and (FLAGS.config or schedule_flags or FLAGS.shapes):
    given = ", ".join(schedule_flags + ["--config"] * bool(FLAGS.config)
                      + ["--shapes"] * FLAGS.shapes)
    raise ConfigError(f"workdir: --workdir draws a run's curves; {given} would be ignored: "
                      f"give one or the other")
  if FLAGS.config and schedule_flags:
    raise ConfigError(f"config: --config draws the schedule that config trains with; "
                      f"{', '.join(schedule_flags)} would be ignored: give one or the other")
  with console.startup_lines_hidden(verbose):
    from trainer.run import curves  # pylint: disable=g-import-not-at-top
    from trainer.schedules import formula, picture  # pylint: disable=g-import-not-at-top
  if FLAGS.workdir:
    curves.plot_runs(FLAGS.workdir, path=FLAGS.out)
  elif FLAGS.config:
    picture.plot_args(_config_schedule(FLAGS.config), path=FLAGS.out)
  else:
    kwargs = {n: getattr(FLAGS, n) for n in _SCHEDULE_FLAGS}
    if FLAGS.shapes:
      picture.plot_shapes(shape_examples(kwargs), path=FLAGS.out)
    else:
      picture.plot_args(formula.check(**kwargs), path=FLAGS.out)
  print(f"wrote {FLAGS.out}")


def shape_examples(kwargs):
  """{label: schedule kwargs} of the shapes side by side: every decay shape, and WSD with each
  cooldown shape over the last fifth (`kwargs` sets warmup, length and rates)."""
  from trainer.schedules import shapes  # pylint: disable=g-import-not-at-top
  base = {k: v for k, v in kwargs.items() if k not in ("decay", "cooldown_steps",
                                                       "cooldown_shape")}
  out = {name: {**base, "decay": name} for name in shapes.DECAYS}
  cooldown = max(1, (base["total_steps"] - base["warmup_steps"] - base["hold"]) // 5)
  for shape in shapes.COOLDOWNS:
    out[f"WSD, {shape} cooldown"] = {**base, "decay": "constant", "cooldown_steps": cooldown,
                                     "cooldown_shape": shape}
  return out


def _usage():
  return f"{__doc__}\nflags:\n{cli.flags_help(__name__)}\n"


if __name__ == "__main__":
  _define_flags()
  app.run(errors.exit_on_error(main), flags_parser=lambda argv: cli.parse(argv, _usage))
