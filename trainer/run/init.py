"""Starting a run from another run: `config.init_from`, when the run has no checkpoint yet.

  init_from  runs/a                          a workdir: its latest readable checkpoint
             runs/a/checkpoints/ckpt-400     one checkpoint
             runs/a/export/model.keras       an export (its weights: init_mode weights)
  init_mode  weights    fine-tune: the model's weights matched by variable path and shape; the
                        rest (a new head) keep their fresh initialisation; step 0, a fresh
                        optimizer, this run's schedule with its warmup
             continue   fork: weights, optimizer state, weight average and global step S of
                        the checkpoint, trained on under this run's config from S (e.g. a
                        cooldown branched off a warmup-stable-decay run at S)

Read once, after the restore finds no checkpoint of the run's own: a resume always continues
its own checkpoints, and the log says which was used. The source is only read: no lock is
taken on it and nothing is written there (the housekeeping a restore does in the run's own
workdir never runs on it). A source that does not fit is one ConfigError line, before
anything of the run is written. Keras 3 only: tf_keras names variables otherwise.
"""

import dataclasses
import os

from absl import logging
import tensorflow as tf

from trainer import config as config_lib
from trainer.base.compat import LEGACY_KERAS
from trainer.base.errors import ConfigError
from trainer.base.fs import Files
from trainer.config import files as config_files
from trainer.run import checkpoints
from trainer.rundir import layout, record
from trainer.step import init as init_lib

_GIVE = ("give a run's workdir, one of its checkpoints (WORKDIR/checkpoints/ckpt-N) or an "
         "export (WORKDIR/export/model.keras)")


@dataclasses.dataclass(frozen=True)
class Source:
  """Where a run starts from: a checkpoint prefix or a model.keras, and the source run's
  config (its config.json; None for an export or a checkpoint outside a workdir)."""

  path: str
  kind: str  # "checkpoint" | "export"
  config: object = None


def start(parts, restored):
  """Starts `parts` from `config.init_from` if the restore found no checkpoint (`restored`
  is None); logs what was used. Raises ConfigError for a source that does not fit."""
  config = parts.config
  if not config.init_from:
    return
  if restored is not None:
    logging.info("init_from %s: not read; this workdir has checkpoints, and a resume "
                 "continues its own (%s).", config.init_from, restored)
    return
  if LEGACY_KERAS:
    raise ConfigError("init_from: needs Keras 3 (tf_keras, TF_USE_LEGACY_KERAS=1, names "
                      "variables otherwise); unset TF_USE_LEGACY_KERAS or init_from")
  source = locate(config.init_from)
  if config.init_mode == "weights":
    _fine_tune(parts, source)
  else:
    _fork(parts, source)


def locate(init_from):
  """The Source `init_from` names. Reads only. Raises ConfigError."""
  path = init_from.rstrip("/") or init_from
  fs = Files(path)
  exported = os.path.join(path, layout.MODEL_FILE)
  if os.path.basename(path) == layout.EXPORT and fs.exists(exported):
    path = exported
  if path.endswith(".keras"):
    if not fs.exists(path):
      raise ConfigError(f"init_from: no such file {path!r}; {_GIVE}")
    return Source(path, "export")
  if fs.exists(path + ".index"):
    directory = os.path.dirname(path)
    workdir = (os.path.dirname(directory) if os.path.basename(directory) == layout.CHECKPOINTS
               else None)
    problem = checkpoints.unreadable(path)
    if problem is not None:
      raise ConfigError(f"init_from: the checkpoint {path} is unreadable ({problem})")
    return Source(path, "checkpoint", _source_config(workdir))
  if os.path.basename(path) == layout.CHECKPOINTS and fs.isdir(path):
    path = os.path.dirname(path)
  if fs.isdir(path):
    return Source(_latest_readable(path), "checkpoint", _source_config(path))
  if layout.checkpoint_number(path) is not None and fs.isdir(os.path.dirname(path)):
    workdir = os.path.dirname(os.path.dirname(path))
    steps = layout.checkpoint_steps(workdir)
    raise ConfigError(f"init_from: no checkpoint {path!r} (there are: "
                      f"{', '.join(f'ckpt-{s}' for s in steps) or 'none'})")
  raise ConfigError(f"init_from: no such workdir, checkpoint or model.keras {init_from!r}; "
                    f"{_GIVE}")


def _latest_readable(workdir):
  """The newest readable checkpoint of `workdir` that its state file commits."""
  try:
    state = tf.train.get_checkpoint_state(layout.checkpoint_dir(workdir))
  except (ValueError, tf.errors.OpError):
    state = None
  committed = layout.checkpoint_number(state.model_checkpoint_path) if state else None
  problems = []
  for step in reversed(layout.checkpoint_steps(workdir)):
    if committed is not None and step > committed:
      continue  # an interrupted save
    path = layout.checkpoint_path(workdir, step)
    problem = checkpoints.unreadable(path)
    if problem is None:
      if problems:
        logging.warning("init_from: using %s, the newest readable checkpoint (%s)", path,
                        "; ".join(problems))
      return path
    problems.append(f"ckpt-{step}: {problem}")
  if problems:
    raise ConfigError(f"init_from: no readable checkpoint in {layout.checkpoint_dir(workdir)} "
                      f"({'; '.join(problems)})")
  raise ConfigError(f"init_from: {workdir} has no checkpoint; {_GIVE}")


def _source_config(workdir):
  """The config the source run recorded (fields it predates at their defaults), or None."""
  if workdir is None:
    return None
  try:
    saved = record.read_config_json(workdir)
  except ValueError as e:
    raise ConfigError(f"init_from: {workdir}/{layout.CONFIG} is unreadable ({e})") from None
  return None if saved is None else config_files.from_record(saved["config"])


def _fine_tune(parts, source):
  spec, config = parts.spec, parts.config
  if source.kind == "export":
    weights = init_lib.read_export_weights(source.path, spec)
  else:
    weights = init_lib.read_checkpoint_weights(source.path, spec, source.config)
  report = init_lib.load_weights(parts.model, weights)
  share = report.loaded_size / max(report.total_size, 1)
  counts = (f"{len(report.loaded)} of {len(report.loaded) + len(report.kept)} variables "
            f"({report.loaded_size:,} of {report.total_size:,} weights)")
  if share < 0.5 and not config.init_allow_partial:
    kept = ", ".join(f"{p} ({why})" for p, why in report.kept[:4])
    raise ConfigError(f"init_from: {source.path} holds only {counts} of this model ("
                      f"{'none' if not report.loaded else 'a minority'}; not loaded: {kept}"
                      f"{', ...' if len(report.kept) > 4 else ''}); is it the right source? "
                      f"init_allow_partial=True starts from it anyway")
  if parts.learner.ema is not None:
    parts.learner.ema.reset()  # the average starts at the weights training starts from
  logging.info("init_from: fine-tuning from %s: loaded %s: %s; kept their fresh "
               "initialisation: %s; step 0, a fresh optimizer and this run's schedule.",
               source.path, counts, _listed(report.loaded),
               _listed([f"{p} ({why})" for p, why in report.kept]) or "none")


def _fork(parts, source):
  config = parts.config
  if source.kind == "export":
    raise ConfigError(f"init_mode: continue forks a checkpoint (weights, optimizer state, "
                      f"step); {source.path} is an export: give its run's workdir or a "
                      f"checkpoint, or init_mode=weights to fine-tune from it")
  if source.config is None:
    raise ConfigError(f"init_mode: continue needs the source run's {layout.CONFIG} beside "
                      f"{source.path} (what its optimizer state is); give the checkpoint in "
                      f"its workdir, or init_mode=weights")
  for field in ("model", "optimizer.name"):
    theirs, ours = config_lib.get(source.config, field), config_lib.get(config, field)
    if theirs != ours:
      raise ConfigError(f"init_mode: continue forks a run of {field} {theirs!r} and this "
                        f"config has {ours!r}: the checkpoint holds that {field.split('.')[0]}'s "
                        f"state; give {field}={theirs!r}, or init_mode=weights to fine-tune")
  state = init_lib.read_checkpoint_state(source.path, parts.spec, parts.schedule, source.config)
  notes = init_lib.continue_from(parts, state)
  step, total = int(parts.optimizer.iterations.numpy()), parts.plan.total_steps
  if step >= total:
    raise ConfigError(f"init_from: {source.path} is at global step {step} and this run's "
                      f"total_steps is {total}: nothing to train; give total_steps > {step}")
  rate = float(parts.schedule(step)) if callable(parts.schedule) else parts.schedule
  logging.info("init_from: forked %s at global step %d (weights, %s optimizer state%s)%s; "
               "this run's schedule from step %d on: learning rate %.6g.", source.path, step,
               config.optimizer.name, ", weight average" if parts.learner.ema else "",
               "".join(f"; {n}" for n in notes), step, rate)


def _listed(items, most=40):
  shown = ", ".join(items[:most])
  return shown + (f", ... ({len(items)} in all)" if len(items) > most else "")
