"""Before a run touches its workdir: may this config resume it?

`workdir/config.json` records the config and plan a run started with. Resuming under a
config that changes what is being trained (model, data, schedule, batch, seed, optimizer,
precision) would silently make a different run from the same checkpoint, so it is refused
with one `ConfigError` line listing the differing fields, unless the caller allows it
(`--allow_config_change`). Fields that only change how often things happen or where data
comes from (`SAFE_FIELDS`) may change freely. The schedule is compared as resolved global
steps (the plan), so `warmup_fraction=0.1` and `warmup_steps=60` on 600 steps are the same
run, while a longer or shorter `total_steps` is a different cosine and is refused.

`config.json` is the run's identity: checkpoints without it are refused too (what they are
checkpoints of cannot be checked), unless `--allow_config_change`. Even then, changes that
the checkpoint cannot honour (`UNCHANGEABLE`: another architecture needs new weights, another
optimizer kind new optimizer state) are refused. A config that was allowed to take over a
workdir is recorded in its config.json only once its first loop has trained (train.py): a
changed config that fails at once (a NaN at step 1) leaves the run's identity as it was.
"""

import json
import os

import tensorflow as tf
from absl import logging

from trainer import config as config_lib
from trainer.errors import ConfigError

# Safe to change on resume: bookkeeping, I/O, and how (not what) the steps are computed.
# grad_accum_steps too: the same updates of the same global batch in smaller slices (resume
# with more of them after running out of memory).
SAFE_FIELDS = ("eval_every", "checkpoint_every", "max_checkpoints", "steps_per_loop",
               "data_dir", "jit_compile", "input_mode", "grad_accum_steps")
# Never changed on resume, even with --allow_config_change: the checkpoint holds this model's
# weights and this optimizer's slots.
UNCHANGEABLE = {"model": "the checkpoint holds that model's weights; another architecture "
                         "needs new ones",
                "optimizer.name": "the checkpoint holds that optimizer's state; another kind "
                                  "needs a fresh one"}
# Compared through the resolved plan rather than as written.
_PLAN_INPUTS = ("total_steps", "num_epochs", "schedule.")
# Plan entry -> the config field to name for it.
_PLAN_FIELDS = {"total_steps": "total_steps", "warmup_steps": "schedule.warmup_steps",
                "hold": "schedule.hold", "start_lr": "schedule.start_lr",
                "peak_lr": "schedule.target_lr", "final_lr": "schedule.final_lr",
                "steps_per_epoch": "dataset (its size: steps per epoch)"}


def check(workdir, config, plan, allow_config_change=False):
  """Raises ConfigError if `config` may not resume `workdir`. Reads only.

  Args:
    workdir: the run's directory; a missing one, or one with neither config.json nor
      checkpoints, is a fresh run.
    config: the run's ConfigDict.
    plan: `config_lib.resolve(config, ...)`.
    allow_config_change: resume even if fields outside SAFE_FIELDS differ (logged), or
      config.json is missing or unreadable beside checkpoints; never for UNCHANGEABLE fields.

  Returns:
    True if `config` takes over a workdir whose config.json records something else (or
    nothing, or garbage): write config.json only after the first loop under it trained.
    False if config.json may be written at once (a fresh run, or the same run).
  """
  return _check_compatible(workdir, config, plan, allow_config_change)


def has_checkpoints(workdir):
  """Whether `workdir/checkpoints` holds a checkpoint or a state file."""
  directory = os.path.join(workdir, "checkpoints")
  return bool(tf.io.gfile.exists(os.path.join(directory, "checkpoint"))
              or tf.io.gfile.glob(os.path.join(directory, "ckpt-*.index")))


def differences(saved, config, plan):
  """[(field, old, new)] between a config.json blob and `config`/`plan`, unsafe ones only."""
  now = json.loads(config_lib.to_json(config, plan))
  old, new = _flatten(saved["config"]), _flatten(now["config"])
  # A config.json written before a field existed ran with that field's default.
  from configs import default  # pylint: disable=g-import-not-at-top
  old = {**{k: v for k, v in _flatten(default.get_config().to_dict()).items() if k in new},
         **old}
  diffs = []
  for field in sorted(set(old) | set(new)):
    if field.split(".")[0] in SAFE_FIELDS or field.startswith(_PLAN_INPUTS):
      continue
    if old.get(field, _ABSENT) != new.get(field, _ABSENT):
      diffs.append((field, old.get(field, _ABSENT), new.get(field, _ABSENT)))
  for key, field in _PLAN_FIELDS.items():
    if key == "steps_per_epoch" and any(d[0] in ("dataset", "global_batch_size") for d in diffs):
      continue  # already explained
    if saved["plan"].get(key, _ABSENT) != now["plan"][key]:
      diffs.append((field, saved["plan"].get(key, _ABSENT), now["plan"][key]))
  return diffs


class _Absent:
  def __repr__(self):
    return "(absent)"


_ABSENT = _Absent()


def _flatten(tree, prefix=""):
  out = {}
  for key, value in tree.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


def _check_compatible(workdir, config, plan, allow_config_change):
  path = os.path.join(workdir, "config.json")
  if not tf.io.gfile.exists(path):
    if not has_checkpoints(workdir):
      return False  # a fresh run
    if allow_config_change:
      logging.warning("%s has checkpoints but no config.json; resuming them under this config "
                      "(--allow_config_change).", workdir)
      return True
    raise ConfigError(
        f"workdir: {workdir} has checkpoints but no config.json, so what they are "
        f"checkpoints of cannot be checked; put its config.json back, give a new workdir, or "
        f"pass --allow_config_change to resume them under this config")
  try:
    with tf.io.gfile.GFile(path) as f:
      saved = json.loads(f.read())
    if not (isinstance(saved, dict) and isinstance(saved.get("config"), dict)
            and isinstance(saved.get("plan"), dict)):
      raise ValueError("not a {config, plan} object")
  except (ValueError, tf.errors.OpError) as e:
    if allow_config_change:
      logging.warning("%s is unreadable (%s); overwriting it (--allow_config_change).", path, e)
      return True
    reason = (str(e).strip().splitlines() or [""])[0][:120]
    raise ConfigError(f"workdir: {path} is unreadable ({type(e).__name__}: {reason}), so a "
                      f"resume cannot be checked; use a new workdir or pass "
                      f"--allow_config_change") from None
  diffs = differences(saved, config, plan)
  old_replicas = saved["plan"].get("num_replicas")
  if old_replicas not in (None, plan.num_replicas):
    logging.info("Resuming on %d replicas (was %d); the global batch is unchanged.",
                 plan.num_replicas, old_replicas)
  if not diffs:
    return False
  listed = ", ".join(f"{field} {old!r} -> {new!r}" for field, old, new in diffs)
  if allow_config_change:
    for field, old, new in diffs:
      if field == "ema_decay" and not old and new:
        raise ConfigError(
            f"ema_decay: --allow_config_change cannot resume {workdir} with ema_decay {old!r} "
            f"-> {new!r}: its checkpoints hold no weight average to continue; give a new "
            f"workdir (or resume with ema_decay 0)")
      if field in UNCHANGEABLE:
        raise ConfigError(
            f"{field}: --allow_config_change cannot resume {workdir} with {field} {old!r} -> "
            f"{new!r}: {UNCHANGEABLE[field]}; give a new workdir (or resume with {old!r})")
    logging.warning("Resuming %s with a changed config (--allow_config_change): %s", workdir,
                    listed)
    return True
  raise ConfigError(
      f"{diffs[0][0].split(' ')[0]}: cannot resume {workdir} under a different config: "
      f"{listed}; that would train a different run from its checkpoint. Use the values in "
      f"{path}, a new workdir, or --allow_config_change (free to change: "
      f"{', '.join(SAFE_FIELDS)})")
