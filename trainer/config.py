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
  per_replica_batch_size: int  # examples per replica per global step
  grad_accum_steps: int = 1  # micro-batches per replica per global step
  micro_batch_size: int = 0  # examples per replica per micro-batch (one forward/backward)

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
  return settle(module.get_config(), given=(), source=path)


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

  The model name is checked where it is looked up (`models.check_name`), the dataset where it
  is opened (`data.get_dataset_info`), both before anything is written.
  """
  if not isinstance(config.dataset, str) or not config.dataset:
    raise ConfigError(f"dataset: must be a TFDS name, 'digits' or 'synthetic', "
                      f"got {config.dataset!r}")
  if not isinstance(config.model, str) or not config.model:
    raise ConfigError(f"model: must be a model name, got {config.model!r}")
  if not isinstance(config.task, str) or not config.task:
    raise ConfigError(f"task: must be a task name, got {config.task!r}")
  _int(config, "image_size", 0)
  if not 0 < _number(config, "eval_fraction") < 1:
    raise ConfigError(f"eval_fraction: must be in (0, 1), got {config.eval_fraction!r}")
  _int(config, "global_batch_size", 1)
  _int(config, "grad_accum_steps", 1)
  decay = config.ema_decay
  if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
    raise ConfigError(f"ema_decay: must be in [0, 1) (0 = off, e.g. 0.999), got "
                      f"{config.ema_decay!r}")
  if not isinstance(config.ema_warmup, bool):
    raise ConfigError(f"ema_warmup: must be True or False, got {config.ema_warmup!r}")
  total = _int(config, "total_steps", 0)
  if total == 0 and not _number(config, "num_epochs") > 0:
    raise ConfigError("total_steps: is 0, so num_epochs must be > 0 (give one of the two)")
  _int(config, "steps_per_loop", 1)  # the longest host call; loops land on evals/checkpoints
  _int(config, "eval_every", 0)
  _int(config, "checkpoint_every", 0)
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
  k = config.grad_accum_steps
  if (gb // num_replicas) % k:
    raise ConfigError(f"grad_accum_steps: {k} micro-batches do not divide the "
                      f"{gb // num_replicas} examples per replica (global_batch_size {gb} over "
                      f"{num_replicas} replicas); use a divisor of {gb // num_replicas}")
  spe = schedules.steps_per_epoch(num_train_examples, gb)
  total = config.total_steps or schedules.total_steps_from_epochs(config.num_epochs, spe)
  s = config.schedule
  with _schedule_fields():
    warmup = schedules.resolve_warmup_steps(total, s.warmup_steps, s.warmup_fraction,
                                            s.warmup_epochs, spe)
    peak = schedules.scale_lr_by_batch(s.target_lr, gb, s.base_batch_size)
    plan = Plan(total, spe, warmup, s.hold, float(s.start_lr), peak, float(s.final_lr),
                num_replicas, gb // num_replicas, k, gb // num_replicas // k)
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
  """A copy of `config` with dotted fields replaced, e.g. override(c, **{'schedule.hold': 5}).

  The fields given here are what the user gave last (as on the command line): a member of a
  duration group (`GROUPS`) replaces whatever `config` chose for that group.
  """
  config = _set(ml_collections.ConfigDict(config.to_dict()), fields)
  return settle(config, given=fields, source="the config", given_by="to override()")


def _set(config, fields):
  for field, value in fields.items():
    *parents, leaf = field.split(".")
    node = config
    for p in parents:
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"{field}: no such config field")
    node[leaf] = value
  return config


# Exclusive groups: each says one thing (how long the run is; how long its warmup is) in
# interchangeable units. A member at 0 is unset.
GROUPS = (("total_steps", "num_epochs"),
          ("schedule.warmup_steps", "schedule.warmup_fraction", "schedule.warmup_epochs"))


def settle(config, given=None, source="the config", given_by="on the command line"):
  """Applies the precedence rule of the duration groups; returns a settled copy.

  What the user gave last wins: a group member in `given` replaces whatever `source` chose for
  that group (its other members are set to 0). Two members of a group in `given` are an error
  naming both; a `source` that sets two members itself is an error naming the source.

  Args:
    config: a ConfigDict shaped like configs/default.py.
    given: the fields the user gave last (the command line's --config.FIELD overrides). None
      for a ConfigDict built in Python: then "given" means set (non-zero) to a value other than
      configs/default.py's.
    source: the config file's path, for the error message.
    given_by: where `given` came from, for the error message.

  Raises:
    ConfigError: naming both fields, or the source.
  """
  config = ml_collections.ConfigDict(config.to_dict())
  default = None
  if given is None:
    from configs import default as default_config  # pylint: disable=g-import-not-at-top
    default = default_config.get_config()
  for group in GROUPS:
    values = {f: _get(config, f) for f in group}
    if default is None:
      chosen = [f for f in group if f in given]
      verb = f"given {given_by} together with"
    else:
      chosen = [f for f in group if values[f] and values[f] != _get(default, f)]
      verb = "set (to a value other than configs/default.py's) together with"
    set_ = [f for f in chosen if values[f]]  # given as 0 (unset) agrees with any other
    if len(set_) > 1:
      raise ConfigError(f"{set_[1]}: {verb} {set_[0]}; they say the same thing ("
                        f"{' | '.join(group)}): give one")
    from_source = [f for f in group if values[f] and f not in chosen]
    if len(from_source) > 1:
      raise ConfigError(f"config: {source} sets both {from_source[0]} and {from_source[1]}; "
                        f"set one of {', '.join(group)} (the others 0)")
    if chosen:
      _set(config, {f: type(values[f])(0) for f in group if f not in set_})
  return config
