"""Your model: a function from what the data says about itself to a Keras model.

`model = "diabetes.model:mlp"` makes the trainer call `mlp(input_shape=(10,), num_outputs=1)`
inside `strategy.scope()`.
"""

import keras


def mlp(input_shape, num_outputs):
  inputs = keras.Input(input_shape, name="features")
  x = keras.layers.Dense(16, activation="relu")(inputs)
  x = keras.layers.Dropout(0.2)(x)
  return keras.Model(inputs, keras.layers.Dense(num_outputs, dtype="float32")(x), name="mlp")


@keras.saving.register_keras_serializable(package="diabetes")
class ResidualMLP(keras.Model):
  """A subclassed model with BatchNormalization and Dropout (see README: Make it yours)."""

  def __init__(self, num_outputs, width=32, **kwargs):
    super().__init__(**kwargs)
    self.num_outputs, self.width = num_outputs, width
    self.inp = keras.layers.Dense(width)
    self.norm = keras.layers.BatchNormalization()
    self.drop = keras.layers.Dropout(0.1)
    self.hidden = keras.layers.Dense(width, activation="relu")
    self.out = keras.layers.Dense(num_outputs, dtype="float32")

  def call(self, x, training=False):
    h = self.inp(x)
    h = h + self.hidden(self.drop(self.norm(h, training=training), training=training))
    return self.out(h)

  def get_config(self):
    return {**super().get_config(), "num_outputs": self.num_outputs, "width": self.width}


def residual_mlp(input_shape, num_outputs):
  del input_shape  # a subclassed model builds on its first call
  return ResidualMLP(num_outputs)
