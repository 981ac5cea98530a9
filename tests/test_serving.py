"""The exported model's stated contract: serving_default takes the inputs as the dataset stores
them and a wrong dtype is a clear error; serving_float takes float images in [0, 1] of any
size and resizes them as the pipelines do; `trainer.load_export` imports what model.keras
needs and refuses what TensorFlow would cast; the README's examples run as written."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, default_config, main_env
from tests.test_export import (eval_split, finished_run, regression_run,  # noqa: F401
                               trainer_outputs)
import trainer
from trainer.base.errors import ConfigError
from trainer.data import augment
from trainer.run import export


def _accuracy(probabilities, labels):
  return float(np.mean(np.argmax(np.asarray(probabilities), -1) == labels))


def _signatures(workdir):
  return tf.saved_model.load(os.path.join(workdir, "export", "serving")).signatures


def test_digits_as_floats_through_serving_float_reach_the_runs_accuracy(finished_run):  # noqa: F811
  """Floats in [0, 1], what a Keras user has: sklearn's digits / 16, or the stored ones / 255.
  Through serving_default they were cast to 0s and 1s (0.101 accuracy, no error)."""
  workdir, result = finished_run
  images, labels = eval_split(workdir)
  exported = trainer.load_export(workdir)
  floats = images.astype(np.float32) / 255
  assert _accuracy(exported.serving_float(images=floats)["probabilities"],
                   labels) == result["accuracy"]
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  sk = datasets.load_digits().images  # 0..16; the stored images are round(v * 255 / 16)
  index = {np.round(v * 255 / 16).astype(np.uint8).tobytes(): i for i, v in enumerate(sk)}
  own = sk[[index[im.tobytes()] for im in images]][..., None] / 16  # float64, as export.json says
  accuracy = _accuracy(exported.serving_float(images=own)["probabilities"], labels)
  assert abs(accuracy - result["accuracy"]) <= 2 / len(labels)


def test_serving_float_resizes_as_the_pipelines_do(finished_run):  # noqa: F811
  """A folder: run's user has images of any size: the pipelines' antialiased resize is done
  for them (the pipelines round it to uint8; serving_float keeps it in float)."""
  workdir, _ = finished_run
  images, _ = eval_split(workdir)
  sig = _signatures(workdir)
  big = tf.cast(tf.round(tf.image.resize(images, (21, 19))), tf.uint8)  # what a camera gives
  pipeline = tf.map_fn(lambda im: augment.fixed_size(im, (8, 8, 1)), big)
  expected = sig["serving_default"](inputs=pipeline)["probabilities"].numpy()
  got = sig["serving_float"](images=tf.cast(big, tf.float32) / 255)["probabilities"].numpy()
  assert got.shape == (len(images), 10)
  np.testing.assert_allclose(got, expected, atol=5e-3)  # half a gray level of rounding apart
  same_size = sig["serving_float"](images=tf.constant(images / 255, tf.float32))
  np.testing.assert_allclose(same_size["probabilities"].numpy(),
                             sig["serving_default"](inputs=images)["probabilities"].numpy(),
                             rtol=1e-5, atol=1e-6)  # at the trained size: not resized


def test_a_wrong_dtype_or_range_is_a_clear_error(finished_run):  # noqa: F811
  workdir, _ = finished_run
  images, _ = eval_split(workdir)
  floats = images.astype(np.float32) / 255
  sig = _signatures(workdir)
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match="expected to be a uint8 tensor but is a float tensor"):
    sig["serving_default"](inputs=tf.constant(floats))  # TensorFlow refuses a tensor
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=re.escape("serving_float: images must be float32 in [0, 1]")):
    sig["serving_float"](images=tf.constant(floats * 16))
  # A NumPy array is cast by TensorFlow before any signature sees it: load_export refuses it.
  sig["serving_default"](inputs=floats)  # no error from TensorFlow: the reason for the wrapper
  exported = trainer.load_export(workdir)
  with pytest.raises(TypeError) as error:
    exported.serving_default(inputs=floats)
  assert str(error.value) == (
      "serving_default: inputs must be uint8 images [N, 8, 8, 1] in 0..255, got float32; "
      "give float32 images [N, h, w, 1] in [0, 1] to serving_float")
  with pytest.raises(ValueError) as error:
    exported.serving_float(images=images.astype(np.float64))  # 0..255 floats
  assert str(error.value).startswith(
      "serving_float: images must be float32 images [N, h, w, 1] in [0, 1], got values from 0 "
      "to 255; scale them first")
  assert "\n" not in str(error.value)
  with pytest.raises(TypeError, match="must be float32 images .* got uint8"):
    exported.serving_float(images=images)


def test_load_export_takes_a_workdir_its_export_or_model_keras(finished_run,  # noqa: F811
                                                              tmp_path):
  workdir, _ = finished_run
  images, _ = eval_split(workdir)
  for path in (workdir, os.path.join(workdir, "export"),
               os.path.join(workdir, "export", "model.keras")):
    exported = trainer.load_export(path)
    assert exported.manifest["step"] == 24
    np.testing.assert_allclose(exported.model.predict(images / 255, verbose=0),
                               trainer_outputs(workdir), rtol=1e-5, atol=1e-6)
  with pytest.raises(ConfigError, match="^export: no export.json in "):
    trainer.load_export(str(tmp_path))


def test_features_have_serving_default_alone(regression_run):  # noqa: F811
  workdir, _ = regression_run
  exported = trainer.load_export(workdir)
  assert exported.serving_float is None and "serving_float" not in exported.manifest
  assert "float32 inputs [N, 6]" in exported.manifest["serving"]["contract"]
  assert "unscaled" in exported.manifest["serving"]["contract"]
  features, _ = eval_split(workdir)
  served = exported.serving_default(features.astype(np.float64))["predictions"]  # any float
  np.testing.assert_allclose(served.numpy(), trainer_outputs(workdir), rtol=1e-5, atol=1e-5)


def test_export_json_names_the_plug_in_modules_model_keras_needs():
  config = default_config(model="my_project.model:net", task="my_project.tasks:Mine")
  assert export.load_advice(config).startswith(
      "model.keras: import trainer.schedules, import my_project.model, import my_project.tasks, "
      "then keras.models.load_model(path); or trainer.load_export(path)")


def _readme_block():
  """The Python block of the README's "The trained model out"."""
  text = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
  section = text[text.index("### The trained model out"):]
  return section.split("```python\n", 1)[1].split("```", 1)[0]


_CHECKS = """
import json, sys
checks = {}
try:
  run.serving_default(inputs=floats)
  checks["floats_refused"] = ""
except TypeError as e:
  checks["floats_refused"] = str(e)
ours = run.serving_float(images=floats)["probabilities"].numpy()
raw = serve.signatures["serving_float"](images=tf.constant(floats, tf.float32))
stored_p = run.serving_default(inputs=stored)["probabilities"].numpy()
checks["float_equals_raw"] = bool(np.allclose(ours, raw["probabilities"].numpy(), atol=1e-6))
checks["float_vs_stored"] = float(np.abs(ours - stored_p).max())
checks["accuracy"] = float(np.mean(ours.argmax(-1) == digits.target))
print(json.dumps(checks))
"""


@pytest.mark.slow
def test_the_readmes_examples_run_as_written(finished_run, tmp_path):  # noqa: F811
  """In a fresh process that imports nothing but `trainer` (load_export imports the rest)."""
  workdir, result = finished_run
  os.makedirs(tmp_path / "runs")
  os.symlink(workdir, tmp_path / "runs" / "a")
  r = subprocess.run([sys.executable, "-c", _readme_block() + _CHECKS], cwd=str(tmp_path),
                     env=main_env(), capture_output=True, text=True, timeout=300)
  assert r.returncode == 0, r.stderr[-3000:]
  checks = json.loads(r.stdout.strip().splitlines()[-1])
  assert checks["floats_refused"].startswith("serving_default: inputs must be uint8 images")
  assert checks["float_equals_raw"] and checks["float_vs_stored"] < 5e-3
  assert checks["accuracy"] > result["accuracy"] - 0.1  # all 1797 digits, train ones too
