"""The schedule family from the command line: a WSD run logs the formula's rate at every step,
a WSD run stopped in its stable phase is extended by a longer total_steps without a flag (the
cooldown moves to the new end), a cosine run's longer total_steps is refused in one line with
both rates, and `trainer.plot --decay=rsqrt` draws one."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, ckpt_dir, iterations, main_env, run_main
from trainer import schedules
from trainer.rundir.history import read_scalars

pytestmark = pytest.mark.slow  # each test runs trainer processes


def _flags(workdir, data_dir, *extra):
  return [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
          "--config.model=mlp", "--config.global_batch_size=32", "--config.eval_every=0",
          "--config.steps_per_loop=10", "--config.checkpoint_every=10",
          "--config.max_checkpoints=30", *extra]


def _plan_schedule(workdir):
  with open(os.path.join(workdir, "config.json")) as f:
    saved = json.load(f)
  plan = saved["plan"]
  return saved, dict(total_steps=plan["total_steps"], warmup_steps=plan["warmup_steps"],
                     hold=plan["hold"], start_lr=plan["start_lr"], target_lr=plan["peak_lr"],
                     final_lr=plan["final_lr"], decay=plan["decay"],
                     cooldown_steps=plan["cooldown_steps"],
                     cooldown_shape=plan["cooldown_shape"],
                     rsqrt_timescale=plan["rsqrt_timescale"])


def _stop_at(workdir, step):
  """The run as if it had been killed right after its checkpoint of `step`."""
  directory = ckpt_dir(workdir)
  for name in os.listdir(directory):
    if name.startswith("ckpt-") and int(name.split("-")[1].split(".")[0].split("_")[0]) > step:
      os.remove(os.path.join(directory, name))
  tf.compat.v1.train.update_checkpoint_state(directory, f"ckpt-{step}", [f"ckpt-{step}"])


def test_wsd_logs_the_formulas_rate_at_every_step(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(*_flags(workdir, data_dir, "--config.total_steps=100",
                       "--config.schedule.decay=constant",
                       "--config.schedule.cooldown_fraction=0.2",
                       "--config.schedule.cooldown_shape=1-sqrt"), cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  saved, kwargs = _plan_schedule(workdir)
  assert (kwargs["decay"], kwargs["cooldown_steps"], kwargs["cooldown_shape"]) == (
      "constant", 20, "1-sqrt")
  lrs = read_scalars(workdir, "train", "learning_rate")
  assert sorted(lrs) == list(range(100))
  np.testing.assert_allclose([lrs[s] for s in range(100)],
                             schedules.learning_rate(np.arange(100), **kwargs), rtol=1e-6)
  assert lrs[79] == pytest.approx(kwargs["target_lr"]) and lrs[99] < 0.25 * lrs[79]
  assert "schedules" not in saved  # never changed


def test_a_wsd_run_stopped_in_its_stable_phase_is_extended_without_a_flag(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  first = _flags(workdir, data_dir, "--config.schedule.decay=constant",
                 "--config.schedule.cooldown_fraction=0.2",
                 "--config.schedule.warmup_fraction=0", "--config.schedule.warmup_steps=10")
  r = run_main(*first, "--config.total_steps=100", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  _, old = _plan_schedule(workdir)
  _stop_at(workdir, 40)
  r = run_main(*first, "--config.total_steps=200", cwd=str(tmp_path))  # no flag needed
  assert r.returncode == 0, r.stderr[-3000:]
  assert iterations(workdir) == 200
  saved, new = _plan_schedule(workdir)
  assert new["cooldown_steps"] == 40 and new["total_steps"] == 200
  assert [s["step"] for s in saved["schedules"]] == [0, 40]
  assert saved["schedules"][0]["total_steps"] == 100 and saved["schedules"][1] == {
      "step": 40, **schedules.check(**new).kwargs()}
  lrs = read_scalars(workdir, "train", "learning_rate")
  assert sorted(lrs) == list(range(200))
  np.testing.assert_allclose([lrs[s] for s in range(40)],
                             schedules.learning_rate(np.arange(40), **old), rtol=1e-6)
  np.testing.assert_allclose([lrs[s] for s in range(40, 200)],
                             schedules.learning_rate(np.arange(40, 200), **new), rtol=1e-6)
  assert lrs[159] == pytest.approx(new["target_lr"])  # still stable where it used to cool
  assert lrs[199] < 0.1 * lrs[159]  # cooled down at the new end


def test_a_cosine_run_resumed_with_another_length_is_refused_with_both_rates(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(*_flags(workdir, data_dir, "--config.total_steps=60"), cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  _, old = _plan_schedule(workdir)
  _stop_at(workdir, 30)
  before = sorted(os.listdir(workdir))
  r = run_main(*_flags(workdir, data_dir, "--config.total_steps=120"), cwd=str(tmp_path))
  assert r.returncode == 2
  line = r.stderr.strip().splitlines()[-1]
  assert line.startswith(f"error: total_steps: cannot resume {workdir} at step 30 with this "
                         f"schedule (total_steps 60 -> 120"), line
  new = dict(old, total_steps=120, warmup_steps=12)  # the default warmup: 10% of the run
  at = int(line.split("first at step ")[1].split(":")[0])
  a, b = (schedules.learning_rate(at, **k) for k in (old, new))
  assert f"{a:.6g} -> {b:.6g}" in line and "--allow_config_change" in line
  assert "warmup is 6 -> 12 steps" in line  # a fraction of the run moves with it
  assert sorted(os.listdir(workdir)) == before


def test_plot_draws_an_rsqrt_schedule(tmp_path):
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  out = tmp_path / "rsqrt.png"
  r = subprocess.run([sys.executable, "-m", "trainer.plot", "--decay=rsqrt",
                      "--total_steps=10000", "--warmup_steps=500", f"--out={out}"], cwd=REPO,
                     env=main_env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-2000:]
  assert out.read_bytes()[:4] == b"\x89PNG" and r.stderr.strip() == ""
