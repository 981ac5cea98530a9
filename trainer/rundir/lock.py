"""One run per workdir: the chief's exclusive lock on it.

One run per workdir (`Lock`). Two processes training into one workdir (a launcher's retry
while the old process still runs, two sweep jobs) would leave one run's config.json beside the
other's checkpoints and two curves interleaved in TensorBoard, so the chief takes an exclusive
lock before it reads or writes anything of the workdir:

- local paths: OS locks (`fcntl.flock`) on the workdir directory and on `workdir/.lock`,
  which the kernel releases when the process ends however it ends (SIGKILL, OOM killer), so
  they can never be stale; removing `.lock` does not walk around them, and a `.lock` that is
  a link is refused, never followed (`trainer.rundir.oslock`);
- gs:// and other remote paths (and local filesystems without flock, e.g. some FUSE mounts):
  a lease, the object `workdir/.lock` holding the holder's host, pid and start time, refreshed
  every `LEASE_REFRESH_SECONDS` by a daemon thread and stale after `LEASE_TIMEOUT_SECONDS`
  without a refresh (the holder's clock: keep clocks in sync, as NTP does). `--force_unlock`
  takes over a lease that is not stale yet (a run that is known to be dead).

A second run on a locked workdir is a `ConfigError` (exit 2) naming the holder. On multi-worker
runs only the chief locks (the other workers write nothing there).

"""

import os
import shutil

import tensorflow as tf

from trainer.base.errors import CheckpointError, ConfigError, first_line, user_error
from trainer.base.fs import is_remote as _remote
from trainer.rundir import layout
from trainer.rundir import lease as lease_lib
from trainer.rundir import oslock


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
    self._os_lock = None
    self._lease = None
    self._created = []  # directories this process created, deepest first

  def __enter__(self):
    if not self._chief:
      return self
    try:
      self._create_dirs()
      if _remote(self.workdir) or not self._take_os_lock():
        self._lease = lease_lib.Lease(os.path.join(self.workdir, layout.LOCK),
                                      self._force).acquire()
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
    if self._os_lock is not None:
      self._os_lock.release(restore=mistake)
      self._os_lock = None

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
    return self._os_lock.record if self._os_lock is not None else None

  def _take_os_lock(self):
    """Takes the OS locks of a local workdir; False if its filesystem has none."""
    os_lock = oslock.OsLock(self.workdir, self._create_dirs, self._force)
    if not os_lock.acquire():
      return False
    self._os_lock = os_lock
    return True

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

