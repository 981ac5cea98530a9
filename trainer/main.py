r"""Train and evaluate: flags -> config -> strategy -> train_and_evaluate(config, workdir).

  python -m trainer.main                      # offline default, CPU, about a minute
  python -m trainer.main --config=configs/cifar10_resnet.py --strategy=mirrored \
      --workdir=runs/cifar --config.total_steps=20000
  python -m trainer.main --strategy=mirrored --cpu_devices=4   # 4 real replicas on a CPU

Exit status: 0 done (or already done), 2 bad flags or config (one line on stderr, workdir
untouched), 3 the loss became NaN/inf (the last checkpoint is the last good one), 4 preempted
by SIGTERM (a checkpoint of the current step was written: run the same command to resume),
5 a checkpoint could not be written or read (disk full, permissions; the previous one is
intact: fix the storage and run the same command to resume).
"""

import datetime
import os
import time

from absl import app, flags, logging
from ml_collections import config_flags

import configs
from trainer import console, errors
from trainer.choices import STRATEGIES
from trainer.errors import ConfigError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "", "Run directory (local or gs://); default runs/<time>. "
                    "An existing one is resumed from its latest checkpoint.")
flags.DEFINE_string("strategy", "auto", f"One of {', '.join(STRATEGIES)}.")
flags.DEFINE_string("tpu", "", "With --strategy=tpu/auto: 'local' (on a TPU VM), a TPU name, "
                    "or grpc://HOST:PORT.")
flags.DEFINE_integer("cpu_devices", 0, "Split the host CPU into N logical devices first, so "
                     "--strategy=mirrored runs N replicas without GPUs.")
flags.DEFINE_bool("allow_config_change", False, "Resume a workdir even though the config "
                  "differs from its config.json in fields that change the run.")


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
    FLAGS.config.to_dict()  # a config file that failed to load raises here, inside the try
    return rest
  except flags.Error as e:
    message = str(e).splitlines()[0]
  except AttributeError as e:  # --config.FIELD that the config does not have
    field = str(e).strip("\"'")
    message = f"config: no such field {field!r}; see the config file for the fields it has"
  except (OSError, SyntaxError, ImportError) as e:  # --config=FILE that does not load
    message = f"config: cannot load the config file: {str(e).splitlines()[0]}"
  errors.exit_with(ConfigError(message))


def main(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
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
    from trainer import summaries, train  # pylint: disable=g-import-not-at-top
    # What the user gave last wins: a --config.FIELD of a duration group replaces the file's
    # choice for that group (config.settle).
    config = config_lib.settle(
        FLAGS.config, given=config_flags.get_override_values(FLAGS["config"]),
        source=config_flags.get_config_filename(FLAGS["config"]))
    if FLAGS.cpu_devices:
      strategy_lib.setup_cpu_devices(FLAGS.cpu_devices)
    strategy = strategy_lib.get_strategy(FLAGS.strategy, FLAGS.tpu)
    strategy_lib.make_first_iterator(strategy)
  workdir = FLAGS.workdir or os.path.join(
      "runs", datetime.datetime.now().strftime("%Y%m%d-%H%M%S"))
  result = train.train_and_evaluate(config, workdir, strategy,
                                    allow_config_change=FLAGS.allow_config_change)
  if strategy_lib.is_chief(strategy):
    accuracy = summaries.read_scalars(workdir, "eval", "accuracy")
    best = max(accuracy, key=accuracy.get) if accuracy else result["step"]
    print(f"done: step {result['step']} in {console.duration(time.monotonic() - start)}, "
          f"{console.rate(result['examples_per_sec'])} examples/s (mean of this run's loops)")
    print(f"eval: accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f} (final); best "
          f"accuracy {accuracy.get(best, result['accuracy']):.4f} at step {best}")
    print(f"results in {workdir}: config.json, curves.png, schedule.png, checkpoints/, train/, "
          f"eval/; watch with: tensorboard --logdir {workdir}")
  logging.info("done: %s", result)


def run():
  app.run(errors.exit_on_error(main), flags_parser=_parse_flags)


if __name__ == "__main__":
  run()
