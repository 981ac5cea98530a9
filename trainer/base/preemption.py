"""Signals at any time of a run: SIGTERM (preemption) and Ctrl-C (SIGINT).

Spot/preemptible VMs and Cloud TPU maintenance send SIGTERM with a grace period (30 s on
Cloud TPU and spot VMs); a person presses Ctrl-C.

- **Start-up** (flags, strategy, data, build, restore, and the first loop with its
  compilation): SIGTERM and Ctrl-C stop the process at once, `errors.Preempted()` (exit 4) or
  `errors.Interrupted()` (exit 130) raised where the main thread is. Nothing was trained yet
  that a checkpoint could keep, and a grace period must not be spent waiting for a compile.
- **Training** (`Watcher.started()`, called after the first loop): SIGTERM and the first
  Ctrl-C only set a flag, read at the next loop boundary (`Watcher.requested()`); the
  Controller finishes the loop, checkpoints and stops (exit 4 / 130). A second Ctrl-C stops at
  once. On multi-worker runs the flags are all-reduced, so every worker stops at the same step
  (a worker that stopped alone would leave the others waiting in a collective).

Promptness. Python runs signal handlers in the main thread between bytecodes, so a main
thread inside a long C++ call (an XLA compilation, a long loop) runs them only when the call
returns. A watchdog thread wakes on the signal itself (`signal.set_wakeup_fd`): if a stop at
once has not ended the process within `GRACE_SECONDS`, it runs the `on_hard_exit` callbacks
(a gs:// lease is released there), writes the same one line and ends the process with
`os._exit`. Ending anywhere is safe: everything the trainer writes is committed by a rename
(config.json, PNGs) or by TF's checkpoint state file, so a process that stops mid-write leaves
the previous version whole (tests/test_kill.py SIGKILLs at every such point).

A checkpoint save is a critical section (`critical()`): a stop at once that arrives during
one is raised when the save has committed (the watchdog still bounds the wait).

Only the main thread can install handlers; elsewhere (a notebook's worker thread) signals keep
their previous handling.
"""

import atexit
import contextlib
import os
import signal
import sys
import threading

from absl import logging

from trainer.base.errors import Interrupted, Preempted

GRACE_SECONDS = 5.0  # a stop at once that has not ended the process by then is forced
_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _State:
  """Process-wide: one run trains at a time, and the watchdog reads this from its thread."""

  def __init__(self):
    self.training = False  # past start-up: SIGTERM and a first Ctrl-C only set flags
    self.critical = 0  # depth of critical sections (checkpoint saves)
    self.pending = None  # a stop-at-once error deferred by a critical section
    self.requested = None  # the stop at once asked for, until it unwinds through a Watcher
    self.watchdog_sigints = 0
    self.timer = None
    self.unwound = False  # the run's code unwound through its Watcher with an exception
    self.exiting = False
    self.wakeup = None  # (read fd, write fd) of the watchdog's pipe
    self.callbacks = []


_state = _State()


def _unraisable(hook):
  """Python cannot raise a stop at once that a signal delivers inside a finalizer or a weakref
  callback: it prints "Exception ignored in ..." and a traceback, and the main thread goes on.
  Say nothing of it: the watchdog ends the process within GRACE_SECONDS with the one line."""

  def quiet(unraisable):
    if isinstance(unraisable.exc_value, (Preempted, Interrupted)):
      return
    hook(unraisable)

  quiet.trainer_quiet = True
  return quiet


def startup():
  """Makes SIGTERM and Ctrl-C stop the process at once (exit 4 / 130): for `trainer.main`,
  before it imports TensorFlow and builds the strategy. A `Watcher` later takes over."""
  if threading.current_thread() is not threading.main_thread():
    return

  _state.training = False
  _state.watchdog_sigints = 0
  _state.requested = None
  for signum in _SIGNALS:
    signal.signal(signum, _stop_at_once_handler)
  _install_wakeup()


def on_hard_exit(callback):
  """Runs `callback()` before the watchdog ends the process (e.g. releasing a lease)."""
  _state.callbacks.append(callback)


def remove_hard_exit(callback):
  if callback in _state.callbacks:
    _state.callbacks.remove(callback)


@contextlib.contextmanager
def critical():
  """A section a stop at once waits for (a checkpoint save, up to its commit)."""
  _state.critical += 1
  try:
    yield
  finally:
    _state.critical -= 1
    if not _state.critical and _state.pending is not None:
      error, _state.pending = _state.pending, None
      raise error()  # pylint: disable=lost-exception  (a stop at once replaces the rest)


class Watcher:
  """A context manager for one run's signals; see the module docstring.

  Args:
    strategy: the run's strategy; on multi-worker runs `requested` is all-reduced.
  """

  def __init__(self, strategy):
    self._strategy = strategy
    self._term = threading.Event()
    self._int = threading.Event()
    self._sigints = 0
    self._previous = None
    self._previous_wakeup = None
    self._multi_worker = getattr(strategy.extended, "experimental_between_graph", False)
    if self._multi_worker:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._tf = tf
      self._any = tf.function(lambda x: strategy.reduce(
          tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(x)), axis=None))

  def __enter__(self):
    if _state.requested is not None:  # asked for before, and swallowed on the way here
      error, _state.requested = _state.requested, None
      raise error()
    _state.training = False
    _state.watchdog_sigints = 0
    _state.unwound = False
    _cancel_timer()  # of a stop that unwound through a previous run's Watcher
    if threading.current_thread() is threading.main_thread():  # signals need the main thread
      self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
      self._previous_wakeup = _install_wakeup()
    return self

  def __exit__(self, exc_type, exc, tb):
    _state.training = False
    # A stop at once that got this far unwound as it should: the process is not stuck, and a
    # caller that catches the error (a notebook, a test) goes on living. (The watchdog may
    # arm its timer only after this: the timer checks `unwound` when it fires.)
    _state.unwound = exc_type is not None
    _cancel_timer()
    _state.pending = None
    _state.requested = None
    if self._previous is not None:
      for signum, handler in self._previous.items():
        signal.signal(signum, handler)
      if self._previous_wakeup is not None and self._previous_wakeup != _state.wakeup[1]:
        signal.set_wakeup_fd(self._previous_wakeup)

  def started(self):
    """Start-up is over (the first loop ran): from now on SIGTERM and a first Ctrl-C let the
    current loop finish and checkpoint."""
    _state.training = True

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGTERM:
      if _state.training:
        logging.warning("SIGTERM: checkpointing at the end of this loop, then stopping.")
        self._term.set()
        return
      _stop_at_once(Preempted)
    else:
      self._sigints += 1
      if _state.training and self._sigints == 1:
        logging.warning("Ctrl-C: checkpointing at the end of this loop, then stopping; press "
                        "Ctrl-C again to stop at once.")
        self._int.set()
        return
      _stop_at_once(Interrupted)

  def requested(self):
    """'' (go on), 'SIGTERM' or 'SIGINT': whether any process was asked to stop, and how.

    Call at a loop boundary, on every worker.
    """
    term, interrupt = self._term.is_set(), self._int.is_set()
    if self._multi_worker:
      tf = self._tf
      total = self._any(tf.constant([float(term), float(interrupt)])).numpy()
      term, interrupt = total[0] > 0, total[1] > 0
    return "SIGINT" if interrupt else "SIGTERM" if term else ""


def _stop_at_once_handler(signum, frame):
  del frame
  _stop_at_once(Preempted if signum == signal.SIGTERM else Interrupted)


def _stop_at_once(error):
  _state.requested = _state.requested or error
  if _state.critical:
    _state.pending = _state.pending or error
    return
  raise error()


# The watchdog.


def _install_wakeup():
  """Points the signal wakeup fd at the watchdog's pipe (made once); returns the previous.
  Also quiets the stops at once Python cannot raise (`_unraisable`)."""
  if not getattr(sys.unraisablehook, "trainer_quiet", False):
    sys.unraisablehook = _unraisable(sys.unraisablehook)
  if _state.wakeup is None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    _state.wakeup = (read, write)
    threading.Thread(target=_watch, args=(read,), name="trainer-signal-watchdog",
                     daemon=True).start()
    atexit.register(_disarm)
  try:
    return signal.set_wakeup_fd(_state.wakeup[1], warn_on_full_buffer=False)
  except ValueError:  # not the main thread
    return None


def _watch(read):
  while True:
    try:
      data = os.read(read, 64)
    except OSError:
      return
    if not data:
      return
    for signum in data:
      if signum == signal.SIGTERM:
        at_once = not _state.training
        error = Preempted
      elif signum == signal.SIGINT:
        _state.watchdog_sigints += 1
        at_once = not _state.training or _state.watchdog_sigints >= 2
        error = Interrupted
      else:
        continue
      if at_once and _state.timer is None and not _state.exiting:
        _state.timer = threading.Timer(GRACE_SECONDS, _hard_exit, (error,))
        _state.timer.daemon = True
        _state.timer.start()


def _hard_exit(error):
  if _state.exiting or _state.unwound:  # it did stop; the caller caught the error
    _state.timer = None
    return
  for callback in list(_state.callbacks):
    try:
      callback()
    except Exception:  # pylint: disable=broad-except
      pass  # best effort: the process ends anyway
  e = error()
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  os.write(2, f"\n{e.prefix}{e}\n".encode())
  os._exit(e.exit_code)  # pylint: disable=protected-access


def _cancel_timer():
  timer, _state.timer = _state.timer, None
  if timer is not None:
    timer.cancel()


def _disarm():
  _state.exiting = True
  _cancel_timer()
