"""Test-session setup: split the host CPU into logical devices before TF starts.

Logical devices can only be configured before the TF runtime initialises, so this runs at
import time, once per pytest process. `cpu` strategies use /cpu:0; `mirrored` tests pick
2 or 4 of these devices and run real replicas.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

NUM_CPU_DEVICES = 4

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_CPU_DEVICES)

import socket  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def mirrored(n):
  """MirroredStrategy over the first `n` logical CPU devices.

  ReductionToOneDevice: several collective-based MirroredStrategy objects in one process clash
  (tensorflow/tensorflow#62790); trainer.strategy uses it on CPU too.
  """
  return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)],
                                        cross_device_ops=tf.distribute.ReductionToOneDevice())


def one_line_error(excinfo, *parts):
  """Asserts a ConfigError message is one line containing every part; returns it."""
  message = str(excinfo.value)
  assert isinstance(excinfo.value, ValueError)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, (part, message)
  return message


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# Shared by the tests of trainer.data (tests/test_data_*.py).


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  """A TFDS data_dir with `digits` prepared, once per test module."""
  from trainer import data  # pylint: disable=g-import-not-at-top
  path = tmp_path_factory.mktemp("tfds")
  data.get_dataset_info("digits", str(path))  # builds digits once for the module
  return path


@pytest.fixture(scope="module")
def digits(digits_dir):
  """The DatasetInfo of the prepared `digits` in digits_dir."""
  from trainer import data  # pylint: disable=g-import-not-at-top
  return data.get_dataset_info("digits", str(digits_dir))


@pytest.fixture(scope="module")
def one():
  return tf.distribute.OneDeviceStrategy("/cpu:0")


@pytest.fixture(scope="module")
def two():
  return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def take(dist_ds, strategy, steps):
  """[step][replica] -> tuple of numpy arrays."""
  it = iter(dist_ds)
  out = []
  for _ in range(steps):
    parts = [strategy.experimental_local_results(t) for t in next(it)]
    out.append([tuple(p[r].numpy() for p in parts) for r in range(strategy.num_replicas_in_sync)])
  return out


def eval_arrays(dist_ds, strategy):
  """Per replica: concatenated (images, labels, weights) over the whole eval pass."""
  per_replica = [[] for _ in range(strategy.num_replicas_in_sync)]
  for batch in dist_ds:
    parts = [strategy.experimental_local_results(t) for t in batch]
    for r in range(strategy.num_replicas_in_sync):
      per_replica[r].append(tuple(p[r].numpy() for p in parts))
  return [tuple(np.concatenate(a) for a in zip(*batches)) for batches in per_replica]
