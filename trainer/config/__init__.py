"""Set-up: a config settled, checked and resolved once, at the boundary, into a `RunSpec`.

  config = load("configs/default.py")          # a file (.py) or a record (.json), settled
  config = override(config, total_steps=100)   # what you give last wins (`settle`)
  spec = resolve(config, strategy)             # dataset, plan, precision, task, model, schedule

Owns the precedence rule of the duration groups (`settle`), the field checks
(`check_fields`), the checks of names and inputs that would otherwise be tracebacks
(`preflight`), every duration in global steps (`Plan`), and the resolved run (`RunSpec`).
May import `trainer.base`, `trainer.schedules`, `trainer.data`, `trainer.models`,
`trainer.task` and `trainer.distribute`; nothing above.
"""

import importlib

from trainer.config.fields import check_fields
from trainer.config.files import from_record, load_file, to_json
from trainer.config.settle import GROUPS, assign, get, override, settle

# TensorFlow loads with these (the dataset, the schedule), so they are imported on first use:
# the command line settles a config and reports its mistakes before TensorFlow starts.
_LAZY = {"Plan": "trainer.config.plan", "plan_run": "trainer.config.plan",
         "RunSpec": "trainer.config.spec", "resolve": "trainer.config.spec"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load(path, given=()):
  """The settled config of a config file (`.py`) or record (`.json`), as `--config=path`
  gives it (`given`: fields given on top)."""
  return settle(load_file(path), given=given, source=path)


__all__ = ["load", "load_file", "from_record", "settle", "override", "GROUPS", "get", "assign",
           "check_fields", "Plan", "plan_run", "RunSpec", "resolve", "to_json"]
