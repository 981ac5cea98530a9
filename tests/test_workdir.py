"""trainer.workdir: the probe that refuses an unusable workdir before anything is written,
the lock that keeps one run per workdir, and atomic writes."""

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import tensorflow as tf

from tests.conftest import REPO, checkpointed_run, cpu, main_env, run_main
from tests.killer import tree
from trainer.base import testpoints
from trainer import main
from trainer.run import train
from trainer.rundir import lease as lease_lib
from trainer.rundir import lock as lock_lib
from trainer.rundir import files as workdir_lib
from trainer.base.errors import CheckpointError, ConfigError


def test_a_file_as_workdir_is_refused(tmp_path):
  path = tmp_path / "run"
  path.write_text("not a directory")
  with pytest.raises(ConfigError, match=r"^workdir: '.*run' is a file; give a directory$"):
    workdir_lib.check_writable(str(path))
  with pytest.raises(ConfigError, match=r"^workdir: '.*run/w' cannot be created: '.*run' is a "
                                        r"file"):
    workdir_lib.check_writable(str(path / "w"))
  assert path.read_text() == "not a directory"


def test_an_unwritable_parent_is_refused(tmp_path):
  # /proc refuses new entries even to root, for whom os.access says yes to everything.
  with pytest.raises(ConfigError, match=r"^workdir: '/proc/no-such-run/w' is not writable"):
    workdir_lib.check_writable("/proc/no-such-run/w")
  if os.geteuid() != 0:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    with pytest.raises(ConfigError, match=r"^workdir: '.*locked/w/x' is not writable \(no "
                                          r"write access to '.*locked'\)"):
      workdir_lib.check_writable(str(locked / "w" / "x"))


@pytest.mark.parametrize("existing", [False, True])
def test_a_writable_workdir_passes_and_is_left_as_it_was(tmp_path, existing):
  workdir = tmp_path / "runs" / "a" / "w"  # a missing directory under a writable one
  if existing:
    workdir.mkdir(parents=True)
  workdir_lib.check_writable(str(workdir))
  assert workdir.exists() == existing  # check() creates nothing ...
  assert [p.name for p in tmp_path.rglob("*")
          if p.name.startswith(".trainer-write-probe")] == []  # ... and leaves no probe


@pytest.mark.parametrize("names", [
    ["curves.png", "export/model.keras"],  # issue 21, item 4: both were replaced silently
    ["notes.txt"], [".DS_Store", ".lock"], ["train/events.out.tfevents.1.host"],
    [f"f{i}" for i in range(7)],
])
def test_a_directory_that_holds_no_run_is_refused_as_it_is(tmp_path, names):
  workdir = tmp_path / "mine"
  for name in names:
    (workdir / name).parent.mkdir(parents=True, exist_ok=True)
    (workdir / name).write_text("mine")
  before = tree(str(workdir))
  with pytest.raises(ConfigError) as info:
    workdir_lib.check_writable(str(workdir))
  message = str(info.value)
  shown = sorted({n.split("/")[0] for n in names} - {".lock"})
  assert message.startswith(f"workdir: '{workdir}' is not empty and holds no run (no "
                            f"config.json, no checkpoints/): {', '.join(shown[:5])}"), message
  assert message.endswith("give an empty or new directory") and "\n" not in message
  assert ("(7 entries)" in message) == (len(names) == 7)
  assert tree(str(workdir)) == before


@pytest.mark.parametrize("names", [
    [], [".lock"], [".lock", "config.json.tmp"], [".trainer-write-probe-abc123"],
    ["config.json"], ["checkpoints/"], ["config.json", "schedule.png", "train/", "notes.txt"],
])
def test_a_new_or_empty_directory_or_a_run_or_an_interrupted_start_passes(tmp_path, names):
  workdir = tmp_path / "w"
  workdir.mkdir()
  for name in names:
    if name.endswith("/"):
      (workdir / name).mkdir()
    else:
      (workdir / name).write_text("x")
  workdir_lib.check_writable(str(workdir))


def test_a_remote_directory_that_holds_no_run_is_refused():
  workdir = "ram://trainer_test_workdir_stranger/mine"
  tf.io.gfile.makedirs(workdir + "/export")
  with tf.io.gfile.GFile(workdir + "/curves.png", "w") as f:
    f.write("mine")
  with pytest.raises(ConfigError, match="is not empty and holds no run .*: curves.png, export;"):
    workdir_lib.check_writable(workdir)
  workdir_lib.check_writable("ram://trainer_test_workdir_stranger/new")


def test_remote_workdirs_are_left_to_the_first_write():
  workdir_lib.check_writable("gs://no-such-bucket-for-trainer-tests/run")  # no network, no error


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
  testpoints.install("write", lambda name, position: seen.append((position, open(path).read())))
  try:
    workdir_lib.write_atomically(path, "new")
  finally:
    testpoints.clear()
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


# The workdir's layout: what the run keeps there must be what it expects.


@pytest.mark.parametrize("name,kind", [
    ("train", "file"), ("eval", "file"), ("checkpoints", "file"), ("config.json", "dir"),
    ("schedule.png", "dir"), ("checkpoints/checkpoint", "dir"),
])
def test_a_file_or_directory_in_the_wrong_place_is_refused_before_anything_is_written(
    tmp_path, name, kind):
  workdir = tmp_path / "w"
  path = workdir / name
  path.parent.mkdir(parents=True, exist_ok=True)
  if kind == "file":
    path.write_text("x")
  else:
    path.mkdir()
  kind = "a file" if kind == "file" else "a directory"
  with pytest.raises(ConfigError, match=f"^workdir: {path} is {kind}, where the run keeps"):
    workdir_lib.check_writable(str(workdir))


# The lock.


def test_a_second_lock_on_a_locked_workdir_names_the_holder(tmp_path):
  workdir = str(tmp_path / "w")
  with lock_lib.Lock(workdir) as lock:
    assert lock.holder["pid"] == os.getpid()
    with open(os.path.join(workdir, ".lock")) as f:
      assert json.load(f)["pid"] == os.getpid()  # a reader can tell who holds it
    with pytest.raises(ConfigError) as info:
      with lock_lib.Lock(workdir):
        pass
  message = str(info.value)
  assert message.startswith(f"workdir: {workdir} is in use by another run: pid {os.getpid()} "
                            f"on {socket.gethostname()}, started ")
  assert "\n" not in message
  assert os.listdir(workdir) == []  # released: the lock file goes with it
  with lock_lib.Lock(workdir):  # and it can be taken again
    with pytest.raises(ConfigError, match=r"--force_unlock cannot take an OS lock"):
      with lock_lib.Lock(workdir, force_unlock=True):  # a live holder is never overridden
        pass


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from trainer.rundir import lock
    with lock.Lock({workdir!r}):
      print("locked", flush=True)
      time.sleep(600)
    """)


def test_the_os_lock_dies_with_its_process(tmp_path):
  workdir = str(tmp_path / "w")
  proc = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=REPO, workdir=workdir)],
                          env=main_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(ConfigError, match=f"pid {proc.pid} on "):
      with lock_lib.Lock(workdir):
        pass
    os.remove(os.path.join(workdir, ".lock"))  # issue 21: `rm .lock` let a second run in
    with pytest.raises(ConfigError, match="is in use by another run: another process \\(its "
                                          "lock file .* is missing"):
      with lock_lib.Lock(workdir):
        pass
  finally:
    proc.kill()  # SIGKILL: no chance to release anything
    proc.wait()
  with lock_lib.Lock(workdir) as lock:  # the kernel released it
    assert lock.holder["pid"] == os.getpid()


def test_a_waiter_that_locked_an_unlinked_lock_file_takes_the_new_one(tmp_path):
  """A holder unlinks the lock file before releasing it; whoever opened the old file and
  then got its lock must notice it is no longer the workdir's lock."""
  workdir = tmp_path / "w"
  workdir.mkdir()
  stale = os.open(workdir / ".lock", os.O_RDWR | os.O_CREAT)
  os.remove(workdir / ".lock")  # as a releasing holder does
  fcntl.flock(stale, fcntl.LOCK_EX)  # a lock on the unlinked file means nothing
  try:
    with lock_lib.Lock(str(workdir)):
      assert os.path.exists(workdir / ".lock")
  finally:
    os.close(stale)


def test_a_removed_lock_file_still_excludes_and_is_not_recreated_by_the_refused(tmp_path):
  """Issue 21, item 3: the workdir directory itself is locked, which no `rm` walks around."""
  workdir = tmp_path / "w"
  with lock_lib.Lock(str(workdir)):
    os.remove(workdir / ".lock")
    with pytest.raises(ConfigError) as info:
      with lock_lib.Lock(str(workdir)):
        pass
    assert str(info.value).startswith(f"workdir: {workdir} is in use by another run: ")
    assert "\n" not in str(info.value)
    assert os.listdir(workdir) == []  # the refused run wrote no lock file of its own
  with lock_lib.Lock(str(workdir)) as lock:  # released with its holder
    assert lock.holder["pid"] == os.getpid()


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "hard link", "directory"])
def test_a_lock_file_that_is_a_link_is_refused_and_nothing_is_written_through_it(tmp_path,
                                                                                 kind):
  """Issue 21, item 3: the holder's record was written into whatever `.lock` pointed to."""
  workdir, target = tmp_path / "w", tmp_path / "precious.txt"
  workdir.mkdir()
  target.write_text("mine\n")
  lock_file = workdir / ".lock"
  if kind == "symlink":
    lock_file.symlink_to(target)
  elif kind == "dangling symlink":
    lock_file.symlink_to(tmp_path / "nothing-here")
  elif kind == "hard link":
    os.link(target, lock_file)
  else:
    lock_file.mkdir()
  what = {"symlink": "a symbolic link", "dangling symlink": "a symbolic link",
          "hard link": "a file with 1 other hard link(s)", "directory": "not a regular file"}
  with pytest.raises(ConfigError) as info:
    with lock_lib.Lock(str(workdir)):
      pass
  message = str(info.value)
  assert message.startswith(f"workdir: {lock_file} is {what[kind]}"), message
  assert "never through a link" in message and "\n" not in message
  assert target.read_text() == "mine\n" and sorted(os.listdir(tmp_path)) == [
      "precious.txt", "w"]  # nothing created beside it either
  assert os.path.lexists(lock_file) and os.listdir(workdir) == [".lock"]
  assert not (tmp_path / "nothing-here").exists()


def test_where_directories_cannot_be_locked_the_lock_file_alone_excludes(tmp_path,
                                                                        monkeypatch):
  """NFS locks only files open for writing: flock on a directory fails there."""
  real = fcntl.flock

  def no_directory_locks(fd, op):
    if os.path.isdir(f"/proc/self/fd/{fd}"):
      raise OSError(errno.EBADF, "Bad file descriptor")
    return real(fd, op)

  monkeypatch.setattr(fcntl, "flock", no_directory_locks)
  workdir = str(tmp_path / "w")
  with lock_lib.Lock(workdir) as lock:
    assert "token" not in lock.holder  # an OS lock, not a lease
    with pytest.raises(ConfigError, match=f"pid {os.getpid()} on "):
      with lock_lib.Lock(workdir):
        pass
  assert os.listdir(workdir) == []


def test_without_os_locks_a_lease_is_used(tmp_path, monkeypatch):
  monkeypatch.setattr(lease_lib, "LEASE_SETTLE_SECONDS", 0.01)

  def no_flock(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")

  monkeypatch.setattr(fcntl, "flock", no_flock)
  workdir = str(tmp_path / "w")
  with lock_lib.Lock(workdir) as lock:
    assert "token" in lock.holder  # a lease
    with pytest.raises(ConfigError, match="its lease .* was refreshed 0 s ago"):
      with lock_lib.Lock(workdir):
        pass
  assert os.listdir(workdir) == []


def test_only_the_chief_locks_or_creates_anything(tmp_path):
  workdir = tmp_path / "w"
  with lock_lib.Lock(str(workdir), chief=False) as lock:
    assert lock.holder is None
  assert not workdir.exists()


@pytest.mark.parametrize("error,removed", [
    (ConfigError("model: cannot resume"), True),  # a user mistake: nothing left behind
    (MemoryError("Unable to allocate"), True),  # a batch too large: a user mistake too
    (RuntimeError("a bug"), False),  # kept, to look at
])
def test_a_new_workdir_is_removed_after_a_user_mistake(tmp_path, error, removed):
  parent = tmp_path / "runs"
  workdir = parent / "a" / "w"
  with pytest.raises(type(error)):
    with lock_lib.Lock(str(workdir)):
      (workdir / "config.json").write_text("{}")
      raise error
  assert workdir.exists() != removed
  assert parent.exists() != removed  # the parents it made too


def test_an_existing_workdir_or_one_with_checkpoints_is_never_removed(tmp_path):
  existing = tmp_path / "existing"
  existing.mkdir()
  (existing / "notes").write_text("mine")
  with pytest.raises(ConfigError):
    with lock_lib.Lock(str(existing)):
      raise ConfigError("seed: cannot resume")
  assert sorted(os.listdir(existing)) == ["notes"]  # as it was: no lock file left either
  new = tmp_path / "new"
  with pytest.raises(ConfigError):
    with lock_lib.Lock(str(new)):
      (new / "checkpoints").mkdir()
      (new / "checkpoints" / "ckpt-8.index").write_text("")
      raise ConfigError("global_batch_size: out of memory")
  assert (new / "checkpoints" / "ckpt-8.index").exists()


def test_a_failed_lock_removes_nothing_another_run_uses(tmp_path):
  workdir = tmp_path / "w"
  with lock_lib.Lock(str(workdir)):
    with pytest.raises(ConfigError):
      with lock_lib.Lock(str(workdir)):
        pass
    assert workdir.exists() and (workdir / ".lock").exists()


def test_a_stale_lock_file_of_a_killed_run_is_left_as_it_was_after_a_mistake(tmp_path):
  workdir = tmp_path / "w"
  workdir.mkdir()
  (workdir / ".lock").write_text('{"pid": 1, "host": "gone"}\n')
  with pytest.raises(ConfigError):
    with lock_lib.Lock(str(workdir)):
      raise ConfigError("seed: cannot resume")
  assert (workdir / ".lock").read_text() == '{"pid": 1, "host": "gone"}\n'  # byte for byte
  with lock_lib.Lock(str(workdir)):
    pass
  assert not (workdir / ".lock").exists()  # a run that ends normally tidies it


def test_a_locked_workdir_is_refused_before_its_config_json_is_read(data_dir, tmp_path,
                                                                    monkeypatch):
  from trainer.rundir import resume  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path / "w")
  read = []
  monkeypatch.setattr(resume, "check_resume",
                      lambda *a, **k: read.append(a) or resume.Decision())
  with lock_lib.Lock(workdir):
    with pytest.raises(ConfigError, match=f"^workdir: {workdir} is in use by another run"):
      train.train_and_evaluate(checkpointed_run(data_dir), workdir, cpu())
  assert read == []


# Leases (gs:// and other remote workdirs; ram:// here).


@pytest.fixture
def fast_leases(monkeypatch):
  monkeypatch.setattr(lease_lib, "LEASE_SETTLE_SECONDS", 0.05)
  monkeypatch.setattr(lease_lib, "LEASE_REFRESH_SECONDS", 0.1)


def _lease(workdir):
  with tf.io.gfile.GFile(workdir + "/.lock") as f:
    return json.loads(f.read())


def test_a_lease_names_its_holder_is_refreshed_and_released(fast_leases):
  workdir = "ram://trainer_test_lease/a"
  with lock_lib.Lock(workdir) as lock:
    first = _lease(workdir)
    assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()
    assert first["token"] == lock.holder["token"]
    time.sleep(0.5)
    assert _lease(workdir)["refreshed"] > first["refreshed"]  # the daemon thread refreshes
    with pytest.raises(ConfigError) as info:
      with lock_lib.Lock(workdir):
        pass
    message = str(info.value)
    assert f"is in use by another run: pid {os.getpid()} on {socket.gethostname()}" in message
    assert "goes stale after 120 s without a refresh" in message and "--force_unlock" in message
  assert not tf.io.gfile.exists(workdir + "/.lock")


def test_a_stale_lease_is_taken_over_and_force_unlock_takes_a_fresh_one(fast_leases):
  workdir = "ram://trainer_test_lease/b"
  tf.io.gfile.makedirs(workdir)
  dead = {"pid": 999999, "host": "elsewhere", "started": "then", "token": "dead",
          "refreshed": time.time() - lease_lib.LEASE_TIMEOUT_SECONDS - 1}
  with tf.io.gfile.GFile(workdir + "/.lock", "w") as f:
    f.write(json.dumps(dead))
  with lock_lib.Lock(workdir) as lock:  # stale: taken over without asking
    assert _lease(workdir)["token"] == lock.holder["token"]
  with tf.io.gfile.GFile(workdir + "/.lock", "w") as f:
    f.write(json.dumps({**dead, "refreshed": time.time()}))  # fresh, but its run is dead
  with pytest.raises(ConfigError, match="pid 999999 on elsewhere"):
    with lock_lib.Lock(workdir):
      pass
  with lock_lib.Lock(workdir, force_unlock=True) as lock:
    assert _lease(workdir)["token"] == lock.holder["token"]


def test_of_two_runs_taking_a_lease_together_one_wins(fast_leases):
  workdir = "ram://trainer_test_lease/c"
  results, barrier = [], threading.Barrier(2)

  def take():
    barrier.wait()
    try:
      with lock_lib.Lock(workdir):
        results.append("won")
        time.sleep(0.5)
    except ConfigError:
      results.append("refused")

  threads = [threading.Thread(target=take) for _ in range(2)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert sorted(results) == ["refused", "won"]


def test_a_run_whose_lease_was_taken_over_says_so_and_stops(fast_leases, caplog):
  workdir = "ram://trainer_test_lease/d"
  with lock_lib.Lock(workdir) as held:
    held.check()  # its own: nothing to say
    # Another run takes it over, writing as a lease is written (ram:// does not truncate).
    with tf.io.gfile.GFile(workdir + "/.lock.tmp", "w") as f:
      f.write(json.dumps({"pid": 1, "host": "other", "token": "x", "refreshed": time.time()}))
    tf.io.gfile.rename(workdir + "/.lock.tmp", workdir + "/.lock", overwrite=True)
    time.sleep(0.4)
    with pytest.raises(CheckpointError) as e:  # exit 5: the run writes nothing more
      held.check()
  assert "this run no longer owns its workdir" in caplog.text
  assert str(e.value).startswith(f"workdir: {workdir} is no longer this run's: its lease ")
  assert "pid 1 on other" in str(e.value) and "\n" not in str(e.value)
  assert e.value.exit_code == 5


# What interrupted writes leave is removed at start.


def test_stale_temporaries_are_removed(tmp_path):
  workdir = tmp_path / "w"
  (workdir / "checkpoints" / "ckpt-20_temp").mkdir(parents=True)
  (workdir / "checkpoints" / "ckpt-20_temp" / "part-00000-of-00001.index").write_text("")
  (workdir / "train").mkdir()
  stale = ["config.json.tmp", "schedule.png.tmp", "checkpoints/checkpoint.tmp0123abcd",
           "train/.history-0123.tmp"]
  for name in stale:
    (workdir / name).write_text("half")
  kept = ["config.json", "notes.tmp.txt", "checkpoints/checkpoint", "checkpoints/ckpt-8.index"]
  for name in kept:
    (workdir / name).write_text("whole")
  removed = workdir_lib.remove_stale_temporaries(str(workdir))
  assert len(removed) == len(stale) + 1  # and the _temp directory
  for name in kept:
    assert (workdir / name).read_text() == "whole"
  for name in stale + ["checkpoints/ckpt-20_temp"]:
    assert not (workdir / name).exists()


# Default workdirs.


def test_default_workdirs_differ_between_processes_started_in_the_same_second(monkeypatch):
  monkeypatch.setattr(os, "getpid", lambda: 1234)
  a = main.default_workdir()
  monkeypatch.setattr(os, "getpid", lambda: 1235)
  b = main.default_workdir()
  assert a != b and a.startswith("runs/") and a.endswith("-1234")


@pytest.mark.slow
def test_two_runs_without_a_workdir_started_together_get_their_own(data_dir, tmp_path):
  args = [sys.executable, "-m", "trainer.main", "--strategy=cpu", f"--config.data_dir={data_dir}",
          "--config.model=mlp", "--config.total_steps=8", "--config.steps_per_loop=4",
          "--config.schedule.warmup_steps=2"]
  procs = [subprocess.Popen(args, cwd=tmp_path, env=main_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for _ in range(2)]
  for proc in procs:
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
  runs = sorted(os.listdir(tmp_path / "runs"))
  assert len(runs) == 2
  for run in runs:
    assert os.path.exists(tmp_path / "runs" / run / "checkpoints" / "checkpoint")


@pytest.mark.slow
def test_a_second_trainer_on_a_running_workdir_exits_2_naming_the_first(data_dir, tmp_path):
  workdir = tmp_path / "w"
  flags = [f"--workdir={workdir}", f"--config.data_dir={data_dir}", "--strategy=cpu",
           "--config.model=mlp", "--config.total_steps=100000", "--config.steps_per_loop=10",
           "--config.eval_every=0", "--config.checkpoint_every=0"]
  first = subprocess.Popen([sys.executable, "-m", "trainer.main", *flags], cwd=REPO,
                           env=main_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
  try:
    for line in first.stdout:
      if "train step 10/100000" in line:
        break
    second = run_main(*flags[:-4], "--config.model=small_cnn", cwd=REPO)  # another run
    assert second.returncode == 2, second.stderr[-2000:]
    last = second.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: workdir: {workdir} is in use by another run: pid "
                           f"{first.pid} on {socket.gethostname()}, started "), last
    assert "Traceback" not in second.stderr
    with open(workdir / "config.json") as f:
      assert json.load(f)["config"]["model"] == "mlp"  # the first run's, untouched
  finally:
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
  assert first.returncode == 4


def test_an_unreachable_remote_workdir_is_one_line(monkeypatch):
  """A gs:// bucket that does not exist, no credentials or no network: TF raises an OpError
  (FailedPreconditionError for an unresolvable host), which was a traceback from lock.py.
  The failure is injected at tf.io.gfile: CI has no network to be refused by."""
  from trainer.rundir import record  # pylint: disable=g-import-not-at-top

  def unreachable(*args, **kwargs):
    raise tf.errors.FailedPreconditionError(
        None, None, "Error executing an HTTP request: libcurl code 6 meaning 'Could not "
        "resolve hostname'\n when reading metadata of gs://no-such-bucket/w")

  for name in ("exists", "makedirs", "isdir"):
    monkeypatch.setattr(tf.io.gfile, name, unreachable)
  workdir = "gs://no-such-bucket/w"
  for call in (lambda: record.read_config_json(workdir), lambda: record.read_run(workdir),
               lambda: lock_lib.Lock(workdir).__enter__()):
    with pytest.raises(ConfigError) as e:
      call()
    message = str(e.value)
    assert message.startswith(f"workdir: cannot use {workdir} (") and "\n" not in message
    assert "Could not resolve hostname" in message and message.endswith("access to it")
  # A local path is not turned into this message: its OSError means something else.
  with pytest.raises(ConfigError, match="no such directory"):
    record.read_run("/no/such/local/run")
