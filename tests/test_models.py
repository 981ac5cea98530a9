"""The model registry: shapes, dtypes, real training steps on 1 and 2 replicas, errors."""

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import cpu, mirrored
from trainer import models
from trainer.base.compat import LEGACY_KERAS, keras
from trainer.base.errors import ConfigError

HEAVY = ("resnet50", "efficientnetv2b0")
SHAPES = ((8, 8, 1), (32, 32, 3))
NUM_CLASSES = 10


def _images(n, shape, seed=0):
  return np.random.RandomState(seed).rand(n, *shape).astype("float32")


@pytest.fixture
def global_policy():
  """Yields a setter for the global dtype policy and restores float32 afterwards."""
  yield keras.mixed_precision.set_global_policy
  keras.mixed_precision.set_global_policy("float32")


def test_registry_lists_every_model():
  assert models.MODELS == ("small_cnn", "mlp", "resnet50", "efficientnetv2b0")


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name", models.MODELS)
def test_builds_float32_logits(name, shape):
  model = models.builtin(name, shape, NUM_CLASSES)
  assert model.name == name
  assert tuple(model.input_shape) == (None, *shape)
  logits = model(_images(2, shape), training=False)
  assert logits.shape == (2, NUM_CLASSES) and logits.dtype == tf.float32
  assert np.isfinite(logits.numpy()).all()
  head = model.layers[-1]
  assert head.units == NUM_CLASSES and head.activation is keras.activations.linear  # no softmax
  if name in HEAVY:  # keras.applications need >= 32x32: smaller images are upsampled first
    resized = [l for l in model.layers if l.name == "resize"]
    assert [tuple(l.output.shape) for l in resized] == ([] if shape[0] >= 32 else
                                                         [(None, 32, 32, shape[2])])


def test_applications_upsample_only_the_short_side():
  model = models.builtin("resnet50", (20, 40, 3), 3)
  assert tuple(model.get_layer("resize").output.shape) == (None, 32, 40, 3)
  assert model(_images(1, (20, 40, 3))).shape == (1, 3)


def test_small_cnn_has_deterministic_names_and_pools_only_large_enough_images():
  names = [l.name for l in models.builtin("small_cnn", (8, 8, 1), 10).layers]
  assert names == ["images", "conv1", "conv2", "pool", "conv3", "gap", "logits"]
  assert [l.name for l in models.builtin("small_cnn", (8, 8, 1), 10).layers] == names
  tiny = models.builtin("small_cnn", (4, 4, 1), 10)
  assert "pool" not in [l.name for l in tiny.layers]
  assert tiny(_images(2, (4, 4, 1))).shape == (2, 10)


# Tracing a ResNet/EfficientNet step takes 20-40 s on CPU per replica: those train on one
# device only (the slow tier). The distributed path is the small models' here, and batch
# norm across replicas is tests/test_plugins.py's subclassed model under mirrored.
@pytest.mark.parametrize("name,kind", [
    pytest.param(n, k, marks=pytest.mark.slow) if n in HEAVY else (n, k)
    for n in models.MODELS for k in ("one_device", "mirrored")
    if not (n in HEAVY and k == "mirrored")])
def test_trains_under_strategy(name, kind):
  shape, global_batch, steps = (8, 8, 1), 4, 2
  strategy = cpu() if kind == "one_device" else mirrored(2)
  with strategy.scope():
    model = models.builtin(name, shape, NUM_CLASSES)
    optimizer = keras.optimizers.Adam(1e-3)
    # Slots created on a tf.function's first call break under MirroredStrategy: build them now.
    optimizer.build(model.trainable_variables)
  before = [np.array(v) for v in model.trainable_variables]
  x = _images(global_batch * steps, shape)
  y = np.arange(global_batch * steps) % NUM_CLASSES
  batches = iter(strategy.experimental_distribute_dataset(
      tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch)))

  def replica_step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss

  @tf.function
  def train_step(batch):
    losses = strategy.run(replica_step, args=batch)
    return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

  losses = [float(train_step(next(batches))) for _ in range(steps)]
  assert np.isfinite(losses).all()
  assert int(np.array(optimizer.iterations)) == steps  # int() fails on a Keras 3 mirrored var
  after = [np.array(v) for v in model.trainable_variables]
  assert all(np.isfinite(a).all() for a in after)
  changed = [not np.array_equal(b, a) for b, a in zip(before, after)]
  assert changed[0] and changed[-1]  # first layer and logits head both learned
  assert np.mean(changed) > 0.9, f"only {np.mean(changed):.0%} of variables changed"

  # The replicas' copies of every weight agree. BatchNorm moving statistics (resnet50,
  # efficientnetv2b0) are left out: Keras keeps them per replica, from each one's own batch.
  for v in model.trainable_variables:
    copies = strategy.experimental_local_results(v if LEGACY_KERAS else v.value)
    assert len(copies) == strategy.num_replicas_in_sync
    for copy in copies[1:]:
      np.testing.assert_array_equal(copy.numpy(), copies[0].numpy())


@pytest.mark.parametrize("name", ["small_cnn", "mlp"])  # heavy ones: 10-20 s to compile
def test_training_step_compiles_with_xla(name):
  model = models.builtin(name, (8, 8, 1), NUM_CLASSES)
  optimizer = keras.optimizers.SGD(0.1)
  optimizer.build(model.trainable_variables)
  before = [np.array(v) for v in model.trainable_variables]

  @tf.function(jit_compile=True)
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                  model.trainable_variables))
    return loss

  assert np.isfinite(float(train_step(_images(4, (8, 8, 1)), np.arange(4))))
  assert all(not np.array_equal(b, np.array(a))
             for b, a in zip(before, model.trainable_variables))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("name", models.MODELS)
def test_mixed_precision_outputs_float32_logits(name, policy, global_policy):
  global_policy(policy)
  model = models.builtin(name, (8, 8, 1), NUM_CLASSES)
  compute_dtypes = {l.compute_dtype for l in _all_layers(model) if l.trainable_weights}
  assert policy.split("_")[1] in compute_dtypes  # the body really runs in low precision
  assert model.layers[-1].compute_dtype == "float32"
  logits = model(_images(2, (8, 8, 1)))
  assert logits.dtype == tf.float32 and np.isfinite(logits.numpy()).all()


def _all_layers(model):
  for layer in model.layers:
    yield layer
    if isinstance(layer, keras.Model):
      yield from _all_layers(layer)


def test_small_cnn_learns_digits():
  from sklearn import datasets  # pylint: disable=g-import-not-at-top  (slow import)
  digits = datasets.load_digits()
  x = (digits.images / 16.0).astype("float32")[..., None]
  y = digits.target.astype("int32")
  order = np.random.RandomState(0).permutation(len(x))
  x, y = x[order], y[order]
  x_train, y_train, x_test, y_test = x[:-360], y[:-360], x[-360:], y[-360:]

  keras.utils.set_random_seed(0)
  model = models.builtin("small_cnn", (8, 8, 1), 10)
  optimizer = keras.optimizers.AdamW(3e-3)
  batches = iter(tf.data.Dataset.from_tensor_slices((x_train, y_train))
                 .shuffle(len(x_train), seed=0).repeat().batch(128))

  @tf.function
  def train_step(images, labels):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels, logits))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))

  for _ in range(300):
    train_step(*next(batches))
  accuracy = np.mean(np.argmax(model(x_test, training=False), axis=-1) == y_test)
  assert accuracy >= 0.95


@pytest.mark.parametrize("name,conv", [("mlp", False), ("small_cnn", True),
                                       ("resnet50", True), ("efficientnetv2b0", True)])
def test_has_convolutions(name, conv):
  model = models.builtin(name, (32, 32, 3), 10)
  assert models.has_convolutions(model) == conv


def test_unknown_model_names_the_allowed_values():
  with pytest.raises(ConfigError) as e:
    models.builtin("x", (8, 8, 1), 10)
  assert str(e.value) == (
      "model: unknown 'x'; allowed: small_cnn, mlp, resnet50, efficientnetv2b0")


@pytest.mark.parametrize("num_classes", [0, -3, 2.5, True, "10", None])
def test_bad_num_classes(num_classes):
  with pytest.raises(ConfigError, match=r"^num_classes: must be an integer >= 1, got "):
    models.builtin("mlp", (8, 8, 1), num_classes)


def test_mlp_takes_feature_vectors_and_one_output_for_regression():
  model = models.builtin("mlp", (10,), 1)
  assert model.input_shape == (None, 10) and model.output_shape == (None, 1)
  with pytest.raises(ConfigError, match=r"^input_shape: must be an integer >= 1"):
    models.builtin("mlp", (10, 0), 1)


@pytest.mark.parametrize("image_shape", [(8, 8), (8, 8, 0), (8, 8, 1, 1), None, (8.0, 8, 1),
                                         (8, True, 1), "881"])
def test_bad_image_shape(image_shape):
  with pytest.raises(ConfigError, match=r"^image_shape: must be 3 positive integers"):
    models.builtin("small_cnn", image_shape, 10)


def test_accepts_numpy_sizes():
  model = models.builtin("mlp", np.array([8, 8, 1]), np.int64(3))
  assert model.output_shape == (None, 3)


def test_application_missing_from_this_keras_is_a_config_error(monkeypatch):
  monkeypatch.delattr(keras.applications, "EfficientNetV2B0")
  with pytest.raises(ConfigError, match=r"^model: 'efficientnetv2b0' is not available in Keras"):
    models.builtin("efficientnetv2b0", (32, 32, 3), 10)
