"""A run's export read back: `trainer.load_export(path)`, the model and its signatures.

Keras 3 imports no module of a saved object, so loading model.keras in a fresh process fails
("could not be deserialized properly") until the schedule its optimizer carries is registered
(`import trainer.schedules`); a plug-in model's or task's classes need their modules too.
`load_export` imports them all (export.json's "load" names them), loads model.keras and the
SavedModel, and wraps each serving signature so that an input of the wrong dtype is refused
in one line before TensorFlow casts it (it casts NumPy arrays to the signature's dtype
silently: floats in [0, 1] become 0s and 1s as uint8).
"""

import dataclasses
import importlib
import json
import os

import numpy as np
import tensorflow as tf

from trainer import schedules  # noqa: F401  (registers the schedule model.keras holds)
from trainer.base import plugins
from trainer.base.compat import keras
from trainer.base.errors import ConfigError, first_line
from trainer.rundir import layout

SIGNATURES = ("serving", "serving_float")  # export.json's entries, one per signature


@dataclasses.dataclass(frozen=True)
class Export:
  """A run's export, loaded (`load_export`).

  Attributes:
    model: model.keras as a compiled Keras model (float32 inputs as the trainer feeds them:
      images in [0, 1] at the trained size; raw outputs, e.g. logits; `fit` continues the
      run's schedule), or None when the run could not write it (`manifest['not_written']`).
    serving_default: the SavedModel's signature of the inputs as the dataset stores them
      (a `Signature`; None without serving/).
    serving_float: float images in [0, 1] of any size (None for inputs that are no images).
    manifest: export.json: each signature's contract, the step, what was written.
    saved_model: the loaded SavedModel, whose variables the signatures use.
  """

  model: object
  serving_default: object
  serving_float: object
  manifest: dict
  saved_model: object = dataclasses.field(repr=False)


class Signature:
  """A serving signature that refuses an input of another kind than its contract's before
  TensorFlow would cast it (floats into uint8, integers into float32), and float images
  outside [0, 1] in one line. Float inputs of any precision are cast to float32. Called as
  the signature is: `sig(inputs=x)`, or `sig(x)`; returns its dict of outputs (e.g.
  {'probabilities': [N, classes]})."""

  def __init__(self, function, entry, alternative=None):
    self.function = function
    self.name, self.input = entry["signature"], entry["input"]
    self.dtype = entry["input_dtype"]
    self.entry = entry
    self._alternative = alternative  # the other signature's entry, named in the error

  def __call__(self, *args, **kwargs):
    if len(args) + len(kwargs) != 1 or (kwargs and self.input not in kwargs):
      raise TypeError(f"{self.name}: give one input, {self.input}=...")
    value = args[0] if args else kwargs[self.input]
    if not isinstance(value, (tf.Tensor, np.ndarray)):
      value = np.asarray(value)
    got = tf.as_dtype(value.dtype)
    if not (got.name == self.dtype or (got.is_floating and self.dtype.startswith("float"))):
      raise TypeError(f"{self.name}: {self.input} must be {describe(self.entry)}, got "
                      f"{got.name}{self._hint()}")
    value = tf.cast(value, self.dtype)
    low_high = self.entry.get("input_range")
    if low_high and self.dtype != "uint8" and tf.size(value) > 0:
      low, high = float(tf.reduce_min(value)), float(tf.reduce_max(value))
      if low < low_high[0] or high > low_high[1]:
        raise ValueError(f"{self.name}: {self.input} must be {describe(self.entry)}, got "
                         f"values from {low:g} to {high:g}; scale them first (0..255 images: "
                         f"/ 255){self._hint()}")
    return self.function(**{self.input: value})

  def _hint(self):
    other = self._alternative
    return f"; give {describe(other)} to {other['signature']}" if other else ""


def describe(entry):
  """'uint8 images [N, 8, 8, 1] in 0..255' from an export.json signature entry."""
  shape = entry["input_shape"]
  names = (["N", "h", "w"] + ["C"] * len(shape))[:len(shape)]
  dims = ", ".join(str(d) if d is not None else n for d, n in zip(shape, names))
  low_high = entry.get("input_range")
  kind = "images" if len(shape) == 4 else "inputs"
  where = (f" in {low_high[0]}..{low_high[1]}" if low_high and entry["input_dtype"] == "uint8"
           else f" in [{low_high[0]:g}, {low_high[1]:g}]" if low_high else "")
  return f"{entry['input_dtype']} {kind} [{dims}]{where}"


def load_export(path):
  """Loads a run's export with what it needs imported.

  Args:
    path: the run's workdir, its export/ directory, or export/model.keras (local or gs://).

  Returns:
    An `Export`: `.model` (model.keras), `.serving_default(inputs=uint8_images)`,
    `.serving_float(images=floats_in_0_1)` and `.manifest` (export.json).

  Raises:
    ConfigError: no complete export at `path`, or model.keras needs a module of the run's
      config that cannot be imported here.
  """
  directory = _directory(path)
  with tf.io.gfile.GFile(os.path.join(directory, layout.MANIFEST)) as f:
    manifest = json.loads(f.read())
  written = manifest.get("written", [])
  model = None
  if layout.MODEL_FILE in written:
    failed = _import_plugins(manifest)
    try:
      model = keras.models.load_model(os.path.join(directory, layout.MODEL_FILE))
    except Exception as e:  # pylint: disable=broad-except  (Keras says little more)
      if not failed:
        raise
      raise ConfigError(f"{failed[0]}; model.keras may need it ({first_line(e, 160)})"
                        ) from None
  saved, signatures = None, dict.fromkeys(SIGNATURES)
  if layout.SERVING_DIR in written:
    saved = tf.saved_model.load(os.path.join(directory, layout.SERVING_DIR))
    entries = {key: manifest[key] for key in SIGNATURES if key in manifest}
    for key, entry in entries.items():
      other = next((e for k, e in entries.items() if k != key), None)
      signatures[key] = Signature(saved.signatures[entry["signature"]], entry, other)
  return Export(model, signatures["serving"], signatures["serving_float"], manifest, saved)


def _directory(path):
  """The export directory `path` names (a workdir, its export/, or export/model.keras)."""
  path = path.rstrip("/")
  if os.path.basename(path) == layout.MODEL_FILE:
    path = os.path.dirname(path)
  for directory in (path, os.path.join(path, layout.EXPORT)):
    if tf.io.gfile.exists(os.path.join(directory, layout.MANIFEST)):
      return directory
  raise ConfigError(f"export: no {layout.MANIFEST} in {path} or {path}/{layout.EXPORT}; a run "
                    f"writes workdir/{layout.EXPORT}/ when it reaches total_steps")


def _import_plugins(manifest):
  """Imports the config's model and task modules when they are plug-ins (their classes may be
  in model.keras); returns one line per module that failed."""
  failed = []
  for field in ("model", "task"):
    value = manifest.get(field)
    if plugins.is_import_path(value):
      module = value.split(":")[0]
      try:
        importlib.import_module(module)
      except Exception as e:  # pylint: disable=broad-except  (the user's module)
        failed.append(f"{field}: cannot import {module!r} ({first_line(e, 120)}); run "
                      f"where the run's config could import it, or install it")
  return failed
