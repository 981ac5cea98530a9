"""Fault tolerance: SIGKILL anywhere, damaged checkpoints, NaN loss, full disks, resumes.

The kill harness (tests/killer.py) kills real training processes at seeded random points
and checks that the resumed run ends bit for bit where an uninterrupted one does.
TRAINER_STRESS_KILLS=100 makes it kill 100 times; TRAINER_KILL_SEED picks other points.
"""

import errno
import glob
import json
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.killer import tree
from trainer import checkpoints, data, resume, task, train
from trainer import config as config_lib
from trainer.errors import CheckpointError, ConfigError, NonFiniteLossError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One run, as config overrides and as the equivalent command line.
FIELDS = {"model": "mlp", "total_steps": 24, "steps_per_loop": 4, "eval_every": 8,
          "checkpoint_every": 4, "max_checkpoints": 6, "global_batch_size": 32,
          "schedule.warmup_fraction": 0.0, "schedule.warmup_steps": 6, "schedule.hold": 2,
          "schedule.start_lr": 1e-4}


def config_for(data_dir, /, **changes):
  fields = {**FIELDS, "data_dir": data_dir, **changes}
  return config_lib.override(config_lib.load(os.path.join(REPO, "configs", "default.py")),
                             **fields)


def cli_args(data_dir, /, **changes):
  fields = {**FIELDS, "data_dir": data_dir, **changes}
  return ["--strategy=cpu"] + [f"--config.{k}={v}" for k, v in fields.items()]


def cpu():
  return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("tfds"))
  data.get_dataset_info("digits", path)  # prepares the digits once
  return path


@pytest.fixture(scope="module")
def runs(data_dir, tmp_path_factory):
  """`full`: the whole run; `partial`: the same run as if it had died after its step-16 save."""
  base = tmp_path_factory.mktemp("runs")
  full, partial = str(base / "full"), str(base / "partial")
  train.train_and_evaluate(config_for(data_dir), full, cpu())
  # The run is deterministic (the kill test shows it), so its first 16 steps are the partial.
  shutil.copytree(full, partial)
  for step in (20, 24):
    for path in glob.glob(os.path.join(ckpt_dir(partial), f"ckpt-{step}.*")):
      os.remove(path)
  tf.compat.v1.train.update_checkpoint_state(
      ckpt_dir(partial), "ckpt-16", [f"ckpt-{s}" for s in (4, 8, 12, 16)])
  return {"full": full, "partial": partial}


@pytest.fixture
def partial(runs, tmp_path):
  """A fresh copy of the run stopped at step 16 (checkpoints 4, 8, 12, 16)."""
  workdir = str(tmp_path / "w")
  shutil.copytree(runs["partial"], workdir)
  return workdir


def ckpt_dir(workdir):
  return os.path.join(workdir, "checkpoints")


def tensors(path):
  """{key: array} of every variable in a checkpoint (a prefix or a directory's latest)."""
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.endswith("VARIABLE_VALUE") and "save_counter" not in k}


def assert_same_weights(a, b):
  a, b = tensors(a), tensors(b)
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a[key].tobytes() == b[key].tobytes(), key  # bit for bit, -0.0 and NaNs included


def logged(workdir, split):
  """{(tag, step): [values]} over every event file, including ones a SIGKILL truncated."""
  out = {}
  for path in sorted(glob.glob(os.path.join(workdir, split, "events.*"))):
    try:
      for record in tf.data.TFRecordDataset(path):
        event = tf.compat.v1.Event.FromString(record.numpy())
        for value in event.summary.value:
          out.setdefault((value.tag, event.step), []).append(
              float(tf.make_ndarray(value.tensor)))
    except tf.errors.DataLossError:  # the record being written when the process died
      pass
  return out


def restore_only(workdir):
  """The checkpoint `restore_latest` picks (reads and verifies; restores nothing)."""
  return checkpoints.Checkpointer(workdir, cpu(), 3).restore_latest()


# Kill anywhere, resume exactly.


@pytest.mark.slow
@pytest.mark.parametrize("strategy,ci_kills", [
    (["--strategy=cpu"], 10),  # one replica: the device-resident input, one XLA program
    (["--strategy=mirrored", "--cpu_devices=2"], 4),  # two replicas: the tf.data iterator
], ids=["cpu", "mirrored"])
def test_sigkill_anywhere_then_resume_ends_bit_for_bit_like_an_uninterrupted_run(
    data_dir, tmp_path, strategy, ci_kills):
  kills = int(os.environ.get("TRAINER_STRESS_KILLS", ci_kills))
  seed = int(os.environ.get("TRAINER_KILL_SEED", "0"))
  workdir, reference = str(tmp_path / "killed"), str(tmp_path / "reference")
  args = cli_args(data_dir, total_steps=60, steps_per_loop=5, eval_every=10,
                  checkpoint_every=10, max_checkpoints=2, **{"schedule.warmup_steps": 6})
  args = [a for a in args if not a.startswith("--strategy=")] + strategy
  # Restarts load the XLA programs the first runs compiled (the same programs, so the same
  # bits) instead of compiling them again: most of a restart's cost on 2 cores.
  xla_flags = f"--tf_xla_persistent_cache_directory={tmp_path / 'xla-cache'}"
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3",
             TF_XLA_FLAGS=f"{os.environ.get('TF_XLA_FLAGS', '')} {xla_flags}".strip())
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
      if key[0] != "examples_per_sec":  # replayed steps log the very same values
        assert values == want[key] * len(values), (split, key)
  lrs = [sorted((step, v[0]) for (tag, step), v in logged(w, "train").items()
                if tag == "learning_rate") for w in (reference, workdir)]
  assert lrs[0] == lrs[1] and [step for step, _ in lrs[0]] == list(range(5, 61, 5))


# A damaged latest checkpoint.


def _truncate_data(prefix):
  (path,) = glob.glob(prefix + ".data-*")
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    f.truncate(size // 2)


def _flip_data_byte(prefix):
  (path,) = glob.glob(prefix + ".data-*")
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 3)
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))


def _truncate_index(prefix):
  with open(prefix + ".index", "r+b") as f:
    f.truncate(10)


def _delete_data(prefix):
  for path in glob.glob(prefix + ".data-*"):
    os.remove(path)


def _delete_all(prefix):
  for path in glob.glob(prefix + ".*"):
    os.remove(path)


@pytest.mark.parametrize("damage", [_truncate_data, _flip_data_byte, _truncate_index,
                                    _delete_data, _delete_all])
def test_damaged_latest_checkpoint_is_reported_and_the_previous_one_used(
    partial, damage, caplog):
  latest = os.path.join(ckpt_dir(partial), "ckpt-16")
  damage(latest)
  with caplog.at_level(logging.WARNING):
    assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-12")
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert any(latest in w and "unreadable" in w for w in warnings), warnings


def test_run_resumes_from_the_previous_checkpoint_to_the_same_weights(partial, runs,
                                                                     data_dir):
  _flip_data_byte(os.path.join(ckpt_dir(partial), "ckpt-16"))
  result = train.train_and_evaluate(config_for(data_dir), partial, cpu())
  assert result["step"] == 24
  assert_same_weights(ckpt_dir(runs["full"]), ckpt_dir(partial))


def test_no_readable_checkpoint_is_one_clear_error(partial):
  for prefix in glob.glob(os.path.join(ckpt_dir(partial), "ckpt-*.index")):
    _truncate_index(prefix[:-len(".index")])
  with pytest.raises(CheckpointError) as info:
    restore_only(partial)
  message = str(info.value)
  assert message.startswith("workdir: no readable checkpoint in " + ckpt_dir(partial))
  assert "ckpt-16" in message and "ckpt-8" in message and "\n" not in message


def test_a_save_interrupted_before_its_commit_is_ignored(partial, caplog):
  directory = ckpt_dir(partial)
  for suffix in (".index", ".data-00000-of-00001"):  # a complete but uncommitted ckpt-20
    shutil.copy(os.path.join(directory, "ckpt-16" + suffix),
                os.path.join(directory, "ckpt-20" + suffix))
  with open(os.path.join(directory, "ckpt-24.index"), "wb") as f:  # a half-written one
    f.write(b"\0" * 7)
  with caplog.at_level(logging.WARNING):
    assert restore_only(partial) == os.path.join(directory, "ckpt-16")
  assert "ckpt-24" in caplog.text and "interrupted" in caplog.text


@pytest.mark.parametrize("state", ["garbage {{{", None])
def test_a_lost_state_file_still_finds_the_newest_readable_checkpoint(partial, state):
  path = os.path.join(ckpt_dir(partial), "checkpoint")
  os.remove(path)
  if state:
    with open(path, "w") as f:
      f.write(state)
  _flip_data_byte(os.path.join(ckpt_dir(partial), "ckpt-16"))
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-12")


# NaN loss and full disks never replace the last good checkpoint.


def test_nonfinite_loss_after_good_checkpoints_keeps_them(partial, data_dir, monkeypatch):
  before = tree(ckpt_dir(partial))
  real = task.ClassificationTask._per_example_loss
  monkeypatch.setattr(task.ClassificationTask, "_per_example_loss",
                      lambda self, labels, logits: real(self, labels, logits) * np.nan)
  with pytest.raises(NonFiniteLossError, match="global step 20"):
    train.train_and_evaluate(config_for(data_dir), partial, cpu())
  assert tree(ckpt_dir(partial)) == before  # not a byte changed, nothing added
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")
  (iterations,) = [v for k, v in tensors(ckpt_dir(partial)).items() if "iterations" in k]
  assert int(iterations) == 16


def _fail_midway(error):
  """A `tf.train.Checkpoint._write` that writes half the data file, then fails."""
  real = tf.train.Checkpoint._write  # pylint: disable=protected-access

  def write(self, file_prefix, options=None):
    del options  # no commit callback: the failure comes before the state file is updated
    real(self, file_prefix)
    (path,) = glob.glob(file_prefix + ".data-*")
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
    raise error

  return write


@pytest.mark.parametrize("error", [
    tf.errors.ResourceExhaustedError(None, None, "No space left on device"),
    OSError(errno.ENOSPC, "No space left on device"),
])
def test_disk_full_during_a_save_stops_with_one_line_and_keeps_the_previous_one(
    partial, data_dir, monkeypatch, error):
  monkeypatch.setattr(tf.train.Checkpoint, "_write", _fail_midway(error))
  with pytest.raises(CheckpointError) as info:
    train.train_and_evaluate(config_for(data_dir), partial, cpu())
  message = str(info.value)
  assert message.startswith(
      f"workdir: cannot write checkpoint {os.path.join(ckpt_dir(partial), 'ckpt-20')} (")
  assert "No space left on device" in message and "\n" not in message
  assert f"the latest checkpoint is still {os.path.join(ckpt_dir(partial), 'ckpt-16')}" in (
      message)
  assert not glob.glob(os.path.join(ckpt_dir(partial), "ckpt-20*"))  # partial files removed
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")


@pytest.mark.slow
def test_a_real_write_error_exits_5_with_one_line(partial, data_dir):
  """RLIMIT_FSIZE makes the kernel refuse the checkpoint's data file (EFBIG), as a full
  disk would; the smaller files (config.json, schedule.png, events) still fit."""
  data_file = glob.glob(os.path.join(ckpt_dir(partial), "ckpt-16.data-*"))[0]
  others = [p for p in glob.glob(os.path.join(partial, "**"), recursive=True)
            if os.path.isfile(p) and "/checkpoints/" not in p]
  small, big = max(map(os.path.getsize, others)), os.path.getsize(data_file)
  assert small < big
  limit = (small + big) // 2

  def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  before = tree(ckpt_dir(partial))
  r = subprocess.run([sys.executable, "-m", "trainer.main", f"--workdir={partial}",
                      *cli_args(data_dir)], cwd=REPO, capture_output=True, text=True,
                     env=dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3"),
                     preexec_fn=limit_file_size, timeout=600)
  assert r.returncode == 5, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: workdir: cannot write checkpoint "), last
  assert "File too large" in last and "Traceback" not in r.stderr
  assert tree(ckpt_dir(partial)) == before
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")


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
    _check(runs["full"], config_for(data_dir, **changes))
  message = str(info.value)
  assert message.startswith(f"{field}: cannot resume {runs['full']} under a different config")
  assert "--allow_config_change" in message and "\n" not in message
  assert tree(runs["full"]) == before


def test_every_differing_field_is_listed(runs, data_dir):
  with pytest.raises(ConfigError) as info:
    _check(runs["full"], config_for(data_dir, seed=3, model="small_cnn", total_steps=30))
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
  _check(runs["full"], config_for(data_dir, **changes))


def test_a_safe_change_resumes_to_the_same_weights(partial, runs, data_dir):
  config = config_for(data_dir, steps_per_loop=2, checkpoint_every=2, eval_every=0,
                      max_checkpoints=5)
  assert train.train_and_evaluate(config, partial, cpu())["step"] == 24
  assert_same_weights(ckpt_dir(runs["full"]), ckpt_dir(partial))


def test_allow_config_change_resumes_and_records_the_new_config(partial, data_dir, caplog):
  config = config_for(data_dir, total_steps=28)
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
    _check(partial, config_for(data_dir))
  _check(partial, config_for(data_dir), allow=True)


def test_unwritable_workdir_is_refused_before_anything_is_written(data_dir, tmp_path):
  # /proc refuses new entries even to root, for whom os.access says yes to everything.
  with pytest.raises(ConfigError, match=r"^workdir: '/proc/no-such-run/w' is not writable"):
    train.train_and_evaluate(config_for(data_dir), "/proc/no-such-run/w", cpu())
  if os.geteuid() != 0:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="^workdir: "):
      train.train_and_evaluate(config_for(data_dir), str(locked / "w"), cpu())
    assert not (locked / "w").exists()
