"""trainer.checkpoints: a damaged or uncommitted latest checkpoint falls back to the previous
one, and a failed save (a full disk) keeps the previous one the latest."""

import errno
import glob
import logging
import os
import resource
import shutil
import signal

import pytest
import tensorflow as tf

from tests.conftest import (build_parts, REPO, assert_same_weights, checkpointed_flags, checkpointed_run,
                            ckpt_dir, cpu, restore_only, run_main)
from tests.killer import tree
from trainer.distribute import precision
from trainer.run import train
from trainer.base.errors import CheckpointError, ConfigError

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
  result = train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())
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


# Full disks never replace the last good checkpoint.


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
    train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())
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
  # Not curves.png (it can outgrow the MLP's checkpoint): it is drawn after an eval, and the
  # resumed run's first eval (step 24) comes after the checkpoint at 20 that must fail.
  others = [p for p in glob.glob(os.path.join(partial, "**"), recursive=True)
            if os.path.isfile(p) and "/checkpoints/" not in p
            and os.path.basename(p) != "curves.png"]
  small, big = max(map(os.path.getsize, others)), os.path.getsize(data_file)
  assert small < big
  limit = (small + big) // 2

  def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a signal
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

  before = tree(ckpt_dir(partial))
  r = run_main(f"--workdir={partial}", *checkpointed_flags(data_dir), cwd=REPO,
               preexec_fn=limit_file_size, timeout=600)
  assert r.returncode == 5, r.stderr[-3000:]
  last = r.stderr.strip().splitlines()[-1]
  assert last.startswith("error: workdir: cannot write checkpoint "), last
  assert "File too large" in last and "Traceback" not in r.stderr
  assert tree(ckpt_dir(partial)) == before
  assert restore_only(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")


# Storage messages that tell the truth, and housekeeping at start.


def _state_write_fails(directory):
  """A CheckpointManager._record_state that dies of a full disk half-way through writing
  the state file, leaving TF's temporary `checkpoint.tmp<hex>` behind as a real one does."""

  def record_state(self):
    del self
    with open(os.path.join(directory, "checkpoint.tmp0f1e2d3c4b5a69788796a5b4c3d2e1f0"),
              "w") as f:
      f.write('model_checkpoint_path: "ckpt-')
    raise tf.errors.ResourceExhaustedError(None, None, "No space left on device")

  return record_state


def test_a_full_disk_at_the_commit_says_which_checkpoint_is_latest_and_is_cleaned_up(
    partial, runs, data_dir, monkeypatch):
  directory = ckpt_dir(partial)
  monkeypatch.setattr(tf.train.CheckpointManager, "_record_state", _state_write_fails(directory))
  with pytest.raises(CheckpointError) as info:
    train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())
  message = str(info.value)
  assert f"the latest checkpoint is still {os.path.join(directory, 'ckpt-16')}: free space" in (
      message)
  assert not glob.glob(os.path.join(directory, "ckpt-20*"))  # the uncommitted files: gone
  assert glob.glob(os.path.join(directory, "checkpoint.tmp*"))  # what TF leaves behind ...
  monkeypatch.undo()
  assert train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())["step"] == 24
  assert not glob.glob(os.path.join(directory, "checkpoint.tmp*"))  # ... is gone at start
  assert_same_weights(ckpt_dir(runs["full"]), directory)


def test_a_directory_in_place_of_the_state_file_mid_run_is_reported_truthfully(
    partial, data_dir):
  from trainer.base import testpoints  # pylint: disable=g-import-not-at-top
  state = os.path.join(ckpt_dir(partial), "checkpoint")

  def replace_state_file(name, position):  # after the restore, before the first save
    if position == "before" and not os.path.isdir(state):
      os.remove(state)
      os.mkdir(state)

  testpoints.install("loop", replace_state_file)
  try:
    with pytest.raises(CheckpointError) as info:
      train.train_and_evaluate(checkpointed_run(data_dir), partial, cpu())
  finally:
    testpoints.clear()
  message = str(info.value)
  # Not "still none": ckpt-16 was restored a moment ago and is intact.
  assert f"the latest checkpoint is still {os.path.join(ckpt_dir(partial), 'ckpt-16')}" in (
      message)
  assert "free space" not in message and "\n" not in message


def test_stale_temporaries_of_interrupted_writes_are_removed_at_start(partial):
  directory = ckpt_dir(partial)
  leftovers = [os.path.join(directory, "checkpoint.tmp5a6b7c8d"),
               os.path.join(directory, "ckpt-20_temp", "part-00000-of-00001.data-00000-of-00001"),
               os.path.join(partial, "config.json.tmp"), os.path.join(partial, "curves.png.tmp")]
  for path in leftovers:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("half")
  assert restore_only(partial) == os.path.join(directory, "ckpt-16")
  for path in leftovers:
    assert not os.path.exists(path), path
  assert not os.path.exists(os.path.join(directory, "ckpt-20_temp"))


@pytest.mark.parametrize("state", ["garbage {{{", None, 'model_checkpoint_path: "ckpt-16"\n'])
def test_max_checkpoints_still_applies_after_a_lost_or_garbage_state_file(partial, data_dir,
                                                                          state):
  path = os.path.join(ckpt_dir(partial), "checkpoint")
  os.remove(path)
  if state is not None:  # garbage; missing; or one that lists only the latest
    with open(path, "w") as f:
      f.write(state)
  config = checkpointed_run(data_dir, max_checkpoints=2)
  assert train.train_and_evaluate(config, partial, cpu())["step"] == 24
  names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ckpt_dir(partial),
                                                                     "ckpt-*.index")))
  assert names == ["ckpt-20.index", "ckpt-24.index"]  # 4, 8, 12 and 16 did not escape


def test_unreadable_checkpoints_without_a_state_file_stop_the_run(partial):
  os.remove(os.path.join(ckpt_dir(partial), "checkpoint"))
  for prefix in glob.glob(os.path.join(ckpt_dir(partial), "ckpt-*.index")):
    _truncate_index(prefix[:-len(".index")])
  with pytest.raises(CheckpointError, match="^workdir: no readable checkpoint in "):
    restore_only(partial)  # not a silent fresh start that overwrites them


def test_a_checkpoint_of_another_model_is_one_line_naming_the_model(partial):
  from trainer.run import checkpoints  # pylint: disable=g-import-not-at-top
  from tests.conftest import default_config  # pylint: disable=g-import-not-at-top
  config = default_config(model="small_cnn", dataset="synthetic",
                          data_dir=os.path.dirname(partial))
  with precision.global_policy("float32"):
    parts = build_parts(config, cpu(), "float32")
  ckpt = checkpoints.Checkpointer(partial, cpu(), 3, model=parts.model,
                                  optimizer=parts.optimizer)
  with pytest.raises(ConfigError) as info:
    ckpt.restore_latest()
  message = str(info.value)
  assert message.startswith(f"model: the checkpoint {os.path.join(ckpt_dir(partial), 'ckpt-16')}"
                            f" does not fit the model and optimizer this config builds (")
  assert "\n" not in message


# A reader beside a live run (trainer.evaluate): it changes nothing, and a checkpoint the run
# deletes under it is read again, never a traceback.


def _leftovers(workdir):
  """What interrupted writes (or a run writing right now) leave, and no state file."""
  directory = ckpt_dir(workdir)
  for path in (os.path.join(directory, "checkpoint.tmp5a6b7c8d"),
               os.path.join(directory, "ckpt-20_temp", "part-00000-of-00001.index"),
               os.path.join(workdir, "config.json.tmp"), os.path.join(workdir, "export.tmp-1")):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      f.write("half")
  os.remove(os.path.join(directory, "checkpoint"))


def _read(workdir, step=None):
  """The path `checkpoint_reader.restore_for_reading` restores (nothing into nothing: each
  attempt's fresh objects counted in BUILT)."""
  from trainer.run import checkpoint_reader  # pylint: disable=g-import-not-at-top

  def build():
    BUILT.append(object())
    return None, {}

  return checkpoint_reader.restore_for_reading(workdir, build, step)[1]


BUILT = []


def test_a_reader_creates_deletes_and_rewrites_nothing(partial, tmp_path):
  _leftovers(partial)  # what a Checkpointer would tidy, and a state file it would write
  before = tree(partial)
  assert _read(partial) == os.path.join(ckpt_dir(partial), "ckpt-16")
  assert _read(partial, 8) == os.path.join(ckpt_dir(partial), "ckpt-8")
  assert tree(partial) == before
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(ConfigError, match="^workdir: no checkpoint in .* yet; train first$"):
    _read(str(empty))
  assert os.listdir(empty) == []  # not even a checkpoints/ directory


def _rotate_after_the_check(monkeypatch, workdir, deleted_step):
  """Between the reader's check of ckpt-`deleted_step` and its restore, the run saves ckpt-20
  and, with max_checkpoints=1, deletes everything older (data files first, as TF does)."""
  from trainer.run import checkpoint_reader  # pylint: disable=g-import-not-at-top
  real = checkpoint_reader.unreadable
  directory = ckpt_dir(workdir)

  def check_then_rotate(path):
    problem = real(path)
    if path.endswith(f"ckpt-{deleted_step}") and not os.path.exists(
        os.path.join(directory, "ckpt-20.index")):
      for suffix in (".data-00000-of-00001", ".index"):
        shutil.copy(os.path.join(directory, "ckpt-16" + suffix),
                    os.path.join(directory, "ckpt-20" + suffix))
      tf.compat.v1.train.update_checkpoint_state(directory, "ckpt-20", ["ckpt-20"])
      for step in (4, 8, 12, 16):
        for name in sorted(glob.glob(os.path.join(directory, f"ckpt-{step}.*"))):
          os.remove(name)
    return problem

  monkeypatch.setattr(checkpoint_reader, "unreadable", check_then_rotate)


def test_the_latest_deleted_between_check_and_restore_is_read_again(partial, monkeypatch,
                                                                   caplog):
  _rotate_after_the_check(monkeypatch, partial, 16)
  BUILT.clear()
  with caplog.at_level(logging.INFO, logger="absl"):
    path = _read(partial)
  assert path == os.path.join(ckpt_dir(partial), "ckpt-20")
  assert len(BUILT) == 2  # the second attempt restored into objects of its own
  assert not [r for r in caplog.records  # nothing was wrong (TF's own notes aside)
              if r.levelno >= logging.WARNING and r.name == "absl"]
  assert "changed while being read" in caplog.text  # it was read again


def test_a_checkpoint_asked_for_and_deleted_while_read_is_one_line(partial, monkeypatch):
  _rotate_after_the_check(monkeypatch, partial, 12)
  with pytest.raises(ConfigError) as info:
    _read(partial, 12)
  message = str(info.value)
  assert message.startswith(f"checkpoint: {os.path.join(ckpt_dir(partial), 'ckpt-12')} was "
                            f"deleted while it was being read"), message
  assert "\n" not in message


def test_a_reader_reports_unreadable_checkpoints_at_once(partial):
  """Nothing changes meanwhile: no retries, the one error."""
  for prefix in glob.glob(os.path.join(ckpt_dir(partial), "ckpt-*.index")):
    _truncate_index(prefix[:-len(".index")])
  BUILT.clear()
  with pytest.raises(CheckpointError, match="^workdir: no readable checkpoint in "):
    _read(partial)
  assert len(BUILT) == 1  # not retried
  with pytest.raises(CheckpointError, match="ckpt-8 is unreadable"):
    _read(partial, 8)
