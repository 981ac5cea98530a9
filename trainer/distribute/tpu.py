"""Cloud TPU discovery: a TPUStrategy, or one line saying why there is none, fast.

Nothing here hangs waiting for a TPU: a local TPU is looked for as device files and libtpu,
a grpc:// address is probed with a TCP connect before TF's `connect_to_cluster` (which would
block), and a TPU name needs Google's API client, checked before TF imports it.
"""

import glob
import importlib.util
import os
import socket
import urllib.parse

import tensorflow as tf

from trainer.base.errors import ConfigError, reason

# The Cloud TPU API client a TPU *name* needs (module -> pip package; setup.py's `tpu` extra).
CLOUD_TPU_API_MODULES = {"googleapiclient": "google-api-python-client",
                         "oauth2client": "oauth2client"}
ALLOWED = "allowed: 'local' on a Cloud TPU VM, a TPU name, or grpc://host:port"


def local_tpu_problem():
  """Why this machine has no usable local TPU, or None when it looks like it has one.

  Cheap: looks for TPU device files and libtpu, never touches the TPU runtime.
  """
  # /dev/accel* on TPU v2-v4 VMs, numbered /dev/vfio/* groups on v5e/v5p/v6e.
  if not glob.glob("/dev/accel*") and not glob.glob("/dev/vfio/[0-9]*"):
    return "no TPU devices on this machine (/dev/accel*, /dev/vfio/N)"
  library = os.environ.get("TPU_LIBRARY_PATH", "")
  if not (os.path.isfile(library) or importlib.util.find_spec("libtpu") is not None):
    return "TPU devices found but no libtpu; pip install tensorflow-tpu (it brings libtpu)"
  return None


def _missing_cloud_tpu_api():
  """Modules TF's TPUClusterResolver needs to look a TPU up by name that are missing."""
  # TF imports `cloud_tpu_client` if present, else its own copy of that client, which
  # needs googleapiclient and oauth2client at the first Cloud TPU API call.
  return [m for m in CLOUD_TPU_API_MODULES if importlib.util.find_spec(m) is None]


def _check_grpc_reachable(tpu: str) -> None:
  """Fails fast when nothing listens at a grpc:// TPU address (TF would block instead)."""
  parsed = urllib.parse.urlparse(tpu)
  try:
    host, port = parsed.hostname, parsed.port or 8470
  except ValueError:
    host = None
  if not host:
    raise ConfigError(f"tpu: malformed address {tpu!r}; {ALLOWED}")
  try:
    socket.create_connection((host, port), timeout=5).close()
  except OSError as e:
    raise ConfigError(f"tpu: cannot reach {tpu} ({e.strerror or e}); is the TPU up and the "
                      f"port open? {ALLOWED}") from None


def tpu_strategy(tpu: str, resolver_cls):
  """Resolves, connects to and initialises the TPU system; returns a TPUStrategy."""
  if resolver_cls is None:
    resolver_cls = tf.distribute.cluster_resolver.TPUClusterResolver
    if tpu == "local":
      problem = local_tpu_problem()
      if problem:
        raise ConfigError(f"tpu: --tpu=local but {problem}; {ALLOWED}, "
                          "or use --strategy=cpu|one_device|mirrored")
    elif tpu.startswith("grpc://"):
      _check_grpc_reachable(tpu)
    elif missing := _missing_cloud_tpu_api():
      raise ConfigError(
          f"tpu: looking up TPU {tpu!r} by name needs the Cloud TPU API client, missing "
          f"{' and '.join(missing)}: pip install google-api-python-client "
          "oauth2client (not cloud-tpu-client: it pins protobuf<4, which TF>=2.16 rejects); "
          "or use --tpu=local on the TPU VM itself, or --tpu=grpc://host:8470")
  try:
    resolver = resolver_cls(tpu=tpu)
    if tpu != "local":
      tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  except (ValueError, RuntimeError, ImportError, OSError, tf.errors.OpError) as e:
    raise ConfigError(f"tpu: cannot use TPU {tpu!r}: {_tpu_hint(e)}; {ALLOWED}") from None


def _tpu_hint(error: Exception) -> str:
  """The first line of a TPU setup error, or what it means when that line is cryptic."""
  text = str(error)
  if "ConfigureDistributedTPU" in text:
    return "this TensorFlow build has no TPU support (install tensorflow-tpu on a TPU VM)"
  if "Missing runtime dependency on the Google API client" in text:
    return ("the Cloud TPU API client is missing: "
            "pip install google-api-python-client oauth2client")
  first = reason(error, 300) or type(error).__name__
  if isinstance(error, OSError):
    first += " (TPU names resolve through the GCE metadata server: run on a GCE VM)"
  return first
