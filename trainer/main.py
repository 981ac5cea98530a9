r"""Train and evaluate: flags -> config -> strategy -> train_and_evaluate(config, workdir).

  python -m trainer.main                      # offline default, CPU, about a minute
  python -m trainer.main --config=configs/cifar10_resnet.py --strategy=mirrored \
      --workdir=runs/cifar --config.total_steps=20000
  python -m trainer.main --strategy=mirrored --cpu_devices=4   # 4 real replicas on a CPU
  python -m trainer.main --workdir=runs/a     # resume runs/a with the config it recorded

--config is a configs/*.py file (its get_config()) or a JSON file: a run's config.json or an
object of fields. Without --config, a workdir that holds a run resumes with the config that
run recorded; a new one trains configs/default.py. --config.FIELD=VALUE overrides any field
on top (what you give last wins: README, "What you give last wins").

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
from ml_collections import config_flags

from trainer.base import errors, preemption
from trainer.base.choices import STRATEGIES
from trainer.base.errors import ConfigError
from trainer.config import files as config_files
from trainer.rundir import layout, record
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
flags.DEFINE_bool("force_unlock", False, "Take over a gs:// workdir's lease that another run "
                  "holds and has refreshed recently (that run is known to be dead).")

# Logical CPU devices emulate replicas on a CPU-only machine (tests, laptops), not for speed:
# every step's graph holds a copy of the model per replica. Measured on 2 cores (MLP, 2 steps
# and an eval): 8 devices 100 s, 32 and 64 over 400 s; 10000 took 11 minutes and 17 GB
# without training a step. 256 is more replicas than a host has accelerators to stand in for
# (16 GPUs; a TPU VM host has 4-8 cores), and TF still starts in about 10 s with them.
MAX_CPU_DEVICES = 256
_source = {"path": "", "note": ""}  # where the base config came from (set while parsing)


def _value(argv, name):
  """The value of the last `--name=VALUE` in argv, or None."""
  values = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{name}=")]
  return values[-1] if values else None


def _base_config(argv):
  """(config, source): --config's file, else the workdir's recorded config, else default.py."""
  path = _value(argv, "config")
  if path is not None:
    return config_files.load_file(path), path
  workdir = _value(argv, "workdir")
  if workdir:
    try:
      saved = record.read_config_json(workdir)
    except (ValueError, OSError):
      saved = None  # unreadable: the resume check says so, with the default config
    if saved is not None:
      source = os.path.join(workdir, layout.CONFIG)
      _source["note"] = f"no --config: resuming with the config {source} records"
      return config_files.from_record(saved["config"], source), source
  path = config_files.default_file()
  return config_files.load_file(path), path


def _check_fields(argv, config):
  """A --config.FIELD that the config does not have is one line with the nearest field."""
  known = set(config_files.flatten(config))
  for arg in argv[1:]:
    for prefix in ("--config.", "--noconfig."):
      if arg.startswith(prefix):
        field = arg[len(prefix):].split("=", 1)[0]
        if field not in known and not any(k.startswith(field + ".") for k in known):
          raise ConfigError(f"config: no such field {field!r}"
                            f"{config_files.suggestion(field)} (see --help for the fields)")


def _usage():
  fields = config_files.flatten(config_files.defaults())
  listed = "\n".join(f"  --config.{k}={v!r}" for k, v in fields.items())
  return (f"{__doc__}\nflags:\n{cli.flags_help(__name__)}\n\n"
          f"config fields (configs/default.py's values; any of them with --config.FIELD=VALUE):"
          f"\n{listed}\n")


def _parse_flags(argv):
  """The command line: the base config (a file, a record or the default), --config.FIELD on
  top (ml_collections' types), every mistake one line and exit status 2."""
  argv = cli.expand(argv)
  if any(a in cli.HELP for a in argv[1:]):
    return cli.parse(argv, _usage)
  try:
    config, _source["path"] = _base_config(argv)
    _check_fields(argv, config)
    rest = [a for a in argv if not a.startswith("--config=")]
    # Defined here, not at import: ml_collections registers the --config.FIELD overrides of
    # this config while defining the flag.
    config_flags.DEFINE_config_dict(
        "config", config, "The config: see --help.", lock_config=True, sys_argv=rest)
  except ConfigError as e:
    errors.exit_with(e)
  except Exception as e:  # pylint: disable=broad-except  (an override ml_collections refuses)
    errors.exit_with(ConfigError(f"config: {errors.first_line(e, 200)}"))
  return cli.parse(rest, _usage)


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
  if _source["note"]:
    logging.info("%s", _source["note"])
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  # What the user gave last wins: a --config.FIELD of a duration group replaces the file's
  # choice for that group (config.settle).
  config = config_lib.settle(FLAGS.config, config_flags.get_override_values(FLAGS["config"]),
                             source=_source["path"])
  strategy = cli.strategy(FLAGS.strategy, FLAGS.tpu, FLAGS.cpu_devices, verbose)
  from trainer.distribute import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  spec = config_lib.resolve(config, strategy)
  workdir = FLAGS.workdir or default_workdir()
  # train.run: train_and_evaluate as the command line shows it (absl lines off a terminal),
  # and the summary below counts the start-up too.
  result = train.run(spec, workdir, strategy, allow_config_change=FLAGS.allow_config_change,
                     force_unlock=FLAGS.force_unlock)
  if strategy_lib.is_chief(strategy):
    console.end_summary(result, workdir, time.monotonic() - start)


def run():
  try:
    app.run(errors.exit_on_error(main), flags_parser=_parse_flags)
  finally:  # SystemExit with the status decided: a signal must not change it now
    preemption.exiting()


if __name__ == "__main__":
  run()
