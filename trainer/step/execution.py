"""How a run executes (`Execution`): where its training batches come from and what XLA compiles.

`choose(...)` applies every rule in one place and returns a frozen `Execution`; the loops and
the task only read its fields. The rules (the measurements behind them are in
docs/benchmarks.md):

- Input. `input_mode='auto'` keeps the train split on the device wherever that applies (an
  in-memory split, and one replica or MirroredStrategy on one worker), else tf.data;
  `'device'` insists, `'tf.data'` refuses. Device-resident input has no iterator in the loop,
  so XLA can compile a whole loop, or each replica's whole step.
- The whole replica step (forward, backward, optimizer update, metric sums) is one XLA cluster
  on single-replica strategies and TPU. Under MirroredStrategy with device-resident input
  (Keras 3) each replica's step, update included, is one XLA program too, with the gradients
  all-reduced between programs and the update applied locally (`replica_update`,
  trainer/local_update.py). Otherwise under MirroredStrategy and MultiWorkerMirroredStrategy
  (even with one replica) only forward and backward are compiled: Keras' `apply_gradients`
  all-reduces through `merge_call`, which TF refuses inside a nested
  `tf.function(jit_compile=True)` ("`merge_call` called while defining a new graph").
- With device-resident input and a compiled step, the whole `steps_per_loop` loop is one XLA
  program: per-step dispatch disappears, which is what overhead-bound models need.
- No XLA for models with convolutions on the CPU: XLA:CPU runs them slower than TF's oneDNN
  kernels, and far slower inside a compiled loop (its ConvCanonicalization pass only rewrites
  convolutions of the entry computation, so a filter gradient inside a while loop falls back to
  the naive loop emitter). The device-resident batch draw is still compiled.
- `jit_compile=False` means no XLA at all.
"""

import dataclasses

import tensorflow as tf

from trainer.base.errors import ConfigError
from trainer.distribute.strategy import TPU_STRATEGIES


@dataclasses.dataclass(frozen=True)
class Execution:
  """What a run compiles. At most one of `step` and `gradients` is True."""

  device_input: bool  # batches drawn on the device by global step (no tf.data iterator)
  step: bool  # the whole replica step is one XLA cluster
  gradients: bool  # only forward and backward are an XLA cluster
  whole_loop: bool  # all steps of a host call are one XLA program (device_input and step)
  draw: bool  # the device-resident batch draw is its own XLA program (device_input, no whole_loop)
  # MirroredStrategy, device input: gradients all-reduced in the loop, each replica's update
  # applied to its own copies (loop.make_replica_train_loop)
  replica_update: bool = False

  @property
  def input_mode(self) -> str:
    return "device" if self.device_input else "tf.data"

  def describe(self) -> str:
    """One log line: the input path and what XLA compiles."""
    if self.whole_loop:
      xla = "the whole loop (batch draws and steps)"
    elif self.replica_update:
      xla = ("each replica's whole step (draw, gradients, update); all-reduce between"
             if self.step else "nothing" if not self.draw else "only the batch draw")
      return f"input device, per replica; XLA compiles {xla}"
    elif self.step:
      xla = "the whole replica step"
    elif self.gradients:
      xla = "forward and backward"
    else:
      xla = "nothing" if not self.draw else "only the batch draw"
    return f"input {self.input_mode}; XLA compiles {xla}"


def choose(strategy, *, jit_compile: bool, has_convolutions: bool, input_mode: str,
           device_input_possible: bool, replica_update: bool = False) -> Execution:
  """Applies the module's rules.

  Args:
    strategy: the run's strategy.
    jit_compile: the config's `jit_compile` (False: no XLA anywhere).
    has_convolutions: the model has convolution kernels (`models.has_convolutions`).
    input_mode: 'auto', 'device' or 'tf.data' (checked by the config).
    device_input_possible: the train split fits in memory and the strategy has one replica or
      can update per replica (`data.device_possible`).
    replica_update: with device input, the strategy updates per replica on all-reduced
      gradients (`data.replica_update`).

  Raises:
    ConfigError: `input_mode='device'` where it does not apply.
  """
  if input_mode == "device" and not device_input_possible:
    raise ConfigError("input_mode: 'device' needs one replica (strategy cpu or one_device) or "
                      "strategy mirrored under Keras 3, and a train split that fits in memory; "
                      "allowed here: auto, tf.data")
  device_input = input_mode != "tf.data" and device_input_possible
  per_replica = device_input and replica_update
  xla = jit_compile and not (has_convolutions and on_cpu(strategy))
  step = xla and (per_replica or jit_replica_step(strategy))
  return Execution(device_input=device_input, step=step, gradients=xla and not step,
                     whole_loop=device_input and step and not per_replica,
                     draw=device_input and jit_compile and not step, replica_update=per_replica)


def jit_replica_step(strategy) -> bool:
  """Whether a whole replica step, optimizer update included, may be one XLA cluster."""
  if isinstance(strategy, TPU_STRATEGIES):
    return True  # TPUStrategy compiles the whole `strategy.run` body anyway
  if isinstance(strategy, (tf.distribute.MirroredStrategy,
                           tf.distribute.MultiWorkerMirroredStrategy)):
    return False  # merge_call in apply_gradients (module docstring)
  return strategy.num_replicas_in_sync == 1


def on_cpu(strategy) -> bool:
  """Whether the strategy's replicas run on the host CPU (XLA's CPU backend)."""
  if isinstance(strategy, TPU_STRATEGIES):
    return False
  try:
    devices = strategy.extended.worker_devices
  except RuntimeError:  # the default strategy: TF places ops on a GPU if there is one
    return not tf.config.list_logical_devices("GPU")
  return all(tf.DeviceSpec.from_string(d).device_type == "CPU" for d in devices)
