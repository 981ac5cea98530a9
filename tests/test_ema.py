"""trainer.ema: the moving average of the weights, one update per global step.

It equals the NumPy recurrence over the per-step weights (BatchNorm statistics included),
is the same on 1 and 4 replicas, survives a resume bit for bit, and is what the run evaluates
as `ema_*` and exports.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import (build_parts, assert_same_weights, checkpointed_run, ckpt_dir, cpu, mirrored,
                            one_line_error, saved, small_run)
from trainer.distribute import precision
from trainer.step import build
from trainer.run import train
from trainer import config as config_lib
from trainer.base.compat import keras
from trainer.base.errors import ConfigError


def bn_mlp(input_shape, num_outputs):
  """An MLP with BatchNorm: its moving statistics are averaged too (config.model plug-in)."""
  inputs = keras.Input(input_shape)
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(32, activation="relu")(x)
  x = keras.layers.BatchNormalization()(x)
  return keras.Model(inputs, keras.layers.Dense(num_outputs)(x))


def _parts(config, strategy):
  return build_parts(config, strategy, "float32")


def _averaged_values(parts):
  from trainer.step import ema  # pylint: disable=g-import-not-at-top
  return [np.array(v) for v in ema.averaged_variables(parts.model)]


@pytest.mark.parametrize("warmup", [True, False])
def test_the_average_is_the_numpy_recurrence_over_the_per_step_weights(data_dir, warmup):
  config = small_run(data_dir, model="tests.test_ema:bn_mlp", ema_decay=0.9,
                     ema_warmup=warmup)
  with precision.global_policy("float32"):
    parts = _parts(config, cpu())
    trainer = build.make_runner(parts)
    expected = _averaged_values(parts)  # the average starts at the initial weights
    assert len(expected) == 8  # 2 kernels, 2 biases, gamma, beta, BN moving mean, variance
    for t in range(1, 9):
      trainer.train(1)
      d = min(0.9, (1 + t) / (10 + t)) if warmup else 0.9
      expected = [d * e + (1 - d) * w for e, w in zip(expected, _averaged_values(parts))]
    got = [np.array(v) for v in parts.learner.ema.averages]
  for e, g in zip(expected, got):
    np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
  assert not np.allclose(got[0], _averaged_values(parts)[0])  # it is not just the weights


def test_one_and_four_replicas_hold_the_same_average(data_dir):
  averages = {}
  for n, strategy in ((1, cpu()), (4, mirrored(4))):
    config = small_run(data_dir, model="mlp", ema_decay=0.9, global_batch_size=32)
    with precision.global_policy("float32"):
      parts = _parts(config, strategy)
      build.make_runner(parts).train(12)
      averages[n] = [np.array(v.read_value()) for v in parts.learner.ema.averages]
  for a, b in zip(averages[1], averages[4]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_eval_reports_both_and_the_swap_back_is_exact(data_dir):
  config = small_run(data_dir, model="mlp", ema_decay=0.9)
  with precision.global_policy("float32"):
    parts = _parts(config, cpu())
    trainer = build.make_runner(parts)
    trainer.train(8)
    before = [np.array(v) for v in parts.model.weights]
    metrics = trainer.evaluate()
    after = [np.array(v) for v in parts.model.weights]
    with parts.learner.ema.swapped():  # the EMA pass used the averages, not the raw weights
      swapped = [np.array(v) for v in parts.model.trainable_variables]
  assert {"loss", "accuracy", "ema_loss", "ema_accuracy"} <= set(metrics)
  assert metrics["loss"] != metrics["ema_loss"]
  for a, b in zip(before, after):
    assert a.tobytes() == b.tobytes()
  for s, e in zip(swapped, parts.learner.ema.averages):
    np.testing.assert_array_equal(s, np.array(e))


@pytest.mark.slow  # ~17 s: two runs and a crash
def test_a_resumed_run_ends_bit_for_bit_like_an_uninterrupted_one(data_dir, tmp_path):
  """With EMA and accumulation on: stop after step 12's checkpoint, resume, compare."""
  config = checkpointed_run(data_dir, total_steps=24, ema_decay=0.9, grad_accum_steps=2)
  full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
  train.train_and_evaluate(config, full, cpu())
  assert saved(full, "ema/")  # the average is in every checkpoint
  shutil.copytree(full, resumed, ignore=shutil.ignore_patterns("export"))
  for path in tf.io.gfile.glob(os.path.join(ckpt_dir(resumed), "ckpt-*")):
    if int(os.path.basename(path).split(".")[0].split("-")[1]) > 12:
      os.remove(path)
  tf.compat.v1.train.update_checkpoint_state(ckpt_dir(resumed), "ckpt-12")
  train.train_and_evaluate(config, resumed, cpu())
  assert_same_weights(ckpt_dir(full), ckpt_dir(resumed))


def test_the_export_holds_the_average_and_says_so(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  result = train.train_and_evaluate(small_run(data_dir, model="mlp", ema_decay=0.9), workdir,
                                    cpu())
  with open(os.path.join(workdir, "export", "export.json")) as f:
    assert json.load(f)["weights"] == "ema (decay 0.9)"
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"))
  averages = saved(workdir, "ema/")
  exported = sorted((np.array(v) for v in model.trainable_variables), key=lambda a: a.shape)
  for e, a in zip(exported, sorted(averages, key=lambda a: a.shape)):
    np.testing.assert_array_equal(e, a)
  assert "ema_accuracy" in result


def test_turning_the_average_on_for_a_run_without_one_is_refused(data_dir, tmp_path, capsys):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(small_run(data_dir, model="mlp", total_steps=8), workdir, cpu())
  with pytest.raises(ConfigError) as e:
    train.train_and_evaluate(small_run(data_dir, model="mlp", total_steps=8, ema_decay=0.9),
                             workdir, cpu(), allow_config_change=True)
  one_line_error(e, "ema_decay", "no weight average")


@pytest.mark.parametrize("value", [1.0, -0.1])
def test_a_bad_decay_is_one_line(data_dir, value):
  with pytest.raises(ConfigError) as e:
    config_lib.check_fields(small_run(data_dir, ema_decay=value))
  one_line_error(e, "ema_decay", "[0, 1)")
