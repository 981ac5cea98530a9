"""The lock of a local workdir: OS locks (`fcntl.flock`), which the kernel releases when the
process ends however it ends (SIGKILL, the OOM killer), so they are never stale.

Two locks, both taken before anything of the workdir is read or written:

- on the workdir directory itself, which no `rm workdir/.lock` walks around (a run that
  started beside one whose lock file was removed would write into the same workdir);
- on the lock file `workdir/.lock`, which names the holder (host, pid, start time) and is the
  only lock where directories cannot be locked (NFS locks only files open for writing).

The lock file is never followed through a link: a `.lock` that is a symbolic link, a hard link
to another file or no regular file is refused in one line, since the holder's record is
written into it. See `trainer.rundir.lock` for when a lease is used instead.
"""

import errno
import fcntl
import json
import os
import stat

from absl import logging

from trainer.base.errors import ConfigError
from trainer.rundir import layout
from trainer.rundir import lease as lease_lib


class OsLock:
  """The OS locks of the local `workdir` (which exists); `recreate()` makes it again if it
  disappears meanwhile (a twin run that failed removes what it created)."""

  def __init__(self, workdir, recreate, force=False):
    self.workdir = workdir
    self.path = os.path.join(workdir, layout.LOCK)
    self._recreate = recreate
    self._force = force
    self._fd = None
    self._directory_fd = None
    self.record = None  # this process's record in the lock file, while it holds it
    self._previous = None  # the lock file's bytes before (None: it did not exist)

  def acquire(self):
    """Takes both locks; False if this filesystem has no flock (then use a lease).

    Raises:
      ConfigError: another run holds the workdir (the message names it), or the lock file is
        a link or no regular file.
    """
    directory_fd = self._lock_directory()
    try:
      locked = self._lock_file()
    except BaseException:
      _close(directory_fd)
      raise
    if not locked:
      _close(directory_fd)
      return False
    self._directory_fd = directory_fd
    return True

  def release(self, restore):
    """Removes the lock file (or, with `restore`, puts a lock file that was there before back
    as it was) and releases both locks."""
    try:
      if restore and self._previous is not None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, self._previous, 0)
      elif _same_file(self.path, self._fd):  # never another's: it may have been replaced
        os.remove(self.path)  # while still holding it: see _lock_file
    except OSError:
      pass
    os.close(self._fd)
    self._fd = None
    self.record = None
    _close(self._directory_fd)  # last: the directory's lock is what excludes
    self._directory_fd = None

  def _lock_directory(self):
    """An fd of the workdir holding its flock, or None where directories cannot be locked."""
    for _ in range(20):
      try:
        fd = os.open(self.workdir, os.O_RDONLY | os.O_DIRECTORY)
      except FileNotFoundError:
        self._recreate()
        continue
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd
      except BlockingIOError:
        os.close(fd)
        raise self._in_use(self._holder()) from None
      except OSError as e:
        os.close(fd)
        logging.info("No OS lock on the directory %s (%s); locking %s alone.", self.workdir,
                     e, self.path)
        return None
    raise ConfigError(f"workdir: {self.workdir} kept disappearing while it was being locked; "
                      f"give another workdir")

  def _lock_file(self):
    """Locks the lock file and writes this process's record into it; False if this
    filesystem has no flock."""
    for _ in range(20):
      try:
        fd, existed = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), False
      except FileExistsError:  # (O_EXCL also fails on a link, followed or not)
        fd, existed = _open_existing(self.path), True
        if fd is None:  # unlinked by a holder releasing it: try again
          continue
      except FileNotFoundError:
        self._recreate()
        continue
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        holder = lease_lib.read_json(os.pread(fd, 4096, 0))
        os.close(fd)
        raise self._in_use(holder) from None
      except OSError as e:
        os.close(fd)
        if not existed:
          os.remove(self.path)
        logging.info("No OS lock on %s (%s); using a lease.", self.path, e)
        return False
      # A holder releasing the lock unlinks the file first (see release): the file locked
      # must still be the one at the path, else lock the new one.
      if not _same_file(self.path, fd):
        os.close(fd)
        continue
      self._previous = os.pread(fd, 1 << 16, 0) if existed else None
      self.record = lease_lib.holder_info()
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(self.record).encode() + b"\n", 0)
      self._fd = fd
      return True
    raise ConfigError(f"workdir: {self.workdir}: could not take its lock {self.path} (it kept "
                      f"being replaced); give another workdir")

  def _holder(self):
    """The record in the lock file (never followed through a link), or None."""
    try:
      fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
      return None
    try:
      return lease_lib.read_json(os.pread(fd, 4096, 0)) if _odd(fd=fd) is None else None
    finally:
      os.close(fd)

  def _in_use(self, holder):
    who = (lease_lib.describe(holder) if holder is not None or os.path.lexists(self.path) else
           f"another process (its lock file {self.path}, which names it, is missing: "
           f"removed, or not written yet)")
    forced = " (--force_unlock cannot take an OS lock: its holder is alive)" if self._force else ""
    return ConfigError(
        f"workdir: {self.workdir} is in use by another run: {who}; wait for it to end or stop "
        f"it (its lock is released when it exits), or give another workdir{forced}")


def _open_existing(path):
  """An fd of the existing lock file opened for writing, never through a link; None if it
  is gone. Raises ConfigError if it is a link or no plain file of its own."""
  _refuse(path, _odd(path=path))
  try:
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK)
  except FileNotFoundError:
    return None
  except OSError as e:
    if e.errno == errno.ELOOP:  # made a link since the check above
      _refuse(path, _odd(path=path) or "a symbolic link")
    raise
  problem = _odd(fd=fd)
  if problem:
    os.close(fd)
    _refuse(path, problem)
  return fd


def _odd(path=None, fd=None):
  """What makes the lock file unfit to write into (a link, no regular file, other hard
  links), or None."""
  try:
    st = os.fstat(fd) if fd is not None else os.lstat(path)
  except FileNotFoundError:
    return None
  if stat.S_ISLNK(st.st_mode):
    return f"a symbolic link (to {os.readlink(path)!r})"
  if not stat.S_ISREG(st.st_mode):
    return "not a regular file"
  if st.st_nlink > 1:
    return f"a file with {st.st_nlink - 1} other hard link(s)"
  return None


def _refuse(path, problem):
  if problem:
    raise ConfigError(f"workdir: {path} is {problem}; the trainer writes its lock there and "
                      f"never through a link: remove it, or give another workdir")


def _same_file(path, fd):
  """Whether `path` (not followed) is still the file open as `fd`."""
  try:
    current, opened = os.lstat(path), os.fstat(fd)
  except OSError:
    return False
  return (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)


def _close(fd):
  if fd is not None:
    os.close(fd)
