r"""Which peak learning rate? An LR range test that proposes `schedule.target_lr`.

  python -m trainer.lr_find                                  # the default job
  python -m trainer.lr_find --config=configs/cifar10_resnet.py --strategy=mirrored
  python -m trainer.lr_find --config.model=mlp --min_lr=1e-6 --max_lr=1 --steps=300

Builds exactly the run the same config would train (model, data, strategy, precision, what
XLA compiles, gradient accumulation) through the public builder, then raises the learning
rate exponentially from --min_lr to --max_lr over --steps global steps from fresh weights,
recording every step's loss (returned with each loop: no host read inside it), and stops once
the smoothed loss exceeds 4x its minimum or is not finite (Smith 2017; fastai's `lr_find`).

Writes lr_find.png (the loss against the learning rate, raw and smoothed, the proposal
marked) and lr_find.json (the curve and the proposal) into --workdir, by default
runs/lr_find-<date>-<time>-<pid>; never into a training workdir (one holding checkpoints or
config.json is refused). Prints the proposed peak and the command that trains with it. The
proposal rule: `trainer.schedules.range_test.RULE`; how well it does: docs/benchmarks.md.

Exit status: 0; 2 a bad flag or config (one line on stderr, nothing written).
"""

import datetime
import json
import os
import shlex
import sys

from absl import app, flags

from trainer.base import errors, preemption
from trainer.base.choices import STRATEGIES
from trainer.base.errors import ConfigError
from trainer.run import cli
from trainer.rundir import layout

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "", "Where lr_find.png and lr_find.json go; default "
                    "runs/lr_find-<date>-<time>-<pid>. Not a training workdir.")
flags.DEFINE_string("strategy", "auto", f"One of {', '.join(STRATEGIES)}.")
flags.DEFINE_string("tpu", "", "With --strategy=tpu/auto: 'local', a TPU name, or "
                    "grpc://HOST:PORT.")
flags.DEFINE_integer("cpu_devices", 0, "Split the host CPU into N logical devices first.")
flags.DEFINE_float("min_lr", 1e-7, "The learning rate of the first step.")
flags.DEFINE_float("max_lr", 10.0, "The learning rate of the last step.")
flags.DEFINE_integer("steps", 200, "Global steps from min_lr to max_lr (at least 10).")

CONFIG = cli.ConfigFlag(records=False)
FILES = ("lr_find.png", "lr_find.json")


def _usage():
  return cli.config_usage(__doc__, __name__)


def check_flags(min_lr, max_lr, steps):
  """Raises ConfigError for a range the test cannot run."""
  if not min_lr > 0:
    raise ConfigError(f"min_lr: must be > 0, got {min_lr!r}")
  if not max_lr > min_lr:
    raise ConfigError(f"max_lr: must be > min_lr ({min_lr:g}), got {max_lr!r}")
  if steps < 10:
    raise ConfigError(f"steps: must be at least 10 (a curve to read), got {steps!r}")


def check_workdir(workdir):
  """Refuses a training workdir (checkpoints or config.json) and anything not a directory."""
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give a directory for lr_find's files")
  if layout.has_checkpoints(workdir) or os.path.exists(os.path.join(workdir, layout.CONFIG)):
    raise ConfigError(f"workdir: {workdir!r} holds a training run (checkpoints or "
                      f"{layout.CONFIG}); the range test never writes there: give another "
                      f"--workdir (default runs/lr_find-<date>-<time>-<pid>)")


def find(spec, strategy, min_lr, max_lr, steps):
  """Runs the range test of the resolved run `spec`; returns its record (a dict for
  lr_find.json)."""
  # pylint: disable=g-import-not-at-top  (TensorFlow loads here)
  from trainer.distribute.precision import global_policy
  from trainer.schedules import range_test
  from trainer.step import build
  schedule = range_test.ExponentialRange(min_lr, max_lr, steps)
  size = min(spec.config.steps_per_loop, steps)
  losses, stop = [], None
  with global_policy(spec.policy):
    parts = build.build(spec, strategy, schedule=schedule, record_steps=size)
    runner = build.make_runner(parts, start_step=0)
    while len(losses) < steps and stop is None:
      losses.extend(runner.train(min(size, steps - len(losses)))["step_losses"].tolist())
      stop = range_test.stop_at(range_test.smooth(losses))
  end = len(losses) if stop is None else stop
  lrs = schedule.rates(len(losses))
  smoothed = range_test.smooth(losses)
  return {"min_lr": min_lr, "max_lr": max_lr, "steps": steps, "lrs": lrs.tolist(),
          "losses": losses, "smoothed": smoothed.tolist(), "stopped_at": stop,
          "proposal": range_test.propose(lrs[:end], smoothed[:end]), "rule": range_test.RULE}


def command(argv, proposal, config):
  """The trainer.main command that trains this config with the proposed peak."""
  args = [a for a in argv[1:] if a.startswith(("--config", "--strategy", "--tpu",
                                                "--cpu_devices"))
          and not a.startswith(("--config.schedule.target_lr=",
                                "--config.schedule.base_batch_size="))]
  base = config.schedule.base_batch_size
  target = proposal * base / config.global_batch_size if base else proposal
  extra = [f"--config.schedule.target_lr={target:.3g}"]
  if base:  # the config scales target_lr by the batch: give the rate at its base batch
    extra.append(f"--config.schedule.base_batch_size={base}")
  return " ".join(["python -m trainer.main", *map(shlex.quote, args), *extra])


def picture(record, path):
  # pylint: disable=g-import-not-at-top
  from trainer.rundir import files
  from trainer.schedules import picture as picture_lib
  fig = picture_lib.figure(8, 4.5)
  ax = fig.add_subplot()
  ax.plot(record["lrs"], record["losses"], color="#9bb7e0", linewidth=1, label="loss")
  ax.plot(record["lrs"], record["smoothed"], color="#1f4e9c", linewidth=2, label="smoothed")
  if record["proposal"]:
    ax.axvline(record["proposal"], color="#c0392b", linestyle="--",
               label=f"proposal {record['proposal']:.3g}")
  ax.set_xscale("log")
  finite = [v for v in record["smoothed"] if v == v and abs(v) != float("inf")]
  if finite:
    ax.set_ylim(min(finite) * 0.9, min(max(finite), 4 * min(finite)) * 1.1)
  ax.set_xlabel("learning rate (log)")
  ax.set_ylabel("training loss")
  ax.set_title("LR range test: loss while the rate rises exponentially")
  ax.grid(alpha=0.3, which="both")
  ax.legend(fontsize="small")
  fig.tight_layout()
  files.write_atomically(path, picture_lib.render_png(fig))


def main(argv):
  preemption.startup()
  cli.no_arguments(argv)
  check_flags(FLAGS.min_lr, FLAGS.max_lr, FLAGS.steps)
  workdir = FLAGS.workdir or os.path.join(
      "runs", f"lr_find-{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")
  check_workdir(workdir)
  verbose = FLAGS.verbosity >= 1
  cli.quiet(verbose)
  config = CONFIG.settled()
  strategy = cli.strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.cpu_devices, verbose)
  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib
  from trainer.distribute import strategy as strategy_lib
  from trainer.rundir import files
  spec = config_lib.resolve(config, strategy)
  record = find(spec, strategy, FLAGS.min_lr, FLAGS.max_lr, FLAGS.steps)
  if not strategy_lib.is_chief(strategy):
    return
  record["command"] = command(sys.argv, record["proposal"], config) if record["proposal"] \
      else None
  files.makedirs(workdir)
  files.write_atomically(os.path.join(workdir, FILES[1]), json.dumps(record, indent=2))
  picture(record, os.path.join(workdir, FILES[0]))
  where = f"{len(record['losses'])} steps"
  if record["stopped_at"] is not None:
    where += (f", stopped at learning rate {record['lrs'][record['stopped_at']]:.3g} (the "
              f"smoothed loss passed 4x its minimum)")
  if record["proposal"] is None:
    print(f"lr_find: {where}: too few points for a proposal; widen --min_lr..--max_lr or "
          f"raise --steps. Curve in {workdir}")
    return
  print(f"lr_find: {where}; proposed peak learning rate {record['proposal']:.3g}")
  print(f"train with: {record['command']}")
  print(f"curve in {os.path.join(workdir, FILES[0])} and {os.path.join(workdir, FILES[1])}")


def run():
  app.run(errors.exit_on_error(main), flags_parser=lambda argv: CONFIG.parse(argv, _usage))


if __name__ == "__main__":
  run()
