"""Plug-ins the init_from tests name in `python -m trainer.main` children (which import this
module by name: it must not import tests.conftest, whose device set-up runs at import)."""

import keras
import numpy as np


def digits_0_to_4():
  """config.dataset: scikit-learn's digits 0-4 (5 classes), stored as the trainer stores
  digits (uint8, 0..255)."""
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  keep = digits.target < 5
  x = np.round(digits.images[keep] * (255 / 16)).astype(np.uint8)[..., None]
  y = digits.target[keep]
  n = len(y) * 4 // 5
  return {"train": (x[:n], y[:n]), "eval": (x[n:], y[n:])}


def wide_mlp(input_shape, num_outputs):
  """config.model: the paths of `mlp` but no weight shape in common with it."""
  inputs = keras.Input(input_shape)
  x = keras.layers.Dense(48, activation="relu", name="hidden")(keras.layers.Flatten()(inputs))
  return keras.Model(inputs, keras.layers.Dense(num_outputs, name="logits")(x))


def frozen_mlp(input_shape, num_outputs):
  """config.model: a model with nothing to train (`trainable = False`)."""
  inputs = keras.Input(input_shape)
  model = keras.Model(inputs, keras.layers.Dense(num_outputs, name="logits")(
      keras.layers.Flatten()(inputs)))
  model.trainable = False
  return model
