"""Config files and records: loading a `configs/*.py` file or a JSON record, and the JSON out.

A config comes from a Python file whose `get_config()` returns an `ml_collections.ConfigDict`
shaped like configs/default.py, or from JSON: a run's own `config.json` (its "config" part)
or a plain object of fields. Fields a JSON record predates are filled from
configs/default.py (they ran with those defaults).
"""

import dataclasses
import difflib
import importlib.util
import json
import os

import ml_collections

from trainer.base.errors import ConfigError, reason

def default_file():
  """The path of configs/default.py (the config file when none is given)."""
  import configs  # pylint: disable=g-import-not-at-top
  return os.path.join(os.path.dirname(configs.__file__), "default.py")


def defaults() -> ml_collections.ConfigDict:
  """configs/default.py's config: every field, at its default."""
  from configs import default  # pylint: disable=g-import-not-at-top
  return default.get_config()


def flatten(tree, prefix=""):
  """{'a.b': value} of a nested dict (or ConfigDict)."""
  out = {}
  for key, value in tree.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def merged(base, saved):
  """`base` (a nested dict) with `saved`'s values over it, recursively."""
  out = dict(base)
  for key, value in saved.items():
    out[key] = (merged(base[key], value) if isinstance(value, dict)
                and isinstance(base.get(key), dict) else value)
  return out


def from_record(fields: dict, source="config.json") -> ml_collections.ConfigDict:
  """A ConfigDict of recorded `fields` (config.json's "config"), fields it predates at their
  defaults.

  Raises:
    ConfigError: naming the first field whose shape is not configs/default.py's (a group of
      fields where a value belongs, or the reverse: a hand-edited `"schedule": 5`); the values
      themselves are checked with the rest of the config (`check_fields`).
  """
  base = defaults().to_dict()
  problem = _shape_of_record(fields, base, source)
  if problem:
    raise ConfigError(problem)
  return ml_collections.ConfigDict(merged(base, fields))


def _shape_of_record(fields, base, source, prefix=""):
  if not isinstance(fields, dict):
    return (f"{prefix.rstrip('.') or 'config'}: {source} has {fields!r} where an object of "
            f"fields belongs")
  for key, value in fields.items():
    if key not in base:
      continue  # a field this version does not have: refused where a file is loaded
    field = prefix + key
    if isinstance(base[key], dict):
      if not isinstance(value, dict):
        names = sorted(base[key])
        return (f"{field}: {source} has {value!r} where an object of fields belongs ("
                f"{', '.join(names[:3])}{', ...' if len(names) > 3 else ''}); fix the file")
      problem = _shape_of_record(value, base[key], source, field + ".")
      if problem:
        return problem
    elif isinstance(value, (dict, list)):
      return (f"{field}: {source} has {value!r} where a value like {base[key]!r} belongs; "
              f"fix the file")
  return None


def load_file(path) -> ml_collections.ConfigDict:
  """The config of a `.py` file (its `get_config()`) or a `.json` file (a run's config.json, or
  an object of fields), unsettled.

  Raises:
    ConfigError: a missing or unloadable file, a get_config() that raises or returns the wrong
      thing, or a config without configs/default.py's fields.
  """
  if not os.path.isfile(path):
    raise ConfigError(f"config: no such file {path!r}; give a configs/*.py file or a run's "
                      f"config.json")
  if path.endswith(".json"):
    config = _json_file(path)
  else:
    config = _python_file(path)
  problem = shape_problem(config, path)
  if problem:
    raise ConfigError(problem)
  return config


def _python_file(path):
  spec = importlib.util.spec_from_file_location("_trainer_config", path)
  if spec is None:
    raise ConfigError(f"config: cannot load {path!r}; give a configs/*.py file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except SystemExit as e:  # a file that exits would end the run silently
    raise ConfigError(f"config: loading {path} called sys.exit({e.code!r}); a config file "
                      f"defines get_config() and returns") from None
  except Exception as e:  # pylint: disable=broad-except  (the user's file may raise anything)
    raise ConfigError(f"config: cannot load the config file {path}: {type(e).__name__}: "
                      f"{reason(e, 160)}") from None
  if not callable(getattr(module, "get_config", None)):
    raise ConfigError(f"config: {path} has no get_config() function; see configs/*.py")
  try:
    return module.get_config()
  except SystemExit as e:
    raise ConfigError(f"config: {path}'s get_config() called sys.exit({e.code!r}); it must "
                      f"return a config") from None
  except Exception as e:  # pylint: disable=broad-except
    raise ConfigError(f"config: loading {path} raised {type(e).__name__}: {reason(e, 160)}; "
                      f"fix its get_config()") from None


def _json_file(path):
  try:
    with open(path, encoding="utf-8") as f:
      blob = json.load(f)
  except (OSError, ValueError) as e:
    raise ConfigError(f"config: {path} is not readable JSON ({type(e).__name__}: "
                      f"{reason(e, 120)})") from None
  if isinstance(blob, dict) and isinstance(blob.get("config"), dict) and "plan" in blob:
    blob = blob["config"]  # a run's config.json: its config
  if not isinstance(blob, dict):
    raise ConfigError(f"config: {path} holds a JSON {type(blob).__name__}, not an object of "
                      f"config fields")
  config = from_record(blob, path)  # first: a `"schedule": 5` is not an unknown field
  unknown = sorted(set(flatten(blob)) - set(flatten(defaults())))
  if unknown:
    raise ConfigError(f"config: {path} has fields configs/default.py does not: "
                      f"{', '.join(unknown[:5])}{suggestion(unknown[0])}")
  return config


def suggestion(field):
  """'; did you mean X?' for a mistyped dotted field, or ''."""
  close = difflib.get_close_matches(field, list(flatten(defaults())), n=1)
  return f"; did you mean {close[0]!r}?" if close else ""


def shape_problem(config, source):
  """Why `config` (what a config file gave) is not a config the trainer can run, or None."""
  if not isinstance(config, ml_collections.ConfigDict):
    return (f"config: {source}'s get_config() returned a {type(config).__name__}, not an "
            f"ml_collections.ConfigDict; see configs/*.py")
  missing = sorted(set(flatten(defaults())) - set(flatten(config)))
  if missing:
    shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
    return (f"config: {source}'s get_config() returns a config without {shown}; start from "
            f"configs/default.py's get_config() and override fields")
  return None


def to_json(config, plan, **extra):
  """The resolved config as written to workdir/config.json: {"config", "plan", **extra}."""
  return json.dumps({"config": config.to_dict(), "plan": dataclasses.asdict(plan), **extra},
                    indent=2, sort_keys=True)
