"""train_and_evaluate end to end: the workdir it leaves, models, strategies and datasets it
trains, what it refuses before writing anything, and the command line.

The loops, the task, the controller, checkpoints, resume and preemption have their own files
(tests/test_<module>.py); the kill harness is tests/test_kill.py and the invalid-command-line
matrix tests/test_bad_input.py.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from tests import tfds_mock
from tests.conftest import REPO, cpu, main_env, mirrored, run_main, small_run
from trainer import data
from trainer.run import train
from trainer.base.errors import ConfigError
from trainer.run.summaries import read_scalars


def test_workdir_outputs(data_dir, tmp_path):
  workdir = str(tmp_path / "w")
  train.train_and_evaluate(small_run(data_dir), workdir, cpu())
  blob = json.load(open(os.path.join(workdir, "config.json")))
  assert blob["plan"]["total_steps"] == 24 and blob["plan"]["warmup_steps"] == 6
  assert blob["config"]["schedule"]["hold"] == 2
  assert open(os.path.join(workdir, "schedule.png"), "rb").read(4) == b"\x89PNG"
  assert set(read_scalars(workdir, "train", "loss")) == {4, 8, 12, 16, 20, 24}
  assert all(v > 0 for v in read_scalars(workdir, "train", "examples_per_sec").values())
  assert set(read_scalars(workdir, "eval", "accuracy")) == {8, 16, 24}
  ckpts = tf.train.get_checkpoint_state(os.path.join(workdir, "checkpoints"))
  assert [os.path.basename(p) for p in ckpts.all_model_checkpoint_paths] == [
      "ckpt-8", "ckpt-16", "ckpt-24"]


def test_writes_go_through_tf_filesystems_so_gcs_works(data_dir):
  """A ram:// workdir stands in for gs://: no local-only file API may be on the write path."""
  workdir = "ram://trainer_test/w"
  train.train_and_evaluate(small_run(data_dir, total_steps=8, **{"schedule.warmup_steps": 2}),
                           workdir, cpu())
  assert tf.io.gfile.exists(workdir + "/config.json")
  assert tf.io.gfile.GFile(workdir + "/schedule.png", "rb").read(4) == b"\x89PNG"
  assert set(read_scalars(workdir, "train", "learning_rate")) == set(range(8))
  assert os.path.basename(tf.train.latest_checkpoint(workdir + "/checkpoints")) == "ckpt-8"
  assert not os.path.exists("ram:")  # nothing leaked onto the local disk


@pytest.mark.parametrize("model", ["small_cnn", "mlp"])
@pytest.mark.parametrize("strategy", ["cpu", "mirrored"])
def test_models_train_under_each_strategy(data_dir, tmp_path, model, strategy):
  s = cpu() if strategy == "cpu" else mirrored(2)
  result = train.train_and_evaluate(
      small_run(data_dir, model=model, total_steps=4, steps_per_loop=2, eval_every=0,
                checkpoint_every=0, **{"schedule.warmup_steps": 1, "schedule.hold": 0}),
      str(tmp_path / "w"), s)
  assert result["step"] == 4 and np.isfinite(result["loss"])


@pytest.mark.parametrize("name,shape", [("mnist", (28, 28, 1)), ("cifar10", (32, 32, 3))])
def test_tfds_names_end_to_end_on_mock_data(tmp_path, name, shape):
  config = small_run(str(tmp_path / "tfds"), dataset=name, model="mlp", total_steps=4,
                     steps_per_loop=2, eval_every=0, checkpoint_every=0, global_batch_size=8,
                     **{"schedule.warmup_steps": 1, "schedule.hold": 0})
  with tfds_mock.prepared(name, tmp_path / "tfds", num_examples=40):
    assert data.get_dataset_info(config.dataset, config.data_dir).image_shape == shape
    result = train.train_and_evaluate(config, str(tmp_path / "w"), mirrored(2))
  assert result["step"] == 4
  blob = json.load(open(tmp_path / "w" / "config.json"))
  assert blob["plan"]["per_replica_batch_size"] == 4


def test_bad_config_touches_nothing(data_dir, tmp_path):
  workdir = tmp_path / "w"
  with pytest.raises(ConfigError, match="^global_batch_size: 30 does not divide"):
    train.train_and_evaluate(small_run(data_dir, global_batch_size=30), str(workdir),
                             mirrored(4))
  assert not workdir.exists()


@pytest.mark.slow
def test_no_argument_default_run_reaches_its_accuracy_bar(tmp_path):
  """`python -m trainer.main`, nothing else: offline, fresh workdir, >= 95 % eval accuracy."""
  r = run_main(cwd=tmp_path, env={"HOME": str(tmp_path), "TFDS_DATA_DIR": str(tmp_path / "tfds")})
  assert r.returncode == 0, r.stderr[-3000:]
  (workdir,) = glob.glob(str(tmp_path / "runs" / "*"))
  accuracy = read_scalars(workdir, "eval", "accuracy")
  assert max(accuracy) == 600 and accuracy[600] >= 0.95
  assert f"results in {os.path.relpath(workdir, tmp_path)}" in r.stdout
  assert "tensorboard --logdir" in r.stdout


# What a Python caller (a script, a notebook) sees: the command line's progress and summary.
_API_SCRIPT = textwrap.dedent("""
    import sys, warnings
    from trainer import config, train_and_evaluate
    filters = list(warnings.filters)
    c = config.override(config.load({default!r}), **{fields!r})
    train_and_evaluate(c, sys.argv[1] + "/a")
    print("filters kept:", warnings.filters == filters, flush=True)
    print("quiet from here", flush=True)
    train_and_evaluate(c, sys.argv[1] + "/b", progress=False)
    """)


@pytest.mark.slow  # ~24 s: a fresh interpreter
def test_the_python_entry_point_shows_progress_and_the_summary(data_dir, tmp_path):
  fields = {"total_steps": 8, "steps_per_loop": 4, "data_dir": data_dir, "model": "mlp"}
  script = _API_SCRIPT.format(default=os.path.join(REPO, "configs", "default.py"),
                              fields=fields)
  r = subprocess.run([sys.executable, "-c", script, str(tmp_path)], cwd=str(tmp_path),
                     env=main_env(), capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  shown, quiet = r.stdout.split("quiet from here\n")
  lines = shown.splitlines()
  assert lines[0].startswith("OneDeviceStrategy: 1 replica on CPU:0; digits: 1437 train")
  assert lines[1].startswith("input device; XLA compiles")
  assert lines[2].startswith("train step 4/8, loss ")  # the first loop, then the last
  assert lines[3].startswith("train step 8/8, loss ")
  assert lines[4].startswith("eval step 8/8: loss ")
  assert lines[5].startswith("done: step 8 in ") and "examples/s after the first loop" in lines[5]
  assert lines[6].startswith("eval: loss ") and lines[6].endswith(" at step 8")
  assert lines[7].startswith(f"results in {tmp_path}/a: config.json, curves.png")
  assert lines[8] == "filters kept: True"  # the caller's warning filters are theirs again
  assert quiet == ""  # progress=False: nothing
  # The tf.data options warning TF gives for every distributed dataset is hidden.
  assert "UserWarning" not in r.stderr and "tf.data options" not in r.stderr, r.stderr[-3000:]
