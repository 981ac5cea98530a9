"""Picks the `tf.distribute.Strategy` a run trains under, and says where this process writes.

`get_strategy(name, tpu=...)` builds one of `choices.STRATEGIES` (TPUs through `trainer.tpu`);
`is_chief`/`write_dir` say where this process may write; `describe` is the line for the logs.
User mistakes (unknown name, no TPU, bad TF_CONFIG) raise `ConfigError` with one line. What
XLA may compile under a strategy is `trainer.compile_plan`'s business.
"""

import hashlib
import json
import os
import tempfile

from absl import logging
import tensorflow as tf

from trainer.distribute import tpu as tpu_lib
from trainer.base import validate
from trainer.base.choices import STRATEGIES
from trainer.base.errors import ConfigError


_TF_CONFIG_SHAPE = ('{"cluster": {"worker": ["host:port", ...]}, '
                    '"task": {"type": "worker", "index": i}}')
TPU_STRATEGIES = (tf.distribute.TPUStrategy, tf.distribute.experimental.TPUStrategy)


def setup_cpu_devices(n: int) -> None:
  """Splits the host CPU into `n` logical devices (`--cpu_devices=N`).

  With them, `mirrored` runs `n` real replicas on a CPU-only machine. Must run before
  TensorFlow initialises its runtime (before the first op or device listing).

  Args:
    n: number of logical CPU devices, >= 1.

  Raises:
    ConfigError: if `n` < 1, or the runtime already started with a different count.
  """
  validate.integer("cpu_devices", n, 1)
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * n)
  except RuntimeError:
    # The runtime is up; that is fine only if it already has the count asked for.
    have = len(tf.config.list_logical_devices("CPU"))
    if have != n:
      raise ConfigError(
          f"cpu_devices: TensorFlow already initialised with {have} CPU device(s), cannot "
          f"change to {n}; allowed: {have}, or set it before any TensorFlow op runs") from None


def get_strategy(name: str, tpu: str = "", *, tpu_resolver_cls=None) -> tf.distribute.Strategy:
  """Builds the strategy called `name`.

  - `cpu`: OneDeviceStrategy on /cpu:0. `one_device`: on the first GPU, else /cpu:0.
  - `mirrored`: MirroredStrategy over all local GPUs, else over all logical CPU devices
    (see `setup_cpu_devices`).
  - `multi_worker`: MultiWorkerMirroredStrategy from the TF_CONFIG environment variable.
    Create it at program start, before other TF ops run (a TF requirement).
  - `tpu`: TPUStrategy on `tpu` ('local' when empty): 'local' on a TPU VM, a TPU name, or
    grpc://host:port. Unreachable TPUs fail fast with a ConfigError.
  - `auto`: the TPU named by `tpu` (a name or grpc address), else a local TPU if one is
    found (a cheap device and libtpu check, never a network call), else `mirrored` with 2+
    GPUs, `one_device` with 1 GPU (a single-device strategy lets the loop XLA-compile the
    whole step), else `cpu`. A local TPU that is found but fails to start is an error.
    Logical CPU devices never make `auto` pick `mirrored`: ask for it explicitly.

  Args:
    name: one of `STRATEGIES`.
    tpu: TPU address for `tpu`/`auto`; ignored (with a warning) by the other strategies.
    tpu_resolver_cls: replaces `tf.distribute.cluster_resolver.TPUClusterResolver` (tests,
      custom resolvers) and skips the checks tied to TF's own resolver. Called as
      `tpu_resolver_cls(tpu=...)`; must subclass TPUClusterResolver to get past
      `initialize_tpu_system`, which asserts that.

  Returns:
    The strategy.

  Raises:
    ConfigError: unknown `name`, no TPU reachable, or a missing/invalid TF_CONFIG.
  """
  validate.choice("strategy", name, STRATEGIES)
  if tpu and name not in ("tpu", "auto"):
    logging.warning("--tpu=%s is ignored with --strategy=%s", tpu, name)
  if name == "auto":
    if tpu not in ("", "local") or tpu_lib.local_tpu_problem() is None:
      name = "tpu"
    else:
      gpus = tf.config.list_logical_devices("GPU")
      name = "mirrored" if len(gpus) > 1 else "one_device" if gpus else "cpu"
  if name == "cpu":
    return tf.distribute.OneDeviceStrategy("/cpu:0")
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
      # None lets TF pick NCCL when it is available.
      return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(
        cpus, cross_device_ops=tf.distribute.ReductionToOneDevice())
  if name == "multi_worker":
    _check_tf_config(os.environ.get("TF_CONFIG", ""))
    # AUTO: NCCL between GPUs, RING over gRPC otherwise (so CPU-only clusters work).
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=tf.distribute.experimental.CommunicationImplementation.AUTO)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  return tpu_lib.tpu_strategy(tpu or "local", tpu_resolver_cls)


def is_chief(strategy) -> bool:
  """Whether this process writes checkpoints, summaries and exports.

  True everywhere except on the non-chief workers of a multi-worker strategy: the
  'chief' task, else worker 0 when the cluster has no 'chief' job (TF's own rule).
  """
  task = _task(strategy)
  if task is None:
    return True
  task_type, task_id, jobs = task
  if task_type in ("chief", "evaluator"):
    return True
  return task_type == "worker" and task_id == 0 and "chief" not in jobs


def write_dir(workdir: str, strategy) -> str:
  """Where this process saves: `workdir` on the chief, a local per-worker dir elsewhere.

  Every multi-worker task must take part in saving (it runs collectives), but only the
  chief's files count. Non-chief workers save to
  `<tempdir>/trainer-<hash of workdir>-<task_type>-<task_id>`, on local disk so they never
  clutter a shared workdir (or gs://). The path is stable for a workdir and task; it is not
  created here. Its contents are throwaway: delete them with `cleanup_write_dir` after each
  save or at exit. Non-chief workers restore from `workdir`, never from here.
  """
  if is_chief(strategy):
    return workdir
  task_type, task_id, _ = _task(strategy)
  digest = hashlib.sha1(workdir.encode()).hexdigest()[:8]
  return os.path.join(tempfile.gettempdir(), f"trainer-{digest}-{task_type}-{task_id}")


def cleanup_write_dir(workdir: str, strategy) -> None:
  """Deletes a non-chief worker's `write_dir`; does nothing on the chief."""
  path = write_dir(workdir, strategy)
  if path != workdir and tf.io.gfile.exists(path):
    tf.io.gfile.rmtree(path)


def describe(strategy) -> str:
  """One log line: class, number of replicas, devices (and task when multi-worker)."""
  try:
    devices = strategy.extended.worker_devices
  except RuntimeError:  # the default strategy has no device list
    devices = ("the default device",)
  names = []
  for device in devices:
    spec = tf.DeviceSpec.from_string(device) if device.startswith("/") else None
    names.append(f"{spec.device_type}:{spec.device_index}" if spec and spec.device_type
                 else device)
  if len(names) > 8:
    names = [names[0], "...", names[-1]]
  n = strategy.num_replicas_in_sync
  line = f"{_class_name(strategy)}: {n} replica{'s' if n != 1 else ''} on {', '.join(names)}"
  task = _task(strategy)
  if task is not None:
    line += f" (task {task[0]}:{task[1]}{', chief' if is_chief(strategy) else ''})"
  return line


def _class_name(strategy) -> str:
  """The public tf.distribute name (TF's classes behind them have other names)."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "MultiWorkerMirroredStrategy"  # class CollectiveAllReduceStrategy
  if isinstance(strategy, TPU_STRATEGIES):
    return "TPUStrategy"
  name = type(strategy).__name__
  return "DefaultStrategy" if name.startswith("_Default") else name


def _task(strategy):
  """(task_type, task_id, job names) of a multi-worker process, else None."""
  # Between-graph strategies (one process per worker) are the only ones with non-chiefs;
  # TPUStrategy is single-client and its resolver may call the Cloud API, so skip it.
  try:
    if not strategy.extended.experimental_between_graph:
      return None
  except (AttributeError, NotImplementedError):  # the default strategy raises
    return None
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return None
  return resolver.task_type, int(resolver.task_id or 0), set(resolver.cluster_spec().jobs)


def _check_tf_config(raw: str) -> None:
  """Raises ConfigError unless `raw` names a cluster and this process's task in it."""
  def fail(problem):
    raise ConfigError(f"TF_CONFIG: --strategy=multi_worker needs the environment variable "
                      f"TF_CONFIG={_TF_CONFIG_SHAPE}; {problem}")
  if not raw.strip():
    fail("it is not set")
  try:
    config = json.loads(raw)
  except ValueError:
    fail("it is not valid JSON")
  if not isinstance(config, dict):
    fail("it is not a JSON object")
  cluster, task = config.get("cluster"), config.get("task")
  if not isinstance(cluster, dict) or not cluster:
    fail("'cluster' is missing or empty")
  if not isinstance(task, dict) or "type" not in task or "index" not in task:
    fail("'task' with 'type' and 'index' is missing")
  hosts = cluster.get(task["type"])
  if not isinstance(hosts, list) or not hosts:
    fail(f"task type {task['type']!r} is not a job in 'cluster' ({', '.join(cluster)})")
  index = task["index"]
  if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(hosts):
    fail(f"task index {index!r} is not in 0..{len(hosts) - 1}")


def make_first_iterator(strategy) -> None:
  """Makes (and drops) one tiny distributed iterator on an in-process strategy.

  A process's first distributed iterator makes TF's C++ side log one harmless warning
  ("Input of GeneratorDatasetOp::Dataset will not be optimized"); `trainer.main` calls this
  while start-up lines are filtered (`console.startup_lines_hidden`), so it is not printed in
  the middle of a run. Multi-worker and TPU strategies are left alone (no extra work there).
  """
  if isinstance(strategy, TPU_STRATEGIES) or _task(strategy) is not None:
    return
  iter(strategy.distribute_datasets_from_function(lambda _: tf.data.Dataset.range(1)))
