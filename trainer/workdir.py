"""The run directory: is it usable, and writing files there so no reader sees half of one.

Everything goes through `tf.io.gfile`, so a workdir may be local or gs:// (or ram:// in tests).
"""

import os
import tempfile

import tensorflow as tf

from trainer import hooks
from trainer.errors import ConfigError


def check(workdir):
  """Raises ConfigError unless `workdir` is (or can be made) a writable directory.

  Reads only, except for a probe file created and deleted in the workdir (or in the nearest
  existing directory above it) on local disks, where `os.access` can say yes to a directory
  that refuses writes (root, NFS root_squash, /proc). Remote paths (gs://, ...) are left to
  the first write: only TF's filesystems can tell.
  """
  if "://" in workdir:
    return
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ConfigError(f"workdir: {workdir!r} is a file; give a directory")
  where = os.path.abspath(workdir)
  while not os.path.exists(where):
    where = os.path.dirname(where)
  if not os.path.isdir(where):
    raise ConfigError(f"workdir: {workdir!r} cannot be created: {where!r} is a file; give a "
                      f"directory")
  if not os.access(where, os.W_OK | os.X_OK):
    raise ConfigError(f"workdir: {workdir!r} is not writable (no write access to {where!r})")
  try:
    fd, probe = tempfile.mkstemp(prefix=".trainer-write-probe-", dir=where)
    os.close(fd)
    os.remove(probe)
  except OSError as e:
    raise ConfigError(f"workdir: {workdir!r} is not writable ({e.strerror} in {where!r}); "
                      f"give a directory you can write to") from None


def write_atomically(path, content):
  """Writes `content` (str or bytes) to `path` through a temporary file and a rename."""
  with hooks.point("write"):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb" if isinstance(content, bytes) else "w") as f:
      f.write(content)
    tf.io.gfile.rename(tmp, path, overwrite=True)
