"""Config checks, and durations resolved to global steps once, up front.

A config (see configs/default.py) may give its length in steps or epochs and its warmup in
steps, as a fraction of the run, or in epochs; `resolve` turns all of them into global steps
and scales the peak LR with the global batch if asked, so nothing downstream converts again.
"""

import contextlib
import dataclasses
import importlib.util
import json

import ml_collections

from trainer import schedules, validate
from trainer.choices import INPUT_MODES, OPTIMIZERS, PRECISIONS
from trainer.errors import ConfigError



@dataclasses.dataclass(frozen=True)
class Plan:
  """The run in global steps. Written to workdir/config.json beside the config."""
  total_steps: int
  steps_per_epoch: int
  warmup_steps: int
  hold: int
  start_lr: float
  peak_lr: float  # target_lr after linear batch scaling
  final_lr: float
  num_replicas: int
  per_replica_batch_size: int

  def schedule_kwargs(self):
    """Keyword arguments for `schedules.WarmupCosineDecay` / `plot.plot_schedule`."""
    return dict(total_steps=self.total_steps, warmup_steps=self.warmup_steps, hold=self.hold,
                start_lr=self.start_lr, target_lr=self.peak_lr, final_lr=self.final_lr)


def load(path):
  """Loads `get_config()` from a configs/*.py file, as `--config=path` would."""
  spec = importlib.util.spec_from_file_location("_trainer_config", path)
  if spec is None:
    raise ConfigError(f"config: cannot load {path!r}; give a configs/*.py file")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
  except FileNotFoundError:
    raise ConfigError(f"config: no such file {path!r}") from None
  return module.get_config()


def _int(config, field, minimum):
  return validate.integer(field, _get(config, field), minimum)


def _choice(config, field, allowed):
  return validate.choice(field, _get(config, field), allowed)


def _number(config, field, minimum=0.0):
  return validate.number(field, _get(config, field), minimum)


def _get(config, field):
  for part in field.split("."):
    config = config[part]
  return config


def check(config):
  """Checks every field that needs no dataset, strategy or model registry. Raises ConfigError.

  The model name is checked where it is looked up (`models.get_builder`), the dataset where it
  is opened (`data.get_dataset_info`), both before anything is written.
  """
  if not isinstance(config.dataset, str) or not config.dataset:
    raise ConfigError(f"dataset: must be a TFDS name, 'digits' or 'synthetic', "
                      f"got {config.dataset!r}")
  if not isinstance(config.model, str) or not config.model:
    raise ConfigError(f"model: must be a model name, got {config.model!r}")
  _int(config, "global_batch_size", 1)
  total = _int(config, "total_steps", 0)
  if total == 0 and not _number(config, "num_epochs") > 0:
    raise ConfigError("total_steps: is 0, so num_epochs must be > 0 (give one of the two)")
  loop = _int(config, "steps_per_loop", 1)
  for field in ("eval_every", "checkpoint_every"):
    if _int(config, field, 0) % loop:
      raise ConfigError(f"{field}: must be a multiple of steps_per_loop={loop} (or 0 = only "
                        f"at the end), got {config[field]}")
  _int(config, "max_checkpoints", 1)
  _int(config, "seed", 0)
  _choice(config, "mixed_precision", PRECISIONS)
  _choice(config, "input_mode", INPUT_MODES)
  _choice(config, "optimizer.name", OPTIMIZERS)
  for field in ("optimizer.weight_decay", "optimizer.momentum", "optimizer.clipnorm"):
    _number(config, field)
  for field in ("optimizer.beta_1", "optimizer.beta_2"):
    if not _number(config, field) < 1:
      raise ConfigError(f"{field}: must be in [0, 1), got {_get(config, field)!r}")
  for field in ("hold", "warmup_steps", "base_batch_size"):
    _int(config, f"schedule.{field}", 0)
  with _schedule_fields():
    schedules.validate(0, 0, 1, config.schedule.start_lr, config.schedule.target_lr,
                       config.schedule.final_lr)


def resolve(config, num_train_examples, num_replicas):
  """Checks the config and converts every duration to global steps.

  Args:
    config: the run's ConfigDict.
    num_train_examples: examples in the training split (for epochs -> steps).
    num_replicas: replicas in sync; the global batch must divide evenly among them.

  Returns:
    A `Plan`.

  Raises:
    ConfigError: naming the first bad field.
  """
  check(config)
  gb = config.global_batch_size
  if gb % num_replicas:
    raise ConfigError(f"global_batch_size: {gb} does not divide evenly among {num_replicas} "
                      f"replicas; use a multiple of {num_replicas}")
  spe = schedules.steps_per_epoch(num_train_examples, gb)
  total = config.total_steps or schedules.total_steps_from_epochs(config.num_epochs, spe)
  s = config.schedule
  with _schedule_fields():
    warmup = schedules.resolve_warmup_steps(total, s.warmup_steps, s.warmup_fraction,
                                            s.warmup_epochs, spe)
    peak = schedules.scale_lr_by_batch(s.target_lr, gb, s.base_batch_size)
    plan = Plan(total, spe, warmup, s.hold, float(s.start_lr), peak, float(s.final_lr),
                num_replicas, gb // num_replicas)
    schedules.validate(**plan.schedule_kwargs())
  return plan


@contextlib.contextmanager
def _schedule_fields():
  """Puts the config's `schedule.` prefix on errors about fields that live under it."""
  try:
    yield
  except ConfigError as e:
    field = str(e).split(":", 1)[0]
    if field in ("total_steps", "global_batch_size", "steps_per_epoch"):
      raise
    raise ConfigError(f"schedule.{e}") from None


def to_json(config, plan):
  """The resolved config as written to workdir/config.json."""
  return json.dumps({"config": config.to_dict(), "plan": dataclasses.asdict(plan)},
                    indent=2, sort_keys=True)


def override(config, **fields):
  """A copy of `config` with dotted fields replaced, e.g. override(c, **{'schedule.hold': 5})."""
  config = ml_collections.ConfigDict(config.to_dict())
  for field, value in fields.items():
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"{field}: no such config field")
    node[leaf] = value
  return config
