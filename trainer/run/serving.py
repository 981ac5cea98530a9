"""`workdir/export/serving/`: the SavedModel, its signatures, and their input contract.

  serving_default(inputs)  the inputs as the dataset stores them: uint8 images [N, H, W, C] in
                           0..255 (the model sees them * 1/255), or float32 features [N, ...]
                           (unscaled), for TF Serving and `tf.saved_model.load`
  serving_float(images)    image datasets only: float32 images [N, h, w, C] in [0, 1] of any
                           h and w (what a Keras user has), resized to H x W as the pipelines
                           resize them (`augment.fixed_size_float`); a batch with values
                           outside [0, 1] (e.g. 0..255 or digits' 0..16) is refused

Both return {`serving_key(task)`: `task.serving_outputs(model(x))`}. Where a signature can
tell, a broken contract is an error: a tensor of another dtype is refused by TensorFlow when
the signature is called ("... was expected to be a uint8 tensor but is a float tensor"),
and serving_float checks the range. What no signature can see: TensorFlow casts a NumPy
array to the signature's dtype before the call (floats in [0, 1] become 0s and 1s for
serving_default); `trainer.load_export` refuses those before they are cast.

`contract(...)` is what export.json says about each signature: dtype, shape, value range,
the scaling and resizing the dataset's inputs went through (`data.describe_inputs`).
"""

import tensorflow as tf

from trainer.base.compat import LEGACY_KERAS, keras
from trainer.data import augment
from trainer.run import console

INPUT_NAME = "inputs"  # serving_default's input
FLOAT_SIGNATURE = "serving_float"
FLOAT_INPUT_NAME = "images"  # serving_float's input


def serving_key(task):
  """The signatures' output name for `task` (`Task.serving_key`, else 'outputs')."""
  return getattr(task, "serving_key", None) or "outputs"


def has_float_signature(info):
  """Whether the export has serving_float: images (uint8 [H, W, C]) only."""
  return info.is_image


def contract(info, task, num_outputs, stored):
  """export.json's entries {'serving': ..., 'serving_float': ...} (the second for images).

  Args:
    info: the run's DatasetInfo.
    task: the run's Task.
    num_outputs: the model's outputs per example.
    stored: how the dataset's inputs were made (`trainer.data.describe_inputs`).
  """
  key = serving_key(task)
  out = {"output": key, "output_shape": [None, num_outputs]}
  shape = list(info.input_shape)
  if not has_float_signature(info):
    dims = ", ".join(map(str, shape))
    return {"serving": {
        "signature": "serving_default", "input": INPUT_NAME, "input_dtype": "float32",
        "input_shape": [None, *shape], "input_range": None, **out,
        "contract": f"float32 inputs [N, {dims}] as the dataset gives them: {stored}; the "
                    f"model sees them unscaled"}}
  h, w, c = shape
  return {
      "serving": {
          "signature": "serving_default", "input": INPUT_NAME, "input_dtype": "uint8",
          "input_shape": [None, h, w, c], "input_range": [0, 255], **out,
          "contract": f"uint8 images [N, {h}, {w}, {c}] in 0..255 as the dataset stores them: "
                      f"{stored}; the model sees them * 1/255. A tensor of another dtype "
                      f"is refused; TensorFlow casts a NumPy array to uint8 first (floats "
                      f"in [0, 1] become 0 and 1): give uint8, or floats to {FLOAT_SIGNATURE}"},
      FLOAT_SIGNATURE: {
          "signature": FLOAT_SIGNATURE, "input": FLOAT_INPUT_NAME, "input_dtype": "float32",
          "input_shape": [None, None, None, c], "input_range": [0.0, 1.0], **out,
          "contract": f"float32 images [N, h, w, {c}] in [0, 1] of any size, resized to "
                      f"{h}x{w} as the run's images were (antialiased, aspect ratio not kept; "
                      f"not rounded to 1/255 steps) unless already {h}x{w}; a batch with "
                      f"values outside [0, 1] is refused"},
  }


def write(model, task, info, path):
  """Writes the SavedModel of `model` with the signatures above to `path`."""
  key = serving_key(task)

  def serve(inputs):
    outputs = model(augment.to_float(inputs), training=False)
    return {key: task.serving_outputs(outputs)}

  dtype = tf.uint8 if has_float_signature(info) else tf.float32
  archive = keras.export.ExportArchive()
  archive.track(model)
  archive.add_endpoint("serving_default", serve, input_signature=[
      tf.TensorSpec([None, *info.input_shape], dtype, name=INPUT_NAME)])
  if has_float_signature(info):
    shape = tuple(info.input_shape)

    def serve_float(images):
      checks = [
          tf.debugging.assert_greater_equal(images, 0.0, message=_RANGE_ERROR),
          tf.debugging.assert_less_equal(images, 1.0, message=_RANGE_ERROR)]
      with tf.control_dependencies(checks):
        images = augment.fixed_size_float(images, shape)
      return {key: task.serving_outputs(model(images, training=False))}

    archive.add_endpoint(FLOAT_SIGNATURE, serve_float, input_signature=[
        tf.TensorSpec([None, None, None, shape[-1]], tf.float32, name=FLOAT_INPUT_NAME)])
  with console.quiet_saving():
    if LEGACY_KERAS:
      archive.write_out(path)
    else:
      archive.write_out(path, verbose=False)


_RANGE_ERROR = (f"{FLOAT_SIGNATURE}: images must be float32 in [0, 1]; scale 0..255 images by "
                f"1/255 (scikit-learn's digits, 0..16: by 1/16), or give uint8 images to "
                f"serving_default")
