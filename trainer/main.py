r"""Train and evaluate: flags -> config -> strategy -> train_and_evaluate(config, workdir).

  python -m trainer.main                      # offline default, CPU, about a minute
  python -m trainer.main --config=configs/cifar10_resnet.py --strategy=mirrored \
      --workdir=runs/cifar --config.total_steps=20000
  python -m trainer.main --strategy=mirrored --cpu_devices=4   # 4 real replicas on a CPU

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

import configs
from trainer import console, errors, preemption
from trainer.choices import STRATEGIES
from trainer.errors import ConfigError

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
flags.DEFINE_bool("force_unlock", False, "Take over a gs:// workdir whose lease another run "
                  "holds and has refreshed recently (that run is known to be dead).")

# Logical CPU devices emulate replicas on a CPU-only machine (tests, laptops), not for speed:
# every step's graph holds a copy of the model per replica. Measured on 2 cores (MLP, 2 steps
# and an eval): 8 devices 100 s, 32 and 64 over 400 s; 10000 took 11 minutes and 17 GB
# without training a step. 256 is more replicas than a host has accelerators to stand in for
# (16 GPUs; a TPU VM host has 4-8 cores), and TF still starts in about 10 s with them.
MAX_CPU_DEVICES = 256


def _parse_flags(argv):
  """absl's parser, but a bad flag is one line and exit status 2, like every user mistake."""
  argv = [a if a != "-v" else "--verbosity=1" for a in argv]  # -v: show TF's own output too
  for arg in argv[1:]:
    if arg.startswith("--config=") and not os.path.isfile(arg.split("=", 1)[1]):
      errors.exit_with(ConfigError(f"config: no such file {arg.split('=', 1)[1]!r}; give a "
                                   f"configs/*.py file"))
  try:
    # Defined here, not at import: ml_collections loads the config file and registers the
    # --config.FIELD overrides while defining the flag, and those can fail too.
    config_flags.DEFINE_config_file(
        "config", os.path.join(os.path.dirname(configs.__file__), "default.py"),
        "A configs/*.py file; override fields with --config.FIELD=VALUE.", lock_config=True,
        sys_argv=argv)
    rest = FLAGS(argv)
    message = _config_shape_problem(FLAGS.config, _config_file(argv))
    if message is None:
      return rest
  except flags.Error as e:
    message = str(e).splitlines()[0]
  except (OSError, SyntaxError, ImportError) as e:  # --config=FILE that does not load
    message = f"config: cannot load the config file: {str(e).splitlines()[0]}"
  except Exception as e:  # pylint: disable=broad-except
    # The file itself (its get_config raised, is missing, returned the wrong thing), else an
    # override naming a field it does not have.
    message = _config_file_problem(_config_file(argv))
    if message is None and isinstance(e, AttributeError):
      field = str(e).strip("\"'")
      message = f"config: no such field {field!r}; see the config file for the fields it has"
    elif message is None:
      first = (str(e).strip().splitlines() or [""])[0][:160]
      message = f"config: {type(e).__name__}: {first}"
  errors.exit_with(ConfigError(message))


def _config_file_problem(path):
  """Why the config file at `path` does not give a config the trainer can run, or None.

  Loads it again (only on the error path) to tell its own mistakes from bad overrides."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  try:
    spec = importlib.util.spec_from_file_location("_trainer_config_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
      return f"config: {path} has no get_config() function; see configs/*.py"
    config = module.get_config()
  except Exception as e:  # pylint: disable=broad-except  (the user's file may raise anything)
    first = (str(e).strip().splitlines() or [""])[0][:160]
    return f"config: loading {path} raised {type(e).__name__}: {first}; fix its get_config()"
  return _config_shape_problem(config, path)


def _config_file(argv):
  for arg in argv[1:]:
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
  return os.path.join(os.path.dirname(configs.__file__), "default.py")


def _config_shape_problem(config, source):
  """Why `config` (what get_config() returned) is not a config the trainer can run, or None."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from configs import default  # pylint: disable=g-import-not-at-top
  if not isinstance(config, ml_collections.ConfigDict):
    return (f"config: {source}'s get_config() returned a {type(config).__name__}, not an "
            f"ml_collections.ConfigDict; see configs/*.py")

  def fields(tree, prefix=""):
    for key, value in tree.items():
      if isinstance(value, dict):
        yield from fields(value, f"{prefix}{key}.")
      else:
        yield prefix + key

  missing = sorted(set(fields(default.get_config().to_dict())) - set(fields(config.to_dict())))
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return (f"config: {source}'s get_config() returns a config without {shown}; start from "
            f"configs/default.py's get_config() and override fields")
  return None


def default_workdir():
  """runs/<date>-<time>-<pid>: two runs started in the same second on one host differ."""
  return os.path.join("runs", f"{datetime.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}")


def main(argv):
  preemption.startup()  # SIGTERM or Ctrl-C before training stop at once (exit 4 / 130)
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
  if FLAGS.cpu_devices > MAX_CPU_DEVICES:
    raise ConfigError(f"cpu_devices: must be at most {MAX_CPU_DEVICES}, got "
                      f"{FLAGS.cpu_devices}; logical CPU devices emulate replicas for testing")
  verbose = FLAGS.verbosity >= 1
  console.quiet_tf(verbose)
  if not verbose:  # TF's C++ INFO lines (XLA service, buffer sizes...); read at TF's import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
  start = time.monotonic()
  # Imported here so --help and flag errors do not wait for TensorFlow; TF's start-up lines
  # are filtered while it loads and finds its devices.
  with console.startup_lines_hidden(verbose):
    from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
    from trainer import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    from trainer import train  # pylint: disable=g-import-not-at-top
    # What the user gave last wins: a --config.FIELD of a duration group replaces the file's
    # choice for that group (config.settle).
    config = config_lib.settle(
        FLAGS.config, given=config_flags.get_override_values(FLAGS["config"]),
        source=config_flags.get_config_filename(FLAGS["config"]))
    if FLAGS.cpu_devices:
      strategy_lib.setup_cpu_devices(FLAGS.cpu_devices)
    strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.tpu)
    strategy_lib.make_first_iterator(strategy)
  workdir = FLAGS.workdir or default_workdir()
  result = train.train_and_evaluate(config, workdir, strategy,
                                    allow_config_change=FLAGS.allow_config_change,
                                    force_unlock=FLAGS.force_unlock)
  if strategy_lib.is_chief(strategy):
    final = ", ".join(f"{k} {v:.4g}" for k, v in result.items()
                      if k not in ("step", "examples_per_sec", "best"))
    print(f"done: step {result['step']} in {console.duration(time.monotonic() - start)}, "
          f"{console.rate(result['examples_per_sec'])} examples/s (mean of this run's loops)")
    best = result["best"]
    print(f"eval: {final} (final)" + (f"; best {best[0]} {best[2]:.4g} at step {best[1]}"
                                      if best else ""))
    print(f"results in {workdir}: config.json, curves.png, schedule.png, checkpoints/, train/, "
          f"eval/, export/; watch with: tensorboard --logdir {workdir}")
  logging.info("done: %s", result)


def run():
  app.run(errors.exit_on_error(main), flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
