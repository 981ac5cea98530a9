"""Dataset metadata: which dataset a name means, its shapes and sizes, and its TFDS builder.

Owns the name checks (every user mistake about `dataset` / `data_dir` is reported here, as a
ConfigError, before any example is read), the one-time preparation of the offline `digits`,
the choice of split ('train'; 'test', else 'validation', for eval) and the image shape the
model sees. `get_dataset_info` is cached per (name, data_dir): a process builds each TFDS
builder once and every pipeline reads through the `builder` its `DatasetInfo` carries.
"""

import dataclasses
import functools
import math

import tensorflow as tf
import tensorflow_datasets as tfds

from trainer.data import digits  # noqa: F401  (registers the 'digits' TFDS builder)
from trainer.errors import ConfigError

IN_MEMORY_MAX_BYTES = 2 * 1024**3  # train split as uint8; above this, stream from files
RESIZE_TO = 224  # side of variable-size images, e.g. imagenet2012
# Mirroring a digit or letter can turn it into another class (or into no class at all).
NO_FLIP = frozenset({"digits", "mnist", "emnist", "kmnist", "binarized_mnist",
                     "mnist_corrupted", "svhn_cropped", "omniglot"})


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model and the step arithmetic need to know about a dataset."""

  name: str
  num_classes: int
  image_shape: tuple[int, int, int]  # (H, W, C) of the images the model sees
  num_train_examples: int
  num_eval_examples: int
  # The prepared TFDS builder the pipelines read from; None for `synthetic`.
  builder: tfds.core.DatasetBuilder | None = dataclasses.field(
      default=None, compare=False, repr=False)

  @property
  def fits_in_memory(self) -> bool:
    """Whether the train split, as uint8, is at most IN_MEMORY_MAX_BYTES (read now)."""
    return self.num_train_examples * math.prod(self.image_shape) <= IN_MEMORY_MAX_BYTES

  @property
  def flip_allowed(self) -> bool:
    """Whether augmentation may mirror images left-right (see NO_FLIP)."""
    return base_name(self.name) not in NO_FLIP


SYNTHETIC = DatasetInfo("synthetic", 10, (32, 32, 3), 50_000, 1_000)  # nominal counts


def get_dataset_info(name: str, data_dir: str = "") -> DatasetInfo:
  """Returns the dataset's metadata (prepares `digits` on first use; reads no examples).

  Args:
    name: a TFDS image-classification name (e.g. mnist, cifar10), 'digits' or 'synthetic'.
    data_dir: the TFDS data_dir; '' = the TFDS default.

  Raises:
    ConfigError: not a name, not a TFDS image-classification dataset with uint8 images, or
      not prepared in data_dir (only `digits` is prepared here, from scikit-learn).
  """
  _check_name(name)  # before the cache: a name that is no string may not even hash
  return _cached_info(name, data_dir or None)


@functools.lru_cache(maxsize=None)
def _cached_info(name, data_dir):
  if name == "synthetic":
    return SYNTHETIC
  builder = _builder(name, data_dir)
  return DatasetInfo(
      name=name,
      num_classes=int(builder.info.features["label"].num_classes),
      image_shape=_image_shape(builder),
      num_train_examples=int(builder.info.splits[split_name(builder, "train")].num_examples),
      num_eval_examples=int(builder.info.splits[split_name(builder, "eval")].num_examples),
      builder=builder)


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


def _check_name(name):
  if not isinstance(name, str) or not name:
    raise ConfigError(f"dataset: {name!r} is not a dataset name; use a TFDS image-classification "
                      "name (e.g. mnist, cifar10), 'digits' or 'synthetic'")


def _builder(name, data_dir) -> tfds.core.DatasetBuilder:
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
      builder.download_and_prepare()  # no network: the data ships with scikit-learn
    except Exception:  # another process may have finished preparing it first
      if not tfds.builder(name, data_dir=data_dir).is_prepared():
        raise
    builder = tfds.builder(name, data_dir=data_dir)
  return builder


def _image_shape(builder) -> tuple[int, int, int]:
  h, w, c = builder.info.features["image"].shape
  if c is None:
    raise ConfigError(f"dataset: {builder.name!r} images have no fixed channel count")
  if h is None or w is None:
    h = w = RESIZE_TO
  return int(h), int(w), int(c)
