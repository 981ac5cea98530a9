"""`package.module:function` in a config: the user's own code, imported by name.

The one rule for what is an import path (`is_import_path`): a module name (dotted or not), a
colon and a function name. Models, datasets and tasks all use it; TFDS names with a version
(`mnist:3.0.1`) are not import paths.

The module is imported as Python would from the working directory (`python -m trainer.main`
puts it first on sys.path) or from an installed package. Every failure is one ConfigError
line naming the config field.
"""

import importlib
import re

from trainer.base.errors import ConfigError, first_line

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
