"""trainer.preemption: signals at any time of a run.

Start-up (before the first loop has trained): SIGTERM and Ctrl-C stop at once (exit 4 / 130),
also while the main thread is stuck in C++ (the watchdog). Training: SIGTERM and a first
Ctrl-C finish the loop, checkpoint and stop (exit 4 / 130); a second Ctrl-C stops at once,
and a checkpoint being written then is committed first, never left half-way.
"""

import os
import signal
import subprocess
import sys
import textwrap
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


# Real runs.


def _start(workdir, data_dir, *flags):
  args = [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
          "--config.model=mlp", "--config.global_batch_size=16", *flags]
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=REPO,
                          env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  return proc, args


def _wait_for(proc, text):
  lines = []
  for line in proc.stdout:
    lines.append(line)
    if text in line:
      return lines
  raise AssertionError("".join(lines)[-3000:])


def test_sigterm_checkpoints_exits_4_and_the_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / "w"
  proc, args = _start(workdir, data_dir, "--config.total_steps=100000",
                      "--config.steps_per_loop=10", "--config.eval_every=0",
                      "--config.checkpoint_every=0")
  _wait_for(proc, "train step 10/100000")  # really training (its first loop's line)
  time.sleep(1)  # well past the step-10 boundary: the signal lands in a later loop
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


@pytest.mark.parametrize("wait_for,flags", [
    # After the checks, while it builds, restores and compiles.
    ("plan Plan(", ["--config.total_steps=200", "--config.steps_per_loop=100"]),
    # Inside a first loop that runs for a long time (compiled C++: the watchdog's case).
    ("plan Plan(", ["--config.total_steps=4000000", "--config.steps_per_loop=4000000"]),
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
