"""Image classifiers by name, for the training loop to build inside `strategy.scope()`.

Every model takes float32 images in [0, 1] of shape `image_shape` (height, width, channels)
and returns float32 logits of shape [batch, num_classes], with no softmax. Under a
mixed-precision global policy (set by the caller before `build_model`) the layers compute in
bfloat16/float16 but the last Dense still outputs float32, so the loss stays accurate.

  small_cnn          the default: three 3x3 convs, for 8x8 digits up to 32x32 images
  mlp                Flatten, Dense(64), Dense(classes): tiny and overhead-bound, for benchmarks
  resnet50           keras.applications.ResNet50 (weights=None) + Dense head
  efficientnetv2b0   keras.applications.EfficientNetV2B0 (weights=None) + Dense head

keras.applications refuse inputs smaller than 32x32, so for `resnet50` and `efficientnetv2b0`
a side shorter than 32 is first upsampled (bilinear `Resizing`) to 32; larger sides are kept.
Weights are always randomly initialised: no pretrained weights are downloaded.
"""

import collections
import contextlib

import numpy as np

from trainer.base import plugins
from trainer.base import validate
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError

MODELS = ("small_cnn", "mlp", "resnet50", "efficientnetv2b0")

_MIN_APPLICATION_SIDE = 32


def _check_image_shape(image_shape):
  try:
    dims = tuple(image_shape)
  except TypeError:
    dims = ()
  if len(dims) != 3:
    raise ConfigError("image_shape: must be 3 positive integers (height, width, channels), "
                      f"got {image_shape!r}")
  try:
    return tuple(validate.integer("image_shape", d, 1) for d in dims)
  except ConfigError:
    raise ConfigError("image_shape: must be 3 positive integers (height, width, channels), "
                      f"got {image_shape!r}") from None


def _logits(num_classes, x):
  # float32 even under a mixed policy: softmax cross-entropy in bfloat16 loses precision.
  return keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)


def _small_cnn(inputs, num_classes):
  # No BatchNorm (its batch statistics are per replica) and no dropout (its masks depend on
  # the replica layout and on RNG state): the same global batch then gives the same update on
  # 1 or 8 replicas, and a resumed run retraces the uninterrupted one exactly.
  x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1")(inputs)
  x = keras.layers.Conv2D(64, 3, padding="same", activation="relu", name="conv2")(x)
  if min(inputs.shape[1], inputs.shape[2]) >= 8:
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
  x = keras.layers.Conv2D(128, 3, padding="same", activation="relu", name="conv3")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  return _logits(num_classes, x)


def _mlp(inputs, num_classes):
  x = keras.layers.Flatten(name="flatten")(inputs)
  x = keras.layers.Dense(64, activation="relu", name="hidden")(x)
  return _logits(num_classes, x)


def _application(name, constructor, **kwargs):
  """Returns a head-builder around a keras.applications backbone, or raises if absent."""
  backbone_cls = getattr(keras.applications, constructor, None)
  if backbone_cls is None:
    raise ConfigError(f"model: '{name}' is not available in Keras {keras.__version__} "
                      f"(no keras.applications.{constructor}); allowed: {', '.join(MODELS)}")

  def build(inputs, num_classes):
    x = inputs
    height, width, channels = inputs.shape[1:]
    if min(height, width) < _MIN_APPLICATION_SIDE:
      height, width = max(height, _MIN_APPLICATION_SIDE), max(width, _MIN_APPLICATION_SIDE)
      x = keras.layers.Resizing(height, width, name="resize")(x)
    backbone = backbone_cls(weights=None, include_top=False, pooling="avg",
                            input_shape=(height, width, channels), **kwargs)
    return _logits(num_classes, backbone(x))

  return build


def _efficientnetv2b0(inputs, num_classes):
  # Its built-in preprocessing expects [0, 255] pixels (it rescales by 1/255, then normalises
  # with ImageNet mean/std); our inputs are already in [0, 1], and with random weights the
  # stem's BatchNorm absorbs the remaining scale.
  return _application("efficientnetv2b0", "EfficientNetV2B0",
                      include_preprocessing=False)(inputs, num_classes)


_BODIES = {"small_cnn": _small_cnn, "mlp": _mlp,
           "resnet50": lambda inputs, n: _application("resnet50", "ResNet50")(inputs, n),
           "efficientnetv2b0": _efficientnetv2b0}
assert tuple(_BODIES) == MODELS

# Model functions registered with `register` (built-ins are looked up in _BODIES first).
_REGISTRY = {}


def register(name):
  """Registers a model function under `name`, so `config.model = name` builds it.

    @trainer.models.register("my_net")
    def my_net(input_shape, num_outputs):
      return keras.Sequential([...])

  The function gets what the data says about itself: `input_shape` (one example's shape,
  e.g. (height, width, channels) of float32 images in [0, 1], or (features,)) and
  `num_outputs` (classes for classification, targets for regression), and returns a Keras
  model (functional, Sequential or a subclassed `keras.Model`) whose outputs are
  [batch, num_outputs] logits or values. It is called inside `strategy.scope()` under the
  run's dtype policy.
  """
  if not isinstance(name, str) or not name or name in MODELS or ":" in name:
    raise ConfigError(f"model: cannot register {name!r}: give a new name without ':' (taken: "
                      f"{', '.join(MODELS)})")

  def decorate(fn):
    _REGISTRY[name] = fn
    return fn

  return decorate


def lookup(name):
  """The function `config.model` names: a registered name, or `package.module:function`.

  Returns:
    A function `(input_shape, num_outputs) -> keras.Model`.

  Raises:
    ConfigError: unknown name, a module that does not import, or no such function.
  """
  if not isinstance(name, str) or not name:
    raise ConfigError(f"model: must be a model name or package.module:function, got {name!r}")
  if name in _BODIES:
    return lambda input_shape, num_outputs: builtin(name, input_shape, num_outputs)
  if name in _REGISTRY:
    return _REGISTRY[name]
  if ":" not in name:
    raise ConfigError(f"model: unknown {name!r}; allowed: "
                      f"{', '.join((*MODELS, *_REGISTRY))}, or package.module:function")
  return plugins.load_function("model", name)


def build(name, input_shape, num_outputs, fn=None):
  """Builds the model `name` names (call it inside `strategy.scope()`), checked.

  Subclassed models are called once on zeros so their variables exist before the optimizer
  and the checkpoint need them. Layers Keras names itself get the names a fresh process would
  give them ('dense', not 'dense_3' after three other models), so a variable's path
  (`conv1/kernel`, `sequential/dense/kernel`) is the same in every process that builds the
  model: the paths `optimizer.lr_mults` and `init_from` match.

  Args:
    name: `config.model`.
    input_shape, num_outputs: what the data and the task say.
    fn: the model function, if already looked up (`RunSpec.model_fn`); else `lookup(name)`.

  Raises:
    ConfigError: the function did not return a Keras model, one with the wrong outputs, or one
      with nothing trainable.
  """
  with _fresh_names():
    model = (fn or lookup(name))(input_shape=tuple(input_shape), num_outputs=num_outputs)
    if not isinstance(model, keras.Model):
      raise ConfigError(f"model: {name!r} returned {type(model).__name__}, not a keras.Model")
    try:
      shape = tuple(model.output_shape)  # functional and Sequential models
    except (AttributeError, ValueError, RuntimeError):  # subclassed: build it by calling it
      shape = (None, *model(np.zeros((1, *input_shape), np.float32), training=False).shape[1:])
  if len(shape) != 2 or shape[-1] != num_outputs:
    raise ConfigError(f"model: {name!r} outputs shape {shape}; the task needs "
                      f"(None, {num_outputs}) for inputs of shape {tuple(input_shape)}")
  # Checked here, before the run writes anything (the builder runs before config.json): the
  # gradient step of a model with nothing to train failed with 'not enough values to unpack'.
  if not model.trainable_weights:
    raise ConfigError(f"model: {name!r} has no trainable weights ({len(model.weights)} "
                      f"weights, all frozen: trainable = False?); a run needs something to "
                      f"train")
  return model


@contextlib.contextmanager
def _fresh_names():
  """Keras 3's automatic names start again inside: `uniquify` numbers each name by a counter
  in Keras' global state (keras/src/utils/naming.py), which only `clear_session` resets."""
  if LEGACY_KERAS:  # tf_keras names by its own graph-keyed counters; paths are not used there
    yield
    return
  from keras.src.backend.common import global_state  # pylint: disable=g-import-not-at-top
  before = global_state.get_global_attribute("object_name_uids")
  global_state.set_global_attribute("object_name_uids", collections.defaultdict(int))
  try:
    yield
  finally:
    global_state.set_global_attribute("object_name_uids", before)


def builtin(name, image_shape, num_classes):
  """Builds a built-in model by name. Call it inside `strategy.scope()`.

  Args:
    name: one of `MODELS`.
    image_shape: (height, width, channels) of the float32 input images, values in [0, 1]
      (`mlp` also takes feature vectors of any shape).
    num_classes: number of outputs (logits, or regression targets), >= 1.

  Returns:
    An uncompiled `keras.Model` named `name`, mapping [batch, *image_shape] float32 images to
    [batch, num_classes] float32 logits.

  Raises:
    ConfigError: for an unknown or unavailable model name, or a bad num_classes/image_shape.
  """
  body = _BODIES[validate.choice("model", name, MODELS)]
  num_classes = validate.integer("num_classes", num_classes, 1)
  if name == "mlp" and isinstance(image_shape, (tuple, list)) and len(image_shape) != 3:
    image_shape = tuple(validate.integer("input_shape", d, 1) for d in image_shape)  # features
  else:
    image_shape = _check_image_shape(image_shape)
  inputs = keras.Input(shape=image_shape, dtype="float32", name="images")
  return keras.Model(inputs, body(inputs, num_classes), name=name)


def has_convolutions(model) -> bool:
  """Whether the model has convolution kernels (trainable variables of rank >= 3).

  Decides what XLA compiles on the CPU (`trainer.step.execution`). Dense kernels are
  rank 2, biases and normalisation scales rank 1; Conv1D/2D/3D and depthwise kernels are
  rank 3 to 5.
  """
  return any(len(v.shape) >= 3 for v in model.trainable_variables)
