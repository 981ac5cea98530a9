"""trainer: warmup + decay learning rates in global steps, and a distributed TF2 training template.

  from trainer import train_and_evaluate     # the Python entry point (trainer.run.train)
  trainer.load_export("runs/a")              # a run's exported model, loaded (trainer.run.exported)
  python -m trainer.main                     # the command line (also trainer.evaluate, .plot)

The package is layered (docs/architecture.md; `lint-imports` checks that lower layers never
import upper ones):

  trainer.main, .evaluate, .plot, .lr_find   entry points: flags in, one line out on a mistake
  trainer.run         a run: train_and_evaluate, the controller and its actions, checkpoints,
                      summaries, the console, the export
  trainer.step        the step: learner, compiled loops, what XLA compiles, EMA, the builder
  trainer.rundir      the run directory: its names, atomic writes, lock, lease, the resume check,
                      reading a run back
  trainer.config      set-up: settle, check and resolve a config once, into a RunSpec
  trainer.data, trainer.models, trainer.task, trainer.distribute
                      datasets, models, tasks, strategies
  trainer.schedules   the schedule library (usable without the rest)
  trainer.base        errors, value checks, signals, plug-in paths, the Keras switch

Module names from before the layers (`trainer.train`, `trainer.summaries`, `trainer.callbacks`,
...) still import: each is the module that took its place (`MOVED`).
"""

import importlib
import importlib.abc
import importlib.util
import sys

__version__ = "0.1.0"

# Old flat module name -> the module that holds its code now. Importing the old name gives the
# new module itself (one module object, so patches and isinstance checks agree).
MOVED = {
    **{n: f"trainer.base.{n}" for n in ("errors", "validate", "compat", "choices", "plugins",
                                        "preemption")},
    **{n: f"trainer.step.{n}" for n in ("learner", "loop", "ema", "local_update", "build")},
    **{n: f"trainer.run.{n}" for n in ("summaries", "checkpoints", "controller", "console",
                                       "export", "train")},
    **{n: f"trainer.rundir.{n}" for n in ("lock", "lease", "resume")},
    **{n: f"trainer.distribute.{n}" for n in ("strategy", "tpu")},
    "hooks": "trainer.base.testpoints", "compile_plan": "trainer.step.execution",
    "workdir": "trainer.rundir.files", "callbacks": "trainer.schedules.callbacks",
    "preflight": "trainer.config.preflight",
}


class _OldNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Finds `trainer.<old name>` and loads it as the module in MOVED."""

  def find_spec(self, fullname, path=None, target=None):
    package, _, name = fullname.partition(".")
    if package == __name__ and name in MOVED:
      return importlib.util.spec_from_loader(fullname, self)
    return None

  def create_module(self, spec):
    module = importlib.import_module(MOVED[spec.name.partition(".")[2]])
    spec.loader_state = module.__spec__  # the import system sets __spec__ to the alias's
    return module

  def exec_module(self, module):
    module.__spec__ = module.__spec__.loader_state  # nothing to run: put its own spec back


if not any(isinstance(f, _OldNames) for f in sys.meta_path):
  sys.meta_path.insert(0, _OldNames())  # before the path finders: these names are no files


# The entry points, imported on first use: `import trainer` (or trainer.schedules alone) does not
# load TensorFlow's whole training stack.
_LAZY = {"train_and_evaluate": "trainer.run.train", "load_export": "trainer.run.exported"}


def __getattr__(name):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  if name in MOVED:
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["train_and_evaluate", "load_export"]
