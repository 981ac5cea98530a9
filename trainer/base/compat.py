"""Which Keras to use: Keras 3, or `tf_keras` (Keras 2) under TF_USE_LEGACY_KERAS=1.

TF's TPU images and Model Garden still run `tf_keras`; with TF_USE_LEGACY_KERAS=1 set,
`tf.keras` is `tf_keras`, and mixing the two Keras packages in one model breaks. Every
module imports Keras from here so the whole package follows the same switch.
"""

import os

LEGACY_KERAS = os.environ.get("TF_USE_LEGACY_KERAS", "").lower() in ("1", "true", "yes")

if LEGACY_KERAS:
  import tf_keras as keras  # noqa: F401  pylint: disable=g-import-not-at-top
else:
  import keras  # noqa: F401  pylint: disable=g-import-not-at-top


def optimizer_chain(optimizer):
  """The optimizer and, for a LossScaleOptimizer (Keras 3 or tf_keras), the one(s) inside."""
  chain = [optimizer]
  while getattr(chain[-1], "inner_optimizer", None) is not None:
    chain.append(chain[-1].inner_optimizer)
  return chain


def unwrap_optimizer(optimizer):
  """The optimizer that does the updates: the one inside a LossScaleOptimizer, else itself."""
  return optimizer_chain(optimizer)[-1]
