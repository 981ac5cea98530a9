"""What every command (`trainer.main`, `.evaluate`, `.plot`, `.lr_find`) does before its work:
flags parsed with a bad one as one line and exit 2, `--help` on stdout with exit 0, TF's
chatter hidden unless `-v`, and the strategy set up while TF's start-up lines are filtered.
"""

import os
import sys

from absl import flags

from trainer.base import errors
from trainer.base.errors import ConfigError
from trainer.run import console

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
