"""trainer.workdir: the probe that refuses an unusable workdir before anything is written, and
atomic writes."""

import os

import pytest
import tensorflow as tf

from tests.conftest import checkpointed_run, cpu
from trainer import hooks, train
from trainer import workdir as workdir_lib
from trainer.errors import ConfigError


def test_a_file_as_workdir_is_refused(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a directory")
  with pytest.raises(ConfigError, match=r"^workdir: '.*run' is a file; give a directory$"):
    workdir_lib.check(str(path))
  with pytest.raises(ConfigError, match=r"^workdir: '.*run/w' cannot be created: '.*run' is a "
                                        r"file"):
    workdir_lib.check(str(path / "w"))
  assert path.read_text() == "not a directory"


def test_an_unwritable_parent_is_refused(tmp_path):
  # /proc refuses new entries even to root, for whom os.access says yes to everything.
  with pytest.raises(ConfigError, match=r"^workdir: '/proc/no-such-run/w' is not writable"):
    workdir_lib.check("/proc/no-such-run/w")
  if os.geteuid() != 0:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match=r"^workdir: '.*locked/w/x' is not writable \(no "
                                          r"write access to '.*locked'\)"):
      workdir_lib.check(str(locked / "w" / "x"))


@pytest.mark.parametrize("existing", [False, True])
def test_a_writable_workdir_passes_and_is_left_as_it_was(tmp_path, existing):
  workdir = tmp_path / "runs" / "a" / "w"  # a missing directory under a writable one
  if existing:
    workdir.mkdir(parents=True)
  workdir_lib.check(str(workdir))
  assert workdir.exists() == existing  # check() creates nothing ...
  assert [p.name for p in tmp_path.rglob("*")
          if p.name.startswith(".trainer-write-probe")] == []  # ... and leaves no probe


def test_remote_workdirs_are_left_to_the_first_write():
  workdir_lib.check("gs://no-such-bucket-for-trainer-tests/run")  # no network, no error


@pytest.mark.parametrize("content", ["text {}\n", b"\x89PNG\r\n\x1a\n\0bytes"])
def test_write_atomically_replaces_the_content_and_leaves_no_tmp(tmp_path, content):
  path = str(tmp_path / "config.json")
  workdir_lib.write_atomically(path, content)
  workdir_lib.write_atomically(path, content * 2)  # replaces, does not append
  with open(path, "rb") as f:
    assert f.read() == (content * 2 if isinstance(content, bytes) else
                        (content * 2).encode())
  assert sorted(os.listdir(tmp_path)) == ["config.json"]  # no config.json.tmp left


def test_write_atomically_through_tf_filesystems():
  path = "ram://trainer_test_workdir/config.json"
  tf.io.gfile.makedirs("ram://trainer_test_workdir")
  workdir_lib.write_atomically(path, "one")
  workdir_lib.write_atomically(path, "two")
  assert tf.io.gfile.GFile(path).read() == "two"
  assert not tf.io.gfile.exists(path + ".tmp")


def test_a_reader_never_sees_half_a_file(tmp_path):
  """Inside the `write` hook point the old content is still whole; after it, the new one."""
  path = str(tmp_path / "config.json")
  workdir_lib.write_atomically(path, "old")
  seen = []
  hooks.install("write", lambda name, position: seen.append((position, open(path).read())))
  try:
    workdir_lib.write_atomically(path, "new")
  finally:
    hooks.clear()
  assert seen == [("before", "old"), ("after", "new")]


def test_unwritable_workdir_is_refused_before_anything_is_written(data_dir, tmp_path):
  # /proc refuses new entries even to root, for whom os.access says yes to everything.
  with pytest.raises(ConfigError, match=r"^workdir: '/proc/no-such-run/w' is not writable"):
    train.train_and_evaluate(checkpointed_run(data_dir), "/proc/no-such-run/w", cpu())
  if os.geteuid() != 0:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match="^workdir: "):
      train.train_and_evaluate(checkpointed_run(data_dir), str(locked / "w"), cpu())
    assert not (locked / "w").exists()
