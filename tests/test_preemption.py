"""trainer.preemption: signals at any time of a run.

Start-up (before the first loop has trained): SIGTERM and Ctrl-C stop at once (exit 4 / 130),
also while the main thread is stuck in C++ (the watchdog). Training: SIGTERM and a first
Ctrl-C finish the loop, checkpoint and stop (exit 4 / 130); a second Ctrl-C stops at once,
and a checkpoint being written then is committed first, never left half-way.
"""

import os
import select
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import tensorflow as tf

from tests.conftest import REPO, cpu, iterations, main_env, run_main
from trainer.run import checkpoints
from trainer.base import testpoints
from trainer.base import preemption
from trainer.base.errors import Interrupted, Preempted

# The Watcher in-process.


def test_in_training_sigterm_is_a_flag_and_the_handlers_are_restored():
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  with preemption.Watcher(cpu()) as watcher:
    assert signal.getsignal(signal.SIGTERM) is not previous[signal.SIGTERM]
    watcher.started()
    assert watcher.requested() == ""
    os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the watcher
    assert watcher.requested() == "SIGTERM"
    assert watcher.requested() == "SIGTERM"  # stays set: the run stops at this boundary
  assert {s: signal.getsignal(s) for s in previous} == previous


@pytest.mark.parametrize("signum,error", [(signal.SIGTERM, Preempted),
                                          (signal.SIGINT, Interrupted)])
def test_during_start_up_a_signal_stops_at_once(signum, error):
  with preemption.Watcher(cpu()):
    with pytest.raises(error) as info:
      os.kill(os.getpid(), signum)
      time.sleep(5)  # the handler raises here, at once
  assert info.value.step is None and "stopped at once" in str(info.value)


def test_a_caller_that_catches_a_stop_at_once_goes_on_living():
  """A notebook (or this test) that catches Interrupted must not be ended by the watchdog
  a few seconds later: it only ends processes whose stop did not unwind."""
  with pytest.raises(Interrupted):
    with preemption.Watcher(cpu()):
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
  time.sleep(preemption.GRACE_SECONDS + 1)  # were the watchdog to fire, pytest would die here
  with preemption.Watcher(cpu()) as watcher:  # and the next run gets signals as usual
    watcher.started()
    os.kill(os.getpid(), signal.SIGTERM)
    assert watcher.requested() == "SIGTERM"


def test_a_stop_at_once_swallowed_during_start_up_is_raised_when_the_run_begins():
  preemption.startup()  # as trainer.main does first
  try:
    try:
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(5)
    except Preempted:
      pass  # some library's `except Exception` on the way
    with pytest.raises(Preempted):
      with preemption.Watcher(cpu()):
        pass
    # Caught here too: the process goes on living (the watchdog's timer of the first raise,
    # 20 s, ended pytest itself when the next test ran long enough).
    time.sleep(preemption.GRACE_SECONDS + 1)
  finally:
    for signum in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signum, signal.SIG_DFL if signum == signal.SIGTERM
                    else signal.default_int_handler)


def test_in_training_a_first_ctrl_c_is_a_flag_and_a_second_stops_at_once():
  with preemption.Watcher(cpu()) as watcher:
    watcher.started()
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.requested() == "SIGINT"
    with pytest.raises(Interrupted) as info:
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(5)
  assert info.value.step is None


def test_ctrl_c_wins_over_sigterm():
  with preemption.Watcher(cpu()) as watcher:
    watcher.started()
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGINT)
    assert watcher.requested() == "SIGINT"  # exit 130: a person asked


def test_a_stop_at_once_waits_for_a_critical_section_to_end():
  done = []
  with preemption.Watcher(cpu()):
    with pytest.raises(Preempted):
      with preemption.critical():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)  # the handler runs here, and defers
        done.append("committed")
  assert done == ["committed"]


def test_a_second_ctrl_c_during_a_save_commits_it_then_stops(tmp_path):
  """The save the second Ctrl-C arrives in finishes its commit (the state file) first."""
  variable = tf.Variable(3.0)
  ckpt = checkpoints.Checkpointer(str(tmp_path), cpu(), 3, v=variable)
  ckpt.save(1)

  def ctrl_c_twice(name, position):
    del name
    if position == "before":
      os.kill(os.getpid(), signal.SIGINT)
      os.kill(os.getpid(), signal.SIGINT)
      time.sleep(0.1)  # both handlers have run: the second asked to stop at once

  with preemption.Watcher(cpu()) as watcher:
    watcher.started()
    testpoints.install("save", ctrl_c_twice)
    try:
      with pytest.raises(Interrupted):
        ckpt.save(2)
    finally:
      testpoints.clear()
  directory = os.path.join(str(tmp_path), "checkpoints")
  assert tf.train.latest_checkpoint(directory) == os.path.join(directory, "ckpt-2")
  assert checkpoints.unreadable(os.path.join(directory, "ckpt-2")) is None


@pytest.mark.parametrize("signum,error", [(signal.SIGTERM, Preempted),
                                          (signal.SIGINT, Interrupted)])
def test_after_training_a_signal_stops_at_once_and_says_a_rerun_exports(signum, error):
  """The export comes after the final checkpoint: no loop is left to finish, so a signal
  there stops at once (it printed 'checkpointing at the end of this loop' and exited 0)."""
  with pytest.raises(error) as info:
    with preemption.Watcher(cpu()) as watcher:
      watcher.started()
      watcher.ended()
      os.kill(os.getpid(), signum)
      time.sleep(5)  # the handler raises here, at once
  assert info.value.step is None
  assert str(info.value) == (f"{error.what} after training: stopped at once; the final "
                             f"checkpoint is written: run the same command again to evaluate "
                             f"and export it")


def test_a_sigterm_during_the_final_eval_stops_when_training_ends():
  """No loop boundary follows the final eval: the flag it set is read when training ends."""
  with pytest.raises(Preempted) as info:
    with preemption.Watcher(cpu()) as watcher:
      watcher.started()
      os.kill(os.getpid(), signal.SIGTERM)
      time.sleep(0.1)
      watcher.ended()
  assert str(info.value).startswith("preempted (SIGTERM) after training: stopped at once")


def test_a_run_off_the_main_thread_says_once_that_signals_are_not_handled(caplog, monkeypatch):
  monkeypatch.setattr(preemption, "_warned_thread", [])

  def run():
    with preemption.Watcher(cpu()) as watcher:
      watcher.started()

  for _ in range(2):
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
  said = [r.getMessage() for r in caplog.records if "not in the main thread" in r.getMessage()]
  assert len(said) == 1 and "\n" not in said[0], said
  assert "SIGTERM and Ctrl-C are not handled" in said[0]


# The watchdog: a main thread that does not come back still ends, with the one line.

_STUCK = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from trainer.base import errors
    from trainer.base import preemption
    preemption.startup()
    ready = False
    while True:  # swallows the handler's exception, as a long C++ call would delay it
      try:
        if not ready:
          ready = True
          print("ready", flush=True)
        time.sleep(60)
      except BaseException:
        pass
    """)


@pytest.mark.parametrize("signum,code", [(signal.SIGTERM, 4), (signal.SIGINT, 130)])
def test_the_watchdog_ends_a_process_stuck_after_a_stop_at_once(signum, code):
  proc = subprocess.Popen([sys.executable, "-c", _STUCK.format(repo=REPO)], text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert proc.stdout.readline().strip() == "ready"
  start = time.monotonic()
  proc.send_signal(signum)
  _, err = proc.communicate(timeout=60)
  seconds = time.monotonic() - start
  assert proc.returncode == code, err
  assert preemption.GRACE_SECONDS - 0.5 <= seconds < preemption.GRACE_SECONDS + 5, seconds
  assert "stopped at once" in err.strip().splitlines()[-1] and "Traceback" not in err


_TRAINING = textwrap.dedent("""
    import sys, time, types
    sys.path.insert(0, {repo!r})
    from trainer.base import preemption, watchdog
    watchdog.STOP_SECONDS = 2.0
    preemption.startup()
    strategy = types.SimpleNamespace(extended=types.SimpleNamespace())
    with preemption.Watcher(strategy) as watcher:
      watcher.started()  # training: SIGTERM asks for a stop at the next loop boundary
      print("ready", flush=True)
      if {picks_up}:  # a boundary picks it up, then a save longer than the bound
        while not watcher.requested():
          time.sleep(0.05)
        time.sleep(watchdog.STOP_SECONDS + 1.5)
        print("saved", flush=True)
      else:  # an eval whose input never ends: no boundary comes
        while True:
          time.sleep(60)
    """)


@pytest.mark.parametrize("picks_up", [False, True], ids=["stuck", "picked-up"])
def test_a_sigterm_no_loop_boundary_picks_up_stops_at_once_after_stop_seconds(picks_up):
  """An eval that never ends never reaches a loop boundary: SIGTERM did nothing and only
  kill -9 ended the run. Picked up in time, the stop waits for its checkpoint however long."""
  proc = subprocess.Popen([sys.executable, "-c", _TRAINING.format(repo=REPO, picks_up=picks_up)],
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
  assert proc.stdout.readline().strip() == "ready"
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=60)
  seconds = time.monotonic() - start
  if picks_up:
    assert proc.returncode == 0 and out.strip() == "saved", err
    return
  assert proc.returncode == 4, err
  assert 1.5 <= seconds < 2 + 5, seconds
  last = err.strip().splitlines()[-1]
  assert last.startswith("preempted (SIGTERM): stopped at once, no loop ended within 2 s of the "
                         "signal"), last
  assert "Traceback" not in err


# Real runs.


def _start(workdir, data_dir, *flags):
  args = [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
          "--config.model=mlp", "--config.global_batch_size=16", *flags]
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=REPO,
                          env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  return proc, args


def _wait_for(proc, text, timeout=300):
  """Reads the child's output until a line has `text`; fails (and kills it) after `timeout`
  seconds rather than hang when the line never comes."""
  seen, deadline = "", time.monotonic() + timeout
  fd = proc.stdout.fileno()  # read unbuffered: select() cannot see what a buffer holds
  while time.monotonic() < deadline:
    if not select.select([fd], [], [], 1.0)[0]:
      continue
    chunk = os.read(fd, 65536).decode(errors="replace")
    if not chunk:
      break
    seen += chunk
    if text in seen:
      return seen.splitlines(keepends=True)
  proc.kill()
  raise AssertionError(f"no {text!r} in: " + seen[-3000:])


@pytest.mark.slow  # ~30 s (the kill harness, slow too, sends SIGTERM at random points)
def test_sigterm_checkpoints_exits_4_and_the_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / "w"
  proc, args = _start(workdir, data_dir, "--config.total_steps=100000",
                      "--config.steps_per_loop=10", "--config.eval_every=0",
                      "--config.checkpoint_every=0")
  _wait_for(proc, "train step 10/100000")  # really training (its first loop's line)
  time.sleep(1)  # well past the step-10 boundary: the signal lands in a later loop
  proc.send_signal(signal.SIGTERM)
  # A supervisor insisting, every 0.2 s until the process is gone: one lands while it
  # checkpoints, unwinds and while Python finalises, which put the default action back (the
  # run ended with 143, and workstation.sh, which retries on 4, gave up).
  deadline = time.monotonic() + 120
  while proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.2)
    if proc.poll() is None:
      proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 4, out[-2000:]
  step = iterations(str(workdir))
  assert 20 <= step < 100000 and step % 10 == 0  # a whole loop, checkpointed
  assert f"checkpoint written at global step {step}" in out
  # The rerun resumes from there; a shorter run (a deliberate change) lets it finish now.
  flags = [a for a in args if not a.startswith("--config.total_steps")]
  r = run_main(*flags, f"--config.total_steps={step + 10}", "--allow_config_change",
               cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert iterations(str(workdir)) == step + 10


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_ctrl_c_once_checkpoints_exits_130_with_one_line(data_dir, tmp_path):
  workdir = tmp_path / "w"
  proc, _ = _start(workdir, data_dir, "--config.total_steps=100000",
                   "--config.steps_per_loop=10", "--config.eval_every=0",
                   "--config.checkpoint_every=0")
  _wait_for(proc, "train step 10/100000")
  time.sleep(1)
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out[-2000:]
  step = iterations(str(workdir))
  assert 20 <= step < 100000 and step % 10 == 0
  assert out.strip().splitlines()[-1] == (
      f"interrupted (Ctrl-C): checkpoint written at global step {step}; run the same command "
      f"again to resume")
  assert "Traceback" not in out and "KeyboardInterrupt" not in out


def _no_half_written_files(workdir):
  names = [os.path.relpath(os.path.join(root, n), workdir)
           for root, dirs, files in os.walk(workdir) for n in files + dirs]
  assert not [n for n in names if ".tmp" in n or "_temp" in n], names


@pytest.mark.slow
def test_ctrl_c_twice_stops_inside_a_long_loop_without_a_traceback(data_dir, tmp_path):
  """The second Ctrl-C lands while the main thread is inside a long compiled loop (the CNN
  at a large batch: ~20 s a loop): the watchdog ends the process within GRACE_SECONDS
  instead of waiting for the loop's end."""
  workdir = tmp_path / "w"
  proc, _ = _start(workdir, data_dir, "--config.model=small_cnn",
                   "--config.global_batch_size=1024", "--config.total_steps=1000000",
                   "--config.steps_per_loop=250", "--config.eval_every=0",
                   "--config.checkpoint_every=0")
  _wait_for(proc, "train step 250/1000000")  # the first loop is done: training
  time.sleep(2)  # inside the second loop
  proc.send_signal(signal.SIGINT)
  time.sleep(0.5)
  start = time.monotonic()
  proc.send_signal(signal.SIGINT)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 130, out[-2000:]
  assert time.monotonic() - start < preemption.GRACE_SECONDS + 5
  assert "Traceback" not in out and "KeyboardInterrupt" not in out
  assert out.strip().splitlines()[-1].startswith("interrupted (Ctrl-C): stopped at once")
  _no_half_written_files(str(workdir))
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "checkpoint"))


# The set-up line (strategy; data; precision; plan), printed after the checks and before the
# build (it printed the Plan's repr once, and the test waited for that).
_SET_UP = "replica on CPU:0; digits: "


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
@pytest.mark.parametrize("wait_for,flags", [
    # After the checks, while it builds, restores and compiles.
    (_SET_UP, ["--config.total_steps=200", "--config.steps_per_loop=100"]),
    # Inside a first loop that runs for a long time (compiled C++: the watchdog's case).
    (_SET_UP, ["--config.total_steps=4000000", "--config.steps_per_loop=4000000"]),
], ids=["build", "first-loop"])
def test_sigterm_during_start_up_exits_4_promptly_and_writes_nothing_half(
    data_dir, tmp_path, wait_for, flags):
  workdir = tmp_path / "w"
  proc, args = _start(workdir, data_dir, "--config.eval_every=0",
                      "--config.checkpoint_every=0", "--config.schedule.warmup_steps=1",
                      *flags)
  _wait_for(proc, wait_for)
  time.sleep(1.5 if "4000000" in flags[0] else 0.0)
  start = time.monotonic()
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  seconds = time.monotonic() - start
  assert proc.returncode == 4, out[-3000:]
  # Prompt: the first-loop case's loop alone would run for hours, and "stopped at once" below
  # says the stop did not wait for it; the bound is wide because a loaded 2-core CI machine
  # delays the watchdog thread and the child's exit by seconds (it once took > 10 s).
  assert seconds < preemption.GRACE_SECONDS + 60, seconds
  assert out.strip().splitlines()[-1].startswith("preempted (SIGTERM) during start-up: "
                                                 "stopped at once"), out[-2000:]
  assert "Traceback" not in out
  _no_half_written_files(str(workdir))
  assert not os.path.exists(os.path.join(workdir, "checkpoints", "checkpoint"))
  # And the same command runs (the shorter case to its end).
  if "200" in flags[0]:
    r = run_main(*args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert iterations(str(workdir)) == 200


_HANGING_EVAL = textwrap.dedent("""
    import time
    import numpy as np
    import tensorflow as tf

    def streams():
      x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
      y = (x[:, 0] > 0).astype(np.int32)

      def train(ctx):
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(32)

      def never(): # an input that never gives its first batch
        time.sleep(10**6)
        yield x[:32], y[:32]

      def eval_(ctx):
        return tf.data.Dataset.from_generator(never, output_signature=(
            tf.TensorSpec((32, 4), tf.float32), tf.TensorSpec((32,), tf.int32)))

      return {"train": train, "eval": eval_, "num_train_examples": 256,
              "num_eval_examples": 64, "num_classes": 2}
    """)


@pytest.mark.slow
def test_sigterm_during_an_eval_that_never_ends_stops_within_stop_seconds(tmp_path):
  """The eval waits in C++ for an input that never comes: no loop boundary, no Python
  handler. The watchdog stops the run STOP_SECONDS after the signal, exit 4, the step-10
  checkpoint intact (only kill -9 ended it before)."""
  (tmp_path / "plug_hang.py").write_text(_HANGING_EVAL)
  workdir = tmp_path / "w"
  proc = subprocess.Popen(
      [sys.executable, "-m", "trainer.main", f"--workdir={workdir}", "--strategy=cpu",
       "--config.dataset=plug_hang:streams", "--config.model=mlp", "--config.augment=False",
       "--config.global_batch_size=32", "--config.total_steps=1000",
       "--config.steps_per_loop=10", "--config.checkpoint_every=10", "--config.eval_every=20"],
      cwd=tmp_path, env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)
  try:
    _wait_for(proc, "train step 10/1000")  # the first loop's line (later ones: every 30 s)
    deadline = time.monotonic() + 60
    while not os.path.exists(workdir / "checkpoints" / "ckpt-10.index"):
      assert time.monotonic() < deadline
      time.sleep(0.2)
    time.sleep(3)  # the second loop ran: the eval at step 20 started, and never ends
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=preemption.STOP_SECONDS + 60)
  finally:
    if proc.poll() is None:
      proc.kill()
  seconds = time.monotonic() - start
  assert proc.returncode == 4, out[-3000:]
  assert preemption.STOP_SECONDS - 1 <= seconds < preemption.STOP_SECONDS + 10, seconds
  last = out.strip().splitlines()[-1]
  assert last.startswith("preempted (SIGTERM): stopped at once, no loop ended within 20 s"), last
  assert "Traceback" not in out
  assert iterations(str(workdir)) == 10
  _no_half_written_files(str(workdir))


def test_a_stop_raised_inside_a_log_write_is_not_swallowed_by_logging(capsys):
  """A SIGTERM during start-up raises its stop wherever the main thread is; inside a log
  line's write, logging's emit caught it and printed "--- Logging error ---" with a traceback
  (seen once in CI), and the run went on until the watchdog ended it."""
  import logging as std_logging  # pylint: disable=g-import-not-at-top

  class _Stream:  # what the handler writes to: `error` lands in its write
    error = Preempted

    def write(self, text):
      raise self.error()

    def flush(self):
      pass

  preemption._let_stops_out_of_logging()  # pylint: disable=protected-access
  logger = std_logging.getLogger("trainer_test_stop_in_emit")
  stream = _Stream()
  logger.addHandler(std_logging.StreamHandler(stream))
  try:
    with pytest.raises(Preempted):
      logger.warning("a line being written")
    assert "Logging error" not in capsys.readouterr().err
    stream.error = ValueError  # any other error in a handler is logging's to report, as before
    logger.warning("a line that fails")
    assert "--- Logging error ---" in capsys.readouterr().err
  finally:
    logger.handlers.clear()
