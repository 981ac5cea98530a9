"""What every command (`trainer.main`, `.evaluate`, `.plot`, `.lr_find`) does before its work:
flags parsed with a bad one as one line and exit 2, `--help` on stdout with exit 0, TF's
chatter hidden unless `-v`, and the strategy set up while TF's start-up lines are filtered.
"""

import os
import sys

from absl import flags
from ml_collections import config_flags

from trainer.base import errors
from trainer.base.errors import ConfigError
from trainer.config import files as config_files
from trainer.run import console
from trainer.rundir import layout, record

FLAGS = flags.FLAGS
HELP = ("--help", "-h", "--helpshort", "-?")


def expand(argv):
  """argv with `-v` spelled as absl's --verbosity=1."""
  return [a if a != "-v" else "--verbosity=1" for a in argv]


def parse(argv, usage):
  """absl's parser, but `--help` prints `usage()` and exits 0, and a bad flag is one line and
  exit status 2, like every user mistake."""
  argv = expand(argv)
  if any(a in HELP for a in argv[1:]):
    sys.stdout.write(usage())
    sys.exit(0)
  try:
    return FLAGS(argv)
  except flags.Error as e:
    errors.exit_with(ConfigError(errors.reason(e, 300)))


def flags_help(module_name):
  """The help of the flags `module_name` (e.g. 'trainer.main', or the program run) defines,
  as absl writes it."""
  if module_name in FLAGS.flags_by_module_dict():
    return FLAGS.module_help(module_name)
  return FLAGS.main_module_help()


def no_arguments(argv):
  if len(argv) > 1:
    raise ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")


def quiet(verbose):
  """Hides TF's Python INFO lines and harmless warnings, and its C++ INFO lines (not when
  `verbose`; TF_CPP_MIN_LOG_LEVEL set by the user is respected)."""
  console.quiet_tf(verbose)
  if not verbose:  # TF's C++ INFO lines (XLA service, buffer sizes...); read at TF's import
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def strategy(name, tpu="", cpu_devices=0, verbose=False):
  """The strategy `--strategy` names, set up while TF's start-up lines are filtered (TF itself
  loads here)."""
  with console.startup_lines_hidden(verbose):
    from trainer.distribute import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    if cpu_devices:
      strategy_lib.setup_cpu_devices(cpu_devices)
    chosen = strategy_lib.get_strategy(name, tpu)
    strategy_lib.make_first_iterator(chosen)
  return chosen


def load_tensorflow(verbose=False):
  """TensorFlow imported and its runtime started while its start-up lines are filtered, for a
  command that sets up no strategy (`trainer.evaluate --export`)."""
  with console.startup_lines_hidden(verbose):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.list_logical_devices()  # the runtime starts here, and says so on stderr


class ConfigFlag:
  """`--config=FILE` (a configs/*.py file or a JSON record) and `--config.FIELD=VALUE` on top,
  as trainer.main and trainer.lr_find take them: every mistake one line and exit status 2.

  Args:
    records: without --config, a --workdir that holds a run gives its recorded config (a
      resume); else configs/default.py.
  """

  def __init__(self, records=True):
    self.records = records
    self.path = ""  # where the base config came from
    self.note = ""  # a line to log about it
    self.record = False  # it came from a workdir's config.json (picked up without --config)

  def _base(self, argv):
    path = _value(argv, "config")
    if path is not None:
      return config_files.load_file(path), path
    workdir = _value(argv, "workdir") if self.records else None
    if workdir:
      try:
        saved = record.read_config_json(workdir)
      except (ValueError, OSError):
        saved = None  # unreadable: the resume check says so, with the default config
      if saved is not None:
        source = os.path.join(workdir, layout.CONFIG)
        self.note = f"no --config: resuming with the config {source} records"
        self.record = True
        return config_files.from_record(saved["config"], source), source
    path = config_files.default_file()
    return config_files.load_file(path), path

  def parse(self, argv, usage):
    """absl's flags parser for `app.run(flags_parser=...)`."""
    argv = expand(argv)
    if any(a in HELP for a in argv[1:]):
      return parse(argv, usage)
    try:
      config, self.path = self._base(argv)
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
    return parse(rest, usage)

  def given(self):
    """{field: value} of the --config.FIELD overrides given."""
    return config_flags.get_override_values(FLAGS["config"])

  def settled(self):
    """The config given: what the user gave last wins (a --config.FIELD of a duration group
    replaces the file's choice for that group: `trainer.config.settle`)."""
    from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
    return config_lib.settle(FLAGS.config, self.given(), source=self.path)


def config_usage(doc, module_name):
  """--help of a command that takes a config: its docstring, its flags and the config fields."""
  fields = config_files.flatten(config_files.defaults())
  listed = "\n".join(f"  --config.{k}={v!r}" for k, v in fields.items())
  return (f"{doc}\nflags:\n{flags_help(module_name)}\n\n"
          f"config fields (configs/default.py's values; any of them with --config.FIELD=VALUE):"
          f"\n{listed}\n")


def _value(argv, name):
  """The value of the last `--name=VALUE` in argv, or None."""
  values = [a.split("=", 1)[1] for a in argv[1:] if a.startswith(f"--{name}=")]
  return values[-1] if values else None


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
