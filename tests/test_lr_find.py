"""The LR range test: its arithmetic, the per-step losses the loop returns, the command line
(files, the proposal and the command that trains with it, refusals) and, slow, the default
job trained at the proposal."""

import json
import math
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, build_parts, cpu, main_env, small_run
from trainer.distribute import precision
from trainer.schedules import range_test
from trainer.step import build


def test_the_rate_rises_exponentially_from_min_to_max():
  schedule = range_test.ExponentialRange(1e-6, 1.0, 13)
  rates = schedule.rates(13)
  assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0)
  np.testing.assert_allclose(rates[1:] / rates[:-1], 10 ** 0.5)  # 6 decades in 12 steps
  np.testing.assert_allclose([float(schedule(s)) for s in range(13)], rates, rtol=1e-5)


def test_smoothing_is_fastais_debiased_average_and_stops_at_a_blow_up():
  losses = [2.0] * 5 + [1.0] * 5 + [9.0, 50.0]
  smoothed = range_test.smooth(losses)
  avg = 0.0
  for i, loss in enumerate(losses):
    avg = 0.98 * avg + 0.02 * loss
    assert smoothed[i] == pytest.approx(avg / (1 - 0.98 ** (i + 1)))
  assert smoothed[0] == pytest.approx(2.0)  # debiased: the first point is the first loss
  assert range_test.stop_at([2.0, 1.0, 3.9, 4.1]) == 3  # above 4x the minimum so far
  assert range_test.stop_at([2.0, 1.0, float("nan")]) == 2
  assert range_test.stop_at([2.0, 1.5, 1.0]) is None


def test_the_proposal_is_the_steepest_descent_capped_at_a_tenth_of_the_minimum():
  lrs = np.logspace(-6, 0, 121)
  # A loss that falls fastest around 1e-3 and is lowest near 1e-1.
  loss = 2.0 - 1.0 / (1 + np.exp(-(np.log10(lrs) + 3) * 4)) + 0.1 * (np.log10(lrs) + 1) ** 2
  proposed = range_test.propose(lrs, loss)
  steepest = lrs[10:-5][np.argmin(np.gradient(loss, np.log10(lrs))[10:-5])]
  assert proposed == pytest.approx(min(steepest, lrs[np.argmin(loss)] / 10))
  assert 3e-4 < proposed < 3e-3
  assert range_test.propose(lrs[:10], loss[:10]) is None  # too few points


def test_the_loop_returns_every_steps_loss_with_its_metrics(data_dir):
  config = small_run(data_dir, model="mlp")
  with precision.global_policy("float32"):
    parts = build_parts(config, cpu(), record_steps=8)
    runner = build.make_runner(parts)
    out = runner.train(6)
    again = runner.train(8)
  assert out["step_losses"].shape == (6,) and again["step_losses"].shape == (8,)
  assert np.mean(out["step_losses"]) == pytest.approx(out["loss"], rel=1e-5)  # equal batches
  assert np.mean(again["step_losses"]) == pytest.approx(again["loss"], rel=1e-5)
  assert len(set(out["step_losses"].tolist())) == 6  # one value per step, not the mean


def _lr_find(*args, cwd):
  return subprocess.run([sys.executable, "-m", "trainer.lr_find", *args], cwd=cwd,
                        env=main_env(), capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("args,message", [
    (["--min_lr=1e-2", "--max_lr=1e-3"], "max_lr: must be > min_lr"),
    (["--steps=5"], "steps: must be at least 10"),
    (["--min_lr=0"], "min_lr: must be > 0"),
    (["--config.modle=mlp"], "config: no such field 'modle'; did you mean 'model'?"),
])
def test_bad_arguments_are_one_line_and_exit_2(tmp_path, args, message):
  r = _lr_find(*args, f"--workdir={tmp_path / 'w'}", cwd=str(tmp_path))
  assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert r.stderr.strip().splitlines()[-1].startswith("error: " + message)
  assert not (tmp_path / "w").exists()


def test_a_training_workdir_is_refused_untouched(tmp_path):
  workdir = tmp_path / "run"
  (workdir / "checkpoints").mkdir(parents=True)
  (workdir / "config.json").write_text("{}")
  before = sorted(p.name for p in workdir.iterdir())
  r = _lr_find(f"--workdir={workdir}", cwd=str(tmp_path))
  assert r.returncode == 2
  assert r.stderr.strip().splitlines()[-1].startswith(
      f"error: workdir: '{workdir}' holds a training run")
  assert sorted(p.name for p in workdir.iterdir()) == before


@pytest.mark.slow
def test_the_default_job_trained_at_the_proposal_reaches_its_accuracy(data_dir, tmp_path):
  workdir = str(tmp_path / "find")
  r = _lr_find(f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
               cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  with open(os.path.join(workdir, "lr_find.json")) as f:
    record = json.load(f)
  assert os.path.getsize(os.path.join(workdir, "lr_find.png")) > 10_000
  proposal = record["proposal"]
  assert proposal and 1e-5 < proposal < 1 and record["rule"] == range_test.RULE
  assert len(record["lrs"]) == len(record["losses"]) <= 200
  assert f"proposed peak learning rate {proposal:.3g}" in r.stdout
  command = re.search(r"train with: (.*)", r.stdout).group(1)
  assert f"--config.schedule.target_lr={proposal:.3g}" in command
  args = shlex.split(command)[3:]  # after python -m trainer.main
  train = subprocess.run([sys.executable, "-m", "trainer.main", *args,
                          f"--workdir={tmp_path / 'train'}"], cwd=str(tmp_path),
                         env=main_env(), capture_output=True, text=True, timeout=900)
  assert train.returncode == 0, train.stderr[-3000:]
  accuracy = float(re.search(r"eval: loss [0-9.e-]+, accuracy ([0-9.]+)", train.stdout)[1])
  assert accuracy >= 0.95, (proposal, train.stdout[-1000:])
  assert math.isfinite(accuracy)
