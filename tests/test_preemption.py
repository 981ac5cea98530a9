"""trainer.preemption: SIGTERM becomes a flag read at loop boundaries; a real run checkpoints
the loop it was in, exits 4, and the rerun resumes from there."""

import os
import signal
import subprocess
import sys
import time

from tests.conftest import cpu, iterations, main_env, run_main
from trainer import preemption


def test_watcher_turns_sigterm_into_a_flag_and_restores_the_handler():
  previous = signal.getsignal(signal.SIGTERM)
  with preemption.Watcher(cpu()) as watcher:
    assert signal.getsignal(signal.SIGTERM) is not previous
    assert not watcher.requested()
    os.kill(os.getpid(), signal.SIGTERM)  # would end the test process without the watcher
    assert watcher.requested()
    assert watcher.requested()  # stays set: the run stops at this boundary
  assert signal.getsignal(signal.SIGTERM) is previous


def test_sigterm_checkpoints_exits_4_and_the_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / "w"
  args = [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
          "--config.total_steps=100000", "--config.steps_per_loop=10", "--config.eval_every=0",
          "--config.checkpoint_every=0", "--config.global_batch_size=16"]
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=tmp_path,
                          env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True)
  for line in proc.stdout:  # wait until it is really training (its first loop's line)
    if "train step 10/100000" in line:
      break
  time.sleep(1)  # well past the step-10 boundary: the signal lands in a later loop
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 4, out[-2000:]
  step = iterations(str(workdir))
  assert 20 <= step < 100000 and step % 10 == 0  # a whole loop, checkpointed
  assert f"checkpoint written at global step {step}" in out
  # The rerun resumes from there; a shorter run (a deliberate change) lets it finish now.
  r = run_main(*args[:-4], "--config.total_steps=" + str(step + 10), "--config.steps_per_loop=10",
               "--config.eval_every=0", "--config.checkpoint_every=0",
               "--config.global_batch_size=16", "--allow_config_change", cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert iterations(str(workdir)) == step + 10
