"""Which Keras dtype policy a run computes in, by the config and the hardware."""

import contextlib

import tensorflow as tf

from trainer.base.compat import keras
from trainer.distribute.strategy import TPU_STRATEGIES


def precision_policy(name, strategy) -> str:
  """The Keras dtype policy for `config.mixed_precision` (`auto`: by the hardware)."""
  if name != "auto":
    return {"bfloat16": "mixed_bfloat16"}.get(name, name)
  if isinstance(strategy, TPU_STRATEGIES):
    return "mixed_bfloat16"
  return "mixed_float16" if tf.config.list_logical_devices("GPU") else "float32"


@contextlib.contextmanager
def global_policy(policy):
  """Keras' dtype policy is process-global: set it for this run only."""
  previous = keras.mixed_precision.global_policy().name
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)
