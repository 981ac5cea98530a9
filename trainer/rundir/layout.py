"""The names of a run directory, in one place, and the one way to list its checkpoints.

  workdir/config.json     the config and its plan (CONFIG)
  workdir/schedule.png    the planned LR curve (SCHEDULE_PNG)
  workdir/curves.png      the run's curves (CURVES_PNG)
  workdir/checkpoints/    ckpt-N.index, ckpt-N.data-*, and `checkpoint`, the state file
  workdir/train/, eval/   TensorBoard events
  workdir/export/         model.keras, serving/, export.json (written last)
  workdir/.lock           the lock (an OS lock's file, or a gs:// lease)

TensorFlow-free, so the command line can read a run before TensorFlow loads.
"""

import fnmatch
import os
import re

from trainer.base.fs import Files

CONFIG = "config.json"
CHECKPOINTS = "checkpoints"
STATE_FILE = "checkpoint"  # in CHECKPOINTS: which checkpoints are committed
TRAIN, EVAL = "train", "eval"
SCHEDULE_PNG, CURVES_PNG = "schedule.png", "curves.png"
LOCK = ".lock"
EXPORT = "export"
MANIFEST = "export.json"  # in EXPORT, written last: its presence marks a complete export
MODEL_FILE = "model.keras"
SERVING_DIR = "serving"
EXPORT_TMP, EXPORT_OLD = EXPORT + ".tmp-", EXPORT + ".old-"  # + a random suffix

# What a run keeps, whether each is a directory, and what for (a workdir where one of them is
# the other kind is refused before anything is written).
KINDS = {TRAIN: (True, "TensorBoard events"), EVAL: (True, "TensorBoard events"),
         CHECKPOINTS: (True, "checkpoints"), CONFIG: (False, "config"),
         SCHEDULE_PNG: (False, "LR plot"), CURVES_PNG: (False, "curves plot"),
         LOCK: (False, "lock"),
         os.path.join(CHECKPOINTS, STATE_FILE): (False, "checkpoint state file (which "
                                                        "checkpoints are committed)")}
# What interrupted writes leave: atomic writes' temporaries, TF's state-file and sharded-save
# temporaries, a history rewrite's, an export's.
TEMPORARIES = (CONFIG + ".tmp*", SCHEDULE_PNG + ".tmp*", CURVES_PNG + ".tmp*", LOCK + ".tmp*",
               os.path.join(CHECKPOINTS, STATE_FILE + ".tmp*"),
               os.path.join(CHECKPOINTS, "ckpt-*_temp*"),
               os.path.join(TRAIN, ".*.tmp*"), os.path.join(EVAL, ".*.tmp*"),
               EXPORT_TMP + "*", EXPORT_OLD + "*")

# What a start interrupted before it wrote config.json can leave (its lock or lease, the
# writability probe, a half-written config.json): a workdir holding only these is still the
# run's to start in. Any other entry, without config.json or checkpoints/, is someone else's.
WRITE_PROBE = ".trainer-write-probe-"  # + a random suffix
STARTUP_LEFTOVERS = (LOCK, LOCK + ".tmp*", WRITE_PROBE + "*", CONFIG + ".tmp*")

_CHECKPOINT = re.compile(r"^ckpt-(\d+)$")
_INDEX = re.compile(r"^ckpt-(\d+)\.index$")


def checkpoint_dir(workdir):
  return os.path.join(workdir, CHECKPOINTS)


def checkpoint_path(workdir, step):
  return os.path.join(workdir, CHECKPOINTS, f"ckpt-{step}")


def checkpoint_number(prefix):
  """N of a checkpoint prefix `.../ckpt-N`, or None for any other name."""
  match = _CHECKPOINT.match(os.path.basename(prefix))
  return int(match.group(1)) if match else None


def checkpoint_steps(workdir):
  """Steps N of the checkpoints in `workdir/checkpoints` with an index file, ascending (no
  check that they are readable or committed: `run.checkpoints` verifies before a restore)."""
  fs = Files(workdir)
  names = fs.listdir(checkpoint_dir(workdir))
  return sorted({int(m.group(1)) for n in names if (m := _INDEX.match(n))})


def has_checkpoints(workdir):
  """Whether `workdir/checkpoints` holds a checkpoint or a state file (a run has begun)."""
  fs = Files(workdir)
  return (fs.exists(os.path.join(checkpoint_dir(workdir), STATE_FILE))
          or bool(checkpoint_steps(workdir)))


def strangers(names):
  """Of a workdir's entries `names`, those that make it no run's: none if config.json or
  checkpoints/ is among them (a run: the resume check reads it), else every entry that is
  not a leftover of an interrupted start."""
  if CONFIG in names or CHECKPOINTS in names:
    return []
  return sorted(n for n in names
                if not any(fnmatch.fnmatchcase(n, p) for p in STARTUP_LEFTOVERS))
