"""The trainer end to end: global-step schedule, loops, checkpoints, resume, outputs, CLI."""

import glob
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests import tfds_mock
from trainer import checkpoints, data, schedules, train
from trainer import config as config_lib
from trainer.errors import ConfigError, NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def small(data_dir, **fields):
  """A run of a few dozen steps on the offline digits."""
  base = {"data_dir": data_dir, "total_steps": 24, "steps_per_loop": 4, "eval_every": 8,
          "checkpoint_every": 8, "global_batch_size": 32, "schedule.warmup_fraction": 0.0,
          "schedule.warmup_steps": 6, "schedule.hold": 2, "schedule.start_lr": 1e-4}
  base.update(fields)
  return config_lib.override(config_lib.load(os.path.join(REPO, "configs", "default.py")),
                             **base)


def cpu():
  return tf.distribute.OneDeviceStrategy("/cpu:0")


def mirrored(n):
  # ReductionToOneDevice: several collective-based MirroredStrategy objects in one process
  # clash (tensorflow/tensorflow#62790); trainer.strategy uses it on CPU too.
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def scalars(workdir, split, tag):
  """{global step: value} of one scalar in workdir/split's event files."""
  out = {}
  for path in tf.io.gfile.glob(os.path.join(workdir, split, "events.*")):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == tag:
          out[event.step] = float(tf.make_ndarray(value.tensor))
  return out


def saved(workdir, name):
  """A variable from the newest checkpoint, by a substring of its checkpoint key."""
  reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints"))
  keys = sorted(k for k in reader.get_variable_to_shape_map() if name in k)
  return [reader.get_tensor(k) for k in keys]


def iterations(workdir):
  (value,) = saved(workdir, "iterations")
  return int(value)


def model_weights(workdir):
  # A Keras 3 optimizer holds the model's variables, so the checkpoint keeps them under it.
  return saved(workdir, "model/") or saved(workdir, "optimizer/_trainable_variables/")


def test_global_steps_identical_on_one_and_four_replicas(data_dir, tmp_path):
  # Augmented: an example's augmentation is keyed by its stream position, not by the replica.
  # SGD, not AdamW: Adam divides by the gradient's root mean square, which turns the rounding
  # differences of oneDNN's kernels at batch 8 vs 32 in near-zero gradients into full-sized
  # steps (measured: 9e-4 after 24 steps).
  config = small(data_dir, **{"optimizer.name": "sgd"})
  one, four = str(tmp_path / "one"), str(tmp_path / "four")
  train.train_and_evaluate(config, one, cpu())
  train.train_and_evaluate(config, four, mirrored(4))
  lr_one, lr_four = scalars(one, "train", "learning_rate"), scalars(four, "train",
                                                                     "learning_rate")
  assert sorted(lr_one) == [4, 8, 12, 16, 20, 24]
  assert lr_one == lr_four  # warmup counted in global steps, not 4x faster
  plan = config_lib.resolve(config, 1437, 1)
  for step, lr in lr_one.items():
    assert lr == pytest.approx(schedules.lr_warmup_cosine_decay(step, 6, 2, 24, 1e-4, 3e-3),
                               rel=1e-6)
  assert plan.total_steps == iterations(one) == iterations(four) == 24  # not x4, not /4
  # Four replicas on four quarter-batches make the same update as one on the whole batch.
  for a, b in zip(model_weights(one), model_weights(four)):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-5)


def test_steps_per_loop_does_not_freeze_the_learning_rate(data_dir, tmp_path):
  """1 and 8 steps per host call: same weights, so the LR moves inside a loop."""
  runs = {}
  for n in (1, 8):
    workdir = str(tmp_path / f"spl{n}")
    train.train_and_evaluate(
        small(data_dir, steps_per_loop=n, total_steps=16, eval_every=0, checkpoint_every=0),
        workdir, cpu())
    runs[n] = model_weights(workdir)
  for a, b in zip(runs[1], runs[8]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # A loop-constant LR would have been a different run: make sure the test can tell.
  frozen_dir = str(tmp_path / "frozen")
  train.train_and_evaluate(
      small(data_dir, steps_per_loop=8, total_steps=16, eval_every=0, checkpoint_every=0,
            **{"schedule.warmup_steps": 0, "schedule.hold": 16}), frozen_dir, cpu())
  assert not np.allclose(model_weights(frozen_dir)[0], runs[8][0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("model", ["mlp", "small_cnn"])  # whole-loop XLA; XLA draws only
def test_device_resident_input_trains_exactly_like_tf_data(data_dir, tmp_path, model):
  """Device-resident input draws the same batches (augmented) as the tf.data pipeline."""
  runs = {}
  for mode in ("device", "tf.data"):
    workdir = str(tmp_path / mode)
    train.train_and_evaluate(small(data_dir, input_mode=mode, eval_every=0, checkpoint_every=0,
                                   model=model), workdir, cpu())
    runs[mode] = model_weights(workdir)
  for a, b in zip(runs["device"], runs["tf.data"]):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_device_input_mode_refuses_several_replicas(data_dir, tmp_path):
  with pytest.raises(ConfigError, match="^input_mode: 'device' needs one replica"):
    train.train_and_evaluate(small(data_dir, input_mode="device"), str(tmp_path / "w"),
                             mirrored(2))
  assert not (tmp_path / "w").exists()


class _Crash(Exception):
  pass


def test_interrupted_run_resumes_to_the_same_weights(data_dir, tmp_path, monkeypatch):
  config = small(data_dir)
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
  lrs = scalars(broken, "train", "learning_rate")
  assert lrs[20] == pytest.approx(scalars(whole, "train", "learning_rate")[20], rel=1e-6)


def test_finished_run_exits_without_training(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  config = small(data_dir, total_steps=8, **{"schedule.warmup_steps": 2})
  first = train.train_and_evaluate(config, workdir, cpu())
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  again = train.train_and_evaluate(config, workdir, cpu())
  assert again["step"] == first["step"] == 8
  assert again["accuracy"] == pytest.approx(first["accuracy"])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


def test_workdir_outputs(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(small(data_dir), workdir, cpu())
  blob = json.load(open(os.path.join(workdir, "config.json")))
  assert blob["plan"]["total_steps"] == 24 and blob["plan"]["warmup_steps"] == 6
  assert blob["config"]["schedule"]["hold"] == 2
  assert open(os.path.join(workdir, "schedule.png"), "rb").read(4) == b"\x89PNG"
  assert set(scalars(workdir, "train", "loss")) == {4, 8, 12, 16, 20, 24}
  assert all(v > 0 for v in scalars(workdir, "train", "examples_per_sec").values())
  assert set(scalars(workdir, "eval", "accuracy")) == {8, 16, 24}
  ckpts = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  assert [os.path.basename(p) for p in ckpts.all_model_checkpoint_paths] == [
      "ckpt-8", "ckpt-16", "ckpt-24"]


def test_writes_go_through_tf_filesystems_so_gcs_works(data_dir):
  """A ram:// workdir stands in for gs://: no local-only file API may be on the write path."""
  workdir = "ram://trainer_test/w"
  train.train_and_evaluate(small(data_dir, total_steps=8, **{"schedule.warmup_steps": 2}),
                           workdir, cpu())
  assert tf.io.gfile.exists(workdir + "/config.json")
  assert tf.io.gfile.GFile(workdir + "/schedule.png", "rb").read(4) == b"\x89PNG"
  assert set(scalars(workdir, "train", "learning_rate")) == {4, 8}
  assert os.path.basename(tf.train.latest_checkpoint(workdir + "/checkpoints")) == "ckpt-8"
  assert not os.path.exists("ram:")  # nothing leaked onto the local disk


@pytest.mark.parametrize("model", ["small_cnn", "mlp"])
@pytest.mark.parametrize("strategy", ["cpu", "mirrored"])
def test_models_train_under_each_strategy(data_dir, tmp_path, model, strategy):
  s = cpu() if strategy == "cpu" else mirrored(2)
  result = train.train_and_evaluate(
      small(data_dir, model=model, total_steps=4, steps_per_loop=2, eval_every=0,
            checkpoint_every=0, **{"schedule.warmup_steps": 1, "schedule.hold": 0}),
      str(tmp_path / "w"), s)
  assert result["step"] == 4 and np.isfinite(result["loss"])


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_names_end_to_end_on_mock_data(tmp_path, name, shape):
  config = small(str(tmp_path / "tfds"), dataset=name, model="mlp", total_steps=4,
                 steps_per_loop=2, eval_every=0, checkpoint_every=0, global_batch_size=8,
                 **{"schedule.warmup_steps": 1, "schedule.hold": 0})
  with tfds_mock.prepared(name, tmp_path / "tfds", num_examples=40):
    assert data.get_dataset_info(config.dataset, config.data_dir).image_shape == shape
    result = train.train_and_evaluate(config, str(tmp_path / "w"), mirrored(2))
  assert result["step"] == 4
  blob = json.load(open(tmp_path / "w" / "config.json"))
  assert blob["plan"]["per_replica_batch_size"] == 4


def test_nonfinite_loss_stops_without_checkpointing(data_dir, tmp_path):
  config = small(data_dir, total_steps=16, checkpoint_every=4, eval_every=0,
                 **{"optimizer.name": "sgd", "schedule.target_lr": 1e12,
                    "schedule.start_lr": 1e12, "schedule.warmup_steps": 0})
  with pytest.raises(NonFiniteLossError, match="global step 4"):
    train.train_and_evaluate(config, str(tmp_path / "w"), cpu())
  assert not glob.glob(str(tmp_path / "w" / "checkpoints" / "ckpt-*"))


def test_bad_config_touches_nothing(data_dir, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError, match="^global_batch_size: 30 does not divide"):
    train.train_and_evaluate(small(data_dir, global_batch_size=30), str(workdir), mirrored(4))
  assert not workdir.exists()


def _main(*args, cwd, env=None):
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
  return subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("args,message", [
    (["--strategy=gpu"], "error: strategy: unknown 'gpu'"),
    (["--config.model=vgg"], "error: model: unknown 'vgg'; allowed: small_cnn"),
    (["--config.no_such_field=1"], "error: "),
    (["--config.total_steps=abc"], "error: "),
    (["--config.schedule.warmup_steps=5000"], "error: schedule.warmup_fraction: set only one"),
    (["--config.eval_every=7"], "error: eval_every: must be a multiple of steps_per_loop=50"),
    (["--cpu_devices=-1"], "error: cpu_devices"),
    (["stray"], "error: unexpected arguments"),
])
def test_cli_user_errors_exit_2_with_one_line(tmp_path, args, message):
  workdir = tmp_path / "w"
  r = _main(f"--workdir={workdir}", f"--config.data_dir={tmp_path / 'tfds'}", *args,
            cwd=tmp_path)
  assert r.returncode == 2, r.stderr[-2000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith(message), r.stderr[-2000:]
  assert "Traceback" not in r.stderr
  assert not workdir.exists()


def test_sigterm_checkpoints_exits_4_and_the_rerun_resumes(data_dir, tmp_path):
  workdir = tmp_path / "w"
  args = [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
          "--config.total_steps=100000", "--config.steps_per_loop=10", "--config.eval_every=0",
          "--config.checkpoint_every=0", "--config.global_batch_size=16"]
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
  proc = subprocess.Popen([sys.executable, "-m", "trainer.main", *args], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  for line in proc.stdout:  # wait until it is really training
    if "train step 20/100000" in line:
      break
  proc.send_signal(signal.SIGTERM)
  out, _ = proc.communicate(timeout=120)
  assert proc.returncode == 4, out[-2000:]
  step = iterations(str(workdir))
  assert 20 <= step < 100000 and step % 10 == 0  # a whole loop, checkpointed
  assert f"checkpoint written at global step {step}" in out
  # The rerun resumes from there; a shorter run (a deliberate change) lets it finish now.
  r = _main(*args[:-4], "--config.total_steps=" + str(step + 10), "--config.steps_per_loop=10",
            "--config.eval_every=0", "--config.checkpoint_every=0",
            "--config.global_batch_size=16", "--allow_config_change", cwd=tmp_path)
  assert r.returncode == 0, r.stderr[-2000:]
  assert iterations(str(workdir)) == step + 10


@pytest.mark.slow
def test_no_argument_default_run_reaches_its_accuracy_bar(tmp_path):
  """`python -m trainer.main`, nothing else: offline, fresh workdir, >= 95 % eval accuracy."""
  r = _main(cwd=tmp_path, env={"HOME": str(tmp_path), "TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert r.returncode == 0, r.stderr[-3000:]
  (workdir,) = glob.glob(str(tmp_path / "runs" / "*"))
  accuracy = scalars(workdir, "eval", "accuracy")
  assert max(accuracy) == 600 and accuracy[600] >= 0.95
  assert f"results in {os.path.relpath(workdir, tmp_path)}" in r.stdout
  assert "tensorboard --logdir" in r.stdout
