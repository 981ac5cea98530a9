"""The signal watchdog: a thread that ends the process when the main thread cannot.

Python runs signal handlers in the main thread between bytecodes, so a main thread inside a
long C++ call (an XLA compilation, a long loop, an eval whose input never ends) runs them only
when the call returns, if ever. The watchdog wakes on the signal itself
(`signal.set_wakeup_fd`: the C-level handler writes the signal's number to a pipe) and bounds
two waits:

- a stop at once (start-up, a second Ctrl-C, after training) that has not ended the process
  within `GRACE_SECONDS`;
- a SIGTERM during training, which only asks the run to stop at its next loop boundary: if no
  boundary picks it up within `STOP_SECONDS` (`picked_up()`), a preemption's grace period
  (30 s on Cloud TPU and spot VMs) would run out while the main thread is stuck, so the process
  stops at once, with no checkpoint beyond the latest.

Either way it runs the `callbacks` (a gs:// lease is released there), writes the stop's one
line and ends the process with `os._exit` and the stop's exit status. Ending anywhere is safe:
everything the trainer writes is committed by a rename or by TF's checkpoint state file
(tests/test_kill.py SIGKILLs at every such point). `trainer.base.preemption` owns the
handlers and the phases; this module owns the thread and what it shares with them (`state`).
"""

import atexit
import os
import signal
import sys
import threading

from trainer.base.errors import Interrupted, Preempted

GRACE_SECONDS = 5.0  # a stop at once that has not ended the process by then is forced
# A SIGTERM no loop boundary picked up by then is a stop at once: with the exit that follows,
# within a preemption's 30 s grace period.
STOP_SECONDS = 20.0


class State:
  """Process-wide: one run trains at a time, and the watchdog reads this from its thread."""

  def __init__(self):
    self.training = False  # past start-up: SIGTERM and a first Ctrl-C only set flags
    self.ended = False  # training is over (the final checkpoint is written): stop at once
    self.critical = 0  # depth of critical sections (checkpoint saves)
    self.pending = None  # a stop-at-once error deferred by a critical section
    self.requested = None  # the stop at once asked for, until it unwinds through a Watcher
    self.watchdog_sigints = 0
    self.timer = None  # bounds a stop at once
    self.stop_timer = None  # bounds a SIGTERM during training until a loop picks it up
    self.picked = False  # a loop boundary picked up the SIGTERM: no bound any more
    self.unwound = False  # the run's code unwound through its Watcher with an exception
    self.exiting = False
    self.wakeup = None  # (read fd, write fd) of the watchdog's pipe
    self.callbacks = []
    self.at_once = None  # error class -> the stop at once of the current phase (an instance)
    self.stuck = None  # () -> the error of a SIGTERM no loop picked up (an instance)


state = State()
_lock = threading.Lock()  # the watchdog's timers against the main thread's picking up


def install_wakeup(quiet_hook):
  """Points the signal wakeup fd at the watchdog's pipe (made once); returns the previous, or
  None off the main thread. `quiet_hook(hook)` wraps sys.unraisablehook (once)."""
  if not getattr(sys.unraisablehook, "trainer_quiet", False):
    sys.unraisablehook = quiet_hook(sys.unraisablehook)
  if state.wakeup is None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    state.wakeup = (read, write)
    threading.Thread(target=_watch, args=(read,), name="trainer-signal-watchdog",
                     daemon=True).start()
    atexit.register(disarm)
  try:
    return signal.set_wakeup_fd(state.wakeup[1], warn_on_full_buffer=False)
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
      with _lock:
        _arm(signum)


def _arm(signum):
  """Starts the timer that bounds what signal `signum` asks for, if any."""
  if signum == signal.SIGTERM:
    at_once = not state.training
    error = Preempted
    if (not at_once and not state.picked and state.stop_timer is None
        and not state.exiting):
      state.stop_timer = _start(STOP_SECONDS, state.stuck or Preempted)
  elif signum == signal.SIGINT:
    state.watchdog_sigints += 1
    at_once = not state.training or state.watchdog_sigints >= 2
    error = Interrupted
  else:
    return
  if at_once and state.timer is None and not state.exiting:
    phase = state.at_once  # the wording of the phase the signal arrived in
    state.timer = _start(GRACE_SECONDS, lambda: phase(error) if phase else error())


def _start(seconds, make_error):
  timer = threading.Timer(seconds, hard_exit, (make_error,))
  timer.daemon = True
  timer.start()
  return timer


def picked_up():
  """A loop boundary picked up the SIGTERM: the run stops there, checkpoint first (a save may
  take longer than STOP_SECONDS; it is not cut short)."""
  with _lock:
    state.picked = True
    timer, state.stop_timer = state.stop_timer, None
  if timer is not None:
    timer.cancel()


def hard_exit(make_error):
  """Ends the process with the one line and exit status of `make_error()`, unless the run
  already unwound (a caller caught the stop) or the process is exiting anyway."""
  if state.exiting or state.unwound:  # it did stop; the caller caught the error
    state.timer = state.stop_timer = None
    return
  for callback in list(state.callbacks):
    try:
      callback()
    except Exception:  # pylint: disable=broad-except
      pass  # best effort: the process ends anyway
  e = make_error()
  try:
    sys.stdout.flush()
    sys.stderr.flush()
  except Exception:  # pylint: disable=broad-except
    pass
  os.write(2, f"\n{e.prefix}{e}\n".encode())
  os._exit(e.exit_code)  # pylint: disable=protected-access


def cancel_timers():
  with _lock:
    timers = state.timer, state.stop_timer
    state.timer = state.stop_timer = None
  for timer in timers:
    if timer is not None:
      timer.cancel()


def disarm():
  state.exiting = True
  cancel_timers()
