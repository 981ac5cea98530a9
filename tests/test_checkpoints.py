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

from tests.conftest import (REPO, assert_same_weights, checkpointed_flags, checkpointed_run,
                            ckpt_dir, cpu, restore_only, run_main)
from tests.killer import tree
from trainer import train
from trainer.errors import CheckpointError

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
  others = [p for p in glob.glob(os.path.join(partial, "**"), recursive=True)
            if os.path.isfile(p) and "/checkpoints/" not in p]
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
