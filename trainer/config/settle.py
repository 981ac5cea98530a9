"""What the user gave last wins: the precedence rule of the duration groups.

A config's durations come in exclusive groups, each saying one thing in interchangeable units
(`GROUPS`): the run's length, its warmup, its cooldown. Of each group:

1. the config itself (a file, a record, a ConfigDict built in Python) chooses the member it
   sets to a value other than configs/default.py's; two such members are an error naming the
   config; the other members are cleared (set to 0);
2. a member given on top (the command line's --config.FIELD, `override(...)`) replaces that
   choice and clears the others; two given together are an error naming both.
"""

import ml_collections

from trainer.base.errors import ConfigError
from trainer.config import files

# Exclusive groups: each says one thing in interchangeable units. A member at 0 is unset.
GROUPS = (("total_steps", "num_epochs"),
          ("schedule.warmup_steps", "schedule.warmup_fraction", "schedule.warmup_epochs"),
          ("schedule.cooldown_steps", "schedule.cooldown_fraction",
           "schedule.cooldown_epochs"))


def get(config, field):
  """The value of a dotted `field` ('schedule.hold') of a config."""
  for part in field.split("."):
    config = config[part]
  return config


def assign(config, fields):
  """Sets dotted `fields` ({'schedule.hold': 5}) in `config`; ConfigError for an unknown one."""
  for field, value in fields.items():
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise ConfigError(f"{field}: no such config field{files.suggestion(field)}")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"{field}: no such config field{files.suggestion(field)}")
    node[leaf] = value
  return config


def settle(config, given=(), source="the config", given_by="on the command line"):
  """Applies the precedence rule (module docstring); returns a settled copy.

  Args:
    config: a ConfigDict shaped like configs/default.py (a file's, a record's, or yours).
    given: the fields given on top of it (the command line's --config.FIELD overrides).
    source: where `config` came from, for the error message.
    given_by: where `given` came from, for the error message.

  Raises:
    ConfigError: naming both fields, or the source.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  default = files.defaults()
  for group in GROUPS:
    values = {f: get(config, f) for f in group}
    on_top = [f for f in group if f in given]
    set_on_top = [f for f in on_top if values[f]]  # given as 0 (unset) agrees with any other
    if len(set_on_top) > 1:
      raise ConfigError(f"{set_on_top[1]}: given {given_by} together with {set_on_top[0]}; "
                        f"they say the same thing ({' | '.join(group)}): give one")
    if on_top:  # given as 0 alone, it clears the group (e.g. no warmup)
      keep = set_on_top
    else:
      keep = [f for f in group if values[f] and values[f] != get(default, f)]
      if len(keep) > 1:
        raise ConfigError(f"{keep[1]}: set (to a value other than configs/default.py's) "
                          f"together with {keep[0]} in {source}; they say the same thing ("
                          f"{' | '.join(group)}): set one")
    if on_top or keep:
      assign(config, {f: type(values[f])(0) for f in group if f not in keep})
  return config


def override(config, **fields):
  """A copy of `config` with dotted fields replaced, e.g. override(c, **{'schedule.hold': 5}).

  The fields given here are what the user gave last (as on the command line): a member of a
  duration group (`GROUPS`) replaces whatever `config` chose for that group.
  """
  config = assign(ml_collections.ConfigDict(config.to_dict()), fields)
  return settle(config, given=fields, given_by="to override()")
