"""Tests for trainer.tpu through its seams (no TPU here): every failure is one fast line, and
the wiring connects only to remote TPUs."""

import socket
import time
import urllib.error

import pytest
import tensorflow as tf

from tests.conftest import free_port as _free_port
from tests.conftest import one_line_error as _one_line_error
from trainer.distribute import strategy as ts
from trainer.distribute import tpu as tpu_lib
from trainer.base.errors import ConfigError


@pytest.mark.skipif(tpu_lib.local_tpu_problem() is None, reason="this machine has a TPU")
def test_tpu_without_devices_fails_fast():
  start = time.monotonic()
  for tpu in ("", "local"):
    with pytest.raises(ConfigError) as excinfo:
      ts.get_strategy("tpu", tpu=tpu)
    _one_line_error(excinfo, "tpu: --tpu=local", "no TPU devices", "allowed:", "grpc://")
  assert time.monotonic() - start < 30


def test_tpu_local_real_resolver_error_becomes_config_error(monkeypatch):
  # Past the device probe, TF's own resolver + initialize_tpu_system fail (NotFoundError:
  # no ConfigureDistributedTPU kernel in this TF build); that must become one line.
  monkeypatch.setattr(tpu_lib, "local_tpu_problem", lambda: None)
  start = time.monotonic()
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("tpu", tpu="local")
  _one_line_error(excinfo, "tpu: cannot use TPU 'local'", "no TPU support", "tensorflow-tpu")
  assert time.monotonic() - start < 30


def test_tpu_grpc_unreachable_fails_fast():
  start = time.monotonic()
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("tpu", tpu=f"grpc://127.0.0.1:{_free_port()}")
  _one_line_error(excinfo, "tpu: cannot reach grpc://127.0.0.1:", "allowed:")
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("auto", tpu=f"grpc://127.0.0.1:{_free_port()}")  # explicit TPU wins
  _one_line_error(excinfo, "tpu: cannot reach")
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("tpu", tpu="grpc://")
  _one_line_error(excinfo, "tpu: malformed address 'grpc://'", "allowed:")
  assert time.monotonic() - start < 30


def test_named_tpu_without_cloud_api_client_says_what_to_install(monkeypatch):
  missing = ["googleapiclient", "oauth2client"]
  monkeypatch.setattr(tpu_lib, "_missing_cloud_tpu_api", lambda: missing)
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("tpu", tpu="my-tpu")
  _one_line_error(excinfo, "tpu: looking up TPU 'my-tpu'", "googleapiclient and oauth2client",
                  "pip install google-api-python-client oauth2client",
                  "not cloud-tpu-client", "--tpu=local", "grpc://")


def test_missing_cloud_api_probe_matches_importability():
  missing = tpu_lib._missing_cloud_tpu_api()  # pylint: disable=protected-access
  for module in ("googleapiclient", "oauth2client"):
    try:
      __import__(module)
      assert module not in missing
    except ImportError:
      assert module in missing


class _RaisingResolver:
  """Stands in for TPUClusterResolver; raises `error` like the real one does."""

  error = None

  def __init__(self, tpu):
    del tpu
    raise self.error


@pytest.mark.parametrize("error,shown", [
    (ValueError("Could not lookup TPU metadata from name 'my-tpu'. Please doublecheck"),
     "Could not lookup TPU metadata"),
    (RuntimeError("Missing runtime dependency on the Google API client. Run `pip install "
                  "cloud-tpu-client` to fix."), "pip install google-api-python-client"),
    (tf.errors.NotFoundError(None, None, "TPUs not found in the cluster.\nmore detail"),
     "TPUs not found in the cluster."),
    (ImportError("No module named 'googleapiclient'"), "No module named"),
    (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")),
     "GCE metadata server"),
])
def test_tpu_resolver_errors_become_one_line(error, shown):
  resolver_cls = type("Resolver", (_RaisingResolver,), {"error": error})
  with pytest.raises(ConfigError) as excinfo:
    ts.get_strategy("tpu", tpu="my-tpu", tpu_resolver_cls=resolver_cls)
  _one_line_error(excinfo, "tpu: cannot use TPU 'my-tpu'", shown, "allowed:")


def test_tpu_wiring_connects_only_remote_tpus(monkeypatch):
  calls = []

  class Resolver:

    def __init__(self, tpu):
      self.tpu = tpu

  monkeypatch.setattr(tf.config, "experimental_connect_to_cluster",
                      lambda r: calls.append(("connect", r.tpu)))
  monkeypatch.setattr(tf.tpu.experimental, "initialize_tpu_system",
                      lambda r: calls.append(("init", r.tpu)))
  monkeypatch.setattr(tf.distribute, "TPUStrategy", lambda r: ("strategy", r.tpu))
  assert ts.get_strategy("tpu", tpu_resolver_cls=Resolver) == ("strategy", "local")
  assert calls == [("init", "local")]
  calls.clear()
  assert ts.get_strategy("tpu", "grpc://10.0.0.2:8470", tpu_resolver_cls=Resolver) == (
      "strategy", "grpc://10.0.0.2:8470")
  assert calls == [("connect", "grpc://10.0.0.2:8470"), ("init", "grpc://10.0.0.2:8470")]


def test_the_tpu_extra_installs_every_module_a_named_tpu_needs():
  import ast  # pylint: disable=g-import-not-at-top
  import pathlib  # pylint: disable=g-import-not-at-top
  setup = pathlib.Path(__file__).resolve().parents[1] / "setup.py"
  (call,) = [n for n in ast.walk(ast.parse(setup.read_text())) if isinstance(n, ast.Call)
             and getattr(n.func, "attr", "") == "setup"]
  extras = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "extras_require"))
  installed = {r.split(">")[0].split("=")[0] for r in extras["tpu"]}
  assert sorted(tpu_lib.CLOUD_TPU_API_MODULES) == ["googleapiclient", "oauth2client"]
  assert set(tpu_lib.CLOUD_TPU_API_MODULES.values()) <= installed
