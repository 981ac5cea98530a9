"""Tests for launch/: help, dry runs, option errors, and the rerun-on-preemption loops.

gcloud, nvidia-smi and the job's python are replaced by fakes first on PATH (or $PYTHON)
that record their arguments, so nothing here needs Google Cloud or a GPU.
"""

import json
import os
import pathlib
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_VM = str(REPO / "launch" / "tpu_vm.sh")
WORKSTATION = str(REPO / "launch" / "workstation.sh")
MULTIWORKER = [sys.executable, str(REPO / "launch" / "multiworker.py")]

# Records its argv as one JSON line in $FAKE_LOG. `ssh --worker=0` (the job) exits with the
# next status in $FAKE_DIR/job_codes ("sleep" sleeps instead); `describe` prints the next
# line of $FAKE_DIR/states.
_FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, sys, time
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
  f.write(json.dumps(args) + "\\n")
def pop(name, default):
  path = os.path.join(os.environ["FAKE_DIR"], name)
  items = open(path).read().split() if os.path.exists(path) else []
  open(path, "w").write(" ".join(items[1:]))
  return items[0] if items else default
if "ssh" in args and "--worker=0" in args:
  code = pop("job_codes", "0")
  if code == "sleep":
    time.sleep(60)
  sys.exit(int(code))
if "describe" in args:
  print(pop("states", "READY"))
"""


@pytest.fixture
def fakes(tmp_path):
  """A bin dir with a fake gcloud first on PATH; returns (env, read_calls, fake_dir)."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  gcloud = bin_dir / "gcloud"
  gcloud.write_text(_FAKE_GCLOUD)
  gcloud.chmod(0o755)
  log = tmp_path / "calls.jsonl"
  env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
             FAKE_LOG=str(log), FAKE_DIR=str(tmp_path))

  def calls():
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

  return env, calls, tmp_path


def _run(cmd, env=None, cwd=None, timeout=60):
  return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def _printed_commands(stdout):
  """The `+ cmd` lines of a dry run, each split into argv."""
  return [shlex.split(line[2:]) for line in stdout.splitlines() if line.startswith("+ gcloud")]


def _assert_one_line_error(r, prog, *parts):
  assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1, r.stderr
  assert lines[0].startswith(f"{prog}: error: "), r.stderr
  for part in parts:
    assert part in lines[0], (part, lines[0])


# --- --help ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cmd, options", [
    ([TPU_VM], ["--name", "--zone", "--project", "--accelerator-type", "--version", "--config",
                "--workdir", "--data_dir", "--spot", "--retries", "--log_dir", "--keep",
                "--dry_run", "pod slice", "worker 0", "TPU_LOAD_LIBRARY=0", "-pod-pjrt"]),
    ([WORKSTATION], ["--config", "--workdir", "--retries", "--dry_run", "CUDA_VISIBLE_DEVICES",
                     "--strategy=mirrored", "status 4"]),
    (MULTIWORKER, ["--num_workers", "--cpu_devices_per_worker", "--timeout", "--grace",
                   "--module", "--dry_run", "--"]),
])
def test_help_exits_0_and_lists_the_options(cmd, options):
  for flag in ("--help", "-h"):
    r = _run(cmd + [flag])
    assert r.returncode == 0, r.stderr
    for option in options:
      assert option in r.stdout, (option, r.stdout)


# --- tpu_vm.sh ------------------------------------------------------------------------------

def test_tpu_vm_dry_run_single_host_prints_every_step_and_calls_nothing(fakes):
  env, calls, _ = fakes
  r = _run([TPU_VM, "--name=t1", "--zone=europe-west4-a", "--accelerator-type=v3-8",
            "--version=tpu-vm-tf-2.16.1-pjrt", "--workdir=gs://b/run", "--data_dir=gs://b/tfds",
            "--project=p", "--dry_run", "--", "--config.total_steps=100"], env=env)
  assert r.returncode == 0, r.stderr
  assert calls() == []  # a dry run never runs gcloud
  cmds = _printed_commands(r.stdout)
  where = ["--zone=europe-west4-a", "--project=p"]
  create, copy, install, job, fetch, delete = cmds
  assert create == ["gcloud", "compute", "tpus", "tpu-vm", "create", "t1", *where,
                    "--accelerator-type=v3-8", "--version=tpu-vm-tf-2.16.1-pjrt"]
  assert copy[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "scp", "--recurse"]
  assert copy[6].endswith("/trainer") and copy[7] == "t1:~/" and copy[-1] == "--worker=all"
  assert install[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t1", *where]
  assert install[8] == "--worker=all" and "python3 -m pip install -e ." in install[9]
  assert "google-api-python-client" not in install[9]  # only pods look the TPU up by name
  assert job[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "t1", *where, "--worker=0"]
  remote = shlex.split(job[9].removeprefix("--command="))
  assert remote[remote.index("python3"):remote.index("2>&1")] == [
      "python3", "-m", "trainer.main", "--strategy=tpu", "--tpu=local",
      "--config=configs/default.py", "--workdir=gs://b/run", "--config.data_dir=gs://b/tfds",
      "--config.total_steps=100"]
  assert fetch[4:6] == ["scp", "t1:trainer-job.log"] and "--worker=0" in fetch
  assert delete == ["gcloud", "compute", "tpus", "tpu-vm", "delete", "t1", *where, "--quiet"]


def test_tpu_vm_dry_run_pod_slice_runs_on_worker_0_by_name(fakes):
  env, calls, _ = fakes
  r = _run([TPU_VM, "--name=pod1", "--zone=us-central2-b", "--accelerator-type=v4-32",
            "--workdir=gs://b/run", "--data_dir=gs://b/tfds", "--spot", "--keep", "--dry_run",
            "--config=configs/default.py"], env=env, cwd=REPO)
  assert r.returncode == 0, r.stderr
  assert calls() == []
  cmds = _printed_commands(r.stdout)
  assert [c[4] for c in cmds] == ["create", "scp", "ssh", "ssh", "scp"]  # --keep: no delete
  create, copy, install, job, _ = cmds
  assert "--accelerator-type=v4-32" in create and "--spot" in create
  assert [a for a in create if a.startswith("--version=")] == [
      "--version=tpu-vm-tf-2.17.1-pod-pjrt"]
  assert "--worker=all" in copy and "--worker=all" in install
  assert "google-api-python-client oauth2client" in install[-1]
  assert "--worker=0" in job and "--worker=all" not in job
  remote = shlex.split(job[-1].removeprefix("--command="))
  assert "TPU_LOAD_LIBRARY=0" in remote and "TPU_NAME=pod1" in remote
  assert "--strategy=tpu" in remote and "--tpu=pod1" in remote and "--tpu=local" not in remote
  assert "--config.data_dir=gs://b/tfds" in remote


@pytest.mark.parametrize("args, parts", [
    (["--workdir=gs://b/r"], ["--zone is required"]),
    (["--zone=z"], ["--workdir must be a gs:// path"]),
    (["--zone=z", "--workdir=/tmp/local"], ["--workdir must be a gs:// path", "/tmp/local"]),
    (["--zone=z", "--workdir=gs://b/r", "--accelerator-type=v3-32"],
     ["--data_dir=gs://... is required on a pod slice"]),
    (["--zone=z", "--workdir=gs://b/r", "--accelerator-type=v3-32", "--data_dir=gs://d",
      "--version=tpu-vm-tf-2.16.1-pjrt"], ["pod slice", "tpu-vm-tf-2.17.1-pod-pjrt"]),
    (["--zone=z", "--workdir=gs://b/r", "--version=tpu-vm-tf-2.16.1-pod-pjrt"],
     ["single host"]),
    (["--zone=z", "--workdir=gs://b/r", "--data_dir=/local"], ["--data_dir must be a gs://"]),
    (["--zone=z", "--workdir=gs://b/r", "--accelerator-type=tpu8"], ["--accelerator-type"]),
    (["--zone=z", "--workdir=gs://b/r", "--retries=-1"], ["--retries must be an integer"]),
    (["--zone=z", "--workdir=gs://b/r", "--name=Bad_Name"], ["--name"]),
    (["--zone=z", "--workdir=gs://b/r", "--config=nope.py"], ["--config: no such file"]),
    (["--zone=z", "--workdir=gs://b/r", "--config=/etc/hostname"], ["is not inside"]),
    (["--zone=z", "--workdir=gs://b/r", "--keep=1"], ["--keep takes no value"]),
    (["--zone"], ["--zone needs a value"]),
    (["--frobnicate"], ["unknown option '--frobnicate'"]),
])
def test_tpu_vm_bad_options_exit_2_with_one_line(fakes, args, parts):
  env, calls, _ = fakes
  _assert_one_line_error(_run([TPU_VM, *args, "--dry_run"], env=env), "launch/tpu_vm.sh",
                         *parts)
  assert calls() == []


def _verbs(calls):
  """Each gcloud call as its tpu-vm verb, with the worker for ssh (job on 0, install on all)."""
  out = []
  for c in calls:
    verb = c[3]
    if verb == "ssh":
      verb += ":" + next(a for a in c if a.startswith("--worker="))[len("--worker="):]
    out.append(verb)
  return out


_TPU_ARGS = ["--name=t2", "--zone=z", "--workdir=gs://b/r"]


def test_tpu_vm_reruns_the_job_on_exit_4_then_deletes(fakes, tmp_path):
  env, calls, fake_dir = fakes
  (fake_dir / "job_codes").write_text("4 4 0")
  r = _run([TPU_VM, *_TPU_ARGS, "--retries=2", f"--log_dir={tmp_path / 'logs'}"], env=env)
  assert r.returncode == 0, r.stderr
  assert _verbs(calls()) == ["create", "scp", "ssh:all", "ssh:0", "scp", "ssh:0", "scp",
                             "ssh:0", "scp", "delete"]
  assert "rerun 2 of 2" in r.stderr


def test_tpu_vm_gives_up_after_the_retries_and_still_deletes(fakes, tmp_path):
  env, calls, fake_dir = fakes
  (fake_dir / "job_codes").write_text("4 4 0")
  r = _run([TPU_VM, *_TPU_ARGS, "--retries=1", f"--log_dir={tmp_path / 'logs'}"], env=env)
  assert r.returncode == 4
  assert _verbs(calls()) == ["create", "scp", "ssh:all", "ssh:0", "scp", "ssh:0", "scp",
                             "delete"]


def test_tpu_vm_does_not_rerun_other_failures(fakes, tmp_path):
  env, calls, fake_dir = fakes
  (fake_dir / "job_codes").write_text("3 0")
  r = _run([TPU_VM, *_TPU_ARGS, "--retries=5", f"--log_dir={tmp_path / 'logs'}"], env=env)
  assert r.returncode == 3
  assert _verbs(calls()) == ["create", "scp", "ssh:all", "ssh:0", "scp", "delete"]


def test_tpu_vm_spot_recreates_a_preempted_vm_before_the_rerun(fakes, tmp_path):
  env, calls, fake_dir = fakes
  (fake_dir / "job_codes").write_text("255 0")  # ssh dropped: the VM went away
  (fake_dir / "states").write_text("PREEMPTED")
  r = _run([TPU_VM, *_TPU_ARGS, "--spot", "--retries=1", f"--log_dir={tmp_path / 'logs'}"],
           env=env)
  assert r.returncode == 0, r.stderr
  made = calls()
  assert _verbs(made) == ["create", "scp", "ssh:all", "ssh:0", "scp", "describe", "delete",
                          "create", "scp", "ssh:all", "ssh:0", "scp", "delete"]
  assert all("--spot" in c for c in made if c[3] == "create")


def test_tpu_vm_keep_leaves_the_vm(fakes, tmp_path):
  env, calls, _ = fakes
  r = _run([TPU_VM, *_TPU_ARGS, "--keep", f"--log_dir={tmp_path / 'logs'}"], env=env)
  assert r.returncode == 0, r.stderr
  assert "delete" not in _verbs(calls())
  assert "gcloud compute tpus tpu-vm delete t2" in r.stderr  # tells how to delete it later


def test_tpu_vm_deletes_the_vm_on_ctrl_c(fakes, tmp_path):
  env, calls, fake_dir = fakes
  (fake_dir / "job_codes").write_text("sleep")
  proc = subprocess.Popen([TPU_VM, *_TPU_ARGS, f"--log_dir={tmp_path / 'logs'}"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  deadline = time.monotonic() + 30
  while "ssh:0" not in _verbs(calls()) and time.monotonic() < deadline:
    time.sleep(0.1)
  os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
  _, stderr = proc.communicate(timeout=30)
  assert proc.returncode != 0
  assert _verbs(calls())[-1] == "delete", stderr


# --- workstation.sh -------------------------------------------------------------------------

def test_workstation_dry_run_prints_the_mirrored_command(tmp_path):
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="0,1")
  r = _run([WORKSTATION, "--workdir", str(tmp_path / "w"), "--config=configs/default.py",
            "--dry_run", "--", "--config.total_steps=7"], env=env, cwd=REPO)
  assert r.returncode == 0, r.stderr
  # The PYTHONPATH the real run sets: pasted into a shell, the command runs the same job.
  pythonpath = f"{REPO}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(REPO)
  assert shlex.split(r.stdout) == [f"PYTHONPATH={pythonpath}", "python3", "-m", "trainer.main",
                                   "--strategy=mirrored", "--config=configs/default.py",
                                   f"--workdir={tmp_path / 'w'}", "--config.total_steps=7"]
  assert "GPUs: 2 (CUDA_VISIBLE_DEVICES=0,1)" in r.stderr
  assert not (tmp_path / "w").exists()


def test_workstation_default_workdirs_differ_within_a_second():
  """runs/<date>-<time>-<pid> as trainer.main's: two launches in one second get their own."""
  workdirs = []
  for _ in range(2):
    r = _run([WORKSTATION, "--dry_run"])
    assert r.returncode == 0, r.stderr
    (workdir,) = [a for a in shlex.split(r.stdout) if a.startswith("--workdir=")]
    assert re.fullmatch(r"--workdir=runs/\d{8}-\d{6}-\d+", workdir), workdir
    workdirs.append(workdir)
  assert workdirs[0] != workdirs[1]


def test_workstation_counts_gpus_with_nvidia_smi(tmp_path):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  smi = bin_dir / "nvidia-smi"
  smi.write_text("#!/bin/sh\nfor i in 0 1 2; do echo \"GPU $i: Fake (UUID: GPU-$i)\"; done\n")
  smi.chmod(0o755)
  env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
  env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
  r = _run([WORKSTATION, "--dry_run"], env=env)
  assert r.returncode == 0, r.stderr
  assert "GPUs: 3 (nvidia-smi -L)" in r.stderr
  assert "--strategy=mirrored" in r.stdout


@pytest.mark.parametrize("args, parts", [
    (["--retries=x"], ["--retries must be an integer"]),
    (["--config=nope.py"], ["--config: no such file"]),
    (["--workdir"], ["--workdir needs a value"]),
    (["--dry_run=1"], ["--dry_run takes no value"]),
    (["--", "--strategy=cpu"], ["do not pass --strategy"]),
    (["--gpus=2"], ["unknown option '--gpus=2'"]),
])
def test_workstation_bad_options_exit_2_with_one_line(args, parts):
  _assert_one_line_error(_run([WORKSTATION, *args, "--dry_run"]), "launch/workstation.sh",
                         *parts)


# A stand-in for python: logs its argv, exits with the next status in $FAKE_DIR/codes, or on
# "term" waits for SIGTERM and exits 4 like a preempted trainer.
_FAKE_PYTHON = f"""#!{sys.executable}
import os, signal, sys, time
d = os.environ["FAKE_DIR"]
with open(os.path.join(d, "argv.log"), "a") as f:
  f.write(" ".join(sys.argv[1:]) + "\\n")
codes = open(os.path.join(d, "codes")).read().split()
open(os.path.join(d, "codes"), "w").write(" ".join(codes[1:]))
if codes[0] == "term":
  signal.signal(signal.SIGTERM, lambda *_: sys.exit(4))
  open(os.path.join(d, "ready"), "w").close()
  time.sleep(60)
sys.exit(int(codes[0]))
"""


@pytest.fixture
def fake_python(tmp_path):
  path = tmp_path / "fake_python"
  path.write_text(_FAKE_PYTHON)
  path.chmod(0o755)
  return dict(os.environ, PYTHON=str(path), FAKE_DIR=str(tmp_path)), tmp_path


@pytest.mark.parametrize("codes, retries, status, runs", [
    ("4 4 0", 2, 0, 3), ("4 4 0", 1, 4, 2), ("4", 0, 4, 1), ("3 0", 3, 3, 1), ("0", 3, 0, 1)])
def test_workstation_reruns_only_on_exit_4(fake_python, codes, retries, status, runs):
  env, d = fake_python
  (d / "codes").write_text(codes)
  r = _run([WORKSTATION, f"--workdir={d / 'w'}", f"--retries={retries}", "--", "--x=1"], env=env)
  assert r.returncode == status, r.stderr
  argv = (d / "argv.log").read_text().splitlines()
  assert len(argv) == runs
  assert all(a.startswith("-m trainer.main --strategy=mirrored") and a.endswith("--x=1")
             for a in argv)


def test_workstation_forwards_sigterm_and_does_not_rerun(fake_python):
  env, d = fake_python
  (d / "codes").write_text("term 0")
  proc = subprocess.Popen([WORKSTATION, f"--workdir={d / 'w'}", "--retries=3"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  deadline = time.monotonic() + 30
  while not (d / "ready").exists() and time.monotonic() < deadline:
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=30)
  assert proc.returncode == 4, stderr  # the job's status: it checkpointed and stopped
  assert len((d / "argv.log").read_text().splitlines()) == 1


# --- multiworker.py -------------------------------------------------------------------------

def test_multiworker_dry_run_prints_one_tf_config_per_worker():
  r = _run(MULTIWORKER + ["--num_workers=3", "--cpu_devices_per_worker=2", "--dry_run", "--",
                          "--workdir=/tmp/mw", "--config.total_steps=9"])
  assert r.returncode == 0, r.stderr
  lines = r.stdout.strip().splitlines()
  assert len(lines) == 3
  clusters, ports = [], set()
  for i, line in enumerate(lines):
    words = shlex.split(line)
    assert words[0].startswith("TF_CONFIG=")
    tf_config = json.loads(words[0].removeprefix("TF_CONFIG="))
    assert tf_config["task"] == {"type": "worker", "index": i}
    clusters.append(tf_config["cluster"])
    assert words[1:] == [sys.executable, "-m", "trainer.main", "--strategy=multi_worker",
                         "--cpu_devices=2", "--workdir=/tmp/mw", "--config.total_steps=9"]
  assert clusters[0] == clusters[1] == clusters[2] and list(clusters[0]) == ["worker"]
  for address in clusters[0]["worker"]:
    host, port = address.split(":")
    assert host == "127.0.0.1" and 1024 <= int(port) < 65536
    ports.add(port)
  assert len(ports) == 3


def test_multiworker_gives_every_worker_the_same_default_workdir():
  r = _run(MULTIWORKER + ["--dry_run"])
  assert r.returncode == 0, r.stderr
  workdirs = {w for line in r.stdout.splitlines() for w in shlex.split(line)
              if w.startswith("--workdir=")}
  assert len(workdirs) == 1 and workdirs.pop().startswith("--workdir=runs/multiworker-")
  assert "--cpu_devices" not in r.stdout


@pytest.mark.parametrize("args, parts", [
    (["--num_workers=0"], ["--num_workers must be >= 1"]),
    (["--num_workers=two"], ["--num_workers", "invalid int value"]),
    (["--cpu_devices_per_worker=-1"], ["--cpu_devices_per_worker must be >= 0"]),
    (["--timeout=0"], ["--timeout must be > 0"]),
    (["--", "--strategy=cpu"], ["do not pass --strategy"]),
    (["--", "--cpu_devices=2"], ["do not pass --strategy or --cpu_devices"]),
    (["--workdir=/tmp/x"], ["unrecognized arguments: --workdir=/tmp/x"]),
])
def test_multiworker_bad_options_exit_2_with_one_line(args, parts):
  _assert_one_line_error(_run(MULTIWORKER + args + ["--dry_run"]), "launch/multiworker.py",
                         *parts)
