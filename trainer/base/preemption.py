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
  once. A SIGTERM that no loop boundary picks up within `STOP_SECONDS` (the main thread stuck,
  e.g. in an eval whose input never ends) stops at once too, exit 4, the latest checkpoint
  intact. On multi-worker runs the flags are all-reduced, so every worker stops at the same
  step (a worker that stopped alone would leave the others waiting in a collective).
- **After training** (`Watcher.ended()`: the final checkpoint is written; the export is
  next): SIGTERM and Ctrl-C stop at once again, exit 4 / 130, with a line that says a rerun
  of the same command writes the export.
- **Exiting** (`exiting()`, the entry points' last step): signals are ignored, so the exit
  status decided stays the one the process ends with.

Promptness: `trainer.base.watchdog` ends a process whose main thread does not come back
within `GRACE_SECONDS` of a stop at once (or `STOP_SECONDS` of a SIGTERM in training).

A checkpoint save is a critical section (`critical()`): a stop at once that arrives during
one is raised when the save has committed (the watchdog still bounds the wait).

Only the main thread can install handlers; elsewhere (a notebook's worker thread) signals keep
their previous handling, and the run says so once, at its start.
"""

import contextlib
import logging as std_logging
import signal
import sys
import threading

from absl import logging

from trainer.base import watchdog
from trainer.base.errors import Interrupted, Preempted, Stopped
from trainer.base.watchdog import GRACE_SECONDS, STOP_SECONDS  # noqa: F401  (this API)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_state = watchdog.state
_ENDED = (" after training: stopped at once; the final checkpoint is written: run the same "
          "command again to evaluate and export it")
_warned_thread = []


def _at_once(error):
  """The stop at once of the current phase: `error` is Preempted or Interrupted."""
  return error(at_once=_ENDED) if _state.ended else error()


def _stuck():
  """The stop of a SIGTERM that no loop boundary picked up in time."""
  return Preempted(at_once=(
      f": stopped at once, no loop ended within {watchdog.STOP_SECONDS:g} s of the signal (the "
      f"main thread is stuck, e.g. in an eval whose input never ends); nothing written since "
      f"the latest checkpoint; run the same command again to resume from it"))


_state.at_once = _at_once
_state.stuck = _stuck


def _unraisable(hook):
  """Python cannot raise a stop at once that a signal delivers inside a finalizer or a weakref
  callback: it prints "Exception ignored in ..." and a traceback, and the main thread goes on.
  Say nothing of it: the watchdog ends the process within GRACE_SECONDS with the one line."""

  def quiet(unraisable):
    if isinstance(unraisable.exc_value, Stopped):
      return
    hook(unraisable)

  quiet.trainer_quiet = True
  return quiet


def _main_thread():
  return threading.current_thread() is threading.main_thread()


def _let_stops_out_of_logging():
  """A stop raised while the main thread writes a log line would be swallowed: every logging
  handler's emit catches Exception and calls handleError, which prints "--- Logging error ---"
  and a traceback and goes on (CPython Lib/logging/__init__.py, StreamHandler.emit), leaving
  the watchdog to end the process 20 s later. handleError re-raises a stop instead, as if the
  signal had come just after the log call. Installed once, for every handler."""
  original = std_logging.Handler.handleError
  if getattr(original, "trainer_lets_stops_out", False):
    return

  def handle_error(self, record):
    if isinstance(sys.exc_info()[1], Stopped):
      raise  # pylint: disable=misplaced-bare-raise  (called from inside emit's except block)
    original(self, record)

  handle_error.trainer_lets_stops_out = True
  std_logging.Handler.handleError = handle_error


def startup():
  """Makes SIGTERM and Ctrl-C stop the process at once (exit 4 / 130): for `trainer.main`,
  before it imports TensorFlow and builds the strategy. A `Watcher` later takes over."""
  if not _main_thread():
    return
  _state.training = _state.ended = _state.unwound = False
  _state.watchdog_sigints = 0
  _state.requested = None
  for signum in _SIGNALS:
    signal.signal(signum, _stop_at_once_handler)
  watchdog.install_wakeup(_unraisable)
  _let_stops_out_of_logging()


def exiting():
  """The process is ending with its exit status decided: ignore SIGTERM and Ctrl-C from now
  on. Python's finalisation puts the default action back for a signal with a Python handler,
  but leaves SIG_IGN as it is (CPython Modules/signalmodule.c, `_PySignal_Fini`), so without
  this a SIGTERM a second after the first (a supervisor insisting) ended a preempted run with
  143 instead of 4, and a launcher that retries on 4 stopped retrying."""
  if _main_thread():
    watchdog.disarm()
    for signum in _SIGNALS:
      signal.signal(signum, signal.SIG_IGN)


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
      raise _at_once(error)  # pylint: disable=lost-exception  (a stop at once replaces the rest)


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
    _state.training = _state.ended = False
    if _state.requested is not None:  # asked for before, and swallowed on the way here
      error, _state.requested = _state.requested, None
      # Raised to the caller now: the process is not stuck (as in __exit__), so the
      # watchdog's timer of the first raise must not end a caller that catches this one.
      _state.unwound = True
      watchdog.cancel_timers()
      raise _at_once(error)
    _state.watchdog_sigints = 0
    _state.unwound = False
    watchdog.cancel_timers()  # of a stop that unwound through a previous run's Watcher
    if _main_thread():  # signals need the main thread
      self._previous = {s: signal.signal(s, self._handle) for s in _SIGNALS}
      self._previous_wakeup = watchdog.install_wakeup(_unraisable)
      _let_stops_out_of_logging()
    elif not _warned_thread:
      _warned_thread.append(True)
      logging.warning(
          "This run is not in the main thread, where Python delivers signals: SIGTERM and "
          "Ctrl-C are not handled, so a preemption ends it with nothing saved after its latest "
          "checkpoint (checkpoint_every); start it from the main thread to checkpoint on them.")
    return self

  def __exit__(self, exc_type, exc, tb):
    _state.training = False
    # A stop at once that got this far unwound as it should: the process is not stuck, and a
    # caller that catches the error (a notebook, a test) goes on living. (The watchdog may
    # arm its timer only after this: the timer checks `unwound` when it fires.)
    _state.unwound = exc_type is not None
    watchdog.cancel_timers()
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
    _state.picked = False
    _state.training = True

  def ended(self):
    """Training is over and its final checkpoint written: from now on (the export) SIGTERM
    and Ctrl-C stop at once. A stop asked for since the last loop boundary (during the final
    eval) stops now. Call on every worker."""
    signal_ = self.requested()
    _state.training, _state.ended = False, True
    if signal_:
      raise _at_once(Interrupted if signal_ == "SIGINT" else Preempted)

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGTERM:
      if _state.training:
        logging.warning("SIGTERM: checkpointing at the end of this loop, then stopping (at "
                        "once if no loop ends within %g s).", watchdog.STOP_SECONDS)
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

    Call at a loop boundary, on every worker: a stop it returns is picked up (the watchdog no
    longer bounds it), so the caller must checkpoint and stop.
    """
    term, interrupt = self._term.is_set(), self._int.is_set()
    if self._multi_worker:
      tf = self._tf
      total = self._any(tf.constant([float(term), float(interrupt)])).numpy()
      term, interrupt = total[0] > 0, total[1] > 0
    if term or interrupt:
      watchdog.picked_up()
    return "SIGINT" if interrupt else "SIGTERM" if term else ""


def _stop_at_once_handler(signum, frame):
  del frame
  if _state.unwound:  # a run's stop (or error) is on its way out: its exit status stands
    return
  _stop_at_once(Preempted if signum == signal.SIGTERM else Interrupted)


def _stop_at_once(error):
  _state.requested = _state.requested or error
  if _state.critical:
    _state.pending = _state.pending or error
    return
  raise _at_once(error)
