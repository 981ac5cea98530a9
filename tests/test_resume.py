"""Resuming: an interrupted run resumes to the same weights, and trainer.resume decides which
config changes a resume may make (refused ones are one line naming the fields)."""

import json
import logging
import os
import signal

import hypothesis
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import strategies as st

from tests.conftest import (spec_of, assert_same_weights, checkpointed_flags, checkpointed_run, ckpt_dir,
                            cpu, iterations, main_env, model_weights, small_run)
from tests.killer import run_matrix, tree
from trainer.run import checkpoints
from trainer.base import testpoints
from trainer.rundir import resume
from trainer.run import train
from trainer.run.controller import Cadence, Controller
from trainer.base.errors import ConfigError, NonFiniteLossError, Preempted
from trainer.run.summaries import read_scalars


class _Crash(Exception):
  pass


@pytest.mark.slow  # end to end (10-30 s): the slow tier keeps the fast one under 10 minutes
def test_interrupted_run_resumes_to_the_same_weights(data_dir, tmp_path, monkeypatch):
  config = small_run(data_dir)
  whole, broken = str(tmp_path / "whole"), str(tmp_path / "broken")
  train.train_and_evaluate(config, whole, cpu())

  real_save = checkpoints.Checkpointer.save

  def save_then_crash(self, step):
    real_save(self, step)
    if step == 16:
      raise _Crash()

  monkeypatch.setattr(checkpoints.Checkpointer, "save", save_then_crash)
  with pytest.raises(_Crash):
    train.train_and_evaluate(config, broken, cpu())
  assert iterations(broken) == 16
  monkeypatch.setattr(checkpoints.Checkpointer, "save", real_save)
  result = train.train_and_evaluate(config, broken, cpu())  # resumes at 16
  assert result["step"] == 24 and iterations(broken) == 24
  for a, b in zip(model_weights(whole), model_weights(broken)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The resumed part logged the schedule where it left off, with no second warmup.
  lrs = read_scalars(broken, "train", "learning_rate")
  assert lrs[20] == pytest.approx(read_scalars(whole, "train", "learning_rate")[20], rel=1e-6)


# Resuming under another config.


def _check(workdir, config, allow=False):
  return resume.check_resume(workdir, spec_of(config, cpu()), allow)


@pytest.mark.parametrize("changes,field", [
    ({"model": "small_cnn"}, "model"),
    ({"dataset": "synthetic"}, "dataset"),
    ({"seed": 1}, "seed"),
    ({"global_batch_size": 64}, "global_batch_size"),
    ({"optimizer.name": "sgd"}, "optimizer.name"),
    ({"optimizer.weight_decay": 0.0}, "optimizer.weight_decay"),
    ({"augment": False}, "augment"),
    ({"mixed_precision": "float32"}, "mixed_precision"),
    ({"total_steps": 48}, "total_steps"),  # a longer cosine: every later LR changes
    ({"schedule.warmup_steps": 2}, "schedule.warmup_steps"),
    ({"schedule.hold": 0}, "schedule.hold"),
    ({"schedule.target_lr": 1e-3}, "schedule.target_lr"),
    ({"schedule.final_lr": 1e-5}, "schedule.final_lr"),
    ({"schedule.base_batch_size": 16}, "schedule.target_lr"),  # the peak LR doubles
])
def test_resume_refuses_a_config_that_changes_the_run(runs, data_dir, changes, field):
  before = tree(runs["full"])
  with pytest.raises(ConfigError) as info:
    _check(runs["full"], checkpointed_run(data_dir, **changes))
  message = str(info.value)
  if field in resume.SCHEDULE_FIELDS.values():  # the finished run's past rates would change
    assert message.startswith(f"{field}: cannot resume {runs['full']} at step 24 with this "
                              f"schedule (")
    assert "changes the learning rate of steps already trained, first at step" in message
  else:
    assert message.startswith(f"{field}: cannot resume {runs['full']} under a different "
                              f"config")
  assert "--allow_config_change" in message and "\n" not in message
  assert tree(runs["full"]) == before


@pytest.mark.parametrize("allow", [False, True])
def test_a_run_cannot_be_made_shorter_than_it_trained(runs, data_dir, allow):
  """A checkpoint past total_steps was treated as a finished run (eval and export at 24 of
  20): refused, --allow_config_change or not."""
  before = tree(runs["full"])
  with pytest.raises(ConfigError) as info:
    _check(runs["full"], checkpointed_run(data_dir, total_steps=20), allow)
  assert str(info.value).startswith(f"total_steps: {runs['full']} is already at global step "
                                    f"24, past total_steps 20;")
  assert "give total_steps >= 24" in str(info.value) and "\n" not in str(info.value)
  assert tree(runs["full"]) == before


def test_every_differing_field_is_listed(runs, data_dir):
  with pytest.raises(ConfigError) as info:
    _check(runs["full"], checkpointed_run(data_dir, seed=3, model="small_cnn", total_steps=30))
  message = str(info.value)
  for part in ("seed 0 -> 3", "model 'mlp' -> 'small_cnn'", "total_steps 24 -> 30"):
    assert part in message


@pytest.mark.parametrize("changes", [
    {"eval_every": 0}, {"checkpoint_every": 8}, {"max_checkpoints": 10},
    {"steps_per_loop": 2}, {"data_dir": "/elsewhere"}, {"jit_compile": False},
    {"input_mode": "tf.data"},
    {"schedule.warmup_steps": 0, "schedule.warmup_fraction": 0.25},  # 6 of 24: the same plan
])
def test_resume_allows_changes_that_keep_the_run(runs, data_dir, changes):
  _check(runs["full"], checkpointed_run(data_dir, **changes))


def test_a_safe_change_resumes_to_the_same_weights(partial, runs, data_dir):
  config = checkpointed_run(data_dir, steps_per_loop=2, checkpoint_every=2, eval_every=0,
                            max_checkpoints=5)
  assert train.train_and_evaluate(config, partial, cpu())["step"] == 24
  assert_same_weights(ckpt_dir(runs["full"]), ckpt_dir(partial))


def test_allow_config_change_resumes_and_records_the_new_config(partial, data_dir, caplog):
  config = checkpointed_run(data_dir, total_steps=28)
  with pytest.raises(ConfigError, match="^total_steps: "):
    train.train_and_evaluate(config, partial, cpu())
  with caplog.at_level(logging.WARNING):
    result = train.train_and_evaluate(config, partial, cpu(), allow_config_change=True)
  assert result["step"] == 28
  assert "total_steps 24 -> 28" in caplog.text
  with open(os.path.join(partial, "config.json")) as f:
    assert json.load(f)["plan"]["total_steps"] == 28
  _check(partial, config)  # the new config is now the run's


def test_unreadable_config_json_is_refused(partial, data_dir):
  with open(os.path.join(partial, "config.json"), "w") as f:
    f.write('{"config": ')
  with pytest.raises(ConfigError, match=r"^workdir: .*config.json is unreadable"):
    _check(partial, checkpointed_run(data_dir))
  _check(partial, checkpointed_run(data_dir), allow=True)


# Case 1 of issue 13: changing steps_per_loop on resume keeps every later checkpoint.


def _committed(workdir):
  state = tf.train.get_checkpoint_state(ckpt_dir(workdir))
  return sorted(int(p.rsplit("-", 1)[1]) for p in state.all_model_checkpoint_paths)


@pytest.mark.slow
def test_a_resume_with_other_loops_keeps_the_cadence_the_issues_reproduction(data_dir,
                                                                            tmp_path):
  """--config.total_steps=400 --config.eval_every=40 --config.checkpoint_every=40
  --config.steps_per_loop=10, SIGTERM after step 20 (checkpoint 30); rerun with
  --config.steps_per_loop=20 and killed at step 250: it must restore 240, not 30."""
  workdir = str(tmp_path / "w")
  base = [f"--workdir={workdir}", *checkpointed_flags(
      data_dir, total_steps=400, eval_every=40, checkpoint_every=40, max_checkpoints=100,
      **{"schedule.warmup_steps": 20})]
  env = main_env(TMPDIR=str(tmp_path))
  # SIGTERM just before the third loop (20 -> 30): it finishes it, checkpoints 30, exits 4.
  (first,) = run_matrix([{"argv": [*base, "--config.steps_per_loop=10"],
                          "hook": {"event": "loop", "at": 3, "position": "before",
                                   "signal": "SIGTERM"}}], str(tmp_path), env)
  assert first["exit"] == 4, first["stderr"][-3000:]
  assert "checkpoint written at global step 30" in first["stderr"]
  assert _committed(workdir) == [30]
  # Loops of 20 from 30: 30->40, 40->60, ..., 240->260 is the 12th: SIGKILL inside it (250).
  (second,) = run_matrix([{"argv": [*base, "--config.steps_per_loop=20"],
                           "hook": {"event": "loop", "at": 12, "position": "during",
                                    "delay": 0.0}}], str(tmp_path), env)
  assert second["exit"] == -signal.SIGKILL, second["stderr"][-3000:]
  assert _committed(workdir) == [30, 40, 80, 120, 160, 200, 240]
  assert iterations(workdir) == 240  # 10 steps lost at step 250, not 220
  assert set(read_scalars(workdir, "eval", "accuracy")) == {40, 80, 120, 160, 200, 240}


# The same at the level of the checkpoints the Controller writes, for any loops, interval
# and resume step (fakes for the trainer, the checkpoints and the summaries).


class _Trainer:

  def __init__(self, step):
    self.step = step

  def global_step(self):
    return self.step

  def train(self, n):
    self.step += n
    return {"loss": 0.5}

  def evaluate(self):
    return {"loss": 0.5}


class _Saves(list):

  def save(self, step):
    self.append(step)


class _Summaries:

  def write(self, *args, **kwargs):
    return True

  def write_series(self, *args):
    pass


class _Watcher:
  """SIGTERM "arrives" once the trainer reaches `at`."""

  def __init__(self, trainer, at):
    self.trainer, self.at = trainer, at

  def requested(self):
    return "SIGTERM" if self.at is not None and self.trainer.step >= self.at else ""


def _run(total, steps_per_loop, eval_every, checkpoint_every, start, preempt_at=None):
  """The checkpoints one process writes from `start` (SIGTERM at `preempt_at`)."""
  trainer, saves = _Trainer(start), _Saves()
  controller = Controller(Cadence(total, steps_per_loop, eval_every, checkpoint_every),
                          trainer, saves, _Summaries(), _Watcher(trainer, preempt_at),
                          learning_rate=lambda steps: 0.0 * steps, global_batch_size=1)
  try:
    controller.run()
  except Preempted:
    pass
  return list(saves)


@hypothesis.settings(max_examples=400, deadline=None)
@hypothesis.given(total=st.integers(1, 400), every=st.integers(1, 60),
                  eval_every=st.integers(0, 60),
                  loops=st.lists(st.integers(1, 50), min_size=1, max_size=4), data=st.data())
def test_checkpoints_never_lag_by_more_than_one_interval_over_any_resumes(
    total, every, eval_every, loops, data):
  """A run preempted at random steps and resumed each time with other steps_per_loop: every
  multiple of checkpoint_every is checkpointed, so a kill anywhere loses < one interval."""
  start, saves = 0, []
  for i, steps_per_loop in enumerate(loops):
    last = i == len(loops) - 1
    preempt_at = None if last or start >= total else data.draw(
        st.integers(start + 1, total), label="preempt_at")
    written = _run(total, steps_per_loop, eval_every, every, start, preempt_at)
    assert all(s > start for s in written)  # each process saves only steps it trained
    saves += written
    start = written[-1] if written else start
  assert set(range(every, total + 1, every)) <= set(saves)  # every multiple, whatever the loops
  assert saves == sorted(saves) and saves[-1:] == [total]
  gaps = np.diff([0] + saves)
  assert (gaps <= every).all(), (saves, every)  # a kill at any step loses less than an interval


# Case 3: config.json is the run's identity.


def test_checkpoints_without_config_json_are_refused(partial, data_dir):
  os.remove(os.path.join(partial, "config.json"))
  before = tree(partial)
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(checkpointed_run(data_dir, seed=5), partial, cpu())
  message = str(info.value)
  assert message.startswith(f"workdir: {partial} has checkpoints but no config.json, so what "
                            f"they are checkpoints of cannot be checked")
  assert "--allow_config_change" in message and "\n" not in message
  assert tree(partial) == before  # nothing recorded for a later resume to trust


def test_allow_config_change_resumes_checkpoints_without_config_json(partial, runs, data_dir):
  os.remove(os.path.join(partial, "config.json"))
  result = train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu(),
                                    allow_config_change=True)
  assert result["step"] == 24
  assert_same_weights(ckpt_dir(runs["full"]), ckpt_dir(partial))
  _check(partial, checkpointed_run(data_dir))  # recorded now: the next resume is checked


# Case 4: --allow_config_change refuses what it cannot honour, and records a change only once
# a loop trained under it.


@pytest.mark.parametrize("changes,field", [({"model": "small_cnn"}, "model"),
                                           ({"optimizer.name": "sgd"}, "optimizer.name")])
def test_allow_config_change_refuses_another_model_or_optimizer_in_one_line(
    partial, data_dir, changes, field):
  before = tree(partial)
  with pytest.raises(ConfigError) as info:
    train.train_and_evaluate(checkpointed_run(data_dir, **changes), partial, cpu(),
                             allow_config_change=True)
  message = str(info.value)
  assert message.startswith(f"{field}: --allow_config_change cannot resume {partial} with "
                            f"{field} ")
  assert "new workdir" in message and "\n" not in message
  assert tree(partial) == before


def test_a_checkpoint_of_another_model_without_config_json_is_one_line(partial, data_dir):
  os.remove(os.path.join(partial, "config.json"))
  before = tree(partial)
  with pytest.raises(ConfigError, match=r"^model: the checkpoint .*ckpt-16 does not fit the "
                                        r"model and optimizer this config builds"):
    train.train_and_evaluate(checkpointed_run(data_dir, model="small_cnn"), partial, cpu(),
                             allow_config_change=True)
  assert tree(partial) == before


def test_a_changed_config_that_fails_at_once_leaves_config_json_as_it_was(partial, data_dir):
  path = os.path.join(partial, "config.json")
  original = open(path).read()
  nan = checkpointed_run(data_dir, nonfinite="stop",
                         **{"schedule.target_lr": 1e30, "schedule.start_lr": 1e30,
                            "schedule.final_lr": 1e30})
  with pytest.raises(NonFiniteLossError):
    train.train_and_evaluate(nan, partial, cpu(), allow_config_change=True)
  assert open(path).read() == original
  # So the original command still resumes the run.
  assert train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())["step"] == 24


def test_a_changed_config_is_recorded_only_after_its_first_loop(partial, data_dir):
  path = os.path.join(partial, "config.json")
  seen = []
  testpoints.install("loop", lambda name, position: seen.append(
      (position, json.load(open(path))["plan"]["total_steps"])))
  try:
    train.train_and_evaluate(checkpointed_run(data_dir, total_steps=28), partial, cpu(),
                             allow_config_change=True)
  finally:
    testpoints.clear()
  assert seen[:2] == [("before", 24), ("after", 24)]  # the first loop ran under the old record
  assert seen[2:] and all(total == 28 for _, total in seen[2:])  # then the new config's
