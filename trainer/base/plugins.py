"""`package.module:function` in a config: the user's own code, imported by name.

The one rule for what is an import path (`is_import_path`): a module name (dotted or not), a
colon and a function name. Models, datasets and tasks all use it; TFDS names with a version
(`mnist:3.0.1`) are not import paths.

The module is imported as Python would from the working directory (`python -m trainer.main`
puts it first on sys.path) or from an installed package. Every failure is one ConfigError
line naming the config field.

A run's record (`workdir/config.json`) is data anyone may have edited or handed over with a
copied run, yet its `model`, `dataset` and `task` can name code. Like Keras' `safe_mode`, a
plug-in that only a record names is not imported unless the user names it too, or trusts the
record's plug-ins (`check_named`): `trainer.evaluate`, and `trainer.main` resuming a workdir
with the config it recorded, apply it.
"""

import importlib
import re

from trainer.base.choices import FOLDER_PREFIX
from trainer.base.errors import ConfigError, first_line

FIELDS = ("model", "dataset", "task")  # the config fields that may name code

_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_import_path(value) -> bool:
  """Whether `value` looks like `package.module:function` (TFDS versions like mnist:3.0.1 do not)."""
  return isinstance(value, str) and bool(_PATH.match(value))


def load_function(field, path):
  """The callable `path` ('package.module:function') names; ConfigError naming `field`."""
  if not is_import_path(path):
    raise ConfigError(f"{field}: {path!r} is not package.module:function")
  module_name, attr = path.split(":")
  try:
    module = importlib.import_module(module_name)
  except Exception as e:  # pylint: disable=broad-except  (the user's module may raise anything)
    raise ConfigError(f"{field}: cannot import {module_name!r} for {path!r} "
                      f"({first_line(e)}); it must be importable from the working directory or "
                      f"installed") from None
  fn = getattr(module, attr, None)
  if not callable(fn):
    raise ConfigError(f"{field}: {module_name!r} has no function {attr!r} (for {path!r})")
  return fn


def named_code(config):
  """{field: value} of the fields of `config` (a mapping) that name code to import (a
  dataset `folder:PATH` is a directory, not code)."""
  out = {}
  for field in FIELDS:
    value = config[field] if field in config else None
    if is_import_path(value) and not (field == "dataset" and value.startswith(FOLDER_PREFIX)):
      out[field] = value
  return out


def check_named(config, source, accepted=(), how="give it on the command line"):
  """Raises ConfigError naming the first plug-in `config` names that is not `accepted`.

  Args:
    config: a mapping with the fields `FIELDS`, read from the record `source`.
    source: where the config came from (e.g. a workdir's config.json), for the message.
    accepted: the plug-ins (`package.module:function` values) the user named, or True to
      accept whatever the record names.
    how: how to name one, with `{field}` and `{value}` (e.g. '--{field}={value}').
  """
  if accepted is True:
    return
  for field, value in named_code(config).items():
    if value not in accepted:
      raise ConfigError(
          f"{field}: {value!r} is code (a plug-in) that only {source} names, so it is not "
          f"imported: if you trust it, {how.format(field=field, value=value)}")
