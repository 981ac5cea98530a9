"""The kill harness (tests/killer.py): real training processes SIGKILLed at seeded random
points, restarted, and checked to end bit for bit where an uninterrupted run does, with a
TensorBoard history that shows each step once (the restarts rewrite what was replayed).

TRAINER_STRESS_KILLS=100 makes it kill 100 times; TRAINER_KILL_SEED picks other points.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, assert_same_weights, checkpointed_flags, ckpt_dir, main_env
from trainer.run import summaries


def logged(workdir, split):
  """{(tag, step): [values]} over every event file, including ones a SIGKILL truncated."""
  out = {}
  for tag, step, value in summaries.read_events(workdir, split):
    out.setdefault((tag, step), []).append(value)
  return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy,ci_kills", [
    (["--strategy=cpu"], 10),  # one replica: the device-resident input, one XLA program
    # Two replicas: per-replica device draws, the all-reduce, each replica's own update.
    (["--strategy=mirrored", "--cpu_devices=2"], 3),
    # Micro-batches and the weight average: more state in each step and each checkpoint.
    (["--strategy=cpu", "--config.grad_accum_steps=2", "--config.ema_decay=0.9"], 2),
], ids=["cpu", "mirrored", "accum-ema"])
def test_sigkill_anywhere_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(
    data_dir, tmp_path, strategy, ci_kills):
  kills = int(os.environ.get("TRAINER_STRESS_KILLS", ci_kills))
  seed = int(os.environ.get("TRAINER_KILL_SEED", "0"))
  workdir, reference = str(tmp_path / "killed"), str(tmp_path / "reference")
  args = checkpointed_flags(data_dir, total_steps=60, steps_per_loop=5, eval_every=10,
                            checkpoint_every=10, max_checkpoints=2,
                            **{"schedule.warmup_steps": 6})
  args = [a for a in args if not a.startswith("--strategy=")] + strategy  # last flag wins
  # Restarts load the XLA programs the first runs compiled (the same programs, so the same
  # bits) instead of compiling them again: most of a restart's cost on 2 cores.
  xla_flags = f"--tf_xla_persistent_cache_directory={tmp_path / 'xla-cache'}"
  env = main_env(TF_XLA_FLAGS=f"{os.environ.get('TF_XLA_FLAGS', '')} {xla_flags}".strip())
  r = subprocess.run(
      [sys.executable, "-m", "tests.killer", "chain", f"--workdir={workdir}",
       f"--reference={reference}", f"--kills={kills}", f"--seed={seed}",
       f"--logs={tmp_path / 'logs'}", "--", *args],
      cwd=REPO, env=env, capture_output=True, text=True, timeout=300 + 60 * kills)
  assert r.returncode == 0, r.stderr[-3000:]
  report = json.loads(r.stdout.strip().splitlines()[-1])
  print(json.dumps(report, indent=1))
  assert "failure" not in report, report["failure"]
  assert report["reference_exit"] == 0
  assert len(report["kills"]) == kills and all(k["exit"] == -signal.SIGKILL
                                               for k in report["kills"])
  if kills >= 10:  # the seeded points really are spread over the kinds of work
    assert len({k["event"] for k in report["kills"]}) >= 5
  assert_same_weights(ckpt_dir(reference), ckpt_dir(workdir))
  for split in ("train", "eval"):
    want, got = logged(reference, split), logged(workdir, split)
    assert sorted(got) == sorted(want)
    for key, values in got.items():
      assert len(values) == 1, (split, key, values)  # each step once, even to a raw reader
      if key[0] != "examples_per_sec":  # replayed steps log the very same values
        assert values == want[key], (split, key)
  lrs = [sorted((step, v[0]) for (tag, step), v in logged(w, "train").items()
                if tag == "learning_rate") for w in (reference, workdir)]
  assert lrs[0] == lrs[1] and [step for step, _ in lrs[0]] == list(range(60))  # every step
