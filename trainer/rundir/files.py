"""The run directory: is it usable, and writing files there so no reader sees half of one.

Everything goes through `tf.io.gfile`, so a workdir may be local or gs:// (or ram:// in tests).
Who owns a workdir is `trainer.rundir.lock`'s business; the names are `trainer.rundir.layout`'s.
"""

import os
import shutil
import tempfile
import uuid

from absl import logging
import tensorflow as tf

from trainer.base import preemption, testpoints
from trainer.base.errors import ConfigError
from trainer.base.fs import Files, is_remote
from trainer.rundir import layout


def check_writable(workdir):
  """Raises ConfigError unless `workdir` is (or can be made) a writable directory that is new,
  empty or a run's (`_check_is_a_run`).

  Reads only, except for a probe file created and deleted in the workdir (or in the nearest
  existing directory above it) on local disks, where `os.access` can say yes to a directory
  that refuses writes (root, NFS root_squash, /proc). Remote paths (gs://, ...) are left to
  the first write: only TF's filesystems can tell.
  """
  if is_remote(workdir):
    _check_is_a_run(workdir)
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give a directory")
  if os.path.isdir(workdir):
    _check_layout(workdir)
    _check_is_a_run(workdir)
  where = os.path.abspath(workdir)
  while not os.path.exists(where):
    where = os.path.dirname(where)
  if not os.path.isdir(where):
    raise ConfigError(f"workdir: {workdir!r} cannot be created: {where!r} is a file; give a "
                      f"directory")
  if not os.access(where, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir: {workdir!r} is not writable (no write access to {where!r})")
  try:
    fd, probe = tempfile.mkstemp(prefix=layout.WRITE_PROBE, dir=where)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir: {workdir!r} is not writable ({e.strerror} in {where!r}); "
                      f"give a directory you can write to") from None


def _check_is_a_run(workdir):
  """A workdir that holds something must hold a run (config.json or checkpoints/), or only
  what an interrupted start leaves: a run writes curves.png, export/, ... over whatever has
  those names, so someone's own directory is refused rather than scribbled into."""
  try:
    names = Files(workdir).listdir(workdir)
  except (tf.errors.OpError, OSError):
    return  # unlistable (a remote path out of reach): the first write will say
  others = layout.strangers(names)
  if others:
    shown = ", ".join(others[:5]) + (f", ... ({len(others)} entries)" if len(others) > 5 else "")
    raise ConfigError(f"workdir: {workdir!r} is not empty and holds no run (no "
                      f"{layout.CONFIG}, no {layout.CHECKPOINTS}/): {shown}; the run would "
                      f"write over such files: give an empty or new directory")


def _check_layout(workdir):
  """Each name the run uses must be a directory or a file as the run expects."""
  for name, (is_dir, what) in layout.KINDS.items():
    path = os.path.join(workdir, name)
    if os.path.lexists(path) and os.path.isdir(path) != is_dir:
      kind = "a directory" if not is_dir else "a file"
      raise ConfigError(f"workdir: {path} is {kind}, where the run keeps its {what}; move it "
                        f"away or give another workdir")


def remove_stale_temporaries(workdir):
  """Deletes what interrupted writes left in `workdir` (config.json.tmp, TF's
  checkpoints/checkpoint.tmp<hex> and ckpt-N_temp, ...). Call with the workdir locked: no
  writer of this run is active then. Returns the paths removed."""
  removed = []
  for pattern in layout.TEMPORARIES:
    for path in tf.io.gfile.glob(os.path.join(workdir, pattern)):
      try:
        if tf.io.gfile.isdir(path):
          tf.io.gfile.rmtree(path)
        else:
          tf.io.gfile.remove(path)
        removed.append(path)
      except (tf.errors.OpError, OSError) as e:
        logging.warning("Could not remove the stale temporary %s: %s", path, e)
  if removed:
    logging.info("Removed what interrupted writes left: %s", ", ".join(removed))
  return removed


def write_atomically(path, content):
  """Writes `content` (str or bytes) to `path` through a temporary file and a rename (a stop
  at once, SIGTERM in start-up or a second Ctrl-C, waits for the rename)."""
  with preemption.critical(), testpoints.point("write"):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb" if isinstance(content, bytes) else "w") as f:
      f.write(content)
    tf.io.gfile.rename(tmp, path, overwrite=True)




def publish_directory(tmp, final, marker, old_prefix):
  """Makes the complete directory `tmp` the one at `final` (e.g. a model export).

  `marker` is the file whose presence makes a directory complete (written last); an old
  `final` is first moved aside as `<old_prefix><random>` beside it.

  Local disks: two rename(2)s (the old export aside, the new one in), each atomic, so a
  reader sees the old export, none (between the two renames), or the new one; the old one is
  deleted afterwards (a load of the old export still under way then can fail: load again).
  If the second rename fails, the old export is put back.

  gs:// and other object stores have no directories and no atomic rename of a tree (TF
  renames object by object, a copy and a delete each): there only each file is atomic. So
  the old marker (an export's export.json) is deleted first (the old export stops being complete), then
  the old files, then the new files are moved in with the marker last: a reader that checks
  for export.json (as `trainer.evaluate --export` does) never takes a partial export for a
  complete one, but there is a window with no complete export at all, and a listing during
  it can show some files of the new export.
  """
  if not is_remote(final):
    old = None
    if os.path.exists(final):
      old = f"{os.path.dirname(final) or '.'}/{old_prefix}{uuid.uuid4().hex[:8]}"
      os.rename(final, old)
    try:
      os.rename(tmp, final)
    except OSError:
      if old:
        os.rename(old, final)
      raise
    if old:
      shutil.rmtree(old, ignore_errors=True)
    return
  if tf.io.gfile.exists(final):
    manifest = os.path.join(final, marker)
    if tf.io.gfile.exists(manifest):
      tf.io.gfile.remove(manifest)
    remove(final)
  files = []
  for directory, _, names in tf.io.gfile.walk(tmp):
    files += [os.path.join(directory, n) for n in names]
  files.sort(key=lambda p: os.path.relpath(p, tmp) == marker)  # the marker last
  for src in files:
    dst = os.path.join(final, os.path.relpath(src, tmp))
    tf.io.gfile.makedirs(os.path.dirname(dst))
    tf.io.gfile.rename(src, dst, overwrite=True)


def remove(path):
  """Deletes a file or a directory tree, best effort (a warning if it cannot)."""
  try:
    if tf.io.gfile.isdir(path):
      tf.io.gfile.rmtree(path)
    else:
      tf.io.gfile.remove(path)
  except (tf.errors.OpError, OSError) as e:
    logging.warning("could not remove %s (%s: %s)", path, type(e).__name__, e)


def makedirs(path):
  """Creates the directory `path` and its missing parents (local or remote)."""
  tf.io.gfile.makedirs(path)
