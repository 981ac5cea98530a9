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

import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# pytest-xdist's workers run with SIGINT ignored, and an ignored signal stays ignored across
# exec, where a shell cannot even trap it (POSIX): the Ctrl-C tests' children would never see
# their SIGINT. A handled signal is reset to the default on exec, so handle it here.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
  signal.signal(signal.SIGINT, signal.default_int_handler)


def cpu():
  """A new OneDeviceStrategy on /cpu:0 (each run gets its own, as a real process would)."""
  return tf.distribute.OneDeviceStrategy("/cpu:0")


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
  return mirrored(2)


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


# Configs and runs: the one config builder of the tests, and the runs the trainer tests share.


def default_config(**fields):
  """configs/default.py with `fields` overridden (dotted names: `**{"schedule.hold": 2}`)."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.override(config_lib.load(os.path.join(REPO, "configs", "default.py")),
                             **fields)


# A run of a few dozen global steps on the offline digits: loops of 4, evals and checkpoints
# every 8, a 6-step warmup and a 2-step hold.
SMALL_RUN = {"total_steps": 24, "steps_per_loop": 4, "eval_every": 8, "checkpoint_every": 8,
             "global_batch_size": 32, "schedule.warmup_fraction": 0.0,
             "schedule.warmup_steps": 6, "schedule.hold": 2, "schedule.start_lr": 1e-4}
# The run of the checkpoint, resume and kill tests: the MLP, a checkpoint every loop, six kept.
CHECKPOINTED_RUN = {**SMALL_RUN, "model": "mlp", "checkpoint_every": 4, "max_checkpoints": 6}


def small_run(data_dir, /, **changes):
  """SMALL_RUN in `data_dir`, with `changes`."""
  return default_config(**{**SMALL_RUN, "data_dir": data_dir, **changes})


def checkpointed_run(data_dir, /, **changes):
  """CHECKPOINTED_RUN in `data_dir`, with `changes`."""
  return default_config(**{**CHECKPOINTED_RUN, "data_dir": data_dir, **changes})


def checkpointed_flags(data_dir, /, **changes):
  """`checkpointed_run(data_dir, **changes)` as trainer.main flags, on --strategy=cpu."""
  fields = {**CHECKPOINTED_RUN, "data_dir": data_dir, **changes}
  return ["--strategy=cpu"] + [f"--config.{k}={v}" for k, v in fields.items()]


def main_env(**extra):
  """The environment of a `python -m trainer.main` child: this repo importable, TF quiet."""
  return {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def run_main(*args, cwd, env=None, timeout=900, **kwargs):
  """`python -m trainer.main ARGS` in a fresh interpreter; the CompletedProcess (text)."""
  return subprocess.run([sys.executable, "-m", "trainer.main", *args], cwd=cwd,
                        env=main_env(**(env or {})), capture_output=True, text=True,
                        timeout=timeout, **kwargs)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """A TFDS data_dir (a str) with `digits` prepared, shared by every run of the session."""
  from trainer import data  # pylint: disable=g-import-not-at-top
  path = str(tmp_path_factory.mktemp("tfds"))
  data.get_dataset_info("digits", path)
  return path


@pytest.fixture(scope="session")
def runs(data_dir, tmp_path_factory):
  """`full`: the whole checkpointed run; `partial`: the same run as if it had died after its
  step-16 save (checkpoints 4, 8, 12, 16). Do not change them: copy them (`partial`)."""
  from trainer.run import train  # pylint: disable=g-import-not-at-top
  base = tmp_path_factory.mktemp("runs")
  full, partial_run = str(base / "full"), str(base / "partial")
  train.train_and_evaluate(checkpointed_run(data_dir), full, cpu())
  # The run is deterministic (the kill test shows it), so its first 16 steps are the partial.
  shutil.copytree(full, partial_run, ignore=shutil.ignore_patterns("export"))  # not finished
  for step in (20, 24):
    for path in tf.io.gfile.glob(os.path.join(ckpt_dir(partial_run), f"ckpt-{step}.*")):
      os.remove(path)
  tf.compat.v1.train.update_checkpoint_state(
      ckpt_dir(partial_run), "ckpt-16", [f"ckpt-{s}" for s in (4, 8, 12, 16)])
  return {"full": full, "partial": partial_run}


@pytest.fixture
def partial(runs, tmp_path):
  """A fresh copy of the run stopped at step 16 (checkpoints 4, 8, 12, 16)."""
  workdir = str(tmp_path / "w")
  shutil.copytree(runs["partial"], workdir)
  return workdir


# What a run left in its checkpoints.


def ckpt_dir(workdir):
  return os.path.join(workdir, "checkpoints")


def saved(workdir, name):
  """A variable from the newest checkpoint, by a substring of its checkpoint key."""
  reader = tf.train.load_checkpoint(ckpt_dir(workdir))
  keys = sorted(k for k in reader.get_variable_to_shape_map() if name in k)
  return [reader.get_tensor(k) for k in keys]


def iterations(workdir):
  """The global step of the newest checkpoint (the optimizer's `iterations`)."""
  (value,) = saved(workdir, "iterations")
  return int(value)


def model_weights(workdir):
  """The model's variables in the newest checkpoint."""
  # A Keras 3 optimizer holds the model's variables, so the checkpoint keeps them under it.
  return saved(workdir, "model/") or saved(workdir, "optimizer/_trainable_variables/")


def tensors(path):
  """{key: array} of every variable in a checkpoint (a prefix or a directory's latest)."""
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
  reader = tf.train.load_checkpoint(path)
  return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
          if k.endswith("VARIABLE_VALUE") and "save_counter" not in k}


def assert_same_weights(a, b):
  """The checkpoints `a` and `b` hold the same variables, bit for bit."""
  a, b = tensors(a), tensors(b)
  assert sorted(a) == sorted(b)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert a[key].tobytes() == b[key].tobytes(), key  # bit for bit, -0.0 and NaNs included


def restore_only(workdir):
  """The checkpoint `restore_latest` picks (reads and verifies; restores nothing)."""
  from trainer.run import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.Checkpointer(workdir, cpu(), 3).restore_latest()


# The set-up and builder APIs as the tests use them.


def plan_of(config, num_train_examples, num_replicas):
  """The Plan of `config`, its fields and schedule checked as trainer.config.resolve does."""
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  config_lib.check_fields(config)
  plan = config_lib.plan_run(config, num_train_examples, num_replicas)
  plan.schedule_args()
  return plan


def spec_of(config, strategy, policy=None, info=None):
  """`trainer.config.resolve(config, strategy)`, optionally under another dtype policy, or
  around a DatasetInfo `info` the test already has (not opened again)."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  from trainer import config as config_lib  # pylint: disable=g-import-not-at-top
  if info is None:
    spec = config_lib.resolve(config, strategy)
  else:
    # pylint: disable=g-import-not-at-top
    from trainer import models, schedules
    from trainer import task as task_lib
    plan = plan_of(config, info.num_train_examples, strategy.num_replicas_in_sync)
    spec = config_lib.RunSpec(config, info, plan, "float32", task_lib.get_task(config.task),
                              models.lookup(config.model),
                              schedules.WarmupDecay(**plan.schedule_kwargs()))
  return dataclasses.replace(spec, policy=policy) if policy else spec


def build_parts(config, strategy, policy=None, info=None, **kwargs):
  """The builder's parts of `config` on `strategy` (call under its global_policy)."""
  from trainer.step import build  # pylint: disable=g-import-not-at-top
  return build.build(spec_of(config, strategy, policy, info), strategy, **kwargs)
