"""One run per workdir: the chief's exclusive lock on it.

One run per workdir (`Lock`). Two processes training into one workdir (a launcher's retry
while the old process still runs, two sweep jobs) would leave one run's config.json beside the
other's checkpoints and two curves interleaved in TensorBoard, so the chief takes an exclusive
lock before it reads or writes anything of the workdir:

- local paths: an OS lock (`fcntl.flock`) on `workdir/.lock`, which the kernel releases when
  the process ends however it ends (SIGKILL, OOM killer), so it can never be stale;
- gs:// and other remote paths (and local filesystems without flock, e.g. some FUSE mounts):
  a lease, the object `workdir/.lock` holding the holder's host, pid and start time, refreshed
  every `LEASE_REFRESH_SECONDS` by a daemon thread and stale after `LEASE_TIMEOUT_SECONDS`
  without a refresh (the holder's clock: keep clocks in sync, as NTP does). `--force_unlock`
  takes over a lease that is not stale yet (a run that is known to be dead).

A second run on a locked workdir is a `ConfigError` (exit 2) naming the holder. On multi-worker
runs only the chief locks (the other workers write nothing there).

"""

import fcntl
import json
import os
import shutil

from absl import logging
import tensorflow as tf

from trainer.base.errors import CheckpointError, ConfigError, first_line, user_error
from trainer.base.fs import is_remote as _remote
from trainer.rundir import layout
from trainer.rundir import lease as lease_lib


class Lock:
  """The workdir's exclusive lock (see the module docstring), as a context manager.

  Entering creates the workdir (and its missing parents) on the chief and takes the lock;
  exiting releases it. If the run ends in a user mistake (`errors.user_error` is a
  ConfigError) in a workdir this process created and no checkpoint was written there, the
  workdir is removed again, so bad input leaves no new directory behind.

  Args:
    workdir: the run's directory (local or remote).
    chief: whether this process writes the workdir; others take no lock and create nothing.
    force_unlock: take over a lease that is not stale yet (remote workdirs). A local OS lock
      is held only while its process lives, so there is nothing to force.

  Raises (on entering):
    ConfigError: the workdir is locked by another run (the message names it).
  """

  def __init__(self, workdir, chief=True, force_unlock=False):
    self.workdir = workdir
    self._chief = chief
    self._force = force_unlock
    self._fd = None
    self._lease = None
    self._created = []  # directories this process created, deepest first
    self._record = None
    self._previous = None  # the lock file's bytes before (None: it did not exist)

  def __enter__(self):
    if not self._chief:
      return self
    try:
      self._create_dirs()
      if _remote(self.workdir) or not self._flock():
        self._lease = lease_lib.Lease(os.path.join(self.workdir, layout.LOCK), self._force).acquire()
    except BaseException as e:
      self._remove_created(held=False)
      if isinstance(e, tf.errors.OpError):  # an unreachable gs:// bucket: a traceback before
        raise ConfigError(f"workdir: cannot use {self.workdir} ({first_line(e, 200)}); check "
                          f"the path and your access to it") from None
      raise
    return self

  def __exit__(self, exc_type, exc, tb):
    if not self._chief:
      return
    mistake = exc is not None and isinstance(user_error(exc), ConfigError)
    unwanted = mistake and bool(self._created) and not self._has_checkpoints()
    if self._lease is not None:
      self._lease.stop()
    if unwanted:  # while still holding the lock: nobody else may have started in it
      self._remove_created(held=True)
    if self._lease is not None:
      self._lease.release()
      self._lease = None
    if self._fd is not None:
      self._release_flock(restore=mistake)

  def check(self):
    """Raises CheckpointError (exit 5) if this run no longer owns its workdir: its gs:// lease
    was taken over (`--force_unlock` elsewhere). Call before writing anything there."""
    if self._lease is not None and self._lease.lost:
      try:
        holder = self._lease.read() or self._lease.lost
      except (tf.errors.OpError, OSError):
        holder = self._lease.lost
      raise CheckpointError(
          f"workdir: {self.workdir} is no longer this run's: its lease {self._lease.path} is "
          f"now held by {lease_lib.describe(holder)}; stopped without writing more (the "
          f"latest checkpoint is whatever that run keeps)")

  @property
  def holder(self):
    """This process's holder record (host, pid, start time), or None if it holds nothing."""
    if self._lease is not None:
      return self._lease.record
    return self._record if self._fd is not None else None

  # Local: an OS lock.

  def _create_dirs(self):
    if _remote(self.workdir):
      if not tf.io.gfile.exists(self.workdir):
        self._created = [self.workdir]
      tf.io.gfile.makedirs(self.workdir)
      return
    path = os.path.abspath(self.workdir)
    missing = []
    while not os.path.exists(path):
      missing.append(path)
      path = os.path.dirname(path)
    for directory in reversed(missing):
      try:
        os.mkdir(directory)
        self._created.insert(0, directory)
      except FileExistsError:
        pass  # another process made it first: it is not ours to remove

  def _flock(self):
    """Takes the OS lock; False if this filesystem has none (then a lease is used)."""
    path = os.path.join(self.workdir, layout.LOCK)
    for _ in range(20):
      try:
        fd, existed = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), False
      except FileExistsError:
        try:
          fd, existed = os.open(path, os.O_RDWR), True
        except FileNotFoundError:  # unlinked by a holder releasing it: try again
          continue
      except FileNotFoundError:  # the workdir was removed under us (a failed twin run)
        self._create_dirs()
        continue
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = lease_lib.read_json(os.pread(fd, 4096, 0))
        os.close(fd)
        forced = (" (--force_unlock cannot take an OS lock: its holder is alive)"
                  if self._force else "")
        raise ConfigError(
            f"workdir: {self.workdir} is in use by another run: {lease_lib.describe(holder)}; wait for "
            f"it to end or stop it (its lock is released when it exits), or give another "
            f"workdir{forced}") from None
      except OSError as e:
        os.close(fd)
        if not existed:
          os.remove(path)
        logging.info("No OS lock on %s (%s); using a lease.", path, e)
        return False
      # A holder releasing the lock unlinks the file first (see _release_flock): the file
      # locked must still be the one at `path`, else lock the new one.
      try:
        current, locked = os.stat(path), os.fstat(fd)
        same = (current.st_ino, current.st_dev) == (locked.st_ino, locked.st_dev)
      except FileNotFoundError:
        same = False
      if not same:
        os.close(fd)
        continue
      self._previous = os.pread(fd, 1 << 16, 0) if existed else None
      self._record = lease_lib.holder_info()
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(self._record).encode() + b"\n", 0)
      self._fd = fd
      return True
    raise ConfigError(f"workdir: {self.workdir}: could not take its lock {path} (it kept "
                      f"being replaced); give another workdir")

  def _release_flock(self, restore):
    path = os.path.join(self.workdir, layout.LOCK)
    try:
      if restore and self._previous is not None:  # leave a pre-existing lock file as it was
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, self._previous, 0)
      else:
        os.remove(path)  # while still holding it: see _flock
    except OSError:
      pass
    os.close(self._fd)
    self._fd = None

  def _has_checkpoints(self):
    try:
      return layout.has_checkpoints(self.workdir)
    except (tf.errors.OpError, OSError):
      return True  # unsure: keep everything

  def _remove_created(self, held):
    """Removes the directories this process created: the workdir with what is in it only if
    it `held` the lock (else another run may be using it), the rest only if empty (another
    run may have made a sibling meanwhile)."""
    created, self._created = self._created, []
    if _remote(self.workdir):
      try:
        if held and created and tf.io.gfile.exists(self.workdir):
          tf.io.gfile.rmtree(self.workdir)
      except tf.errors.OpError:
        pass
      return
    workdir = os.path.abspath(self.workdir)
    if held and workdir in created:
      shutil.rmtree(workdir, ignore_errors=True)
    for directory in created:  # deepest first
      try:
        if os.path.isdir(directory):
          os.rmdir(directory)
      except OSError:
        break  # not empty: nor are its parents ours to remove
