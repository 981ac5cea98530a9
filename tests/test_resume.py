"""Resuming: an interrupted run resumes to the same weights, and trainer.resume decides which
config changes a resume may make (refused ones are one line naming the fields)."""

import json
import logging
import os

import numpy as np
import pytest

from tests.conftest import (assert_same_weights, checkpointed_run, ckpt_dir, cpu, iterations,
                            model_weights, small_run)
from tests.killer import tree
from trainer import checkpoints, resume, train
from trainer import config as config_lib
from trainer.errors import ConfigError
from trainer.summaries import read_scalars


class _Crash(Exception):
  pass


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
  resume.check(workdir, config, config_lib.resolve(config, 1437, 1), allow)


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
    ({"total_steps": 20}, "total_steps"),
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
  assert message.startswith(f"{field}: cannot resume {runs['full']} under a different config")
  assert "--allow_config_change" in message and "\n" not in message
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
