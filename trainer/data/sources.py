"""Which source a dataset name means: TFDS, `digits`, `synthetic`, `folder:PATH`, or your
function; `get_dataset_info` opens it once per process (cached per name and settings).

Every user mistake about `dataset` / `data_dir` is a ConfigError here, before any example is
read.
"""

import functools

from trainer.base import plugins
from trainer.base.errors import ConfigError
from trainer.data import custom, digits, folder, info


def get_dataset_info(name: str, data_dir: str = "", image_size: int = 0,
                     eval_fraction: float = info.DEFAULT_EVAL_FRACTION) -> info.DatasetInfo:
  """Returns the dataset's metadata (prepares `digits` on first use).

  Args:
    name: a TFDS image-classification name (e.g. mnist, cifar10), 'digits', 'synthetic',
      'folder:PATH' (a directory of images, one sub-directory per class; `trainer.data.folder`)
      or 'package.module:function' (your own arrays; `trainer.data.custom`).
    data_dir: the TFDS data_dir; '' = the TFDS default.
    image_size: resize images to image_size x image_size; 0 = the dataset's own size (TFDS
      images of variable size: RESIZE_TO; folder: 64).
    eval_fraction: folder: datasets without train/ and test/ sub-directories hold out this
      fraction of each class (a fixed split, the same for every seed).

  Raises:
    ConfigError: not a name, not an image-classification dataset with uint8 images, not
      prepared in data_dir (only `digits` is prepared here, from scikit-learn), a plug-in that
      fails, or an image_size for inputs that are not images.
  """
  _check_name(name)  # before the cache: a name that is no string may not even hash
  return _cached_info(name, data_dir or None, image_size, eval_fraction)


@functools.lru_cache(maxsize=None)
def _cached_info(name, data_dir, image_size, eval_fraction):
  if name.startswith(folder.PREFIX):
    return folder.folder_info(name, image_size, eval_fraction)
  if plugins.is_import_path(name):
    return custom.function_info(name, image_size)
  if name == "synthetic":
    if image_size:
      raise ConfigError("image_size: synthetic data is 32x32; leave image_size at 0")
    return info.SYNTHETIC
  builder = info.tfds_builder(name, data_dir)
  return info.DatasetInfo(
      name=name,
      num_classes=int(builder.info.features["label"].num_classes),
      image_shape=info.tfds_image_shape(builder, image_size),
      num_train_examples=int(builder.info.splits[info.split_name(builder, "train")].num_examples),
      num_eval_examples=int(builder.info.splits[info.split_name(builder, "eval")].num_examples),
      builder=builder)


def describe_inputs(info_: info.DatasetInfo) -> str:
  """How the stored inputs were made from the source, in a few words, for whoever feeds the
  exported model (export.json): the scaling and resizing the run's data went through."""
  shape = "x".join(map(str, info_.image_shape[:2]))
  resized = f"resized to {shape} (antialiased, aspect ratio not kept), rounded to uint8"
  if info_.name.startswith(folder.PREFIX):
    return f"image files decoded to RGB and {resized}"
  if plugins.is_import_path(info_.name):
    return f"the arrays {info_.name} returns, as given"
  if info_.name == "synthetic":
    return "random uint8 pixels"
  if info.base_name(info_.name) == "digits":
    return digits.STORED
  if info_.builder is not None:
    stored = info_.builder.info.features["image"].shape
    if tuple(stored[:2]) != tuple(info_.image_shape[:2]):
      return f"the TFDS images {resized}"
  return "the TFDS images as stored (uint8)"


def _check_name(name):
  if not isinstance(name, str) or not name:
    raise ConfigError(f"dataset: {name!r} is not a dataset name; use a TFDS image-classification "
                      "name (e.g. mnist, cifar10), 'digits' or 'synthetic'")


