"""Dataset metadata: `DatasetInfo` (shapes, sizes, where the examples come from) and TFDS.

Owns the TFDS side of a name (the prepared builder, validated as an image-classification
dataset; the one-time preparation of the offline `digits`), the choice of split ('train';
'test', else 'validation', for eval) and the image shape the model sees. Which source a name
means is `trainer.data.sources`; this module imports no source, the sources import it.
"""

import contextlib
import dataclasses
import math
import sys

import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

from trainer.base.errors import ConfigError
from trainer.data import digits  # noqa: F401  (registers the 'digits' TFDS builder)

DEFAULT_EVAL_FRACTION = 0.2  # folder: without train/ and test/ (configs/default.py's)
IN_MEMORY_MAX_BYTES = 2 * 1024**3  # train split as uint8; above this, stream from files
RESIZE_TO = 224  # side of variable-size images, e.g. imagenet2012
# Mirroring a digit or letter can turn it into another class (or into no class at all).
NO_FLIP = frozenset({"digits", "mnist", "emnist", "kmnist", "binarized_mnist",
                     "mnist_corrupted", "svhn_cropped", "omniglot"})


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model, the task and the step arithmetic need to know about a dataset.

  `image_shape` is one example's input shape: (H, W, C) for images (uint8 in storage, float32
  in [0, 1] for the model), or any shape of float32 features (`input_dtype='float32'`, given
  to the model as they are). Labels are int32 class ids (`num_classes` >= 2) or float32
  targets of `label_shape` (`num_classes` 0).
  """

  name: str
  num_classes: int
  image_shape: tuple[int, ...]  # one example's input shape, e.g. (H, W, C)
  num_train_examples: int
  num_eval_examples: int
  # The prepared TFDS builder the pipelines read from; None for other sources.
  builder: tfds.core.DatasetBuilder | None = dataclasses.field(
      default=None, compare=False, repr=False)
  input_dtype: str = "uint8"
  label_dtype: str = "int32"
  label_shape: tuple[int, ...] = ()
  # In-memory sources other than TFDS (folder:, a user's arrays): split -> (inputs, labels).
  loader: object = dataclasses.field(default=None, compare=False, repr=False)
  # A user's tf.data functions (streamed): {'train': fn(ctx), 'eval': fn(ctx)}.
  streams: object = dataclasses.field(default=None, compare=False, repr=False)
  # What a resume checks the data against (folder:, `trainer.data.folder.fingerprint`), or None.
  fingerprint: dict = dataclasses.field(default=None, compare=False, repr=False)

  @property
  def input_shape(self) -> tuple[int, ...]:
    return tuple(self.image_shape)

  @property
  def is_image(self) -> bool:
    """uint8 [H, W, C] inputs: augmentation and the [0, 1] scaling apply."""
    return self.input_dtype == "uint8" and len(self.image_shape) == 3

  @property
  def fits_in_memory(self) -> bool:
    """Whether the train split is at most IN_MEMORY_MAX_BYTES (the limit is read now)."""
    if self.streams is not None or self.loader is not None:
      return self.loader is not None  # a user's streams stream; loaded arrays are in memory
    itemsize = tf.as_dtype(self.input_dtype).size
    return self.num_train_examples * math.prod(self.image_shape) * itemsize <= IN_MEMORY_MAX_BYTES

  def summary(self) -> str:
    """One short line for people, e.g. 'digits: 1437 train / 360 eval, uint8 8x8x1 images,
    10 classes' (config.json records the dataset's settings)."""
    shape = "x".join(map(str, self.image_shape))
    inputs = (f"{self.input_dtype} {shape} images" if self.is_image
              else f"{self.input_dtype} [{shape}] inputs")
    labels = (f"{self.num_classes} classes" if self.num_classes
              else f"{self.label_dtype} [{'x'.join(map(str, self.label_shape))}] targets")
    return (f"{self.name}: {self.num_train_examples} train / {self.num_eval_examples} eval, "
            f"{inputs}, {labels}")

  @property
  def flip_allowed(self) -> bool:
    """Whether augmentation may mirror images left-right (see NO_FLIP)."""
    return base_name(self.name) not in NO_FLIP


SYNTHETIC = DatasetInfo("synthetic", 10, (32, 32, 3), 50_000, 1_000)  # nominal counts


def split_name(builder, which: str) -> str:
  """The builder's split for `which`: 'train', or the held-out 'test', else 'validation'."""
  splits = builder.info.splits
  names = ("train",) if which == "train" else ("test", "validation")
  for name in names:
    if name in splits:
      return name
  raise ConfigError(f"dataset: {builder.name!r} has no {' or '.join(map(repr, names))} split "
                    f"(it has {', '.join(splits.keys()) or 'none'})")


def base_name(name: str) -> str:
  """The dataset's name without config and version: 'mnist' for 'mnist/x:1.0.0'."""
  return name.split("/")[0].split(":")[0]


def tfds_builder(name, data_dir) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder; validates the name and features; prepares only `digits`."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise ConfigError(f"dataset: {name!r} is not a TFDS dataset; use a TFDS image-classification "
                      "name (e.g. mnist, cifar10), 'digits' or 'synthetic'") from None
  features = builder.info.features
  if not (isinstance(features, tfds.features.FeaturesDict) and "image" in features
          and isinstance(features["image"], tfds.features.Image) and "label" in features
          and isinstance(features["label"], tfds.features.ClassLabel)):
    raise ConfigError(f"dataset: {name!r} is not an image-classification dataset (needs an "
                      "'image' feature and a ClassLabel 'label' feature)")
  if tf.as_dtype(features["image"].tf_dtype) != tf.uint8:  # `.dtype` is deprecated in TFDS
    raise ConfigError(f"dataset: {name!r} has {tf.as_dtype(features['image'].tf_dtype).name} "
                      "images; only uint8 images are supported")
  if not builder.is_prepared():
    if base_name(name) != "digits":
      where = data_dir or "the TFDS default data_dir"
      raise ConfigError(
          f"dataset: {name!r} is not prepared in {where} and nothing is downloaded at run time; "
          f"run `tfds build {name} --data_dir=DIR` and set data_dir=DIR")
    try:
      with _progress_bars_on_terminals_only():
        builder.download_and_prepare()  # no network: the data ships with scikit-learn
    except Exception:  # another process may have finished preparing it first
      if not tfds.builder(name, data_dir=data_dir).is_prepared():
        raise
    builder = tfds.builder(name, data_dir=data_dir)
  return builder


@contextlib.contextmanager
def _progress_bars_on_terminals_only():
  """TFDS's progress bars redraw with cursor escapes ('\\x1b[A'): off a terminal (a log file,
  CI, a notebook) they are garbage, so they are off there while TFDS prepares a dataset."""
  if sys.stdout.isatty() and sys.stderr.isatty():
    yield
    return
  before = getattr(tqdm_utils, "_active", True)  # the user's own choice, put back after
  tfds.display_progress_bar(False)
  try:
    yield
  finally:
    tfds.display_progress_bar(before)


def tfds_image_shape(builder, image_size=0) -> tuple[int, int, int]:
  h, w, c = builder.info.features["image"].shape
  if c is None:
    raise ConfigError(f"dataset: {builder.name!r} images have no fixed channel count")
  if image_size:
    h = w = image_size
  elif h is None or w is None:
    h = w = RESIZE_TO
  return int(h), int(w), int(c)
