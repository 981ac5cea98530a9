"""The checks of the fields that need nothing else (no dataset, strategy or model): ranges,
types and names. Each raises a ConfigError naming the field."""

import math
import re

from trainer.base import validate
from trainer.base.choices import (EXPORT_WEIGHTS, INIT_MODES, INPUT_MODES, NONFINITE,
                                   OPTIMIZERS, PRECISIONS)
from trainer.base.errors import ConfigError
from trainer.config import files
from trainer.config.settle import get


def _int(config, field, minimum):
  return validate.integer(field, get(config, field), minimum)


def _number(config, field, minimum=0.0):
  return validate.number(field, get(config, field), minimum)


def check_fields(config):
  """Checks every field that needs no dataset, strategy or model registry. Raises ConfigError.

  The model and task names are checked where they are looked up, the dataset where it is
  opened, the schedule's rates and shapes where its durations are resolved
  (`trainer.config.spec.resolve`), all before anything is written.
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
  for field in ("ema_warmup", "augment", "jit_compile"):  # a hand-edited config.json's "yes"
    if not isinstance(config[field], bool):
      raise ConfigError(f"{field}: must be True or False, got {config[field]!r}")
  total = _int(config, "total_steps", 0)
  if total == 0 and not _number(config, "num_epochs") > 0:
    raise ConfigError("total_steps: is 0, so num_epochs must be > 0 (give one of the two)")
  _int(config, "steps_per_loop", 1)  # the longest host call; loops land on evals/checkpoints
  _int(config, "eval_every", 0)
  _int(config, "checkpoint_every", 0)
  _int(config, "max_checkpoints", 1)
  if _int(config, "keep_best", 0) > 32:  # trainer.step.state.BEST_CAPACITY
    raise ConfigError(f"keep_best: must be at most 32, got {config.keep_best!r}")
  _int(config, "keep_every", 0)
  validate.choice("nonfinite", config.nonfinite, NONFINITE)
  _int(config, "max_consecutive_skips", 0)
  _int(config, "recovery_max_trials", 0)
  if not 0 < _number(config, "recovery_lr_factor") <= 1:
    raise ConfigError(f"recovery_lr_factor: must be in (0, 1] (the learning rate is multiplied "
                      f"by it at each rollback), got {config.recovery_lr_factor!r}")
  _number(config, "loss_upper_bound")
  _int(config, "recovery_begin_steps", 0)
  _int(config, "early_stop_patience", 0)
  _number(config, "early_stop_min_delta")
  validate.choice("export_weights", config.export_weights, EXPORT_WEIGHTS)
  if config.export_weights == "best" and not config.keep_best:
    raise ConfigError("export_weights: 'best' exports the best eval's checkpoint, which "
                      "keep_best=0 does not keep; set keep_best >= 1 or export_weights='final'")
  _int(config, "seed", 0)
  validate.choice("mixed_precision", config.mixed_precision, PRECISIONS)
  validate.choice("input_mode", config.input_mode, INPUT_MODES)
  validate.choice("optimizer.name", config.optimizer.name, OPTIMIZERS)
  for field in ("optimizer.weight_decay", "optimizer.momentum", "optimizer.clipnorm"):
    _number(config, field)
  for field in ("optimizer.beta_1", "optimizer.beta_2"):
    if not _number(config, field) < 1:
      raise ConfigError(f"{field}: must be in [0, 1), got {get(config, field)!r}")
  _check_optimizer_uses(config)
  for field in ("hold", "warmup_steps", "cooldown_steps", "base_batch_size", "rsqrt_timescale"):
    _int(config, f"schedule.{field}", 0)
  parse_lr_mults(config.optimizer.lr_mults)
  if not 0 <= _number(config, "optimizer.layer_decay") <= 1:
    raise ConfigError(f"optimizer.layer_decay: must be in [0, 1] (0 = off, e.g. 0.75), got "
                      f"{config.optimizer.layer_decay!r}")
  if not isinstance(config.init_from, str):
    raise ConfigError(f"init_from: must be a workdir, a checkpoint or a model.keras path ('' = "
                      f"none), got {config.init_from!r}")
  validate.choice("init_mode", config.init_mode, INIT_MODES)
  if not isinstance(config.init_allow_partial, bool):
    raise ConfigError(f"init_allow_partial: must be True or False, got "
                      f"{config.init_allow_partial!r}")


def parse_lr_mults(text):
  """[(pattern, multiplier)] of `optimizer.lr_mults`: 'PATTERN=MULT,PATTERN=MULT', '' = none.

  A pattern is a regular expression over a whole variable path; the multiplier is the last
  '=' of its entry. A piece without '=' belongs to the next one, so a ',' inside a pattern
  ('conv{1,2}/kernel=0') needs no escaping. Raises ConfigError naming the field.
  """
  field = "optimizer.lr_mults"
  if not isinstance(text, str):
    raise ConfigError(f"{field}: must be one string 'PATTERN=MULT,PATTERN=MULT', got {text!r}")
  rules, pending = [], ""
  for piece in text.split(","):
    piece = pending + piece
    if "=" not in piece:
      pending = piece + "," if piece.strip() else ""
      continue
    pending = ""
    pattern, _, value = piece.rpartition("=")
    pattern = pattern.strip()
    if not pattern:
      raise ConfigError(f"{field}: {piece.strip()!r} has no pattern; give "
                        f"'PATTERN=MULT,PATTERN=MULT', e.g. 'logits/.*=1,.*=0.1'")
    try:
      re.compile(pattern)
    except re.error as e:
      raise ConfigError(f"{field}: {pattern!r} is not a regular expression ({e})") from None
    try:
      multiplier = float(value)
    except ValueError:
      multiplier = math.nan
    if not (math.isfinite(multiplier) and multiplier >= 0):
      raise ConfigError(f"{field}: the multiplier of {pattern!r} must be a finite number >= 0 "
                        f"(0 freezes), got {value.strip()!r}")
    rules.append((pattern, multiplier))
  if pending:
    raise ConfigError(f"{field}: {pending.rstrip(',').strip()!r} has no '=MULT'; give "
                      f"'PATTERN=MULT,PATTERN=MULT', e.g. 'logits/.*=1,.*=0.1'")
  return rules


# Which optimizer fields each optimizer reads; the others are refused when set.
_OPTIMIZER_FIELDS = {"sgd": ("momentum",), "adam": ("beta_1", "beta_2"),
                     "adamw": ("beta_1", "beta_2")}


def _check_optimizer_uses(config):
  """A field the chosen optimizer does not read, set to a value other than configs/default.py's
  (as `settle` tells what was set), would be ignored without a word: refused."""
  name = config.optimizer.name
  default = files.defaults().optimizer
  for field in ("momentum", "beta_1", "beta_2"):
    if field in _OPTIMIZER_FIELDS[name] or config.optimizer[field] == default[field]:
      continue
    users = [n for n, fields in _OPTIMIZER_FIELDS.items() if field in fields]
    raise ConfigError(f"optimizer.{field}: only {' and '.join(users)} "
                      f"{'uses' if len(users) == 1 else 'use'} it, and optimizer.name is "
                      f"{name!r}; leave it at {default[field]!r} or choose {users[0]}")
