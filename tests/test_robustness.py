"""A run that survives a bad step and keeps its best (issue 25): non-finite updates skipped
inside the step and counted, rollbacks on a divergence, the best and every N-th checkpoint
kept beside the latest, early stopping, and the export of the best weights."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (build_parts, ckpt_dir, cpu, default_config, iterations, main_env,
                            run_main)
from trainer.data import in_memory
from trainer.distribute import precision
from trainer.rundir.history import read_scalars
from trainer.run import train

BAD_ROWS = (5, 77, 300)


def nan_data():
  """Float features of 4 classes, three training examples of which are NaN."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(512, 8)).astype(np.float32)
  y = (x[:, 0] > 0).astype(np.int32) + 2 * (x[:, 1] > 0).astype(np.int32)
  x[list(BAD_ROWS)] = np.nan
  xe = rng.normal(size=(128, 8)).astype(np.float32)
  ye = (xe[:, 0] > 0).astype(np.int32) + 2 * (xe[:, 1] > 0).astype(np.int32)
  return {"train": (x, y), "eval": (xe, ye), "num_classes": 4}


NAN_RUN = {"dataset": "tests.test_robustness:nan_data", "model": "mlp", "augment": False,
           "total_steps": 60, "global_batch_size": 32, "steps_per_loop": 10, "eval_every": 20,
           "checkpoint_every": 20}


def _bad_steps(total, batch, seed=0):
  x, y = nan_data()["train"]
  return [s for s in range(total) if np.isnan(
      in_memory.batch_at(s, tf.constant(x), tf.constant(y), batch, seed)[0].numpy()).any()]


@pytest.mark.slow  # ~26 s through main
def test_a_nan_batch_skips_its_update_and_the_run_goes_on(tmp_path):
  workdir = str(tmp_path / "w")
  config = default_config(**NAN_RUN)
  result = train.train_and_evaluate(config, workdir, cpu())
  bad = _bad_steps(60, 32)
  assert 0 < len(bad) < 60 and result["step"] == 60
  assert result["skipped_updates"] == len(bad)  # every step whose batch held a NaN, no other
  assert read_scalars(workdir, "train", "skipped_updates")[60] == len(bad)
  trained = _weights_of(workdir, config)
  assert all(np.isfinite(v).all() for v in trained)
  assert all(np.isfinite(v) for v in read_scalars(workdir, "train", "loss").values())
  # The same weights as the run made by hand without those steps' updates (the step still
  # counted: the schedule and the next batches go on).
  reference = default_config(**NAN_RUN, nonfinite="stop")
  x, y = nan_data()["train"]
  strategy = cpu()
  with precision.global_policy("float32"):
    parts = build_parts(reference, strategy)
    for s in range(60):
      if s in bad:
        parts.optimizer.iterations.assign_add(1)
        continue
      batch = in_memory.batch_at(s, tf.constant(x), tf.constant(y), 32, reference.seed)
      strategy.run(tf.function(parts.learner.train_step), args=(batch,))
  assert int(parts.optimizer.iterations.numpy()) == 60
  for got, want in zip(trained, [v.numpy() for v in parts.model.weights]):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _weights_of(workdir, config, step=None):
  """The model weights of a run's checkpoint (the latest, or of `step`), in model order."""
  with precision.global_policy("float32"):
    parts = build_parts(config, cpu())
  path = (tf.train.latest_checkpoint(ckpt_dir(workdir)) if step is None
          else os.path.join(ckpt_dir(workdir), f"ckpt-{step}"))
  tf.train.Checkpoint(**parts.trackables()).restore(path).expect_partial()
  return [v.numpy() for v in parts.model.weights]


def test_stop_is_the_old_behaviour_exit_3(tmp_path):
  config = default_config(**NAN_RUN, nonfinite="stop")
  from trainer.base.errors import NonFiniteLossError  # pylint: disable=g-import-not-at-top
  with pytest.raises(NonFiniteLossError, match="training loss is nan"):
    train.train_and_evaluate(config, str(tmp_path / "w"), cpu())


def _diverging(data_dir, trials):
  return [f"--config.data_dir={data_dir}", "--strategy=cpu", "--config.model=mlp",
          "--config.optimizer.name=sgd", "--config.optimizer.momentum=0",
          "--config.optimizer.weight_decay=0", "--config.schedule.target_lr=40",
          "--config.schedule.warmup_fraction=0", "--config.total_steps=60",
          "--config.steps_per_loop=5", "--config.checkpoint_every=10", "--config.eval_every=0",
          "--config.loss_upper_bound=5", f"--config.recovery_max_trials={trials}",
          "--config.recovery_lr_factor=0.1"]


@pytest.mark.slow
def test_a_diverging_run_rolls_back_with_a_lower_rate_and_finishes(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  r = run_main(*_diverging(data_dir, 3), f"--workdir={workdir}", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  assert iterations(workdir) == 60
  rollbacks = read_scalars(workdir, "train", "rollback")
  assert 1 <= len(rollbacks) <= 3
  assert "rollback at step" in r.stdout + r.stderr
  losses = read_scalars(workdir, "train", "loss")
  assert losses[60] < 5 and all(np.isfinite(v) for v in losses.values())
  lrs = read_scalars(workdir, "train", "learning_rate")
  assert lrs[59] < 40 * 0.1 * 0.01 + 1e-9 or len(rollbacks) < 3
  again = run_main(*_diverging(data_dir, 0), f"--workdir={str(tmp_path / 'v')}",
                   cwd=str(tmp_path))
  assert again.returncode == 3, again.stderr[-3000:]
  assert again.stderr.strip().splitlines()[-1].startswith("error: training loss ")


def _best_run(data_dir, **changes):
  return default_config(**{"data_dir": data_dir, "model": "mlp", "total_steps": 48,
                           "steps_per_loop": 4, "eval_every": 4, "checkpoint_every": 4,
                           "max_checkpoints": 1, "global_batch_size": 32,
                           "schedule.target_lr": 0.05, **changes})


def _checkpoint_steps(workdir):
  return sorted(int(n[len("ckpt-"):-len(".index")]) for n in os.listdir(ckpt_dir(workdir))
                if n.endswith(".index"))


def _best_of_history(workdir):
  accuracy = read_scalars(workdir, "eval", "accuracy")
  best = max(accuracy.values())
  return min(s for s, v in accuracy.items() if v == best), best


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_the_best_and_every_nth_checkpoint_are_kept_beside_the_latest(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(_best_run(data_dir, keep_every=16), workdir, cpu())
  best_step, _ = _best_of_history(workdir)
  kept = _checkpoint_steps(workdir)
  assert kept == sorted({best_step, 16, 32, 48}), (kept, best_step)
  with open(os.path.join(ckpt_dir(workdir), "checkpoint")) as f:
    listed = f.read()
  assert all(f'"ckpt-{s}"' in listed for s in kept)  # the state file lists what is there


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_export_weights_best_exports_the_best_checkpoint(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(_best_run(data_dir, export_weights="best", total_steps=24),
                           workdir, cpu())
  best_step, best = _best_of_history(workdir)
  with open(os.path.join(workdir, "export", "export.json")) as f:
    manifest = json.load(f)
  assert manifest["step"] == best_step and f"at step {best_step}" in manifest["from"]
  from trainer.base.compat import keras  # pylint: disable=g-import-not-at-top
  import trainer.schedules  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  want = _weights_of(workdir, _best_run(data_dir), step=best_step)
  assert len(want) == len(model.weights) and best > 0
  for w, got in zip(want, model.weights):
    np.testing.assert_array_equal(w, got.numpy())
  final = _weights_of(workdir, _best_run(data_dir))
  assert best_step == 24 or any(not np.array_equal(a, b) for a, b in zip(want, final))
  # trainer.evaluate --checkpoint=best reads the same checkpoint and gives its eval.
  r = subprocess.run([sys.executable, "-m", "trainer.evaluate", f"--workdir={workdir}",
                      "--checkpoint=best", "--strategy=cpu"], cwd=str(tmp_path),
                     env=main_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-2000:]
  result = json.loads(r.stdout.strip().splitlines()[-1])
  assert result["step"] == best_step and result["accuracy"] == pytest.approx(best, abs=1e-6)


@pytest.mark.slow
def test_early_stopping_stops_persists_and_a_rerun_trains_nothing(data_dir, tmp_path):
  flags = [f"--config.data_dir={data_dir}", "--strategy=cpu", "--config.model=mlp",
           "--config.total_steps=400", "--config.steps_per_loop=4", "--config.eval_every=8",
           "--config.checkpoint_every=8", "--config.global_batch_size=32",
           "--config.early_stop_patience=2", "--config.early_stop_min_delta=1.0"]
  whole = str(tmp_path / "whole")
  r = run_main(*flags, f"--workdir={whole}", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  assert iterations(whole) == 24  # evals at 8 (the first best), 16, 24: two without a gain
  assert "stopped early at step 24: best accuracy" in r.stdout
  assert os.path.exists(os.path.join(whole, "export", "export.json"))
  again = run_main(*flags, f"--workdir={whole}", cwd=str(tmp_path))
  assert again.returncode == 0 and iterations(whole) == 24
  assert sorted(read_scalars(whole, "train", "loss")) == [4, 8, 12, 16, 20, 24]  # no more
  # Killed after its first eval and resumed, it stops at the same step.
  killed = str(tmp_path / "killed")
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *flags, f"--workdir={killed}"],
                          cwd=str(tmp_path), env=main_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:
    if "eval step 16/" in line:
      break
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  r = run_main(*flags, f"--workdir={killed}", cwd=str(tmp_path))
  assert r.returncode == 0 and iterations(killed) == 24, r.stderr[-2000:]


@pytest.mark.slow
def test_the_best_checkpoint_survives_a_sigkill_and_a_resume(data_dir, tmp_path):
  flags = [f"--config.data_dir={data_dir}", "--strategy=cpu", "--config.model=mlp",
           "--config.total_steps=80", "--config.steps_per_loop=4", "--config.eval_every=4",
           "--config.checkpoint_every=4", "--config.max_checkpoints=1",
           "--config.global_batch_size=32", "--config.schedule.target_lr=0.05"]
  workdir = str(tmp_path / "w")
  rng = np.random.default_rng(int(time.time()))
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *flags, f"--workdir={workdir}"],
                          cwd=str(tmp_path), env=main_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  target = int(rng.integers(2, 15)) * 4
  for line in proc.stdout:
    if f"eval step {target}/" in line:
      break
  time.sleep(float(rng.uniform(0, 0.5)))
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  r = run_main(*flags, f"--workdir={workdir}", cwd=str(tmp_path))
  assert r.returncode == 0, r.stderr[-3000:]
  best_step, _ = _best_of_history(workdir)
  assert best_step in _checkpoint_steps(workdir), (best_step, _checkpoint_steps(workdir))
  assert 80 in _checkpoint_steps(workdir) and len(_checkpoint_steps(workdir)) <= 2
