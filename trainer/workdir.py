"""The run directory: is it usable, who owns it, and writing files there so no reader sees
half of one.

Everything goes through `tf.io.gfile`, so a workdir may be local or gs:// (or ram:// in tests).

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

import datetime
import fcntl
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

from trainer import hooks, preemption
from trainer.errors import ConfigError, user_error

LOCK_NAME = ".lock"
LEASE_TIMEOUT_SECONDS = 120.0  # a lease not refreshed for this long is stale
LEASE_REFRESH_SECONDS = 20.0
LEASE_SETTLE_SECONDS = 2.0  # after writing a lease, read it back this much later: last writer wins

# What a run keeps in its workdir, and whether each is a directory.
_LAYOUT = {"train": (True, "TensorBoard events"), "eval": (True, "TensorBoard events"),
           "checkpoints": (True, "checkpoints"), "config.json": (False, "config"),
           "schedule.png": (False, "LR plot"), "curves.png": (False, "curves plot"),
           LOCK_NAME: (False, "lock"),
           os.path.join("checkpoints", "checkpoint"): (False, "checkpoint state file (which "
                                                             "checkpoints are committed)")}
# What interrupted writes leave: write_atomically's, TF's state-file and sharded-save temporaries.
_TEMPORARIES = ("config.json.tmp*", "schedule.png.tmp*", "curves.png.tmp*", LOCK_NAME + ".tmp*",
                os.path.join("checkpoints", "checkpoint.tmp*"),
                os.path.join("checkpoints", "ckpt-*_temp*"),
                os.path.join("train", ".*.tmp*"), os.path.join("eval", ".*.tmp*"))


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
  if os.path.isdir(workdir):
    _check_layout(workdir)
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


def _check_layout(workdir):
  """Each name the run uses must be a directory or a file as the run expects."""
  for name, (is_dir, what) in _LAYOUT.items():
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
  for pattern in _TEMPORARIES:
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
  with preemption.critical(), hooks.point("write"):
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "wb" if isinstance(content, bytes) else "w") as f:
      f.write(content)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _remote(workdir):
  return "://" in workdir


def _holder_info():
  now = time.time()
  return {"host": socket.gethostname(), "pid": os.getpid(), "since": now,
          "started": datetime.datetime.fromtimestamp(now).isoformat(timespec="seconds")}


def _describe(holder):
  if not isinstance(holder, dict) or "pid" not in holder:
    return "another process (it is still starting: its details are not written yet)"
  return (f"pid {holder.get('pid')} on {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


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
    self._create_dirs()
    try:
      if _remote(self.workdir) or not self._flock():
        self._lease = _Lease(os.path.join(self.workdir, LOCK_NAME), self._force).acquire()
    except BaseException:
      self._remove_created(held=False)
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
    path = os.path.join(self.workdir, LOCK_NAME)
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
        holder = _read_json(os.pread(fd, 4096, 0))
        os.close(fd)
        forced = (" (--force_unlock cannot take an OS lock: its holder is alive)"
                  if self._force else "")
        raise ConfigError(
            f"workdir: {self.workdir} is in use by another run: {_describe(holder)}; wait for "
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
      self._record = _holder_info()
      os.ftruncate(fd, 0)
      os.pwrite(fd, json.dumps(self._record).encode() + b"\n", 0)
      self._fd = fd
      return True
    raise ConfigError(f"workdir: {self.workdir}: could not take its lock {path} (it kept "
                      f"being replaced); give another workdir")

  def _release_flock(self, restore):
    path = os.path.join(self.workdir, LOCK_NAME)
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
    directory = os.path.join(self.workdir, "checkpoints")
    try:
      return bool(tf.io.gfile.glob(os.path.join(directory, "ckpt-*"))
                  or tf.io.gfile.exists(os.path.join(directory, "checkpoint")))
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


def _read_json(content):
  try:
    value = json.loads(content.decode() if isinstance(content, bytes) else content)
    return value if isinstance(value, dict) else None
  except (ValueError, UnicodeDecodeError):
    return None


class _Lease:
  """A lease object at `path`: write, wait LEASE_SETTLE_SECONDS, read back (the last writer
  wins, so of two runs starting together one backs off), then refresh while running."""

  def __init__(self, path, force):
    self.path = path
    self._force = force
    self.record = None
    self._stop = threading.Event()
    self._thread = None
    self.lost = False

  def _read(self):
    try:
      with tf.io.gfile.GFile(self.path, "rb") as f:
        return _read_json(f.read()) or {}
    except tf.errors.NotFoundError:
      return None

  def _write(self, record):
    tmp = f"{self.path}.tmp{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(json.dumps(record).encode())
    tf.io.gfile.rename(tmp, self.path, overwrite=True)

  def _refusal(self, holder, age):
    return ConfigError(
        f"workdir: {os.path.dirname(self.path)} is in use by another run: {_describe(holder)}; "
        f"its lease {self.path} was refreshed {age:.0f} s ago and goes stale after "
        f"{LEASE_TIMEOUT_SECONDS:.0f} s without a refresh: wait for it to end, or pass "
        f"--force_unlock if that run is dead")

  def acquire(self):
    current = self._read()
    if current:
      age = time.time() - float(current.get("refreshed", 0) or 0)
      if age < LEASE_TIMEOUT_SECONDS:
        if not self._force:
          raise self._refusal(current, age)
        logging.warning("--force_unlock: taking over %s from %s (refreshed %.0f s ago).",
                        self.path, _describe(current), age)
      else:
        logging.warning("Taking over the stale lease %s of %s (not refreshed for %.0f s).",
                        self.path, _describe(current), age)
    elif current == {}:
      logging.warning("Replacing the unreadable lease %s.", self.path)
    self.record = {**_holder_info(), "token": uuid.uuid4().hex}
    self.record["refreshed"] = self.record["since"]
    self._write(self.record)
    time.sleep(LEASE_SETTLE_SECONDS)
    now = self._read()
    if not now or now.get("token") != self.record["token"]:
      age = time.time() - float((now or {}).get("refreshed", 0) or 0)
      raise self._refusal(now, age)
    preemption.on_hard_exit(self.release)
    self._thread = threading.Thread(target=self._refresh, name="trainer-lease", daemon=True)
    self._thread.start()
    return self

  def _refresh(self):
    while not self._stop.wait(LEASE_REFRESH_SECONDS):
      try:
        now = self._read()
        if not now or now.get("token") != self.record["token"]:
          self.lost = True
          logging.error("The lease %s is now held by %s: this run no longer owns its workdir "
                        "(--force_unlock elsewhere?); stop one of the two runs.", self.path,
                        _describe(now))
          return
        self._write({**self.record, "refreshed": time.time()})
      except (tf.errors.OpError, OSError) as e:  # transient: try again at the next refresh
        logging.warning("Could not refresh the lease %s: %s", self.path, e)

  def stop(self):
    """Stops refreshing (the lease then goes stale unless released)."""
    self._stop.set()

  def release(self):
    """Stops refreshing and deletes the lease if it is still this run's."""
    self._stop.set()
    preemption.remove_hard_exit(self.release)
    try:
      now = self._read()
      if now and now.get("token") == self.record["token"]:
        tf.io.gfile.remove(self.path)
    except (tf.errors.OpError, OSError):
      pass
