r"""Train and evaluate: flags -> config -> strategy -> train_and_evaluate(config, workdir).

  python -m trainer.main                      # offline default, CPU, about a minute
  python -m trainer.main --config=configs/cifar10_resnet.py --strategy=mirrored \
      --workdir=runs/cifar --config.total_steps=20000
  python -m trainer.main --strategy=mirrored --cpu_devices=4   # 4 real replicas on a CPU
  python -m trainer.main --workdir=runs/a     # resume runs/a with the config it recorded

--config is a configs/*.py file (its get_config()) or a JSON file: a run's config.json or an
object of fields. Without --config, a workdir that holds a run resumes with the config that
run recorded; a new one trains configs/default.py. --config.FIELD=VALUE overrides any field
on top (what you give last wins: README, "What you give last wins"). A plug-in (model,
dataset or task naming package.module:function) that only the recorded config names is
code: it is imported only if you name it, --config.model=... (the same value), or pass
--trust_plugins.

Exit status: 0 done (or already done), 2 bad flags or config (one line on stderr, workdir
untouched), 3 the loss became NaN/inf (the last checkpoint is the last good one), 4 preempted
by SIGTERM (a checkpoint of the current step was written, or, during start-up, nothing
needed one: run the same command to resume), 5 a checkpoint could not be written or read
(disk full, permissions; the previous one is intact: fix the storage and run the same command
to resume), 130 Ctrl-C (once: a checkpoint of the current step was written; twice: stopped at
once, the latest checkpoint intact).
"""

import datetime
import os
import time

from absl import app, flags, logging

from trainer.base import errors, plugins, preemption
from trainer.base.choices import STRATEGIES
from trainer.base.errors import ConfigError
from trainer.run import cli, console

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "", "Run directory (local or gs://); default "
                    "runs/<date>-<time>-<pid>. An existing one is resumed from its latest "
                    "checkpoint.")
flags.DEFINE_string("strategy", "auto", f"One of {', '.join(STRATEGIES)}.")
flags.DEFINE_string("tpu", "", "With --strategy=tpu/auto: 'local' (on a TPU VM), a TPU name, "
                    "or grpc://HOST:PORT.")
flags.DEFINE_integer("cpu_devices", 0, "Split the host CPU into N logical devices first, so "
                     "--strategy=mirrored runs N replicas without GPUs.")
flags.DEFINE_bool("allow_config_change", False, "Resume a workdir even though the config "
                  "differs from its config.json in fields that change the run.")
flags.DEFINE_bool("print_lr_mults", False, "Print the learning rate multiplier each trainable "
                  "variable gets (optimizer.lr_mults, optimizer.layer_decay) and exit; nothing "
                  "is trained or written.")
flags.DEFINE_bool("force_unlock", False, "Take over a gs:// workdir's lease that another run "
                  "holds and has refreshed recently (that run is known to be dead).")
flags.DEFINE_bool("trust_plugins", False, "Without --config, resuming a workdir with the "
                  "config it recorded: import the plug-ins (model, dataset, task naming "
                  "package.module:function) that record names. Else name each with "
                  "--config.FIELD=VALUE.")

# Logical CPU devices emulate replicas on a CPU-only machine (tests, laptops), not for speed:
# every step's graph holds a copy of the model per replica. Measured on 2 cores (MLP, 2 steps
# and an eval): 8 devices 100 s, 32 and 64 over 400 s; 10000 took 11 minutes and 17 GB
# without training a step. 256 is more replicas than a host has accelerators to stand in for
# (16 GPUs; a TPU VM host has 4-8 cores), and TF still starts in about 10 s with them.
MAX_CPU_DEVICES = 256
CONFIG = cli.ConfigFlag(records=True)  # --config and --config.FIELD (set while parsing)


def _usage():
  return cli.config_usage(__doc__, __name__)


def default_workdir():
  """runs/<date>-<time>-<pid>: two runs started in the same second on one host differ."""
  return os.path.join("runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")


def main(argv):
  preemption.startup()  # SIGTERM or Ctrl-C before training stop at once (exit 4 / 130)
  cli.no_arguments(argv)
  if FLAGS.cpu_devices > MAX_CPU_DEVICES:
    raise ConfigError(f"cpu_devices: must be at most {MAX_CPU_DEVICES}, got "
                      f"{FLAGS.cpu_devices}; logical CPU devices emulate replicas for testing")
  if FLAGS.cpu_devices > 0 and FLAGS.strategy in ("cpu", "one_device"):
    raise ConfigError(f"cpu_devices: --strategy={FLAGS.strategy} runs on one device, so "
                      f"--cpu_devices={FLAGS.cpu_devices} would be ignored; give "
                      f"--strategy=mirrored to run a replica on each, or leave it out")
  verbose = FLAGS.verbosity >= 1
  cli.quiet(verbose)
  start = time.monotonic()
  if CONFIG.note:
    logging.info("%s", CONFIG.note)
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  config = CONFIG.settled()
  if CONFIG.record and not FLAGS.trust_plugins:  # before anything imports a plug-in
    given = CONFIG.given()
    plugins.check_named(config, CONFIG.path, {given[f] for f in plugins.FIELDS if f in given},
                        how="give --config.{field}={value} (or --trust_plugins)")
  strategy = cli.strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.cpu_devices, verbose)
  from trainer.distribute import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  spec = config_lib.resolve(config, strategy)
  if FLAGS.print_lr_mults:
    _print_lr_mults(spec)
    return
  workdir = FLAGS.workdir or default_workdir()
  # train.run: train_and_evaluate as the command line shows it (absl lines off a terminal),
  # and the summary below counts the start-up too.
  result = train.run(spec, workdir, strategy, allow_config_change=FLAGS.allow_config_change,
                     force_unlock=FLAGS.force_unlock)
  if strategy_lib.is_chief(strategy):
    console.end_summary(result, workdir, time.monotonic() - start)


def _print_lr_mults(spec):
  """The table of `--print_lr_mults` on stdout: the model built as the run builds it."""
  # pylint: disable=g-import-not-at-top
  from trainer import models
  from trainer.distribute.precision import global_policy
  from trainer.step import optimizer
  with global_policy(spec.policy):
    model = models.build(spec.config.model, spec.info.input_shape, spec.num_outputs,
                         fn=spec.model_fn)
  rates = optimizer.Rates.of(model, spec.config.optimizer)
  shapes = {v.path: v.shape for v in model.trainable_variables}
  print(f"{spec.config.model}: learning rate = schedule(step) * multiplier "
        f"(optimizer.lr_mults {spec.config.optimizer.lr_mults!r}, optimizer.layer_decay "
        f"{spec.config.optimizer.layer_decay}; layer = layers below the output)")
  print(rates.table(shapes))


def run():
  try:
    app.run(errors.exit_on_error(main), flags_parser=lambda argv: CONFIG.parse(argv, _usage))
  finally:  # SystemExit with the status decided: a signal must not change it now
    preemption.exiting()


if __name__ == "__main__":
  run()
