"""Before a run touches its workdir: may this config resume it?

`workdir/config.json` records the config and plan a run started with. Resuming under a
config that changes what is being trained (model, data, batch, seed, optimizer, precision)
would silently make a different run from the same checkpoint, so it is refused with one
`ConfigError` line listing the differing fields, unless the caller allows it
(`--allow_config_change`). Fields that only change how often things happen or where data
comes from (`SAFE_FIELDS`) may change freely.

The schedule belongs to the run's past only as far as it has trained. It is compared as
resolved global steps (the plan, so `warmup_fraction=0.1` and `warmup_steps=60` of 600 are the
same), and a change of the schedule alone (total_steps, decay, cooldown, rates, ...) is
accepted when the new schedule gives the same learning rate as the old one at every update
already made (steps 0 .. S-1 of a resume at step S, checked numerically): a warmup-stable-decay
run can be extended by a longer total_steps, its cooldown moving to the new end. A change
that would alter the past is refused with the first step where the rates differ, unless
`--allow_config_change` (the jump is then logged). config.json keeps every schedule the run
used and the step each took over (`"schedules"`).

A `folder:` dataset's files are fingerprinted (`trainer.data.fingerprint`, config.json's
"data"): images that changed since the run started are refused like another dataset. A
total_steps below the step the checkpoint reached is refused even with --allow_config_change.

`config.json` is the run's identity: checkpoints without it are refused too (what they are
checkpoints of cannot be checked), unless `--allow_config_change`. Even then, changes that
the checkpoint cannot honour (`UNCHANGEABLE`: another architecture needs new weights, another
optimizer kind new optimizer state) are refused. A config that was allowed to take over a
workdir is recorded in its config.json only once its first loop has trained (run/train.py):
a changed config that fails at once (a NaN at step 1) leaves the run's identity as it was.
"""

import dataclasses
import json

import tensorflow as tf
from absl import logging

from trainer import config as config_lib
from trainer import schedules
from trainer.base.errors import ConfigError
from trainer.config import fields
from trainer.data import fingerprint
from trainer.config import files as config_files
from trainer.rundir import layout, record

# Safe to change on resume: bookkeeping, I/O, and how (not what) the steps are computed.
# grad_accum_steps too: the same updates of the same global batch in smaller slices (resume
# with more of them after running out of memory).
SAFE_FIELDS = ("eval_every", "checkpoint_every", "max_checkpoints", "steps_per_loop",
               "data_dir", "jit_compile", "input_mode", "grad_accum_steps",
               # what to keep, when to stop or roll back, what to export: bookkeeping
               "keep_best", "keep_every", "nonfinite", "max_consecutive_skips",
               "recovery_max_trials", "recovery_lr_factor", "loss_upper_bound",
               "recovery_begin_steps", "early_stop_patience", "early_stop_min_delta",
               "export_weights")
# Never changed on resume, even with --allow_config_change: the checkpoint holds this model's
# weights and this optimizer's slots.
UNCHANGEABLE = {"model": "the checkpoint holds that model's weights; another architecture "
                         "needs new ones",
                "optimizer.name": "the checkpoint holds that optimizer's state; another kind "
                                  "needs a fresh one"}
# Where the run started (`init_from`): read once, by a run with no checkpoint yet, and never by a
# resume, which continues its own checkpoints. Part of the run's record, so never changed.
INIT_FIELDS = ("init_from", "init_mode", "init_allow_partial")
# Compared through the resolved plan rather than as written.
_PLAN_INPUTS = ("total_steps", "num_epochs", "schedule.")
# Plan entry -> the config field to name for it. The schedule's entries may change when the
# rates already used stay the same; the others may not.
SCHEDULE_FIELDS = {"total_steps": "total_steps", "warmup_steps": "schedule.warmup_steps",
                   "hold": "schedule.hold", "start_lr": "schedule.start_lr",
                   "peak_lr": "schedule.target_lr", "final_lr": "schedule.final_lr",
                   "decay": "schedule.decay", "cooldown_steps": "schedule.cooldown_steps",
                   "cooldown_shape": "schedule.cooldown_shape",
                   "rsqrt_timescale": "schedule.rsqrt_timescale"}
_PLAN_FIELDS = {**SCHEDULE_FIELDS, "steps_per_epoch": "dataset (its size: steps per epoch)"}


@dataclasses.dataclass(frozen=True)
class Decision:
  """What the resume check decided.

  takes_over: the config differs from what config.json records (allowed): write config.json
    only after the first loop under it trained. False: a fresh run, or the same run.
  schedules: config.json's "schedules" to write: [{"step": S, **schedule}] of every schedule
    the run used, each from the step it took over (None: the run never changed it).
  """

  takes_over: bool = False
  schedules: list = None


def check_resume(workdir, spec, allow_config_change=False) -> Decision:
  """Raises ConfigError if the run `spec` may not resume `workdir`. Reads only.

  Args:
    workdir: the run's directory (local or gs://).
    spec: the resolved run (`trainer.config.RunSpec`).
    allow_config_change: resume even if fields outside SAFE_FIELDS differ (logged), or the
      new schedule changes the rates of steps already trained, or config.json is missing or
      unreadable beside checkpoints; never for UNCHANGEABLE fields.
  """
  config, plan = spec.config, spec.plan
  _refuse_a_shorter_past(workdir, plan.total_steps)
  try:
    saved = record.read_config_json(workdir)
  except ValueError as e:
    path = f"{workdir}/{layout.CONFIG}"
    if allow_config_change:
      logging.warning("%s is unreadable (%s); overwriting it (--allow_config_change).", path, e)
      return Decision(True)
    raise ConfigError(f"workdir: {path} is unreadable ({e}), so a resume cannot be checked; use "
                      f"a new workdir or pass --allow_config_change") from None
  if saved is None:
    if not layout.has_checkpoints(workdir):
      return Decision()  # a fresh run
    if allow_config_change:
      logging.warning("%s has checkpoints but no config.json; resuming them under this config "
                      "(--allow_config_change).", workdir)
      return Decision(True)
    raise ConfigError(
        f"workdir: {workdir} has checkpoints but no config.json, so what they are "
        f"checkpoints of cannot be checked; put its config.json back, give a new workdir, or "
        f"pass --allow_config_change to resume them under this config")
  diffs = differences(saved, config, plan)
  old_replicas = saved["plan"].get("num_replicas")
  if old_replicas not in (None, plan.num_replicas):
    logging.info("Resuming on %d replicas (was %d); the global batch is unchanged.",
                 plan.num_replicas, old_replicas)
  schedule_diffs = [d for d in diffs if d[0] in SCHEDULE_FIELDS.values()]
  other = [d for d in diffs if d not in schedule_diffs]
  history = saved.get("schedules")
  data_change = fingerprint.change(saved.get("data"), spec.info.fingerprint)
  if data_change:
    message = (f"{workdir} was trained on other data: {config.dataset} changed since ("
               f"{data_change})")
    if not allow_config_change:
      raise ConfigError(f"dataset: cannot resume {message}; that would train a different run "
                        f"from its checkpoint. Put the files back, give a new workdir, or pass "
                        f"--allow_config_change")
    logging.warning("Resuming %s (--allow_config_change).", message)
  if not diffs:
    return Decision(bool(data_change), history)
  listed = ", ".join(f"{field} {old!r} -> {new!r}" for field, old, new in diffs)
  for field, old, new in diffs:
    if field in INIT_FIELDS:
      raise ConfigError(
          f"{field}: cannot resume {workdir} with {field} {old!r} -> {new!r}: a resume "
          f"continues its own checkpoints and never reads {field}, which records where the "
          f"run started; resume with {old!r} (what {layout.CONFIG} records) or give a new "
          f"workdir")
  if other and not allow_config_change:
    raise ConfigError(
        f"{other[0][0].split(' ')[0]}: cannot resume {workdir} under a different config: "
        f"{listed}; that would train a different run from its checkpoint. Use the values in "
        f"{workdir}/{layout.CONFIG}, a new workdir, or --allow_config_change (free to change: "
        f"{', '.join(SAFE_FIELDS)}; the schedule, where the steps already trained keep their "
        f"learning rates)")
  _refuse_unchangeable(workdir, diffs)
  if schedule_diffs:
    history = _schedule_change(workdir, saved, plan, schedule_diffs, allow_config_change)
  if other:
    logging.warning("Resuming %s with a changed config (--allow_config_change): %s", workdir,
                    listed)
  return Decision(True, history)


def _refuse_a_shorter_past(workdir, total_steps):
  """A checkpoint beyond total_steps was taken for a finished run (its eval and export at
  step 150 of 100): a run shorter than what it already trained would change its past, so it is
  refused, --allow_config_change or not."""
  if not layout.has_checkpoints(workdir):
    return
  step = resume_step(workdir)
  if step > total_steps:
    raise ConfigError(
        f"total_steps: {workdir} is already at global step {step}, past total_steps "
        f"{total_steps}; a run cannot be made shorter than it has trained: give total_steps "
        f">= {step} (at {step} it is finished) or a new workdir")


def _refuse_unchangeable(workdir, diffs):
  for field, old, new in diffs:
    if field == "ema_decay" and not old and new:
      raise ConfigError(
          f"ema_decay: --allow_config_change cannot resume {workdir} with ema_decay {old!r} "
          f"-> {new!r}: its checkpoints hold no weight average to continue; give a new "
          f"workdir (or resume with ema_decay 0)")
    if field == "optimizer.lr_mults" and _frozen_may_change(old, new):
      raise ConfigError(
          f"{field}: --allow_config_change cannot resume {workdir} with {field} {old!r} -> "
          f"{new!r}: it may freeze or unfreeze variables (a multiplier 0), and the checkpoint "
          f"holds optimizer slots for exactly the variables it trained; change only the "
          f"non-zero multipliers, or fork into a new workdir (init_from={workdir}, "
          f"init_mode=continue), which matches slots by variable")
    if field in UNCHANGEABLE:
      raise ConfigError(
          f"{field}: --allow_config_change cannot resume {workdir} with {field} {old!r} -> "
          f"{new!r}: {UNCHANGEABLE[field]}; give a new workdir (or resume with {old!r})")


def _frozen_may_change(old, new):
  """Whether lr_mults `old` -> `new` may change which variables are frozen: when either
  freezes some, anything but the same patterns in the same order with the zeros in place."""
  try:
    old, new = fields.parse_lr_mults(old), fields.parse_lr_mults(new)
  except ConfigError:
    return True
  if not any(m == 0 for _, m in old + new):
    return False
  return ([p for p, _ in old] != [p for p, _ in new]
          or any((a == 0) != (b == 0) for (_, a), (_, b) in zip(old, new)))


def _schedule_change(workdir, saved, plan, diffs, allow):
  """The "schedules" record after a schedule change at the resume step; ConfigError if it
  changes the rates of steps already trained (unless `allow`)."""
  step = resume_step(workdir)
  old = config_lib.Plan.from_record(saved["plan"]).schedule_args()
  new = plan.schedule_args()
  changed = ", ".join(f"{field} {a!r} -> {b!r}" for field, a, b in diffs)
  differ = schedules.formula.first_difference(old, new, step)
  if differ is None:
    logging.info("Resuming %s at step %d with a new schedule (%s); the learning rates of the "
                 "%d steps already trained are unchanged.", workdir, step, changed, step)
  else:
    at, a, b = differ
    hint = ""
    if old.warmup_steps != new.warmup_steps:
      hint = (f" (the warmup is {old.warmup_steps} -> {new.warmup_steps} steps: one given as a "
              f"fraction of the run moves with total_steps; give "
              f"schedule.warmup_steps={old.warmup_steps} to keep it)")
    message = (f"cannot resume {workdir} at step {step} with this schedule ({changed}): it "
               f"changes the learning rate of steps already trained, first at step {at}: "
               f"{a:.6g} -> {b:.6g}{hint}")
    if not allow:
      raise ConfigError(f"{diffs[0][0]}: {message}; keep the past's schedule, give a new "
                        f"workdir, or pass --allow_config_change to jump")
    logging.warning("%s; jumping to the new schedule at step %d (--allow_config_change).",
                    message, step)
  history = saved.get("schedules") or [{"step": 0, **old.kwargs()}]
  history = [h for h in history if h["step"] < step]
  return history + [{"step": step, **new.kwargs()}]


def resume_step(workdir):
  """The step a resume of `workdir` continues from: its committed checkpoint's (the state
  file's), else its newest checkpoint's, else 0."""
  try:
    state = tf.train.get_checkpoint_state(layout.checkpoint_dir(workdir))
  except (ValueError, tf.errors.OpError):
    state = None
  step = layout.checkpoint_number(state.model_checkpoint_path) if state else None
  if step is None:
    steps = layout.checkpoint_steps(workdir)
    step = steps[-1] if steps else 0
  return step


def differences(saved, config, plan):
  """[(field, old, new)] between a config.json blob and `config`/`plan`, unsafe ones only."""
  now = json.loads(config_lib.to_json(config, plan))
  new = config_files.flatten(now["config"])
  # A config.json written before a field existed ran with that field's default.
  old = config_files.flatten(config_files.from_record(saved["config"]))
  saved_plan = dataclasses.asdict(config_lib.Plan.from_record(saved["plan"]))
  diffs = []
  for field in sorted(set(old) | set(new)):
    if field.split(".")[0] in SAFE_FIELDS or field.startswith(_PLAN_INPUTS):
      continue
    if old.get(field, _ABSENT) != new.get(field, _ABSENT):
      diffs.append((field, old.get(field, _ABSENT), new.get(field, _ABSENT)))
  for key, field in _PLAN_FIELDS.items():
    if key == "steps_per_epoch" and any(d[0] in ("dataset", "global_batch_size") for d in diffs):
      continue  # already explained
    if saved_plan.get(key, _ABSENT) != now["plan"][key]:
      diffs.append((field, saved_plan.get(key, _ABSENT), now["plan"][key]))
  return diffs


class _Absent:
  def __repr__(self):
    return "(absent)"


_ABSENT = _Absent()
