"""Per-variable learning rates (trainer.step.optimizer): `optimizer.lr_mults` and
`optimizer.layer_decay`.

A variable's learning rate is schedule(step) * its multiplier, for SGD and AdamW alike: one
step with 0.5 on a layer moves it half as far as with 1 and leaves the other layers as they
were; 0 freezes it bit for bit, with no optimizer slots. The same holds with micro-batches, the
weight average, mixed precision, tf.data input and two mirrored replicas (each as one replica
trains it), through `python -m trainer.main` and in-process.
"""

import json
import os

import numpy as np
import pytest

from tests.conftest import (REPO, build_parts, cpu, main_env, mirrored, one_line_error,
                            run_main, small_run)
from tests.killer import run_matrix
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError
from trainer.config import fields
from trainer.distribute import precision
from trainer.step import build
from trainer.step import optimizer as optimizer_lib

pytestmark = pytest.mark.skipif(LEGACY_KERAS, reason="Keras 3 only (refused under tf_keras)")


@pytest.mark.parametrize("text,rules", [
    ("", []),
    ("conv1/.*=0", [("conv1/.*", 0.0)]),
    ("logits/.*=1, .*=0.1", [("logits/.*", 1.0), (".*", 0.1)]),
    ("conv{1,2}/kernel=0.5,x=2", [("conv{1,2}/kernel", 0.5), ("x", 2.0)]),  # ',' in a pattern
    ("a=b=3", [("a=b", 3.0)]),  # the last '=' is the multiplier's
])
def test_lr_mults_parse_in_order(text, rules):
  assert fields.parse_lr_mults(text) == rules


@pytest.mark.parametrize("text,message", [
    ("conv1/.*=-1", "optimizer.lr_mults: the multiplier of 'conv1/.*' must be a finite "
                    "number >= 0 (0 freezes), got '-1'"),
    ("conv1/.*=nan", "optimizer.lr_mults: the multiplier of 'conv1/.*' must be a finite"),
    ("conv1/.*=fast", "optimizer.lr_mults: the multiplier of 'conv1/.*' must be a finite"),
    ("conv1", "optimizer.lr_mults: 'conv1' has no '=MULT'"),
    ("=2", "optimizer.lr_mults: '=2' has no pattern"),
    ("conv[=1", "optimizer.lr_mults: 'conv[' is not a regular expression"),
])
def test_bad_lr_mults_are_one_line(text, message):
  with pytest.raises(ConfigError) as e:
    fields.parse_lr_mults(text)
  one_line_error(e, message)


def _rates(model_name, **optimizer_fields):
  config = small_run("", model=model_name, **{f"optimizer.{k}": v
                                              for k, v in optimizer_fields.items()})
  from trainer import models  # pylint: disable=g-import-not-at-top
  model = models.build(model_name, (8, 8, 1), 10)
  return optimizer_lib.Rates.of(model, config.optimizer)


def test_first_match_wins_and_layers_count_down_from_the_output():
  rates = _rates("small_cnn", lr_mults="logits/.*=1,conv1/.*=0,.*=0.5", layer_decay=0.5)
  assert rates.paths == ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias",
                         "conv3/kernel", "conv3/bias", "logits/kernel", "logits/bias")
  assert rates.depths == (3, 3, 2, 2, 1, 1, 0, 0)
  assert rates.multipliers == (0, 0, 0.5 * 0.25, 0.5 * 0.25, 0.5 * 0.5, 0.5 * 0.5, 1, 1)
  assert rates.frozen == ["conv1/kernel", "conv1/bias"]
  assert _rates("small_cnn").multipliers == (1.0,) * 8 and not _rates("small_cnn").given


def seq_mlp(input_shape, num_outputs):
  """A Sequential model whose layers Keras names (config.model plug-in)."""
  return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),
                           keras.layers.Dense(16), keras.layers.Dense(num_outputs)])


class SubMLP(keras.Model):
  def __init__(self, num_outputs):
    super().__init__()
    self.first = keras.layers.Dense(16)
    self.second = keras.layers.Dense(num_outputs)

  def call(self, x):
    return self.second(self.first(keras.ops.reshape(x, (-1, 64))))


def sub_mlp(input_shape, num_outputs):
  del input_shape
  return SubMLP(num_outputs)


@pytest.mark.parametrize("name,paths", [
    ("tests.test_lr_mults:seq_mlp", ("sequential/dense/kernel", "sequential/dense/bias",
                                      "sequential/dense_1/kernel", "sequential/dense_1/bias")),
    ("tests.test_lr_mults:sub_mlp", ("sub_mlp/dense/kernel", "sub_mlp/dense/bias",
                                      "sub_mlp/dense_1/kernel", "sub_mlp/dense_1/bias")),
])
def test_sequential_and_subclassed_models_have_the_paths_of_a_fresh_process(name, paths):
  for _ in range(2):  # built twice in this process: the same names both times
    rates = _rates(name, layer_decay=0.5)
    assert rates.paths == paths and rates.depths == (1, 1, 0, 0)
    assert rates.multipliers == (0.5, 0.5, 1, 1)


def test_a_pattern_that_matches_nothing_is_one_line_naming_it():
  with pytest.raises(ConfigError) as e:
    _rates("small_cnn", lr_mults="logits/.*=1,head/.*=0")
  one_line_error(e, "optimizer.lr_mults: 'head/.*' matches no trainable variable path",
                 "conv1/kernel, conv1/bias", "--print_lr_mults")
  with pytest.raises(ConfigError) as e:
    _rates("small_cnn", lr_mults=".*=0")
  one_line_error(e, "optimizer.lr_mults: freezes every trainable variable")


# One global step from the same initial weights, in-process: SGD without momentum or weight
# decay moves a variable by lr * m * gradient.
SGD = {"optimizer.name": "sgd", "optimizer.momentum": 0.0, "optimizer.weight_decay": 0.0}
VARIANTS = {
    "one_device_xla": {},
    "tf_data": {"input_mode": "tf.data"},
    "accum_ema": {"grad_accum_steps": 2, "ema_decay": 0.9},
    "mixed_bfloat16": {"policy": "mixed_bfloat16"},
    "mixed_float16": {"policy": "mixed_float16"},  # the update inside a LossScaleOptimizer
    "mirrored_device": {"replicas": 2},  # the local update of trainer/step/local_update.py
    "mirrored_tf_data": {"replicas": 2, "input_mode": "tf.data"},  # Keras' merge_call update
}


def _one_step(info, lr_mults="", replicas=1, policy=None, **changes):
  config = small_run("", **{"model": "mlp", "global_batch_size": 32, **SGD,
                            "optimizer.lr_mults": lr_mults, **changes})
  strategy = cpu() if replicas == 1 else mirrored(replicas)
  with precision.global_policy(policy or "float32"):
    parts = build_parts(config, strategy, policy=policy, info=info)
    before = {v.path: np.array(v.numpy()) for v in parts.model.weights}
    build.make_runner(parts).train(1)
    after = {v.path: np.array(v.numpy()) for v in parts.model.weights}
  return before, after, parts


FAST = ("one_device_xla", "mirrored_device")


@pytest.mark.parametrize("variant", [v if v in FAST else pytest.param(v, marks=pytest.mark.slow)
                                     for v in sorted(VARIANTS)])
def test_half_a_multiplier_moves_a_variable_half_as_far_and_zero_freezes_it(digits, variant):
  changes = VARIANTS[variant]
  w0, one, _ = _one_step(digits, **changes)
  _, half, parts = _one_step(digits, "hidden/kernel=0.5,hidden/bias=0", **changes)
  assert [v.path for v in parts.model.trainable_variables] == [
      "hidden/kernel", "logits/kernel", "logits/bias"]  # the frozen bias has no gradient...
  slots = [v.path for v in parts.optimizer.variables if "hidden_bias" in v.path]
  assert slots == []  # ...and no optimizer slot
  assert half["hidden/bias"].tobytes() == w0["hidden/bias"].tobytes()  # frozen, bit for bit
  moved = one["hidden/kernel"] - w0["hidden/kernel"]
  assert np.abs(moved).max() > 0
  # Half the step, up to the rounding of the weights it is added to.
  np.testing.assert_array_less(np.abs(half["hidden/kernel"] - w0["hidden/kernel"] - moved / 2),
                               2 * np.spacing(np.abs(w0["hidden/kernel"])) + 1e-12)
  for path in ("logits/kernel", "logits/bias"):  # the others exactly as without multipliers
    assert half[path].tobytes() == one[path].tobytes(), path


@pytest.mark.slow
def test_mirrored_replicas_train_the_multipliers_as_one_replica_does(digits):
  rules = {"optimizer.lr_mults": "hidden/kernel=0.3,hidden/bias=0", "ema_decay": 0.9,
           "optimizer.name": "adamw", "optimizer.weight_decay": 0.05}
  results = []
  for replicas in (1, 2):
    config = small_run("", **{"model": "mlp", "global_batch_size": 32, **rules})
    strategy = cpu() if replicas == 1 else mirrored(replicas)
    with precision.global_policy("float32"):
      parts = build_parts(config, strategy, info=digits)
      build.make_runner(parts).train(5)
      results.append([np.array(v.numpy()) for v in parts.model.weights]
                     + [np.array(v.numpy()) for v in parts.optimizer.variables])
  for a, b in zip(*results):
    np.testing.assert_allclose(b, a, rtol=2e-5, atol=1e-6)


# Through `python -m trainer.main`: one step of SGD (momentum 0) and of AdamW.
ONE_STEP = {"model": "mlp", "total_steps": 1, "steps_per_loop": 1, "eval_every": 0,
            "checkpoint_every": 0, "global_batch_size": 32, "schedule.warmup_fraction": 0.0}


@pytest.fixture(scope="module")
def one_step_runs(data_dir, tmp_path_factory):
  """{(optimizer, lr_mults): workdir} after one global step each, through trainer.main."""
  base = tmp_path_factory.mktemp("one_step")
  runs, cases = {}, []
  for name, extra in (("sgd", SGD), ("adamw", {"optimizer.name": "adamw"})):
    for mults in ("", "hidden/.*=0.5", "hidden/.*=0"):
      workdir = str(base / f"{name}-{len(cases)}")
      runs[(name, mults)] = workdir
      flags = {**ONE_STEP, **extra, "data_dir": data_dir, "optimizer.lr_mults": mults}
      cases.append({"argv": [f"--workdir={workdir}", "--strategy=cpu",
                             *[f"--config.{k}={v}" for k, v in flags.items()]], "env": {}})
  for case, result in zip(cases, run_matrix(cases, str(base), main_env())):
    assert result["exit"] == 0, (case["argv"], result["stderr"][-3000:])
  return runs


def _final(workdir):
  """{path: array} of the model's weights at the end of the run (its export's model.keras)."""
  model = keras.models.load_model(os.path.join(workdir, "export", "model.keras"), compile=False)
  return {v.path: np.array(v.numpy()) for v in model.weights}


@pytest.mark.slow  # ~30 s of runs through main; the in-process tests cover each path
@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_through_main_a_half_multiplier_moves_half_as_far(one_step_runs, optimizer):
  one, half, frozen = (_final(one_step_runs[(optimizer, m)])
                       for m in ("", "hidden/.*=0.5", "hidden/.*=0"))
  for path in ("hidden/kernel", "hidden/bias"):
    start = frozen[path]  # the initial weights: frozen, never moved
    moved, moved_half = one[path] - start, half[path] - start
    assert np.abs(moved).max() > 0
    if optimizer == "sgd":  # exactly half, up to rounding the sum into the weights
      np.testing.assert_array_less(np.abs(moved_half - moved / 2),
                                   2 * np.spacing(np.abs(start)) + 1e-12)
    else:  # Adam's first step is lr * m / (sqrt(v) + eps): half, within float tolerance
      np.testing.assert_allclose(moved_half, moved / 2, rtol=1e-3, atol=1e-8)
  for path in ("logits/kernel", "logits/bias"):
    assert one[path].tobytes() == half[path].tobytes() == frozen[path].tobytes(), path
  with open(os.path.join(one_step_runs[(optimizer, "hidden/.*=0")], "config.json")) as f:
    assert json.load(f)["config"]["optimizer"]["lr_mults"] == "hidden/.*=0"


def test_print_lr_mults_shows_each_variable_and_writes_nothing(data_dir, tmp_path):
  r = run_main("--strategy=cpu", f"--workdir={tmp_path / 'w'}", f"--config.data_dir={data_dir}",
               "--config.optimizer.lr_mults=logits/.*=1,conv1/.*=0",
               "--config.optimizer.layer_decay=0.5", "--print_lr_mults", cwd=REPO)
  assert r.returncode == 0, r.stderr[-3000:]
  lines = r.stdout.splitlines()
  assert lines[1].split() == ["variable", "shape", "layer", "multiplier"]
  rows = {line.split()[0]: line for line in lines[2:]}
  assert list(rows) == ["conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias",
                        "conv3/kernel", "conv3/bias", "logits/kernel", "logits/bias"]
  assert rows["conv1/kernel"].endswith("3  0 (frozen)")
  assert rows["conv2/kernel"].split()[-2:] == ["2", "0.25"]
  assert rows["logits/bias"].split()[-2:] == ["0", "1"]
  assert not (tmp_path / "w").exists()


def test_tf_keras_refuses_multipliers_in_one_line(data_dir, tmp_path):
  r = run_main("--strategy=cpu", f"--workdir={tmp_path / 'w'}", f"--config.data_dir={data_dir}",
               "--config.optimizer.lr_mults=logits/.*=2", cwd=REPO,
               env={"TF_USE_LEGACY_KERAS": "1"})
  assert r.returncode == 2, r.stderr[-3000:]
  assert r.stderr.strip().splitlines()[-1].startswith(
      "error: optimizer.lr_mults: per-variable learning rates need Keras 3")
  assert not (tmp_path / "w").exists()
