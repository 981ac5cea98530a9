"""Tests for trainer.strategy: picking strategies, TF_CONFIG errors, chief logic and where
each process writes. TPU paths: test_tpu.py; what XLA may compile: test_execution.py.

conftest.py splits the CPU into 4 logical devices; checks that need a fresh runtime
(setup_cpu_devices, a real MultiWorkerMirroredStrategy) run in a subprocess.
"""

import json
import os
import pathlib
import subprocess
import sys
import tempfile
import types

import pytest
import tensorflow as tf

from tests.conftest import free_port as _free_port
from tests.conftest import one_line_error as _one_line_error
from trainer.distribute import strategy as ts
from trainer.base.errors import ConfigError

REPO = pathlib.Path(__file__).resolve().parents[1]
GPUS = tf.config.list_physical_devices("GPU")
cpu_only = pytest.mark.skipif(bool(GPUS), reason="expects a machine without GPUs")
ALLOWED_STRATEGIES = "auto, cpu, one_device, mirrored, multi_worker, tpu"


def _run_python(code, env=None, timeout=120):
  """Runs `code` in a fresh interpreter at the repo root; returns its stdout."""
  full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
  full_env.pop("TF_CONFIG", None)
  full_env.update(env or {})
  result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


# --- choosing strategies -------------------------------------------------------------


def test_unknown_strategy_names_allowed_values():
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("x")
  assert str(excinfo.value) == f"strategy: unknown 'x'; allowed: {ALLOWED_STRATEGIES}"
  assert ts.STRATEGIES == tuple(ALLOWED_STRATEGIES.split(", "))


@cpu_only
def test_cpu_and_one_device_use_cpu0_here():
  for name in ("cpu", "one_device"):
    strategy = ts.get_strategy(name, tpu="ignored-here")
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.extended.worker_devices == (
        "/job:localhost/replica:0/task:0/device:CPU:0",)
    assert ts.describe(strategy) == "OneDeviceStrategy: 1 replica on CPU:0"
    assert ts.is_chief(strategy)
    assert ts.write_dir("/runs/a", strategy) == "/runs/a"


@cpu_only
def test_auto_picks_cpu_even_with_logical_cpu_devices():
  assert len(tf.config.list_logical_devices("CPU")) == 4
  for tpu in ("", "local"):
    strategy = ts.get_strategy("auto", tpu=tpu)
    assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
    assert strategy.num_replicas_in_sync == 1


@cpu_only
def test_mirrored_uses_every_logical_cpu():
  strategy = ts.get_strategy("mirrored")
  assert isinstance(strategy, tf.distribute.MirroredStrategy)
  assert strategy.num_replicas_in_sync == 4
  assert ts.describe(strategy) == "MirroredStrategy: 4 replicas on CPU:0, CPU:1, CPU:2, CPU:3"
  assert ts.is_chief(strategy)
  assert ts.write_dir("gs://b/run", strategy) == "gs://b/run"


def test_setup_cpu_devices_rejects_bad_counts():
  for bad in (0, -2, 2.5, True, "4"):
    with pytest.raises(ConfigError) as excinfo:
      ts.setup_cpu_devices(bad)
    _one_line_error(excinfo, "cpu_devices", ">= 1", repr(bad))


def test_setup_cpu_devices_same_count_is_a_no_op():
  ts.setup_cpu_devices(4)  # conftest already asked for 4
  assert len(tf.config.list_logical_devices("CPU")) == 4


@cpu_only
def test_setup_cpu_devices_in_a_fresh_process():
  out = _run_python("""
from trainer.distribute import strategy as ts
from trainer.base.errors import ConfigError
import tensorflow as tf
ts.setup_cpu_devices(3)
ts.setup_cpu_devices(3)
print(len(tf.config.list_logical_devices("CPU")))
ts.setup_cpu_devices(3)
try:
  ts.setup_cpu_devices(2)
except ConfigError as e:
  print("ERROR", e)
print(ts.get_strategy("mirrored").num_replicas_in_sync,
      ts.get_strategy("auto").num_replicas_in_sync)
""")
  lines = out.strip().splitlines()
  assert lines[0] == "3"
  assert lines[1].startswith("ERROR cpu_devices: TensorFlow already initialised with 3")
  assert "to 2" in lines[1] and "allowed: 3" in lines[1]
  assert lines[2] == "3 1"


# --- multi-worker ------------------------------------------------------------------

_WORKER = {"type": "worker", "index": 0}


@pytest.mark.parametrize("tf_config,problem", [
    (None, "it is not set"),
    ("  ", "it is not set"),
    ("{cluster", "not valid JSON"),
    ("[]", "not a JSON object"),
    (json.dumps({"task": _WORKER}), "'cluster' is missing or empty"),
    (json.dumps({"cluster": {}, "task": _WORKER}), "'cluster' is missing or empty"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}),
     "'task' with 'type' and 'index' is missing"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker"}}),
     "'task' with 'type' and 'index' is missing"),
    (json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}),
     "task type 'ps' is not a job in 'cluster' (worker)"),
    (json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                 "task": {"type": "worker", "index": 2}}),
     "task index 2 is not in 0..1"),
])
def test_multi_worker_tf_config_errors(monkeypatch, tf_config, problem):
  if tf_config is None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
  else:
    monkeypatch.setenv("TF_CONFIG", tf_config)
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("multi_worker")
  _one_line_error(excinfo, "TF_CONFIG: --strategy=multi_worker", '"cluster": {"worker"',
                  '"task": {"type": "worker", "index": i}', problem)


def test_multi_worker_single_worker_in_a_fresh_process():
  tf_config = {"cluster": {"worker": [f"localhost:{_free_port()}"]}, "task": _WORKER}
  out = _run_python("""
import json, os
from trainer.step import execution
from trainer.distribute import strategy as ts
s = ts.get_strategy("multi_worker")
print(json.dumps({"replicas": s.num_replicas_in_sync, "chief": ts.is_chief(s),
                  "tf_chief": bool(s.extended.should_checkpoint),
                  "jit": execution.jit_replica_step(s), "describe": ts.describe(s),
                  "write_dir": ts.write_dir("/w", s)}), flush=True)
os._exit(0)  # skip collective-ops teardown
""", env={"TF_CONFIG": json.dumps(tf_config)})
  got = json.loads(out.strip().splitlines()[-1])
  assert got == {
      "replicas": 1, "chief": True, "tf_chief": True, "jit": False, "write_dir": "/w",
      "describe": "MultiWorkerMirroredStrategy: 1 replica on CPU:0 (task worker:0, chief)"}


def _stub(task_type, task_id, cluster, between_graph=True):
  """A strategy-shaped object with the seam is_chief/write_dir read."""
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
  extended = types.SimpleNamespace(
      experimental_between_graph=between_graph,
      worker_devices=(f"/job:{task_type}/replica:0/task:{task_id}/device:CPU:0",))
  return types.SimpleNamespace(extended=extended, cluster_resolver=resolver,
                               num_replicas_in_sync=2)


_TWO_WORKERS = {"worker": ["a:1", "b:1"]}
_CHIEF_AND_WORKERS = {"chief": ["c:1"], "worker": ["a:1", "b:1"]}


def test_is_chief_follows_tf_rules():
  assert ts.is_chief(_stub("worker", 0, _TWO_WORKERS))
  assert not ts.is_chief(_stub("worker", 1, _TWO_WORKERS))
  assert ts.is_chief(_stub("chief", 0, _CHIEF_AND_WORKERS))
  assert not ts.is_chief(_stub("worker", 0, _CHIEF_AND_WORKERS))
  assert ts.is_chief(_stub(None, None, {}))  # MultiWorkerMirrored without TF_CONFIG
  # Single-client strategies (TPUStrategy) are always chief, whatever their resolver says.
  assert ts.is_chief(_stub("worker", 1, _TWO_WORKERS, between_graph=False))


def test_describe_shows_task_of_multi_worker_processes():
  assert ts.describe(_stub("worker", 1, _TWO_WORKERS)) == (
      "SimpleNamespace: 2 replicas on CPU:0 (task worker:1)")
  assert ts.describe(_stub("chief", 0, _CHIEF_AND_WORKERS)).endswith("(task chief:0, chief)")


def test_write_dir_is_a_local_per_worker_dir_and_cleanup_removes_it(monkeypatch, tmp_path):
  monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
  chief, worker1, worker0 = (_stub("chief", 0, _CHIEF_AND_WORKERS),
                             _stub("worker", 1, _CHIEF_AND_WORKERS),
                             _stub("worker", 0, _CHIEF_AND_WORKERS))
  workdir = "gs://bucket/run"
  assert ts.write_dir(workdir, chief) == workdir
  path1 = ts.write_dir(workdir, worker1)
  assert os.path.dirname(path1) == str(tmp_path) and path1.endswith("-worker-1")
  assert ts.write_dir(workdir, worker1) == path1  # stable across calls
  assert ts.write_dir(workdir, worker0) not in (path1, workdir)
  assert ts.write_dir("gs://bucket/other", worker1) != path1
  os.makedirs(os.path.join(path1, "checkpoints"))
  ts.cleanup_write_dir(workdir, worker1)
  assert not os.path.exists(path1)
  ts.cleanup_write_dir(workdir, worker1)  # already gone: fine
  chief_dir = tmp_path / "chief_run"
  chief_dir.mkdir()
  ts.cleanup_write_dir(str(chief_dir), chief)
  assert chief_dir.exists()
