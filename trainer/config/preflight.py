"""User mistakes caught before the dataset is opened or anything is built, each a ConfigError
(exit 2) naming its field, instead of a traceback from deep inside TFDS, NumPy or Keras.

`check_inputs(config)` runs after `check_fields` (the fields' own ranges), `tfds_errors(config)`
around opening the dataset, `check_used(config, info)` (a field the dataset would ignore) and
`check_fits(config, info)` once the input shape is known; `trainer.config.spec.resolve` calls
them before any write.
"""

import contextlib
import math
import os

from trainer.base.errors import ConfigError, reason
from trainer.base.fs import is_remote
from trainer.base.plugins import is_import_path
from trainer.config import files
from trainer.data.folder import PREFIX as FOLDER

MAX_SEED = 2**32 - 1  # Keras's set_random_seed seeds NumPy, whose seeds are 32-bit
_PATH_STARTS = ("/", "./", "../", "~", ".\\", "\\")


def check_inputs(config):
  """The fields whose mistakes TFDS, NumPy or Keras would report as tracebacks."""
  seed = config.seed
  if isinstance(seed, int) and not isinstance(seed, bool) and seed > MAX_SEED:
    raise ConfigError(f"seed: must be an integer in [0, {MAX_SEED}] (Keras seeds NumPy, whose "
                      f"seeds are 32-bit), got {seed!r}")
  name = config.dataset
  if _tfds_name(name):
    if not name.isascii() or not name.isprintable():
      raise ConfigError(f"dataset: {name!r} is not a TFDS name (ASCII letters, digits, '_', "
                        f"'/config', ':version'); e.g. mnist, cifar10, 'digits' or 'synthetic'")
    if name.startswith(_PATH_STARTS) or is_remote(name) or name.endswith("/") or "//" in name:
      raise ConfigError(f"dataset: {name!r} looks like a path; give a TFDS name (e.g. mnist) "
                        f"and the directory it is prepared in as --config.data_dir")
    if any(c.isspace() for c in name):
      raise ConfigError(f"dataset: {name!r} contains whitespace; give a TFDS name (e.g. mnist)")
  data_dir = config.data_dir
  if isinstance(data_dir, str) and data_dir and not is_remote(data_dir):
    where = os.path.abspath(os.path.expanduser(data_dir))
    if os.path.exists(where) and not os.path.isdir(where):
      raise ConfigError(f"data_dir: {data_dir!r} is a file; give the TFDS data directory")
    while not os.path.exists(where):
      where = os.path.dirname(where)
    if not os.path.isdir(where):
      raise ConfigError(f"data_dir: {data_dir!r} cannot be a directory: {where!r} is a file; "
                        f"give the TFDS data directory")


def check_used(config, info):
  """Fields the dataset does not read, set to a value other than configs/default.py's (as
  `settle` tells what was set), would be ignored without a word: refused."""
  default = files.defaults()
  folder = info.name.startswith(FOLDER)
  if not folder and config.eval_fraction != default.eval_fraction:
    raise ConfigError(f"eval_fraction: {info.name!r} has its own eval split, so eval_fraction "
                      f"{config.eval_fraction!r} would be ignored (it splits a folder: dataset "
                      f"of one tree); leave it at {default.eval_fraction}")
  if folder and config.data_dir != default.data_dir:
    raise ConfigError(f"data_dir: {info.name!r} reads its own directory, so data_dir "
                      f"{config.data_dir!r} would be ignored (it is where TFDS datasets are "
                      f"prepared); leave it at {default.data_dir!r}")


def physical_memory_bytes():
  """This host's RAM, or None where the OS does not say."""
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def check_fits(config, info):
  """Refuses a global batch whose float32 input alone exceeds this host's memory.

  A lenient bound (activations take several times the input): it catches the typo that
  would otherwise die allocating terabytes; a batch that is merely too large for the model
  runs out of memory in its first step, which `errors.user_error` reports as one line too.
  """
  memory = physical_memory_bytes()
  need = config.global_batch_size * math.prod(info.image_shape) * 4
  if memory and need > memory:
    shape = "x".join(map(str, info.image_shape))
    raise ConfigError(
        f"global_batch_size: {config.global_batch_size} examples of {shape} are "
        f"{need / 2**30:.1f} GiB of float32 input per step, more than this host's "
        f"{memory / 2**30:.1f} GiB of memory; use a smaller global_batch_size")


def _tfds_name(name):
  """Whether `name` is meant as a TFDS name: not 'folder:PATH', not 'package.module:fn'."""
  return (isinstance(name, str) and bool(name) and not name.startswith(FOLDER)
          and not is_import_path(name))


@contextlib.contextmanager
def tfds_errors(config):
  """Around opening the dataset: TFDS's own errors about a name it cannot parse or build (a
  ValueError or TypeError: a bad config or version, a malformed name) as one line naming
  `dataset`."""
  try:
    yield
  except ConfigError:
    raise
  except (ValueError, TypeError) as e:
    if not _tfds_name(config.dataset):
      raise
    raise ConfigError(f"dataset: TFDS cannot build {config.dataset!r} ({type(e).__name__}: "
                      f"{reason(e, 160)}); give a TFDS image-classification name (e.g. mnist, "
                      f"cifar10, mnist:3.*.*), 'digits' or 'synthetic'") from None
