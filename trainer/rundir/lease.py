"""The lock of a remote workdir (gs://, or a local filesystem without flock): a lease.

An object holding the holder's host, pid and start time, refreshed every
`LEASE_REFRESH_SECONDS` by a daemon thread, stale after `LEASE_TIMEOUT_SECONDS` without a
refresh; taking it is write, wait `LEASE_SETTLE_SECONDS`, read back (the last writer wins).
See `trainer.lock` for when it is used.
"""

import datetime
import json
import os
import socket
import threading
import time
import uuid

from absl import logging
import tensorflow as tf

from trainer.base import preemption
from trainer.base.errors import ConfigError

LEASE_TIMEOUT_SECONDS = 120.0  # a lease not refreshed for this long is stale
LEASE_REFRESH_SECONDS = 20.0
LEASE_SETTLE_SECONDS = 2.0  # after writing a lease, read it back this much later: last writer wins


def holder_info():
  now = time.time()
  return {"host": socket.gethostname(), "pid": os.getpid(), "since": now,
          "started": datetime.datetime.fromtimestamp(now).isoformat(timespec="seconds")}


def describe(holder):
  if not isinstance(holder, dict) or "pid" not in holder:
    return "another process (it is still starting: its details are not written yet)"
  return (f"pid {holder.get('pid')} on {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


def read_json(content):
  try:
    value = json.loads(content.decode() if isinstance(content, bytes) else content)
    return value if isinstance(value, dict) else None
  except (ValueError, UnicodeDecodeError):
    return None


class Lease:
  """A lease object at `path`: write, wait LEASE_SETTLE_SECONDS, read back (the last writer
  wins, so of two runs starting together one backs off), then refresh while running."""

  def __init__(self, path, force):
    self.path = path
    self._force = force
    self.record = None
    self._stop = threading.Event()
    self._thread = None
    self.lost = None  # the record of the run that took the lease over, once it did

  def read(self):
    """The lease's record: {} if unreadable, None if there is none."""
    try:
      with tf.io.gfile.GFile(self.path, "rb") as f:
        return read_json(f.read()) or {}
    except tf.errors.NotFoundError:
      return None

  def _write(self, record):
    tmp = f"{self.path}.tmp{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
      f.write(json.dumps(record).encode())
    tf.io.gfile.rename(tmp, self.path, overwrite=True)

  def _refusal(self, holder, age):
    return ConfigError(
        f"workdir: {os.path.dirname(self.path)} is in use by another run: {describe(holder)}; "
        f"its lease {self.path} was refreshed {age:.0f} s ago and goes stale after "
        f"{LEASE_TIMEOUT_SECONDS:.0f} s without a refresh: wait for it to end, or pass "
        f"--force_unlock if that run is dead")

  def acquire(self):
    current = self.read()
    if current:
      age = time.time() - float(current.get("refreshed", 0) or 0)
      if age < LEASE_TIMEOUT_SECONDS:
        if not self._force:
          raise self._refusal(current, age)
        logging.warning("--force_unlock: taking over %s from %s (refreshed %.0f s ago).",
                        self.path, describe(current), age)
      else:
        logging.warning("Taking over the stale lease %s of %s (not refreshed for %.0f s).",
                        self.path, describe(current), age)
    elif current == {}:
      logging.warning("Replacing the unreadable lease %s.", self.path)
    self.record = {**holder_info(), "token": uuid.uuid4().hex}
    self.record["refreshed"] = self.record["since"]
    self._write(self.record)
    time.sleep(LEASE_SETTLE_SECONDS)
    now = self.read()
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
        now = self.read()
        if not now or now.get("token") != self.record["token"]:
          self.lost = now or {"host": "?", "pid": "?"}  # (the record may be mid-write)
          logging.error("The lease %s is now held by %s: this run no longer owns its workdir "
                        "(--force_unlock elsewhere?); stop one of the two runs.", self.path,
                        describe(now))
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
      now = self.read()
      if now and now.get("token") == self.record["token"]:
        tf.io.gfile.remove(self.path)
    except (tf.errors.OpError, OSError):
      pass
