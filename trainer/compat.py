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
